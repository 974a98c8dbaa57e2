package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestNAT moves a service with NEW, then OLD, then both behind the lab
// router's 1:1 NAT (a cloud provider's: each NATed host holds only a
// private address and the router maps its public address onto it). The
// plan names only the public endpoints; migrate finds what each NATed
// host's tunnel binds and says so. The client dials OLD's public address
// and NEW sees the client's own address; rollback leaves both hosts byte
// for byte as they were.
func TestNAT(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	for _, nat := range [][]string{{lab.RoleNew}, {lab.RoleOld}, {lab.RoleOld, lab.RoleNew}} {
		t.Run(strings.Join(nat, "+"), func(t *testing.T) { natCase(t, nat) })
	}
}

func natCase(t *testing.T, nat []string) {
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	l, err := lab.New(ctx, lab.Options{Prefix: "mgn", NAT: nat})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	s, err := scenario.Setup(ctx, l)
	if err != nil {
		t.Fatalf("scenario: %v", err)
	}
	oldHeld := l.Held(lab.RoleOld)
	service := func(addr string) string {
		return fmt.Sprintf("service \"web\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n", addr, scenario.MigratedPort)
	}
	// The endpoints are the public addresses: what each peer sends to.
	tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", l.OldIP, l.NewIP)
	write := func(svcAddr string) {
		t.Helper()
		if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, service(svcAddr))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "old")

	natInit(t, ctx, s)

	if l.OldPrivIP.IsValid() {
		// The public address as the service address: refused, naming
		// the address OLD holds, and no host touched.
		write(l.OldIP.String())
		r := mustMigrate(t, ctx, s, 1, "plan", "-f", s.PlanFile)
		want := fmt.Sprintf("OLD is behind NAT: it holds %s", oldHeld)
		if !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, fmt.Sprintf("write address = %q", oldHeld.String())) {
			t.Errorf("plan with OLD's public address as the service address:\nstdout:\n%s\nstderr:\n%s\nwant %q", r.Stdout, r.Stderr, want)
		}
		after, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		diffSnap(t, "a refused plan must not change hosts", before, after)
	}
	write(oldHeld.String())

	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	t.Logf("plan:\n%s", r.Stdout)
	for _, h := range []struct {
		role, upper, peer string
		public            string
	}{{lab.RoleNew, "NEW", "OLD", l.NewIP.String()}, {lab.RoleOld, "OLD", "NEW", l.OldIP.String()}} {
		held := l.Held(h.role).String()
		note := fmt.Sprintf("%s is behind NAT: its tunnel binds %s (its source address towards %s, an address it holds), and %s sends to %s.", h.upper, held, h.peer, h.peer, h.public)
		natted := held != h.public
		if got := strings.Contains(r.Stdout, note); got != natted {
			t.Errorf("plan output: NAT note for %s present=%v, want %v (%q):\n%s", h.upper, got, natted, note, r.Stdout)
		}
		// The link binds what the host holds and sends to the peer's
		// public endpoint.
		if want := "type vxlan local " + held + " remote "; !strings.Contains(r.Stdout, want) {
			t.Errorf("plan output lacks %q:\n%s", want, r.Stdout)
		}
	}

	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("apply:\n%s", r.Stdout)
	if !strings.Contains(r.Stdout, "tunnel verified in both directions") {
		t.Errorf("apply did not report the tunnel check:\n%s", r.Stdout)
	}
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW does not see the client's address: %q", out)
	}
	expectServed(t, ctx, s, scenario.StayPort, "old")
	// The underlay filter accepts the peer's packets as they arrive
	// (after the NATs): nothing of the tunnel was dropped as forged.
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		b, err := l.Exec(ctx, role, "nft", "list", "table", "inet", "migrate")
		if err != nil {
			t.Fatalf("%s: nft list: %v: %s", role, err, b)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "counter") && strings.Contains(line, "drop") && strings.Contains(line, "udp dport 4789") && !strings.Contains(line, "packets 0 ") {
				t.Errorf("%s: the underlay filter dropped tunnel packets: %s", role, strings.TrimSpace(line))
			}
		}
	}
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "No changes") {
		t.Errorf("plan after apply:\n%s", r.Stdout)
	}

	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	t.Logf("rollback:\n%s", r.Stdout)
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback", before, after)
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}

// natInit runs init against the NATed lab: the endpoints it writes are
// the public addresses (what each peer sends to), OLD's services are at
// the address OLD holds, the SSH port stays commented out there, it says
// which host is behind NAT, and the plan it writes plans. gre is refused.
func natInit(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	t.Helper()
	l := s.Lab
	out := filepath.Join(l.Dir, "init.hcl")
	args := []string{"init", "--old", "root@" + l.OldIP.String(), "--new", "root@" + l.NewIP.String(),
		"--identity-file", l.IdentityFile, "--known-hosts", l.KnownHosts}
	r := mustMigrate(t, ctx, s, 1, append(args, "--tunnel", "gre", "-o", out)...)
	if !strings.Contains(r.Stderr, "is behind NAT") || !strings.Contains(r.Stderr, "use --tunnel vxlan") {
		t.Errorf("init --tunnel gre behind NAT:\n%s", r.Stderr)
	}
	r = mustMigrate(t, ctx, s, 0, append(args, "-o", out)...)
	t.Logf("init:\n%s", r.Stdout)
	cfg, err := config.Load(out)
	if err != nil {
		t.Fatalf("the generated plan does not validate: %v", err)
	}
	if cfg.Tunnel.Type != "vxlan" || cfg.Tunnel.OldEndpoint != l.OldIP || cfg.Tunnel.NewEndpoint != l.NewIP {
		t.Errorf("init tunnel: %s %s -> %s; want vxlan between the public addresses %s and %s", cfg.Tunnel.Type, cfg.Tunnel.OldEndpoint, cfg.Tunnel.NewEndpoint, l.OldIP, l.NewIP)
	}
	held := l.Held(lab.RoleOld)
	found := false
	for _, sv := range cfg.Services {
		if sv.Address != held {
			t.Errorf("init wrote service %q at %s; OLD holds %s", sv.Name, sv.Address, held)
		}
		for _, p := range sv.Ports {
			if p.From <= 22 && 22 <= p.To {
				t.Errorf("init wrote the SSH port as service %q", sv.Name)
			}
			if p.From == scenario.MigratedPort {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("init did not write port %d at %s", scenario.MigratedPort, held)
	}
	for _, h := range []struct {
		role, upper string
		priv        bool
	}{{lab.RoleOld, "OLD", l.OldPrivIP.IsValid()}, {lab.RoleNew, "NEW", l.NewPrivIP.IsValid()}} {
		msg := fmt.Sprintf("%s is behind NAT: it holds %s", h.upper, l.Held(h.role))
		if strings.Contains(r.Stdout, msg) != h.priv {
			t.Errorf("init output: %q present=%v, want %v:\n%s", msg, !h.priv, h.priv, r.Stdout)
		}
	}
	mustMigrate(t, ctx, s, 2, "plan", "-f", out, "--state", filepath.Join(l.Dir, "init.state.json"), "--detailed-exitcode")
}
