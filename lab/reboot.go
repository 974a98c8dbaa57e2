package lab

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// SystemdDir is the unit directory of role's agent (MIGRATE_SYSTEMD_DIR in
// its SSH sessions): where apply installs the boot unit in the lab.
func (l *Lab) SystemdDir(role string) string {
	return filepath.Join(l.Dir, role+"-systemd")
}

// SystemdRuntime is what role's agent checks to decide that systemd is PID
// 1 (MIGRATE_SYSTEMD_RUNTIME). It does not exist unless a test creates it
// (SetSystemd): by default lab hosts have no systemd, and apply installs
// no boot unit.
func (l *Lab) SystemdRuntime(role string) string {
	return filepath.Join(l.Dir, role+"-run-systemd")
}

// SetSystemd makes role's agent see systemd as PID 1 (or not).
func (l *Lab) SetSystemd(role string, on bool) error {
	if !on {
		return os.RemoveAll(l.SystemdRuntime(role))
	}
	return os.MkdirAll(l.SystemdRuntime(role), 0o755)
}

// Reboot "reboots" old or new: every process in its namespace is killed
// and the namespace deleted, so all kernel state (links, addresses,
// rules, routes, nft tables, sysctls, conntrack) is gone; then it is made
// again with the lab's base configuration (what the host's own networking
// brings back at boot: eth0 with its addresses and default routes, lo up)
// and its sshd started again. Files survive, as on a disk: the state
// directory and the unit directory are kept. Nothing of migrate runs: the
// caller plays the boot unit.
func (l *Lab) Reboot(ctx context.Context, role string) error {
	if role != RoleOld && role != RoleNew {
		return fmt.Errorf("lab: only old and new can reboot, not %q", role)
	}
	if l.segment {
		// NEW's second link and OLD's bridge port are not remade yet.
		return fmt.Errorf("lab: a Segment lab cannot reboot its hosts")
	}
	name, err := l.nsName(role)
	if err != nil {
		return err
	}
	var lk *link
	for _, x := range l.links() {
		if x.role == role {
			x := x
			lk = &x
		}
	}
	l.logf("rebooting %s (%s)", role, name)
	if err := killNSProcs(name); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("lab: ip netns delete %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	// The veth pair goes with the namespace, but the kernel tears a
	// namespace down asynchronously, in one queue for the whole machine
	// (cleanup_net), which can take long on a busy one: delete the
	// router's end now (which takes its peer with it), and wait until it
	// is gone.
	rv := "v" + l.vethID + role[:1]
	_, _ = l.Exec(ctx, RoleRouter, "ip", "link", "del", rv)
	gone := time.Now().Add(time.Minute)
	for {
		if _, err := l.Exec(ctx, RoleRouter, "ip", "link", "show", rv); err != nil {
			break
		}
		if time.Now().After(gone) {
			return fmt.Errorf("lab: %s's link %s did not go away within a minute", role, rv)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("lab: ip netns add %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	for _, args := range nsInit {
		if _, err := l.Exec(ctx, role, args...); err != nil {
			return err
		}
	}
	for _, c := range l.linkCommands(*lk) {
		if _, err := l.Exec(ctx, c.role, c.args...); err != nil {
			return err
		}
	}
	// Up as after a boot: the link's state and its IPv6 link-local
	// address come through linkwatch, up to a second after `ip link set
	// up`.
	for up := time.Now().Add(30 * time.Second); ; {
		link, err := l.Exec(ctx, role, "ip", "-o", "link", "show", "dev", "eth0")
		addrs, aerr := l.Exec(ctx, role, "ip", "-o", "addr", "show", "dev", "eth0")
		out := append(link, addrs...)
		if err == nil && aerr == nil && bytes.Contains(link, []byte("state UP")) && bytes.Contains(addrs, []byte("inet6 fe80")) {
			break
		}
		if time.Now().After(up) {
			return fmt.Errorf("lab: %s's eth0 did not come up: %s", role, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd, err := l.Command(role, l.sshd[role]...)
	if err != nil {
		return err
	}
	lf, err := os.OpenFile(l.SSHDLog[role], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	err = l.startCmd(cmd, true)
	lf.Close()
	if err != nil {
		return err
	}
	addr := l.OldIP
	if role == RoleNew {
		addr = l.NewIP
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := l.waitSSHD(wctx, role, netip.AddrPortFrom(addr, 22).String()); err != nil {
		return fmt.Errorf("lab: sshd in %s not reachable after the reboot: %w", name, err)
	}
	l.logf("%s is up again", role)
	return nil
}
