package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
	"github.com/opsmigrate/migrate/plan"
)

const networkdBin = "/lib/systemd/systemd-networkd"

// networkdScript runs the real systemd-networkd with state of its own,
// inside `ip netns exec NS unshare -m`: a private /run, a private copy of
// /etc/systemd ($D) whose network/ is empty (it manages no link of the
// lab), and a fresh read-only sysfs (with /sys read-only networkd does not
// wait for udev). It runs without D-Bus. Its mounts live in its own mount
// namespace, which ends with it.
const networkdScript = `set -e
mount --make-rprivate /
mount -t tmpfs migrate-lab /run
mkdir -p /run/systemd/netif /run/dbus
chown systemd-network:systemd-network /run/systemd/netif
mount --bind "$D" /etc/systemd
umount -l /sys
mount -t sysfs -o ro sysfs /sys
exec ` + networkdBin

// startNetworkd starts networkd in host's namespace (see networkdScript)
// and waits until it runs there; it is killed when the test ends, even on
// failure.
func startNetworkd(t *testing.T, ctx context.Context, l *lab.Lab, host, dir string) int {
	t.Helper()
	ns := l.NS[host]
	if ns == "" {
		t.Fatalf("no namespace for %s", host)
	}
	nsPath := filepath.Join("/run/netns", ns)
	want, err := inode(nsPath)
	if err != nil {
		t.Fatalf("lab namespace %s: %v", ns, err)
	}
	cmd, err := l.Start(host, "env", "D="+dir, "unshare", "-m", "sh", "-c", networkdScript)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			if b, err := os.ReadFile(l.LogPath(cmd)); err == nil {
				t.Logf("networkd log (%s):\n%s", host, b)
			}
		}
	})
	// ip netns exec, env, unshare and sh each exec the next: the PID is
	// networkd's once its comm says so.
	pid := cmd.Process.Pid
	deadline := time.Now().Add(scenario.Slow(15 * time.Second))
	for {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		got, err := inode(fmt.Sprintf("/proc/%d/ns/net", pid))
		if strings.TrimSpace(string(comm)) == "systemd-network" && err == nil {
			if got != want {
				t.Fatalf("networkd (pid %d) runs outside %s's namespace", pid, host)
			}
			break
		}
		select {
		case <-done:
			b, _ := os.ReadFile(l.LogPath(cmd))
			t.Fatalf("networkd ended: %v\n%s", cmd.ProcessState, b)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("networkd did not start in %s's namespace (pid %d, comm %q)", host, pid, comm)
		}
	}
	// Still running a moment later: it did not give up on its setup.
	select {
	case <-done:
		b, _ := os.ReadFile(l.LogPath(cmd))
		t.Fatalf("networkd ended: %v\n%s", cmd.ProcessState, b)
	case <-time.After(time.Second):
	}
	return pid
}

func inode(p string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// TestNetworkd runs the real systemd-networkd (Debian's, systemd 252) in
// NEW's namespace only, with its default settings: plan warns for NEW
// alone that networkd would remove migrate's policy rules and routes, and
// gives the drop-in and the restart. Once the drop-in (both settings no)
// is in networkd's configuration and networkd restarted, plan warns no
// more. A networkd running in another namespace (NEW's) does not count for
// OLD. migrate writes nothing of networkd's.
//
// The removal itself is not played here: in this container networkd 252
// did not remove a foreign rule within seconds of starting, nor on a
// carrier bounce (it removes them when it configures a link it manages,
// and here it manages none), so the test checks the detection and the
// advice, not networkd's behaviour.
func TestNetworkd(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat(networkdBin); err != nil {
		t.Fatalf("systemd-networkd is not installed (apt-get install systemd; .ci/run does): %v", err)
	}
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	dir := filepath.Join(l.Dir, "networkd-etc-systemd")
	for _, c := range [][]string{
		{"cp", "-a", "/etc/systemd", dir},
		{"rm", "-rf", dir + "/network", dir + "/networkd.conf.d"},
		{"mkdir", dir + "/network"},
	} {
		if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	pid := startNetworkd(t, ctx, l, lab.RoleNew, dir)
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	head := fmt.Sprintf("WARNING host new: systemd-networkd runs there (pid %d) with ManageForeignRoutingPolicyRules=yes and ManageForeignRoutes=yes: it removes migrate's policy rules and routes", pid)
	for _, s := range []string{head, "`" + plan.NetworkdFix + "`", "`systemctl restart systemd-networkd` (restart it before migrate apply", "the data path stops"} {
		if !strings.Contains(r.Stdout, s) {
			t.Errorf("plan does not say %q:\n%s", s, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "WARNING host old: systemd-networkd") {
		t.Errorf("plan warns about networkd on OLD, where none runs in its namespace:\n%s", r.Stdout)
	}
	if _, err := os.Stat(dir + "/networkd.conf.d"); err == nil {
		t.Errorf("plan wrote into networkd's configuration")
	}

	// The operator's fix, as given (into the private copy, which networkd
	// sees as /etc/systemd), then the restart: a new networkd.
	fix := strings.ReplaceAll(plan.NetworkdFix, "/etc/systemd/", dir+"/")
	if out, err := exec.CommandContext(ctx, "sh", "-c", fix).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", fix, err, out)
	}
	// Only one networkd at a time: stop the first (its cleanup is then
	// a no-op), start the second.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if err := syscall.Kill(pid, 0); err != nil {
			break
		}
		if i > 100 {
			t.Fatalf("networkd (pid %d) did not stop", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pid2 := startNetworkd(t, ctx, l, lab.RoleNew, dir)
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if strings.Contains(r.Stdout, "systemd-networkd") {
		t.Errorf("plan still warns about networkd (pid %d) with both settings no:\n%s", pid2, r.Stdout)
	}
}
