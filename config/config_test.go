package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

const fullExample = `# migration.hcl
host "old" {
  ssh           = "admin@198.51.100.10:2222"
  identity_file = "~/.ssh/id_ed25519"
  known_hosts   = "/etc/ssh/ssh_known_hosts"
  sudo          = true
}

host "new" {
  ssh = "root@[2001:db8::20]"
}

tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
  name         = "mig1"
  mtu          = 1450
  vni          = 100
  port         = 4790
  old_inner    = "169.254.7.1/30"
  new_inner    = "169.254.7.2/30"
  mark         = "0x40000"
  table        = 100
}

service "smtp" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [25, 465, "10000-10100"]
  stage    = "new"
}

service "dns" {
  address        = "198.51.100.10"
  protocol       = "udp"
  ports          = [53]
  stage          = "canary"
  canary_percent = 10
}

service "dns-tcp" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = ["53"]
  stage    = "old"
}

service "v6web" {
  address  = "2001:db8::10"
  protocol = "tcp"
  ports    = [80, 443]
  stage    = "new"
}
`

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(src), "migration.hcl")
	if err != nil {
		t.Fatalf("Parse: unexpected error:\n%v", err)
	}
	return cfg
}

// clearRanges zeroes source ranges so that values can be compared.
func clearRanges(cfg *Config) {
	for _, h := range cfg.Hosts {
		h.Range = hcl.Range{}
	}
	if cfg.Tunnel != nil {
		cfg.Tunnel.Range = hcl.Range{}
	}
	for _, s := range cfg.Services {
		s.Range, s.PortsRange = hcl.Range{}, hcl.Range{}
	}
	for _, f := range cfg.Forwards {
		f.Range, f.PortsRange = hcl.Range{}, hcl.Range{}
	}
}

func TestParseFullExample(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	cfg := mustParse(t, fullExample)

	if got := cfg.Hosts["old"].Range; got.Start.Line != 2 || got.Start.Column != 1 || got.End.Line != 7 {
		t.Errorf("host old range = %v, want lines 2..7", got)
	}
	if got := cfg.Services[0].PortsRange; got.Start.Line != 30 || got.Start.Column != 14 {
		t.Errorf("smtp ports range = %v, want 30:14", got)
	}
	if got := cfg.Tunnel.Range; got.Start.Line != 13 {
		t.Errorf("tunnel range = %v, want line 13", got)
	}
	clearRanges(cfg)

	want := &Config{
		Path: "migration.hcl",
		Hosts: map[string]*Host{
			"old": {
				Name: "old", User: "admin", Address: "198.51.100.10", Port: 2222,
				IdentityFile: filepath.Join(home, ".ssh/id_ed25519"),
				KnownHosts:   "/etc/ssh/ssh_known_hosts",
				Sudo:         true,
			},
			"new": {
				Name: "new", User: "root", Address: "2001:db8::20", Port: 22,
				KnownHosts: filepath.Join(home, ".ssh/known_hosts"),
			},
		},
		Tunnel: &Tunnel{
			Type:        "vxlan",
			OldEndpoint: netip.MustParseAddr("198.51.100.10"),
			NewEndpoint: netip.MustParseAddr("203.0.113.20"),
			Name:        "mig1",
			MTU:         1450,
			VNI:         100,
			Port:        4790,
			OldInner:    netip.MustParsePrefix("169.254.7.1/30"),
			NewInner:    netip.MustParsePrefix("169.254.7.2/30"),
			Mark:        0x40000,
			Table:       100,
		},
		Services: []*Service{
			{
				Name: "smtp", Address: netip.MustParseAddr("198.51.100.10"), Protocol: "tcp",
				Ports: []PortRange{{25, 25}, {465, 465}, {10000, 10100}}, Stage: "new",
			},
			{
				Name: "dns", Address: netip.MustParseAddr("198.51.100.10"), Protocol: "udp",
				Ports: []PortRange{{53, 53}}, Stage: "canary", CanaryPercent: 10,
			},
			{
				Name: "dns-tcp", Address: netip.MustParseAddr("198.51.100.10"), Protocol: "tcp",
				Ports: []PortRange{{53, 53}}, Stage: "old",
			},
			{
				Name: "v6web", Address: netip.MustParseAddr("2001:db8::10"), Protocol: "tcp",
				Ports: []PortRange{{80, 80}, {443, 443}}, Stage: "new",
			},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Parse mismatch\n got: %s\nwant: %s", dump(cfg), dump(want))
	}
}

func dump(c *Config) string {
	var b strings.Builder
	b.WriteString(c.Path + "\n")
	for _, n := range []string{"old", "new"} {
		fmt.Fprintf(&b, "%+v\n", c.Hosts[n])
	}
	fmt.Fprintf(&b, "%+v\n", c.Tunnel)
	for _, s := range c.Services {
		fmt.Fprintf(&b, "%+v\n", s)
	}
	for _, f := range c.Forwards {
		fmt.Fprintf(&b, "%+v\n", f)
	}
	return b.String()
}

func TestDefaults(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	cfg := mustParse(t, `
host "old" {
  ssh = "root@198.51.100.10"
}
host "new" {
  ssh = "deploy@new.example.com"
}
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
`)
	clearRanges(cfg)
	if len(cfg.Services) != 0 {
		t.Errorf("Services = %v, want none", cfg.Services)
	}
	wantNew := &Host{Name: "new", User: "deploy", Address: "new.example.com", Port: 22,
		KnownHosts: filepath.Join(home, ".ssh", "known_hosts")}
	if got := cfg.Hosts["new"]; !reflect.DeepEqual(got, wantNew) {
		t.Errorf("host new = %+v, want %+v", got, wantNew)
	}
	wantTunnel := &Tunnel{
		Type:        "vxlan",
		OldEndpoint: netip.MustParseAddr("198.51.100.10"),
		NewEndpoint: netip.MustParseAddr("203.0.113.20"),
		Name:        "mig0",
		VNI:         4242,
		Port:        4789,
		OldInner:    netip.MustParsePrefix("169.254.42.1/30"),
		NewInner:    netip.MustParsePrefix("169.254.42.2/30"),
		Mark:        0x20000,
		Table:       4242,
	}
	if !reflect.DeepEqual(cfg.Tunnel, wantTunnel) {
		t.Errorf("tunnel = %+v\nwant %+v", cfg.Tunnel, wantTunnel)
	}
}

func TestGRETunnel(t *testing.T) {
	cfg := mustParse(t, hostsOnly+`
tunnel {
  type         = "gre"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
  key          = "0x2a"
  mark         = 131072
}
`)
	tu := cfg.Tunnel
	if tu.Type != "gre" || tu.Key != 42 || tu.VNI != 0 || tu.Port != 0 || tu.Mark != 0x20000 {
		t.Errorf("gre tunnel = %+v; want key 42, no vni/port, mark 0x20000", tu)
	}
}

func TestWireGuardTunnel(t *testing.T) {
	cfg := mustParse(t, hostsOnly+`
tunnel {
  type         = "wireguard"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
`)
	tu := cfg.Tunnel
	if tu.Type != "wireguard" || tu.ListenPort != DefaultWGPort || tu.Key != 0 || tu.VNI != 0 || tu.Port != 0 {
		t.Errorf("wireguard tunnel = %+v; want listen port 51820, no key/vni/port", tu)
	}
	cfg = mustParse(t, hostsOnly+`
tunnel {
  type         = "wireguard"
  old_endpoint = "2001:db8:100::10"
  new_endpoint = "2001:db8:200::20"
  listen_port  = 40000
}
`)
	if cfg.Tunnel.ListenPort != 40000 {
		t.Errorf("wireguard listen_port = %d, want 40000", cfg.Tunnel.ListenPort)
	}
}

// A direct tunnel has no device: no name, no inner addresses, no
// encapsulation settings; mark and table keep their defaults or values.
func TestDirectTunnel(t *testing.T) {
	cfg := mustParse(t, hostsOnly+`
tunnel {
  type         = "direct"
  old_endpoint = "198.51.100.10"
  new_endpoint = "198.51.100.20"
  table        = 4300
}
`)
	tu := cfg.Tunnel
	if tu.Type != "direct" || tu.Name != "" || tu.OldInner.IsValid() || tu.NewInner.IsValid() || tu.VNI != 0 || tu.Port != 0 || tu.MTU != 0 ||
		tu.Mark != DefaultMark || tu.Table != 4300 || tu.NewEndpoint.String() != "198.51.100.20" {
		t.Errorf("direct tunnel = %+v; want no device, no inner addresses, default mark, table 4300", tu)
	}
	out := string(Render(cfg))
	for _, no := range []string{"name", "inner", "vni", "port"} {
		if strings.Contains(out, no) {
			t.Errorf("rendered direct tunnel mentions %q:\n%s", no, out)
		}
	}
	back, err := Parse([]byte(out), "rendered.hcl")
	if err != nil || back.Tunnel.Type != "direct" || back.Tunnel.Table != 4300 {
		t.Fatalf("rendered direct tunnel does not parse back: %v\n%s", err, out)
	}
}

func TestIP6GRETunnel(t *testing.T) {
	cfg := mustParse(t, hostsOnly+`
tunnel {
  type         = "ip6gre"
  old_endpoint = "2001:db8:100::10"
  new_endpoint = "2001:db8:200::20"
  key          = 7
}
`)
	tu := cfg.Tunnel
	if tu.Type != "ip6gre" || tu.Key != 7 || tu.VNI != 0 || tu.Port != 0 ||
		tu.OldEndpoint != netip.MustParseAddr("2001:db8:100::10") || tu.NewEndpoint != netip.MustParseAddr("2001:db8:200::20") ||
		tu.OldInner != DefaultOldInner || tu.NewInner != DefaultNewInner || tu.Name != DefaultTunnelName || tu.MTU != 0 {
		t.Errorf("ip6gre tunnel = %+v; want key 7, no vni/port, IPv6 endpoints, default inner addresses, name and mtu", tu)
	}
	// Without a key: 0, no key on the wire.
	cfg = mustParse(t, hostsOnly+`
tunnel {
  type         = "ip6gre"
  old_endpoint = "2001:db8:100::10"
  new_endpoint = "2001:db8:200::20"
}
`)
	if cfg.Tunnel.Key != 0 {
		t.Errorf("ip6gre without key: key %d, want 0", cfg.Tunnel.Key)
	}
}

func TestMarkForms(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want uint32
	}{
		{`131072`, 0x20000},
		{`"0x20000"`, 0x20000},
		{`"0X1"`, 1},
		{`"131072"`, 0x20000},
		{`4294967295`, 0xffffffff},
	} {
		cfg := mustParse(t, hostsOnly+`
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
  mark         = `+tc.expr+`
}
`)
		if cfg.Tunnel.Mark != tc.want {
			t.Errorf("mark = %s: got %#x, want %#x", tc.expr, cfg.Tunnel.Mark, tc.want)
		}
	}
}

func TestSSHForms(t *testing.T) {
	for _, tc := range []struct {
		in         string
		user, host string
		port       int
	}{
		{"root@198.51.100.10", "root", "198.51.100.10", 22},
		{"root@198.51.100.10:2222", "root", "198.51.100.10", 2222},
		{"admin@[2001:db8::1]:22", "admin", "2001:db8::1", 22},
		{"admin@[2001:db8::1]", "admin", "2001:db8::1", 22},
		{"ops@old.example.com:22", "ops", "old.example.com", 22},
	} {
		user, host, port, reason := parseSSH(tc.in)
		if reason != "" || user != tc.user || host != tc.host || port != tc.port {
			t.Errorf("parseSSH(%q) = %q, %q, %d, %q; want %q, %q, %d", tc.in, user, host, port, reason, tc.user, tc.host, tc.port)
		}
	}
}

func TestSameServicePortsOnOtherProtocolOrAddress(t *testing.T) {
	cfg := mustParse(t, base+`service "a" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [53]
  stage    = "new"
}
service "b" {
  address  = "198.51.100.10"
  protocol = "udp"
  ports    = [53]
  stage    = "new"
}
service "c" {
  address  = "198.51.100.11"
  protocol = "tcp"
  ports    = ["1-65535"]
  stage    = "new"
}
`)
	if len(cfg.Services) != 3 || cfg.Services[2].Ports[0] != (PortRange{1, 65535}) {
		t.Errorf("services = %v", cfg.Services)
	}
}

func TestPortRangeString(t *testing.T) {
	if got := (PortRange{25, 25}).String(); got != "25" {
		t.Errorf("got %q, want 25", got)
	}
	if got := (PortRange{10000, 10100}).String(); got != "10000-10100" {
		t.Errorf("got %q, want 10000-10100", got)
	}
}

func TestLoadExample(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "examples", "basic.hcl"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Tunnel.Type != "vxlan" || len(cfg.Services) != 1 {
		t.Fatalf("unexpected config: tunnel %+v, %d services", cfg.Tunnel, len(cfg.Services))
	}
	s := cfg.Services[0]
	if s.Protocol != "tcp" || s.Stage != "new" || !reflect.DeepEqual(s.Ports, []PortRange{{8080, 8080}}) {
		t.Errorf("service = %+v; want tcp 8080 stage new", s)
	}
}

func TestLoadForwardExample(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "examples", "forward.hcl"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Tunnel == nil || len(cfg.Services) != 1 || len(cfg.Forwards) != 1 {
		t.Fatalf("unexpected config: tunnel %+v, %d services, %d forwards", cfg.Tunnel, len(cfg.Services), len(cfg.Forwards))
	}
	f := cfg.Forwards[0]
	if f.On != "old" || f.Protocol != "tcp" || f.To != netip.MustParseAddr("203.0.113.20") ||
		!reflect.DeepEqual(f.Ports, []PortRange{{80, 80}, {443, 443}}) || f.ToPort != 0 {
		t.Errorf("forward = %+v; want on old, tcp 80 and 443 to 203.0.113.20", f)
	}
}

// The examples are written in canonical form: migrate fmt leaves them alone.
func TestExamplesAreFormatted(t *testing.T) {
	for _, name := range []string{"basic.hcl", "forward.hcl"} {
		path := filepath.Join("..", "examples", name)
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Format(src, path)
		if err != nil {
			t.Fatalf("Format(%s): %v", name, err)
		}
		if string(out) != string(src) {
			t.Errorf("%s is not canonically formatted; Format gives:\n%s", name, out)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.hcl"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing file: err = %v, want fs.ErrNotExist", err)
	}
}

// hostsOnly is 6 lines; base is 11 lines, so text appended to base starts
// on line 12.
const hostsOnly = `host "old" {
  ssh = "root@198.51.100.10:22"
}
host "new" {
  ssh = "root@203.0.113.20"
}
`

const tunnelVXLAN = `tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
`

const base = hostsOnly + tunnelVXLAN

// tun builds a tunnel block (starting on line 7 after hostsOnly) from the
// lines given; the first given line is line 8.
func tun(lines ...string) string {
	return hostsOnly + "tunnel {\n" + strings.Join(lines, "\n") + "\n}\n"
}

// svc builds base plus one service "smtp" block: the header is line 12 and
// the first given line is line 13.
func svc(lines ...string) string {
	return base + "service \"smtp\" {\n" + strings.Join(lines, "\n") + "\n}\n"
}

const (
	sAddr  = `  address  = "198.51.100.10"`
	sProto = `  protocol = "tcp"`
	sPorts = `  ports    = [25]`
	sStage = `  stage    = "new"`
)

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		at   string // FILE:LINE:COL
		want string // key phrase on that line
	}{
		// Syntax.
		{"syntax error", "host \"old\" {\n  ssh = \n}\n", "migration.hcl:2:9", "Invalid expression"},
		{"unclosed block", "host \"old\" {\n  ssh = \"root@192.0.2.1\"\n", "migration.hcl:1:12", "Unclosed configuration block"},
		{"variables", svc(`  address  = var.addr`, sProto, sPorts, sStage), "migration.hcl:13:14", "Variables not allowed"},

		// Top level.
		{"unknown block", base + "servce \"x\" {}\n", "migration.hcl:12:1", `unknown block type "servce"; allowed: host, tunnel, service, forward; did you mean "service"?`},
		{"misspelt forward block", base + "froward \"x\" {}\n", "migration.hcl:12:1", `did you mean "forward"?`},
		{"top-level argument", base + "version = 1\n", "migration.hcl:12:1", `unknown argument "version" at the top level`},

		// Hosts.
		{"missing host new", "host \"old\" {\n  ssh = \"root@198.51.100.10\"\n}\n" + tunnelVXLAN, "migration.hcl:1:1", `missing host "new" block`},
		{"missing host old", "host \"new\" {\n  ssh = \"root@203.0.113.20\"\n}\n" + tunnelVXLAN, "migration.hcl:1:1", `missing host "old" block`},
		{"duplicate host", base + "host \"old\" {\n  ssh = \"root@192.0.2.1\"\n}\n", "migration.hcl:12:6", `duplicate host "old" block; there is exactly one host "old"; the first is at migration.hcl:1:1`},
		{"bad host name", base + "host \"mid\" {\n  ssh = \"root@192.0.2.1\"\n}\n", "migration.hcl:12:6", `invalid host name "mid"; host blocks are named "old" or "new"`},
		{"host without name", base + "host {\n  ssh = \"root@192.0.2.1\"\n}\n", "migration.hcl:12:1", "host block without a name"},
		{"ssh missing user", strings.Replace(base, "root@198.51.100.10:22", "198.51.100.10:22", 1), "migration.hcl:2:9", `invalid ssh "198.51.100.10:22" in host "old": missing user; write it as user@host[:port]`},
		{"ssh bad port", strings.Replace(base, "198.51.100.10:22", "198.51.100.10:99999", 1), "migration.hcl:2:9", `invalid port "99999"`},
		{"ssh bare IPv6", strings.Replace(base, "root@198.51.100.10:22", "root@2001:db8::1", 1), "migration.hcl:2:9", "IPv6 addresses must be in brackets"},
		{"ssh bad IPv4", strings.Replace(base, "root@198.51.100.10:22", "root@198.51.100.300", 1), "migration.hcl:2:9", `"198.51.100.300" is not a valid IPv4 address`},
		{"ssh missing", strings.Replace(base, `  ssh = "root@203.0.113.20"`, `  sudo = true`, 1), "migration.hcl:4:1", `missing required argument "ssh" in host "new"; add ssh = "root@198.51.100.10:22"`},
		{"unknown host argument", strings.Replace(base, `  ssh = "root@203.0.113.20"`, "  ssh = \"root@203.0.113.20\"\n  user = \"root\"", 1), "migration.hcl:6:3", `unknown argument "user" in host "new"; allowed: ssh, identity_file, known_hosts, sudo`},
		{"sudo not bool", strings.Replace(base, `  ssh = "root@203.0.113.20"`, "  ssh = \"root@203.0.113.20\"\n  sudo = \"yes\"", 1), "migration.hcl:6:10", `sudo in host "new" must be true or false`},
		{"identity ~user", strings.Replace(base, `  ssh = "root@203.0.113.20"`, "  ssh = \"root@203.0.113.20\"\n  identity_file = \"~bob/key\"", 1), "migration.hcl:6:19", `only "~/" is expanded`},

		// Tunnel.
		{"services without tunnel", hostsOnly + "service \"smtp\" {\n" + sAddr + "\n" + sProto + "\n" + sPorts + "\n" + sStage + "\n}\n",
			"migration.hcl:7:1", `services need a tunnel block; service "smtp" moves traffic to NEW through the tunnel; add tunnel {`},
		{"duplicate tunnel", base + "tunnel {\n}\n", "migration.hcl:12:1", "duplicate tunnel block; only one tunnel is allowed; the first is at migration.hcl:7:1"},
		{"tunnel type unknown", tun(`  type         = "ipip"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`), "migration.hcl:8:18", `invalid tunnel type "ipip"; use vxlan, gre, ip6gre, wireguard or direct (hosts on one segment)`},
		{"wireguard with key", tun(`  type         = "wireguard"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  key          = 7`), "migration.hcl:11:3", `key is not valid for wireguard tunnels; remove it; wireguard tunnels may set listen_port`},
		{"wireguard listen_port range", tun(`  type         = "wireguard"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  listen_port  = 0`), "migration.hcl:11:18", `the WireGuard listen port is 1..65535`},
		{"listen_port on vxlan", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  listen_port  = 51820`), "migration.hcl:11:3", `listen_port is only valid for wireguard tunnels`},
		{"mtu on direct", tun(`  type         = "direct"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "198.51.100.20"`, `  mtu          = 1400`), "migration.hcl:11:3", `mtu is not valid for direct tunnels; remove it; a direct tunnel has no device`},
		{"name on direct", tun(`  type         = "direct"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "198.51.100.20"`, `  name         = "mig0"`), "migration.hcl:11:3", `name is not valid for direct tunnels`},
		{"vni on direct", tun(`  type         = "direct"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "198.51.100.20"`, `  vni          = 7`), "migration.hcl:11:3", `vni is not valid for direct tunnels`},
		{"new_bind on direct", tun(`  type         = "direct"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "198.51.100.20"`, `  new_bind     = "198.18.0.20"`), "migration.hcl:11:3", `new_bind is not valid for direct tunnels`},
		{"old_inner on direct", tun(`  type         = "direct"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "198.51.100.20"`, `  old_inner    = "169.254.1.1/30"`), "migration.hcl:11:3", `old_inner is not valid for direct tunnels`},
		{"direct bad table", tun(`  type         = "direct"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "198.51.100.20"`, `  table        = 254`), "migration.hcl:11:18", `routing table 254 is reserved`},
		{"direct same endpoints", tun(`  type         = "direct"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "198.51.100.10"`), "migration.hcl:10:18", "is the same as old_endpoint"},
		{"tunnel type missing", tun(`  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`), "migration.hcl:7:1", `missing required argument "type" in tunnel`},
		{"bad endpoint", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.300"`, `  new_endpoint = "203.0.113.20"`), "migration.hcl:9:18", `invalid old_endpoint "198.51.100.300" in tunnel: not an IP address`},
		{"missing endpoint", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`), "migration.hcl:7:1", `missing required argument "new_endpoint" in tunnel`},
		{"endpoint families", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "2001:db8::2"`), "migration.hcl:10:18", "same address family"},
		{"same endpoints", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "198.51.100.10"`), "migration.hcl:10:18", "is the same as old_endpoint"},
		{"gre over IPv6", tun(`  type         = "gre"`, `  old_endpoint = "2001:db8::1"`, `  new_endpoint = "2001:db8::2"`), "migration.hcl:8:18", `gre tunnels need IPv4 endpoints; use type = "ip6gre" (or "vxlan") for IPv6 endpoints`},
		{"ip6gre over IPv4", tun(`  type         = "ip6gre"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`), "migration.hcl:8:18", `ip6gre tunnels need IPv6 endpoints; use type = "gre" (or "vxlan") for IPv4 endpoints`},
		{"vni on ip6gre", tun(`  type         = "ip6gre"`, `  old_endpoint = "2001:db8::1"`, `  new_endpoint = "2001:db8::2"`, `  vni          = 7`), "migration.hcl:11:3", `vni is only valid for vxlan tunnels; remove it, or set type = "vxlan"; ip6gre tunnels may set key`},
		{"port on ip6gre", tun(`  type         = "ip6gre"`, `  old_endpoint = "2001:db8::1"`, `  new_endpoint = "2001:db8::2"`, `  port         = 4789`), "migration.hcl:11:3", "port is only valid for vxlan tunnels"},
		{"ip6gre key range", tun(`  type         = "ip6gre"`, `  old_endpoint = "2001:db8::1"`, `  new_endpoint = "2001:db8::2"`, `  key          = 4294967296`), "migration.hcl:11:18", "a GRE key is a 32-bit number"},
		{"mtu ip6gre", tun(`  type         = "ip6gre"`, `  old_endpoint = "2001:db8::1"`, `  new_endpoint = "2001:db8::2"`, `  mtu          = 1200`), "migration.hcl:11:18", "the MTU is 1280..9000 with IPv6 endpoints"},
		{"vni on gre", tun(`  type         = "gre"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  vni          = 7`), "migration.hcl:11:3", "vni is only valid for vxlan tunnels"},
		{"port on gre", tun(`  type         = "gre"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  port         = 4789`), "migration.hcl:11:3", "port is only valid for vxlan tunnels"},
		{"key on vxlan", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  key          = 7`), "migration.hcl:11:3", "key is only valid for gre and ip6gre tunnels"},
		{"vni range", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  vni          = 16777216`), "migration.hcl:11:18", "invalid vni 16777216 in tunnel; a VNI is 1..16777215"},
		{"unknown tunnel argument", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  ttl          = 64`), "migration.hcl:11:3", `unknown argument "ttl" in tunnel; allowed: type, old_endpoint, new_endpoint, old_bind, new_bind, name, mtu, vni, port, key, listen_port, old_inner, new_inner, mark, table`},
		{"mtu IPv4", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  mtu          = 500`), "migration.hcl:11:18", "invalid mtu 500 in tunnel; the MTU is 576..9000 with IPv4 endpoints"},
		{"mtu IPv6", tun(`  type         = "vxlan"`, `  old_endpoint = "2001:db8::1"`, `  new_endpoint = "2001:db8::2"`, `  mtu          = 1000`), "migration.hcl:11:18", "the MTU is 1280..9000 with IPv6 endpoints"},
		{"name too long", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  name         = "migrate-tunnel-0"`), "migration.hcl:11:18", "longer than 15 characters"},
		{"name with slash", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  name         = "mig/0"`), "migration.hcl:11:18", `invalid tunnel name "mig/0"`},
		{"mark zero", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  mark         = 0`), "migration.hcl:11:18", "invalid mark 0 in tunnel; the mark is a nonzero 32-bit number"},
		{"mark bad hex", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  mark         = "0x1000000000"`), "migration.hcl:11:18", `invalid mark "0x1000000000"`},
		{"table reserved", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  table        = 254`), "migration.hcl:11:18", "routing table 254 is reserved"},
		{"table zero", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  table        = 0`), "migration.hcl:11:18", "invalid table 0 in tunnel"},
		{"inner other prefix", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  old_inner    = "10.9.0.1/30"`), "migration.hcl:11:18", "old_inner 10.9.0.1/30 and new_inner 169.254.42.2/30 are not in the same prefix"},
		{"inner same address", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  new_inner    = "169.254.42.1/30"`), "migration.hcl:11:18", "old_inner and new_inner are both 169.254.42.1"},
		{"inner network address", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  old_inner    = "169.254.42.0/30"`), "migration.hcl:11:18", "old_inner 169.254.42.0/30 is the network address of its prefix"},
		{"inner without length", tun(`  type         = "vxlan"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  old_inner    = "169.254.42.1"`), "migration.hcl:11:18", "missing prefix length"},

		// Services.
		{"unknown service argument", svc(`  adress   = "198.51.100.10"`, sAddr, sProto, sPorts, sStage), "migration.hcl:13:3", `unknown argument "adress" in service "smtp"; allowed: address, protocol, ports, stage, canary_percent, allow_unready`},
		{"nested block in service", svc(sAddr, sProto, sPorts, sStage, `  health {}`), "migration.hcl:17:3", `unexpected block "health" in service "smtp"`},
		{"service missing address", svc(sProto, sPorts, sStage), "migration.hcl:12:1", `missing required argument "address" in service "smtp"`},
		{"service missing stage", svc(sAddr, sProto, sPorts), "migration.hcl:12:1", `missing required argument "stage" in service "smtp"`},
		{"service bad address", svc(`  address  = "198.51.100"`, sProto, sPorts, sStage), "migration.hcl:13:14", `invalid address "198.51.100" in service "smtp": not an IP address`},
		{"service loopback", svc(`  address  = "127.0.0.1"`, sProto, sPorts, sStage), "migration.hcl:13:14", "a loopback address"},
		{"service address not string", svc(`  address  = 42`, sProto, sPorts, sStage), "migration.hcl:13:14", `address in service "smtp" must be a string, not number`},
		{"protocol", svc(sAddr, `  protocol = "icmp"`, sPorts, sStage), "migration.hcl:14:14", `invalid protocol "icmp" in service "smtp"; use "tcp" or "udp"`},
		{"stage", svc(sAddr, sProto, sPorts, `  stage    = "done"`), "migration.hcl:16:14", `invalid stage "done" in service "smtp"; use "old", "canary" or "new"`},
		{"port too large", base + "service \"smtp\" {\n  protocol = \"tcp\"\n  ports    = [70000]\n  address  = \"198.51.100.10\"\n  stage    = \"new\"\n}\n", "migration.hcl:14:15", `invalid port 70000; ports are 1..65535, written as 25 or "10000-10100"`},
		{"port zero", svc(sAddr, sProto, `  ports    = [25, 0]`, sStage), "migration.hcl:15:19", "invalid port 0; ports are 1..65535"},
		{"port fraction", svc(sAddr, sProto, `  ports    = [25.5]`, sStage), "migration.hcl:15:15", "invalid port 25.5"},
		{"port string too large", svc(sAddr, sProto, `  ports    = ["65536"]`, sStage), "migration.hcl:15:15", `invalid port "65536"`},
		{"port name", svc(sAddr, sProto, `  ports    = ["smtp"]`, sStage), "migration.hcl:15:15", `invalid port "smtp"`},
		{"port range reversed", svc(sAddr, sProto, `  ports    = [25, "100-10"]`, sStage), "migration.hcl:15:19", `invalid port range "100-10": the first port is greater than the last; write the lower port first, e.g. "10-100"`},
		{"port range too large", svc(sAddr, sProto, `  ports    = ["10-70000"]`, sStage), "migration.hcl:15:15", `invalid port range "10-70000"; ports are 1..65535`},
		{"port of type bool", svc(sAddr, sProto, `  ports    = [true]`, sStage), "migration.hcl:15:15", "invalid port of type bool"},
		{"ports empty", svc(sAddr, sProto, `  ports    = []`, sStage), "migration.hcl:15:14", `empty ports in service "smtp"; list at least one port`},
		{"ports not a list", svc(sAddr, sProto, `  ports    = 25`, sStage), "migration.hcl:15:14", `ports in service "smtp" must be a list`},
		{"ports missing", svc(sAddr, sProto, sStage), "migration.hcl:12:1", `missing required argument "ports" in service "smtp"`},
		{"duplicate service", svc(sAddr, sProto, sPorts, sStage) + "service \"smtp\" {\n" + sAddr + "\n  protocol = \"udp\"\n" + sPorts + "\n" + sStage + "\n}\n", "migration.hcl:18:9", `duplicate service "smtp"; service names must be unique; the first is at migration.hcl:12:1`},
		{"bad service name", base + "service \"my smtp\" {\n" + sAddr + "\n" + sProto + "\n" + sPorts + "\n" + sStage + "\n}\n", "migration.hcl:12:9", `invalid service name "my smtp"`},
		{"overlap across services", svc(sAddr, sProto, `  ports    = [25, "1000-2000"]`, sStage) + "service \"submission\" {\n" + sAddr + "\n" + sProto + "\n  ports    = [587, \"1500\"]\n" + sStage + "\n}\n",
			"migration.hcl:21:20", `port 1500 of service "submission" overlaps port 1000-2000 of service "smtp"; a port of 198.51.100.10/tcp belongs to one service only; service "smtp" has it at migration.hcl:15:19`},
		{"overlap earlier range is later in file", svc(sAddr, sProto, `  ports    = [1500]`, sStage) + "service \"wide\" {\n" + sAddr + "\n" + sProto + "\n  ports    = [\"1000-2000\"]\n" + sStage + "\n}\n",
			"migration.hcl:21:15", `port 1000-2000 of service "wide" overlaps port 1500 of service "smtp"`},
		{"overlap within service", svc(sAddr, sProto, `  ports    = ["20-30", 25]`, sStage), "migration.hcl:15:24", `port 25 overlaps 20-30 earlier in service "smtp"; list each port once`},
		{"duplicate port within service", svc(sAddr, sProto, `  ports    = [25, 25]`, sStage), "migration.hcl:15:19", `port 25 overlaps 25 earlier in service "smtp"`},
		{"canary without percent", svc(sAddr, sProto, sPorts, `  stage    = "canary"`), "migration.hcl:16:14", `service "smtp" has stage "canary" but no canary_percent; add canary_percent = 10`},
		{"percent without canary", svc(sAddr, sProto, sPorts, sStage, `  canary_percent = 10`), "migration.hcl:17:20", `canary_percent is set but service "smtp" has stage "new"; canary_percent is only valid with stage = "canary"`},
		{"percent out of range", svc(sAddr, sProto, sPorts, `  stage    = "canary"`, `  canary_percent = 100`), "migration.hcl:17:20", `invalid canary_percent 100 in service "smtp"; canary_percent is 1..99`},
		{"ssh port migrated", svc(sAddr, sProto, `  ports    = [25, "20-23"]`, sStage), "migration.hcl:15:19", `service "smtp" would migrate 198.51.100.10:22, where migrate reaches host "old" over SSH`},
		{"vxlan port migrated", svc(sAddr, `  protocol = "udp"`, `  ports    = ["4000-5000"]`, `  stage    = "canary"`, `  canary_percent = 5`), "migration.hcl:15:15", `service "smtp" would migrate 198.51.100.10:4789/udp, the tunnel's own VXLAN port`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantErrorAt(t, tc.src, tc.at, tc.want) })
	}
}

// wantErrorAt checks that parsing src fails with a *Error one of whose lines
// starts with "at: " and contains want.
func wantErrorAt(t *testing.T, src, at, want string) {
	t.Helper()
	_, err := Parse([]byte(src), "migration.hcl")
	if err == nil {
		t.Fatalf("Parse succeeded; want an error at %s containing %q", at, want)
	}
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error is %T, want *config.Error: %v", err, err)
	}
	prefix := at + ": "
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.HasPrefix(line, prefix) && strings.Contains(line, want) {
			return
		}
	}
	t.Errorf("no error line starts with %q and contains %q; got:\n%v", prefix, want, err)
}

func TestErrorsAreCollectedAndSorted(t *testing.T) {
	src := base + `service "a" {
  address  = "198.51.100.10"
  protocol = "sctp"
  ports    = [25, 70000]
  stage    = "later"
  colour   = "red"
}
`
	_, err := Parse([]byte(src), "m.hcl")
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	want := []string{
		`m.hcl:14:14: invalid protocol "sctp" in service "a"; use "tcp" or "udp"`,
		`m.hcl:15:19: invalid port 70000; ports are 1..65535, written as 25 or "10000-10100"`,
		`m.hcl:16:14: invalid stage "later" in service "a"; use "old", "canary" or "new"`,
		`m.hcl:17:3: unknown argument "colour" in service "a"; allowed: address, protocol, ports, stage, canary_percent, allow_unready, allow_ssh_move`,
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if n := len(err.(*Error).Diagnostics); n != len(want) {
		t.Errorf("%d diagnostics, want %d", n, len(want))
	}
}

func TestEmptyFile(t *testing.T) {
	_, err := Parse(nil, "empty.hcl")
	if err == nil {
		t.Fatal("Parse of an empty file succeeded")
	}
	for _, want := range []string{
		`empty.hcl:1:1: missing host "old" block`,
		`empty.hcl:1:1: missing host "new" block`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	// Without services, the tunnel block is optional.
	if strings.Contains(err.Error(), "tunnel") {
		t.Errorf("a plan without services needs no tunnel; got:\n%v", err)
	}
}

// FuzzParse checks that Parse never panics and that every error line has a
// position.
func FuzzParse(f *testing.F) {
	f.Add(fullExample)
	f.Add(svc(sAddr, sProto, `  ports    = ["20-30", 25, 70000, "9-1"]`, `  stage    = "canary"`))
	f.Add(tun(`  type = "gre"`, `  key = "0x10"`, `  old_inner = "fe80::1/64"`))
	f.Add(forwardsOnly)
	f.Add(fwd(fOn, fAddr, fProto, `  ports    = ["20-30"]`, fTo, `  to_port  = 8080`))
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := Parse([]byte(src), "f.hcl")
		if err == nil {
			if cfg == nil || cfg.Hosts["old"] == nil || cfg.Hosts["new"] == nil {
				t.Fatalf("nil parts in a valid config")
			}
			if cfg.Tunnel == nil && len(cfg.Services) > 0 {
				t.Fatalf("services without a tunnel in a valid config")
			}
			// Render writes every valid config back as an equal one.
			out := Render(cfg)
			back, err := Parse(out, "f.hcl")
			if err != nil {
				t.Fatalf("Render output does not parse: %v\n%s", err, out)
			}
			clearRanges(cfg)
			clearRanges(back)
			if !reflect.DeepEqual(cfg, back) {
				t.Fatalf("Render round trip mismatch\n got: %s\nwant: %s", dump(back), dump(cfg))
			}
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, "f.hcl:") {
				t.Fatalf("error line without position: %q", line)
			}
		}
	})
}

// The self-lockout check has one explicit, documented override.
func TestAllowSSHMoveOverride(t *testing.T) {
	src := `
host "old" {
  ssh         = "root@198.51.100.10:22"
  known_hosts = "/dev/null"
}
host "new" {
  ssh         = "root@203.0.113.20"
  known_hosts = "/dev/null"
}
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
service "ssh" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [22]
  stage    = "new"
  %s
}
`
	if _, err := Parse([]byte(strings.Replace(src, "%s", "", 1)), "m.hcl"); err == nil || !strings.Contains(err.Error(), "m.hcl:18:15:") {
		t.Fatalf("moving the SSH port: err = %v", err)
	}
	c, err := Parse([]byte(strings.Replace(src, "%s", "allow_ssh_move = true", 1)), "m.hcl")
	if err != nil {
		t.Fatalf("with allow_ssh_move: %v", err)
	}
	if !c.Services[0].AllowSSHMove {
		t.Error("AllowSSHMove not set")
	}
	if !strings.Contains(string(Render(c)), "allow_ssh_move = true") {
		t.Error("Render drops allow_ssh_move")
	}
}

// ip6gre cannot send an IPv6 packet whose source is its remote endpoint:
// an IPv6 service on old_endpoint would never get an answer out of NEW.
func TestIP6GREServiceOnOldEndpoint(t *testing.T) {
	src := `host "old" {
  ssh = "root@198.51.100.10"
}
host "new" {
  ssh = "root@203.0.113.20"
}
tunnel {
  type         = "ip6gre"
  old_endpoint = "2001:db8:100::10"
  new_endpoint = "2001:db8:200::20"
}
service "web6" {
  address  = "2001:db8:100::10"
  protocol = "tcp"
  ports    = [443]
  stage    = "new"
}
`
	wantErrorAt(t, src, "migration.hcl:12:1", `service "web6" uses 2001:db8:100::10, the tunnel's old_endpoint, over an ip6gre tunnel`)
	ok := strings.Replace(src, `old_endpoint = "2001:db8:100::10"`, `old_endpoint = "2001:db8:100::11"`, 1)
	if _, err := Parse([]byte(ok), "migration.hcl"); err != nil {
		t.Errorf("another old_endpoint: %v", err)
	}
}
