package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// udevadmPaths are where the test finds udevd: the udev package's, or the
// files scripts/deps.sh unpacks without installing the package.
var udevadmPaths = []string{"/var/cache/migrate-udev/bin/udevadm", "/bin/udevadm", "/usr/bin/udevadm"}

// TestSysctlGlobsAndUdev: a hardened image's `net.ipv4.conf.*.rp_filter = 1`
// in /etc/sysctl.d. Every systemd host runs udevd, whose rules
// (99-systemd.rules) run systemd-sysctl for each new network interface:
// milliseconds after migrate creates its tunnel device, and after it set
// the device's rp_filter to 2, the glob set it to 1 (strict), and the
// reverse-path check dropped the tunnel's packets on both hosts: the moved
// service never answered. The agent now waits for udevd to handle a device
// it made before setting the device's sysctls, and plan warns of the glob
// (which `sysctl --system` applies again mid-migration). udevd runs here
// only in the lab hosts' network and mount namespaces, with that one rule.
func TestSysctlGlobsAndUdev(t *testing.T) {
	needRoot(t)
	udevadm := ""
	for _, p := range udevadmPaths {
		if _, err := os.Stat(p); err == nil {
			udevadm = p
			break
		}
	}
	if udevadm == "" {
		t.Fatalf("no udevadm in %v: run scripts/deps.sh (it unpacks Debian's udev package into /var/cache/migrate-udev)", udevadmPaths)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// udevd finds itself by its name (comm): run udevadm as systemd-udevd,
	// as the udev package's symlink does.
	bin := t.TempDir()
	if err := os.Symlink(udevadm, filepath.Join(bin, "systemd-udevd")); err != nil {
		t.Fatal(err)
	}
	rules := t.TempDir()
	if err := os.WriteFile(filepath.Join(rules, "99-systemd.rules"), []byte(`ACTION=="add", SUBSYSTEM=="net", KERNEL!="lo", RUN+="/lib/systemd/systemd-sysctl --prefix=/net/ipv4/conf/$name --prefix=/net/ipv4/neigh/$name --prefix=/net/ipv6/conf/$name --prefix=/net/ipv6/neigh/$name"`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// /run/udev must exist to mount over it in the hosts' mount
	// namespaces; this machine runs no udevd, so it is made and removed.
	if _, err := os.Stat("/run/udev"); os.IsNotExist(err) {
		if err := os.Mkdir("/run/udev", 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove("/run/udev") })
	}
	const conf = "/etc/sysctl.d/60-hardening.conf"
	logs := map[string]string{}
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		pid := sshdPid(t, l, role)
		in := func(cmd string) {
			t.Helper()
			if out, err := exec.CommandContext(ctx, "nsenter", "-t", pid, "-m", "sh", "-c", cmd).CombinedOutput(); err != nil {
				t.Fatalf("in %s's mount namespace: %s: %v\n%s", role, cmd, err, out)
			}
		}
		in("mount -t tmpfs -o size=1m migrate-test /etc/sysctl.d && printf '# hardening\\nnet.ipv4.conf.*.rp_filter = 1\\n' > " + conf)
		in("mount -t tmpfs -o size=4m migrate-test /run/udev && mount --bind " + rules + " /usr/lib/udev/rules.d")
		t.Cleanup(func() {
			_ = exec.Command("nsenter", "-t", pid, "-m", "umount", "-l", "/etc/sysctl.d", "/run/udev", "/usr/lib/udev/rules.d").Run()
		})
		// udevd in the host's network namespace (it sees only that
		// namespace's uevents) and mount namespace (its /run/udev, rules
		// and sysctl files are the ones mounted above).
		logs[role] = filepath.Join(l.Dir, role+"-udevd.log")
		logf, err := os.Create(logs[role])
		if err != nil {
			t.Fatal(err)
		}
		udevd := exec.Command("nsenter", "-t", pid, "-m", "-n", "--", filepath.Join(bin, "systemd-udevd"), "--debug")
		udevd.Stdout, udevd.Stderr = logf, logf
		if err := udevd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = udevd.Process.Kill()
			_ = udevd.Wait()
			logf.Close()
		})
		waitFor(t, ctx, role+"'s udevd control socket", func() bool {
			return exec.Command("nsenter", "-t", pid, "-m", "test", "-S", "/run/udev/control").Run() == nil
		})
	}

	r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	for _, host := range []string{"old", "new"} {
		want := fmt.Sprintf("WARNING host %s: %s:2 sets net.ipv4.conf.*.rp_filter = 1, which covers net.ipv4.conf.mig0.rp_filter, and migrate sets 2.", host, conf)
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("plan does not warn of the glob on %s (%q):\n%s", host, want, r.Stdout)
		}
	}
	mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", s.PlanFile)
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		// udevd did handle the device (else this test shows nothing).
		b, _ := os.ReadFile(logs[role])
		if !strings.Contains(string(b), "mig0: Process '/lib/systemd/systemd-sysctl --prefix=/net/ipv4/conf/mig0") {
			t.Errorf("%s's udevd did not run systemd-sysctl for mig0; its log:\n%s", role, b)
		}
		out, err := exec.CommandContext(ctx, "nsenter", "-t", sshdPid(t, l, role), "-n", "cat", "/proc/sys/net/ipv4/conf/mig0/rp_filter").CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != "2" {
			t.Errorf("%s: mig0's rp_filter after apply: %q %v, want 2 (migrate's, set after udev's)", role, got, err)
		}
	}
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW's server saw %q, want the client's address %s", out, l.ClientIP)
	}
	// What the wait prevents, done by hand on OLD (the glob applied
	// again: sysctl --system): the moved service stops answering, and
	// status calls it BROKEN and says why.
	if out, err := exec.CommandContext(ctx, "nsenter", "-t", sshdPid(t, l, lab.RoleOld), "-n", "sysctl", "-w", "net.ipv4.conf.mig0.rp_filter=1").CombinedOutput(); err != nil {
		t.Fatalf("old: %v %s", err, out)
	}
	if out, err := s.Dial(ctx, lab.RoleClient, fmt.Sprintf("%s:%d", l.OldIP, scenario.MigratedPort)); err == nil {
		t.Errorf("the moved service answers with OLD's mig0 strict: %s", out)
	}
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); !strings.Contains(r.Stdout, "OLD checks the reverse path strictly on mig0 (rp_filter: all 0, mig0 1; migrate sets mig0 to 2)") || !strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status with OLD's mig0 strict:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "--all", "-f", s.PlanFile)
	expectSnap(t, ctx, s, "rollback --all", before)
}

// sshdPid is the PID of the lab host role's sshd, whose network and
// mount namespaces its agents share.
func sshdPid(t *testing.T, l *lab.Lab, role string) string {
	t.Helper()
	out, err := exec.Command("pgrep", "-f", "sshd -D -e -f "+l.Dir+"/"+role+"_sshd_config").Output()
	f := strings.Fields(string(out))
	if err != nil || len(f) != 1 {
		t.Fatalf("%s's sshd: %v %q", role, err, out)
	}
	return f[0]
}
