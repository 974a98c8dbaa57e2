package config

import (
	"errors"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// everyField sets every argument of every block to a value other than its
// default.
const everyField = `host "old" {
  ssh           = "admin@198.51.100.10:2222"
  identity_file = "~/.ssh/id_ed25519"
  known_hosts   = "/etc/ssh/ssh_known_hosts"
  sudo          = true
}

host "new" {
  ssh           = "root@[2001:db8::20]"
  identity_file = "/keys/new"
  known_hosts   = "~/.ssh/known_hosts_migrate"
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

forward "early" {
  on       = "new"
  address  = "2001:db8::20"
  protocol = "udp"
  ports    = [53]
  to       = "2001:db8::53"
  to_port  = 5353
}

service "smtp" {
  address       = "198.51.100.10"
  protocol      = "tcp"
  ports         = [25, 465, "10000-10100"]
  stage         = "new"
  allow_unready = true
}

service "dns" {
  address        = "198.51.100.10"
  protocol       = "udp"
  ports          = [53]
  stage          = "canary"
  canary_percent = 10
}

service "v6web" {
  address  = "2001:db8::10"
  protocol = "tcp"
  ports    = [80, 443]
  stage    = "old"
}

forward "web-bounce" {
  on       = "old"
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [80, 443, "8000-8010"]
  to       = "203.0.113.20"
}
`

// roundTrip renders cfg, checks that the output is canonical, parses it and
// compares it with cfg, ignoring Path and source ranges.
func roundTrip(t *testing.T, cfg *Config) []byte {
	t.Helper()
	out := Render(cfg)
	back, err := Parse(out, "rendered.hcl")
	if err != nil {
		t.Fatalf("Render output does not parse: %v\n%s", err, out)
	}
	if again, err := Format(out, "rendered.hcl"); err != nil || string(again) != string(out) {
		t.Errorf("Render output is not canonical (err %v):\n%s\nformatted:\n%s", err, out, again)
	}
	clearRanges(cfg)
	clearRanges(back)
	back.Path = cfg.Path
	if !reflect.DeepEqual(cfg, back) {
		t.Errorf("round trip mismatch\n got: %s\nwant: %s\nrendered:\n%s", dump(back), dump(cfg), out)
	}
	return out
}

func TestRenderRoundTrip(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	for _, tc := range []struct{ name, src string }{
		{"every field", everyField},
		{"full example", fullExample},
		{"defaults", base + "service \"a\" {\n" + sAddr + "\n" + sProto + "\n" + sPorts + "\n" + sStage + "\n}\n"},
		{"gre", tun(`  type         = "gre"`, `  old_endpoint = "198.51.100.10"`, `  new_endpoint = "203.0.113.20"`, `  key          = 42`, `  mtu          = 1400`)},
		{"ip6gre", tun(`  type         = "ip6gre"`, `  old_endpoint = "2001:db8:100::10"`, `  new_endpoint = "2001:db8:200::20"`, `  key          = 42`, `  mtu          = 1400`)},
		{"forwards only", forwardsOnly},
		{"hosts only", hostsOnly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			roundTrip(t, mustParse(t, tc.src))
		})
	}
}

// Render writes optional arguments only when they are not the default, and
// ~/ for paths under the home directory.
func TestRenderDefaultsLeftOut(t *testing.T) {
	t.Setenv("HOME", "/home/ops")
	cfg := mustParse(t, base+"service \"a\" {\n"+sAddr+"\n"+sProto+"\n  ports    = [25, \"100-200\"]\n"+sStage+"\n}\n")
	cfg.Hosts["old"].IdentityFile = "/home/ops/.ssh/id_rsa"
	want := `host "old" {
  ssh           = "root@198.51.100.10:22"
  identity_file = "~/.ssh/id_rsa"
}

host "new" {
  ssh = "root@203.0.113.20:22"
}

tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}

service "a" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [25, "100-200"]
  stage    = "new"
}
`
	if got := string(Render(cfg)); got != want {
		t.Errorf("Render:\n%s\nwant:\n%s", got, want)
	}
}

// The whole round trip from a hand-built Config, as migrate init makes it.
func TestRenderBuiltConfig(t *testing.T) {
	t.Setenv("HOME", "/home/ops")
	addr := netip.MustParseAddr("198.51.100.10")
	cfg := &Config{
		Hosts: map[string]*Host{
			"old": {Name: "old", User: "root", Address: "198.51.100.10", Port: 22, KnownHosts: "/home/ops/.ssh/known_hosts"},
			"new": {Name: "new", User: "root", Address: "new.example.com", Port: 2222, KnownHosts: "/home/ops/.ssh/known_hosts"},
		},
		Tunnel: &Tunnel{
			Type: "gre", OldEndpoint: addr, NewEndpoint: netip.MustParseAddr("203.0.113.20"),
			Name: DefaultTunnelName, OldInner: DefaultOldInner, NewInner: DefaultNewInner, Mark: DefaultMark, Table: DefaultTable,
		},
		Services: []*Service{
			{Name: "web", Address: addr, Protocol: "tcp", Ports: []PortRange{{80, 80}, {8000, 8100}}, Stage: "old"},
		},
		Forwards: []*Forward{
			{Name: "b", On: "old", Address: addr, Protocol: "udp", Ports: []PortRange{{5000, 5000}}, To: netip.MustParseAddr("192.0.2.9"), ToPort: 6000},
		},
	}
	out := roundTrip(t, cfg)
	if !strings.Contains(string(out), `ssh = "root@new.example.com:2222"`) {
		t.Errorf("ssh of host new not written as user@host:port:\n%s", out)
	}
}

func TestRenderWithComments(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	cfg := mustParse(t, base+`service "postfix" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [25]
  stage    = "old"
}
service "sshd" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [2222]
  stage    = "old"
}
`)
	// As migrate init finds it: sshd listens on the port migrate uses, and
	// moving it would be refused.
	cfg.Services[1].Ports = []PortRange{{22, 22}}
	cfg.Services[1].Stage = "new"
	if _, err := Parse(Render(cfg), "m.hcl"); err == nil {
		t.Fatal("the sshd service uncommented should not validate")
	}

	out := RenderWith(cfg, RenderOptions{
		Header:          "Written by migrate init.\n\nReview every service before apply.",
		ServiceComments: map[string]string{"postfix": "process: master (pid 812)", "sshd": "process: sshd (pid 1)"},
		CommentedOut:    map[string]string{"sshd": "not migrated: migrate reaches host \"old\" on 198.51.100.10:22"},
	})
	text := string(out)
	for _, want := range []string{
		"# Written by migrate init.\n#\n# Review every service before apply.\n\nhost \"old\" {\n",
		"\n# process: master (pid 812)\nservice \"postfix\" {\n",
		"\n# process: sshd (pid 1)\n# not migrated: migrate reaches host \"old\" on 198.51.100.10:22\n# service \"sshd\" {\n#   address  = \"198.51.100.10\"\n",
		"#   ports    = [22]\n#   stage    = \"new\"\n# }\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("RenderWith output lacks %q:\n%s", want, text)
		}
	}
	back, err := Parse(out, "m.hcl")
	if err != nil {
		t.Fatalf("RenderWith output does not parse: %v\n%s", err, out)
	}
	if len(back.Services) != 1 || back.Services[0].Name != "postfix" {
		t.Errorf("services = %v, want only postfix (sshd is commented out)", back.Services)
	}
	if formatted, err := Format(out, "m.hcl"); err != nil || string(formatted) != text {
		t.Errorf("RenderWith output is not canonical (err %v):\n%s", err, formatted)
	}
}

func TestFormat(t *testing.T) {
	src := `# my plan
host   "old"   {
ssh = "root@198.51.100.10:22"   # OLD
    sudo=true
}
host "new" {
      ssh = "root@203.0.113.20"
}
tunnel {
  type = "vxlan"
  old_endpoint = "198.51.100.10"
  # the outer address of NEW
  new_endpoint    = "203.0.113.20"
}
service "a" {
  address = "198.51.100.10"
  protocol = "tcp"
  ports = [25,"100-200"]
  stage = "new"
}
`
	want := `# my plan
host "old" {
  ssh  = "root@198.51.100.10:22" # OLD
  sudo = true
}
host "new" {
  ssh = "root@203.0.113.20"
}
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  # the outer address of NEW
  new_endpoint = "203.0.113.20"
}
service "a" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [25, "100-200"]
  stage    = "new"
}
`
	got, err := Format([]byte(src), "m.hcl")
	if err != nil {
		t.Fatalf("Format: %v", err)
	}
	if string(got) != want {
		t.Errorf("Format:\n%s\nwant:\n%s", got, want)
	}
	again, err := Format(got, "m.hcl")
	if err != nil || string(again) != string(got) {
		t.Errorf("Format is not idempotent (err %v):\n%s", err, again)
	}
}

func TestFormatRefusesInvalid(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"syntax error", "host \"old\" {\n  ssh = \n}\n", "m.hcl:2:9: Invalid expression"},
		{"invalid plan", svc(sAddr, `  protocol    =   "icmp"`, sPorts, sStage), `m.hcl:14:19: invalid protocol "icmp" in service "smtp"`},
		{"services without tunnel", hostsOnly + "service \"smtp\" {\n" + sAddr + "\n" + sProto + "\n" + sPorts + "\n" + sStage + "\n}\n", "m.hcl:7:1: services need a tunnel block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Format([]byte(tc.src), "m.hcl")
			if err == nil {
				t.Fatalf("Format succeeded:\n%s", out)
			}
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error is %T, want *config.Error: %v", err, err)
			}
			if out != nil {
				t.Errorf("Format returned output with an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error lacks %q:\n%v", tc.want, err)
			}
		})
	}
}

func TestRenderExamplesRoundTrip(t *testing.T) {
	for _, name := range []string{"basic.hcl", "forward.hcl"} {
		cfg, err := Load(filepath.Join("..", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, cfg)
	}
}
