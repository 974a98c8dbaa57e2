package lab

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/internal/needroot"
)

type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func netnsList(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func TestLab(t *testing.T) {
	needroot.Skip(t, "the lab needs root to create network namespaces, veths and run sshd")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	bin, err := BuildLabtool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	l, err := New(ctx, Options{Prefix: "labtest", Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	name, dir := l.Name, l.Dir

	run := func(role string, args ...string) string {
		t.Helper()
		out, err := l.Exec(ctx, role, args...)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}

	// The root namespace never sees a lab interface.
	if out, err := osExec("ip", "-o", "link", "show"); err != nil {
		t.Fatal(err)
	} else if strings.Contains(out, "v"+l.vethID) {
		t.Errorf("lab veth visible in root namespace:\n%s", out)
	}
	if got := run(RoleRouter, "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(got) != "1" {
		t.Errorf("router ip_forward = %q", got)
	}

	// client -> old through the router, v4 and v6, TCP and UDP.
	if _, err := l.Start(RoleOld, bin, "serve", "-name", "old", "-listen", "198.51.100.10:8080"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Start(RoleOld, bin, "serve", "-name", "old6", "-listen", "[2001:db8:100::10]:8080"); err != nil {
		t.Fatal(err)
	}
	udp, err := l.Start(RoleOld, bin, "serve", "-udp", "-name", "oldudp", "-listen", "198.51.100.10:8081")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.WaitTCP(ctx, RoleClient, "198.51.100.10:8080"); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitTCP(ctx, RoleClient, "[2001:db8:100::10]:8080"); err != nil {
		t.Fatal(err)
	}
	out := run(RoleClient, bin, "dial", "198.51.100.10:8080")
	t.Logf("dial: %s", strings.TrimSpace(out))
	// (labtool prints the connection's mss= between local= and remote=.)
	if !strings.HasPrefix(out, "served-by=old peer=192.0.2.10 local=198.51.100.10:8080 ") || !strings.Contains(out, " remote=198.51.100.10:8080 localaddr=192.0.2.10:") {
		t.Errorf("dial v4: unexpected %q", out)
	}
	out = run(RoleClient, bin, "dial", "-timeout", "2s", "[2001:db8:100::10]:8080")
	if !strings.HasPrefix(out, "served-by=old6 peer=2001:db8:1::10 ") {
		t.Errorf("dial v6: unexpected %q", out)
	}
	var udpOut string
	for i := 0; i < 20; i++ { // the UDP server may still be binding
		o, err := l.Exec(ctx, RoleClient, bin, "dial", "-udp", "-timeout", "300ms", "198.51.100.10:8081")
		if udpOut = string(o); err == nil {
			break
		}
	}
	if !strings.HasPrefix(udpOut, "served-by=oldudp peer=192.0.2.10 len=2 replylen=") || !strings.Contains(udpOut, " remote=198.51.100.10:8081") {
		t.Errorf("dial udp: unexpected %q (server log %s)", udpOut, l.LogPath(udp))
	}
	out = run(RoleClient, bin, "hold", "198.51.100.10:8080", "-every", "20ms", "-count", "3")
	if want := "old: ping 1\nold: ping 2\nold: ping 3\n"; !strings.HasSuffix(out, want) {
		t.Errorf("hold: got %q, want suffix %q", out, want)
	}
	if _, err := l.Exec(ctx, RoleClient, bin, "dial", "-timeout", "500ms", "198.51.100.10:9"); err == nil {
		t.Errorf("dial to closed port succeeded")
	}

	// A connection opened with Lab.Dial lives in the client namespace.
	c, err := l.Dial(ctx, RoleClient, "tcp", "198.51.100.10:8080")
	if err != nil {
		t.Fatal(err)
	}
	greet, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || !strings.HasPrefix(greet, "served-by=old peer=192.0.2.10 ") {
		t.Errorf("Lab.Dial greeting %q, %v", greet, err)
	}

	// ssh from admin, strict host key checking, session runs in the host's ns.
	for _, h := range []struct{ role, ip, state string }{
		{RoleOld, l.OldIP.String(), l.OldStateDir},
		{RoleNew, l.NewIP.String(), l.NewStateDir},
	} {
		args := append([]string{"ssh"}, l.SSHArgs()...)
		// A shell that skipped root's ~/.bashrc: SHLVL came in as 1.
		args = append(args, "root@"+h.ip, "echo ok; echo state=$MIGRATE_STATE_DIR; echo shlvl=$SHLVL; ip -br addr show dev eth0")
		out := run(RoleAdmin, args...)
		t.Logf("ssh %s:\n%s", h.role, out)
		for _, want := range []string{"ok\n", "state=" + h.state + "\n", h.ip + "/"} {
			if !strings.Contains(out, want) {
				t.Errorf("ssh to %s: output lacks %q", h.role, want)
			}
		}
		if !strings.Contains(out, "shlvl=1\n") && !strings.Contains(out, "shlvl=2\n") {
			t.Errorf("ssh to %s: SHLVL not set by sshd, so bash may source root's ~/.bashrc:\n%s", h.role, out)
		}
	}
	// Host keys really are checked: old's key is not valid for new's address.
	bad := l.Dir + "/bad_known_hosts"
	kh, _ := os.ReadFile(l.KnownHosts)
	if err := os.WriteFile(bad, []byte(strings.Replace(string(kh), l.NewIP.String(), "203.0.113.99", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	// (ssh keeps the first value of an option, so swap it rather than append.)
	args := []string{"ssh"}
	for _, a := range l.SSHArgs() {
		args = append(args, strings.Replace(a, "UserKnownHostsFile="+l.KnownHosts, "UserKnownHostsFile="+bad, 1))
	}
	args = append(args, "root@"+l.NewIP.String(), "true")
	if _, err := l.Exec(ctx, RoleAdmin, args...); err == nil {
		t.Errorf("ssh with unknown host key succeeded")
	}

	// Snapshot is stable.
	s1, err := l.Snapshot(ctx, RoleOld, "net.ipv4.ip_forward", "net.ipv4.no_such_sysctl")
	if err != nil {
		t.Fatal(err)
	}
	s2, err := l.Snapshot(ctx, RoleOld, "net.ipv4.ip_forward", "net.ipv4.no_such_sysctl")
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 {
		t.Errorf("snapshot not stable:\n--- first\n%s\n--- second\n%s", s1, s2)
	}
	for _, want := range []string{"### nft list ruleset\n", "### ip -6 route show table all\n", "198.51.100.10/24", "2001:db8:100::10/64", "### sysctl net.ipv4.ip_forward\n0\n", "### sysctl net.ipv4.no_such_sysctl\n<absent>\n"} {
		if !strings.Contains(s1, want) {
			t.Errorf("snapshot lacks %q:\n%s", want, s1)
		}
	}

	// Close removes everything and is idempotent.
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for _, ns := range netnsList(t) {
		if strings.HasPrefix(ns, name+"-") {
			t.Errorf("namespace %s still exists after Close", ns)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab dir %s still exists after Close (%v)", dir, err)
	}
	if _, err := l.Exec(ctx, RoleOld, "true"); err == nil {
		t.Errorf("Exec after Close succeeded")
	}
}

func osExec(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
