package ops

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// InitPlan, whole, on two fake hosts: the plan it writes parses, holds
// OLD's services (migrate's own SSH port commented out), and a tunnel
// between the addresses each host uses towards the other, or, for a host
// behind NAT, the address it was reached at.
func TestInitPlan(t *testing.T) {
	ctx := context.Background()
	hosts := loadTestConfig(t).Hosts
	oldListens := []state.Listener{
		{Proto: "tcp", Addr: "0.0.0.0", Port: 22, Process: "sshd"},
		{Proto: "tcp", Addr: "198.51.100.10", Port: 8080, Process: "web"},
		{Proto: "udp", Addr: "127.0.0.1", Port: 53, Process: "dnsmasq"},
	}
	run := func(t *testing.T, f *fakeHosts, tunnel string, oe, ne netip.Addr) (*config.Config, string, error) {
		t.Helper()
		f.listeners[plan.Old] = oldListens
		s := NewSession(ConfigTargets(hosts, time.Second), f.dial)
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		before := dumps(f)
		text, summary, err := InitPlan(ctx, s, &config.Config{Hosts: hosts}, state.TunnelType(tunnel), oe, ne)
		if dumps(f) != before || len(f.hosts[plan.Old].Applied)+len(f.hosts[plan.New].Applied) > 0 {
			t.Error("init changed a host")
		}
		if err != nil {
			return nil, "", err
		}
		cfg, perr := config.Parse(text, "init.hcl")
		if perr != nil {
			t.Fatalf("the written plan does not parse: %v\n%s", perr, text)
		}
		return cfg, strings.Join(summary, "\n"), nil
	}

	t.Run("routed hosts", func(t *testing.T) {
		f := newFakeHosts()
		f.routeSrc = map[string]string{plan.Old: "198.51.100.10", plan.New: "203.0.113.20"}
		cfg, summary, err := run(t, f, "vxlan", netip.Addr{}, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		if tu := cfg.Tunnel; tu.Type != "vxlan" || tu.OldEndpoint.String() != "198.51.100.10" || tu.NewEndpoint.String() != "203.0.113.20" {
			t.Errorf("tunnel %+v", tu)
		}
		if len(cfg.Services) != 1 || cfg.Services[0].Name != "web-tcp" || cfg.Services[0].Stage != "old" {
			t.Errorf("services %+v (want web-tcp only: sshd's port 22 is migrate's own)", cfg.Services)
		}
		for _, want := range []string{`service "sshd-ssh": commented out`, "left out: udp 127.0.0.1:53 (dnsmasq): loopback only"} {
			if !strings.Contains(summary, want) {
				t.Errorf("summary lacks %q:\n%s", want, summary)
			}
		}
	})

	t.Run("OLD behind NAT", func(t *testing.T) {
		f := newFakeHosts()
		f.reached[plan.Old] = "192.0.2.99" // its public address; it holds 198.51.100.10
		f.routeSrc = map[string]string{plan.Old: "198.51.100.10", plan.New: "203.0.113.20"}
		cfg, summary, err := run(t, f, "vxlan", netip.Addr{}, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Tunnel.OldEndpoint.String() != "192.0.2.99" || !strings.Contains(summary, "OLD is behind NAT: it holds 198.51.100.10 and was reached at 192.0.2.99") {
			t.Errorf("endpoint %s, summary:\n%s", cfg.Tunnel.OldEndpoint, summary)
		}
		if _, _, err := run(t, f, "gre", netip.Addr{}, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "behind NAT") {
			t.Errorf("gre behind NAT: %v", err)
		}
	})

	t.Run("endpoints", func(t *testing.T) {
		f := newFakeHosts()
		// No route lookups: the operator's endpoints are used as given.
		cfg, _, err := run(t, f, "vxlan", netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("203.0.113.20"))
		if err != nil || cfg.Tunnel.NewEndpoint.String() != "203.0.113.20" {
			t.Fatalf("given endpoints: %v", err)
		}
		// A route lookup that fails names the flag that avoids it.
		if _, _, err := run(t, f, "vxlan", netip.Addr{}, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "--old-endpoint") {
			t.Errorf("failed lookup: %v", err)
		}
		f.routeSrc = map[string]string{plan.Old: "198.51.100.10", plan.New: "198.51.100.10"}
		if _, _, err := run(t, f, "vxlan", netip.Addr{}, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "both tunnel endpoints came out as 198.51.100.10") {
			t.Errorf("equal endpoints: %v", err)
		}
	})
}

// Init, whole, on two fake hosts: bad input is refused before any host
// is dialled and nothing is written; good input writes a plan that parses.
func TestInit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := func(out string) InitOptions {
		return InitOptions{Old: "root@198.51.100.10", New: "root@203.0.113.20", KnownHosts: "/dev/null",
			Out: filepath.Join(dir, out), Timeout: time.Second}
	}
	exists := opts("exists.hcl")
	if err := os.WriteFile(exists.Out, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	noNew, badEP, loopEP, badHost := opts("a.hcl"), opts("b.hcl"), opts("c.hcl"), opts("d.hcl")
	noNew.New = ""
	badEP.OldEndpoint = "198.51.100"
	loopEP.NewEndpoint = "::1"
	badHost.Old = "root@"
	for _, c := range []struct {
		o    InitOptions
		want string
	}{
		{noNew, "init needs --old and --new"},
		{exists, "exists.hcl exists; choose another file with -o, or overwrite it with --force"},
		{badEP, `--old-endpoint "198.51.100": want the host's own unicast IP address`},
		{loopEP, `--new-endpoint "::1": want the host's own unicast IP address`},
		{badHost, `invalid ssh "root@" in host "old": missing host`},
	} {
		f := newFakeHosts()
		_, err := Init(ctx, f.dial, c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
		if strings.Contains(err.Error(), "--old/--new:") {
			t.Errorf("the error cites a position in a text the user never wrote: %v", err)
		}
		if len(f.dials) > 0 {
			t.Errorf("%+v: hosts dialled %v before the input was checked", c.o, f.dials)
		}
		if _, serr := os.Stat(c.o.Out); c.o.Out != exists.Out && serr == nil {
			t.Errorf("%s written on error", c.o.Out)
		}
	}
	if b, _ := os.ReadFile(exists.Out); string(b) != "keep" {
		t.Errorf("existing file changed without --force: %q", b)
	}

	f := newFakeHosts()
	f.listeners[plan.Old] = []state.Listener{{Proto: "tcp", Addr: "198.51.100.10", Port: 8080, Process: "web"}}
	f.routeSrc = map[string]string{plan.Old: "198.51.100.10", plan.New: "203.0.113.20"}
	exists.Force = true
	summary, err := Init(ctx, f.dial, exists)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(exists.Out)
	if err != nil {
		t.Fatalf("written plan: %v", err)
	}
	if len(cfg.Services) != 1 || cfg.Services[0].Name != "web-tcp" || cfg.Hosts[plan.Old].Address != "198.51.100.10" || len(summary) == 0 {
		t.Errorf("written plan: services %+v, hosts %+v, summary %q", cfg.Services, cfg.Hosts, summary)
	}
}
