package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Readdress gives role (old or new) another IPv4 address on its link to
// the router, as a cloud VM that was stopped and started comes back with
// a new public address: the router's side of the link gets gw (with the
// prefix's length) unless it holds it already, the host gets addr on eth0
// and its default route via gw, and then every other IPv4 address of
// eth0 is removed (the previous one is gone: packets to it reach no one).
// The host's SSH follows: unless something listens on addr:22 already,
// a second sshd of the host (its configuration with ListenAddress addr,
// the same host key) is started there, and KnownHosts gains addr.
//
// The lab's fields (OldIP, NewIP, ...) keep the addresses the lab was
// built with, and Reboot brings those back. Readdress with the original
// address and gateway undoes it (the first sshd still listens there).
// Nothing outside the lab's namespaces changes.
func (l *Lab) Readdress(ctx context.Context, role string, addr netip.Prefix, gw netip.Addr) error {
	if role != RoleOld && role != RoleNew {
		return fmt.Errorf("lab: only old and new can change address, not %q", role)
	}
	if !addr.Addr().Is4() || !gw.Is4() || !addr.Contains(gw) || addr.Addr() == gw {
		return fmt.Errorf("lab: readdress %s: want an IPv4 prefix holding a distinct gateway %s", addr, gw)
	}
	if l.segment || l.nat[role] {
		return fmt.Errorf("lab: readdress is for the plain lab (no Segment, no NAT)")
	}
	rv := l.RouterIf(role)
	have, err := l.Exec(ctx, RoleRouter, "ip", "-4", "-o", "addr", "show", "dev", rv)
	if err != nil {
		return err
	}
	if !strings.Contains(string(have), " inet "+gw.String()+"/") {
		gwp := netip.PrefixFrom(gw, addr.Bits())
		if _, err := l.Exec(ctx, RoleRouter, "ip", "addr", "add", gwp.String(), "dev", rv); err != nil {
			return err
		}
	}
	old, err := l.Exec(ctx, role, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		return err
	}
	if !strings.Contains(string(old), " inet "+addr.String()+" ") {
		if _, err := l.Exec(ctx, role, "ip", "addr", "add", addr.String(), "dev", "eth0"); err != nil {
			return err
		}
	}
	if _, err := l.Exec(ctx, role, "ip", "route", "replace", "default", "via", gw.String(), "dev", "eth0"); err != nil {
		return err
	}
	for _, line := range strings.Split(string(old), "\n") {
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" && f[i+1] != addr.String() {
				if _, err := l.Exec(ctx, role, "ip", "addr", "del", f[i+1], "dev", "eth0"); err != nil {
					return err
				}
			}
		}
	}
	l.logf("%s: eth0 is now %s, default via %s", role, addr, gw)
	return l.sshdAt(ctx, role, addr.Addr())
}

// sshdAt makes role's sshd reachable on a:22 (see Readdress).
func (l *Lab) sshdAt(ctx context.Context, role string, a netip.Addr) error {
	ap := netip.AddrPortFrom(a, 22).String()
	ls, err := l.Exec(ctx, role, "ss", "-Hltn", "sport = :22")
	if err != nil {
		return err
	}
	if !strings.Contains(string(ls), " "+ap+" ") {
		cfg := filepath.Join(l.Dir, role+"_sshd_config")
		b, err := os.ReadFile(cfg)
		if err != nil {
			return err
		}
		var lines []string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "ListenAddress ") {
				line = "ListenAddress " + ap
			}
			lines = append(lines, line)
		}
		cfg2 := filepath.Join(l.Dir, role+"_sshd_config_"+sanitize(a.String()))
		if err := os.WriteFile(cfg2, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
			return err
		}
		var args []string
		for _, s := range l.sshd[role] {
			if s == cfg {
				s = cfg2
			}
			args = append(args, s)
		}
		cmd, err := l.Command(role, args...)
		if err != nil {
			return err
		}
		lf, err := os.OpenFile(l.SSHDLog[role], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = lf, lf
		l.logf("starting a second sshd in %s on %s", l.NS[role], ap)
		err = l.startCmd(cmd, true)
		lf.Close()
		if err != nil {
			return err
		}
	}
	pub, err := os.ReadFile(filepath.Join(l.Dir, role+"_host_ed25519.pub"))
	if err != nil {
		return err
	}
	f := strings.Fields(string(pub))
	if len(f) < 2 {
		return fmt.Errorf("lab: unexpected public key %q", pub)
	}
	kh, err := os.ReadFile(l.KnownHosts)
	if err != nil {
		return err
	}
	entry := a.String() + " " + f[0] + " " + f[1] + "\n"
	if !strings.Contains(string(kh), entry) {
		if err := os.WriteFile(l.KnownHosts, append(kh, entry...), 0o600); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := l.WaitTCP(wctx, RoleAdmin, ap); err != nil {
		return fmt.Errorf("lab: sshd of %s not reachable at %s: %w", role, ap, err)
	}
	return nil
}
