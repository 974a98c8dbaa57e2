package config

import (
	"net/netip"
	"strings"
	"testing"
)

func natTunnel(extra string) string {
	return hostsOnly + `
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
` + extra + `}
`
}

func TestBindOverride(t *testing.T) {
	cfg := mustParse(t, natTunnel("  new_bind     = \"198.18.0.20\"\n  old_bind     = \"198.18.1.10\"\n"))
	if cfg.Tunnel.NewBind != netip.MustParseAddr("198.18.0.20") || cfg.Tunnel.OldBind != netip.MustParseAddr("198.18.1.10") {
		t.Fatalf("binds = %v, %v", cfg.Tunnel.OldBind, cfg.Tunnel.NewBind)
	}
	// Rendered back, the binds survive.
	out := string(Render(cfg))
	if !strings.Contains(out, `new_bind`) || !strings.Contains(out, `"198.18.1.10"`) {
		t.Errorf("render lost the binds:\n%s", out)
	}
	if cfg := mustParse(t, natTunnel("")); cfg.Tunnel.OldBind.IsValid() || cfg.Tunnel.NewBind.IsValid() {
		t.Errorf("binds set without the keys: %+v", cfg.Tunnel)
	}
}

func TestBindErrors(t *testing.T) {
	// The tunnel block opens on line 8 of natTunnel's text; its keys
	// after the endpoints are at line 12.
	for _, tc := range []struct{ name, extra, at, want string }{
		{"bad address", "  new_bind = \"198.18.0\"\n", "migration.hcl:12:14", `invalid new_bind "198.18.0" in tunnel`},
		{"wrong family", "  old_bind = \"2001:db8::1\"\n", "migration.hcl:12:14", `old_bind 2001:db8::1 is IPv6 but the tunnel endpoints are IPv4`},
		{"an endpoint", "  new_bind = \"203.0.113.20\"\n", "migration.hcl:12:14", `new_bind 203.0.113.20 is a tunnel endpoint`},
		{"same twice", "  old_bind = \"198.18.0.20\"\n  new_bind = \"198.18.0.20\"\n", "migration.hcl:13:3", `new_bind 198.18.0.20 is the same as old_bind`},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErrorAt(t, natTunnel(tc.extra), tc.at, tc.want) })
	}
}

// A service at OLD's public address when old_bind says OLD is behind NAT
// is refused offline, naming the private address.
func TestNATServiceAddress(t *testing.T) {
	svc := `
service "web" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [80]
  stage    = "new"
}
`
	src := natTunnel("  old_bind     = \"198.18.1.10\"\n") + svc
	wantErrorAt(t, src, "migration.hcl:15:1", `service "web": address 198.51.100.10 is OLD's public address (old_endpoint), but OLD is behind NAT and holds 198.18.1.10 (old_bind); a service address is the one OLD's kernel sees`)
	mustParse(t, natTunnel("  old_bind     = \"198.18.1.10\"\n")+strings.Replace(svc, "198.51.100.10", "198.18.1.10", 1))
}
