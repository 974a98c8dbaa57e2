package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// fwd builds base plus one forward "web" block: the header is line 12 and
// the first given line is line 13.
func fwd(lines ...string) string {
	return base + "forward \"web\" {\n" + strings.Join(lines, "\n") + "\n}\n"
}

const (
	fOn    = `  on       = "old"`
	fAddr  = `  address  = "198.51.100.10"`
	fProto = `  protocol = "tcp"`
	fPorts = `  ports    = [80]`
	fTo    = `  to       = "203.0.113.20"`
)

// forwardsOnly is a plan without services and without a tunnel.
const forwardsOnly = hostsOnly + `
forward "web-bounce" {
  on       = "old"
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [80, 443, "8000-8010"]
  to       = "203.0.113.20"
}

forward "dns6" {
  on       = "new"
  address  = "2001:db8::20"
  protocol = "udp"
  ports    = ["53"]
  to       = "2001:db8::53"
  to_port  = 5353
}
`

func TestForwardsWithoutTunnel(t *testing.T) {
	cfg := mustParse(t, forwardsOnly)
	if cfg.Tunnel != nil {
		t.Errorf("Tunnel = %+v, want nil without a tunnel block", cfg.Tunnel)
	}
	if len(cfg.Services) != 0 {
		t.Errorf("Services = %v, want none", cfg.Services)
	}
	if got := cfg.Forwards[0].PortsRange; got.Start.Line != 12 || got.Start.Column != 14 {
		t.Errorf("web-bounce ports range = %v, want 12:14", got)
	}
	if got := cfg.Forwards[1].Range; got.Start.Line != 16 || got.End.Line != 23 {
		t.Errorf("dns6 range = %v, want lines 16..23", got)
	}
	clearRanges(cfg)
	want := []*Forward{
		{
			Name: "web-bounce", On: "old", Address: netip.MustParseAddr("198.51.100.10"), Protocol: "tcp",
			Ports: []PortRange{{80, 80}, {443, 443}, {8000, 8010}}, To: netip.MustParseAddr("203.0.113.20"),
		},
		{
			Name: "dns6", On: "new", Address: netip.MustParseAddr("2001:db8::20"), Protocol: "udp",
			Ports: []PortRange{{53, 53}}, To: netip.MustParseAddr("2001:db8::53"), ToPort: 5353,
		},
	}
	if !reflect.DeepEqual(cfg.Forwards, want) {
		t.Errorf("Forwards mismatch\n got: %s\nwant: %s", dump(&Config{Forwards: cfg.Forwards}), dump(&Config{Forwards: want}))
	}
}

func TestNoForwards(t *testing.T) {
	if cfg := mustParse(t, base); cfg.Forwards != nil {
		t.Errorf("Forwards = %v, want nil", cfg.Forwards)
	}
}

func TestForwardAccepted(t *testing.T) {
	for _, tc := range []struct{ name, src string }{
		{"redirect on its own address", fwd(fOn, fAddr, fProto, fPorts, `  to       = "198.51.100.10"`, `  to_port  = 8080`)},
		{"to_port equal to the port", fwd(fOn, fAddr, fProto, fPorts, fTo, `  to_port  = 80`)},
		{"service and forward share a name", svc(sAddr, sProto, sPorts, sStage) + "forward \"smtp\" {\n" + fOn + "\n" + fAddr + "\n" + fProto + "\n" + fPorts + "\n" + fTo + "\n}\n"},
		{"same port on another protocol", svc(sAddr, sProto, `  ports    = [80]`, sStage) + "forward \"web\" {\n" + fOn + "\n" + fAddr + "\n  protocol = \"udp\"\n" + fPorts + "\n" + fTo + "\n}\n"},
		{"OLD's SSH port on NEW", fwd(`  on       = "new"`, `  address  = "203.0.113.20"`, fProto, `  ports    = [2222]`, `  to       = "192.0.2.7"`)},
		{"OLD's SSH port forwarded by NEW", fwd(`  on       = "new"`, fAddr, fProto, `  ports    = [22]`, `  to       = "192.0.2.7"`)},
		{"SSH port on udp", fwd(fOn, fAddr, `  protocol = "udp"`, `  ports    = [22]`, fTo)},
		{"forward to a managed host's SSH port", fwd(fOn, fAddr, fProto, `  ports    = [2022]`, fTo, `  to_port  = 22`)},
		{"NEW's SSH by DNS name", strings.Replace(fwd(`  on       = "new"`, `  address  = "203.0.113.20"`, fProto, `  ports    = [22]`, `  to       = "198.51.100.10"`), "root@203.0.113.20", "root@new.example.com", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) { mustParse(t, tc.src) })
	}
}

func TestAllowUnready(t *testing.T) {
	cfg := mustParse(t, svc(sAddr, sProto, sPorts, sStage, `  allow_unready = true`)+
		"service \"b\" {\n"+sAddr+"\n"+sProto+"\n  ports    = [26]\n"+sStage+"\n}\n")
	if !cfg.Services[0].AllowUnready || cfg.Services[1].AllowUnready {
		t.Errorf("AllowUnready = %v, %v; want true, false (the default)", cfg.Services[0].AllowUnready, cfg.Services[1].AllowUnready)
	}
}

func TestForwardErrors(t *testing.T) {
	// svcThenFwd is a service "smtp" (lines 12..17, ports on line 15) and
	// a forward "web" (header line 18, ports on line 22).
	svcThenFwd := func(svcPorts, fwdPorts string) string {
		return svc(sAddr, sProto, svcPorts, sStage) + "forward \"web\" {\n" + fOn + "\n" + fAddr + "\n" + fProto + "\n" + fwdPorts + "\n" + fTo + "\n}\n"
	}
	// fwdThenSvc is a forward "web" (lines 12..18, ports on line 16) and a
	// service "smtp" (header line 19, ports on line 22).
	fwdThenSvc := func(fwdPorts, svcPorts string) string {
		return fwd(fOn, fAddr, fProto, fwdPorts, fTo) + "service \"smtp\" {\n" + sAddr + "\n" + sProto + "\n" + svcPorts + "\n" + sStage + "\n}\n"
	}
	// twoFwd is forward "web" (lines 12..18, ports on line 16) and forward
	// "b" (header line 19, ports on line 23).
	twoFwd := func(webPorts, bPorts string) string {
		return fwd(fOn, fAddr, fProto, webPorts, fTo) + "forward \"b\" {\n" + fOn + "\n" + fAddr + "\n" + fProto + "\n" + bPorts + "\n" + fTo + "\n}\n"
	}
	onNew := `  on       = "new"`
	newAddr := `  address  = "203.0.113.20"`
	toOld := `  to       = "198.51.100.10"`

	tests := []struct {
		name string
		src  string
		at   string // FILE:LINE:COL
		want string // key phrase on that line
	}{
		// Block and names.
		{"forward without name", base + "forward {\n" + fOn + "\n" + fAddr + "\n" + fProto + "\n" + fPorts + "\n" + fTo + "\n}\n", "migration.hcl:12:1", "forward block without a name"},
		{"forward with two names", base + "forward \"a\" \"b\" {\n" + fOn + "\n" + fAddr + "\n" + fProto + "\n" + fPorts + "\n" + fTo + "\n}\n", "migration.hcl:12:13", "forward block with more than one name"},
		{"bad forward name", base + "forward \"my web\" {\n" + fOn + "\n" + fAddr + "\n" + fProto + "\n" + fPorts + "\n" + fTo + "\n}\n", "migration.hcl:12:9", `invalid forward name "my web": ' ' is not allowed; name each forward once`},
		{"duplicate forward", fwd(fOn, fAddr, fProto, fPorts, fTo) + "forward \"web\" {\n" + fOn + "\n" + fAddr + "\n" + fProto + "\n  ports    = [81]\n" + fTo + "\n}\n", "migration.hcl:19:9", `duplicate forward "web"; forward names must be unique; the first is at migration.hcl:12:1`},
		{"unknown forward argument", fwd(fOn, fAddr, fProto, fPorts, fTo, `  stage    = "new"`), "migration.hcl:18:3", `unknown argument "stage" in forward "web"; allowed: on, address, protocol, ports, to, to_port`},
		{"misspelt forward argument", fwd(fOn, fAddr, fProto, fPorts, fTo, `  toport   = 8080`), "migration.hcl:18:3", `did you mean "to_port"?`},
		{"nested block in forward", fwd(fOn, fAddr, fProto, fPorts, fTo, `  health {}`), "migration.hcl:18:3", `unexpected block "health" in forward "web"`},

		// on.
		{"on missing", fwd(fAddr, fProto, fPorts, fTo), "migration.hcl:12:1", `missing required argument "on" in forward "web"; add on = "old"`},
		{"on invalid", fwd(`  on       = "mid"`, fAddr, fProto, fPorts, fTo), "migration.hcl:13:14", `invalid on "mid" in forward "web"; use "old" or "new"`},
		{"on not a string", fwd(`  on       = 1`, fAddr, fProto, fPorts, fTo), "migration.hcl:13:14", `on in forward "web" must be a string, not number`},

		// address and protocol.
		{"address missing", fwd(fOn, fProto, fPorts, fTo), "migration.hcl:12:1", `missing required argument "address" in forward "web"`},
		{"address loopback", fwd(fOn, `  address  = "127.0.0.1"`, fProto, fPorts, fTo), "migration.hcl:14:14", `invalid address "127.0.0.1" in forward "web": a loopback address`},
		{"address not an IP", fwd(fOn, `  address  = "old.example.com"`, fProto, fPorts, fTo), "migration.hcl:14:14", `invalid address "old.example.com" in forward "web": not an IP address; write an IPv4 or IPv6 address`},
		{"protocol missing", fwd(fOn, fAddr, fPorts, fTo), "migration.hcl:12:1", `missing required argument "protocol" in forward "web"`},
		{"protocol invalid", fwd(fOn, fAddr, `  protocol = "sctp"`, fPorts, fTo), "migration.hcl:15:14", `invalid protocol "sctp" in forward "web"; use "tcp" or "udp"`},

		// ports.
		{"ports missing", fwd(fOn, fAddr, fProto, fTo), "migration.hcl:12:1", `missing required argument "ports" in forward "web"`},
		{"ports empty", fwd(fOn, fAddr, fProto, `  ports    = []`, fTo), "migration.hcl:16:14", `empty ports in forward "web"`},
		{"port zero", fwd(fOn, fAddr, fProto, `  ports    = [80, 0]`, fTo), "migration.hcl:16:19", "invalid port 0; ports are 1..65535"},
		{"port range reversed", fwd(fOn, fAddr, fProto, `  ports    = ["90-80"]`, fTo), "migration.hcl:16:15", `invalid port range "90-80": the first port is greater than the last`},

		// to.
		{"to missing", fwd(fOn, fAddr, fProto, fPorts), "migration.hcl:12:1", `missing required argument "to" in forward "web"; add to = "203.0.113.20"`},
		{"to loopback", fwd(fOn, fAddr, fProto, fPorts, `  to       = "127.0.0.1"`), "migration.hcl:17:14", `invalid to "127.0.0.1" in forward "web": a loopback address`},
		{"to IPv6 loopback", fwd(fOn, `  address  = "2001:db8::10"`, fProto, fPorts, `  to       = "::1"`), "migration.hcl:17:14", `invalid to "::1" in forward "web": a loopback address`},
		{"to unspecified", fwd(fOn, fAddr, fProto, fPorts, `  to       = "0.0.0.0"`), "migration.hcl:17:14", "the unspecified address"},
		{"to multicast", fwd(fOn, fAddr, fProto, fPorts, `  to       = "224.0.0.1"`), "migration.hcl:17:14", "a multicast address"},
		{"to other family", fwd(fOn, fAddr, fProto, fPorts, `  to       = "2001:db8::20"`), "migration.hcl:17:14", `to 2001:db8::20 is IPv6 but address 198.51.100.10 is IPv4 in forward "web"; a forward cannot change the address family`},
		{"to is address", fwd(fOn, fAddr, fProto, fPorts, `  to       = "198.51.100.10"`), "migration.hcl:17:14", `to 198.51.100.10 is the same as address in forward "web"; traffic would be forwarded to itself; give to another address, or set to_port to another port`},
		{"to is address and port", fwd(fOn, fAddr, fProto, fPorts, `  to       = "198.51.100.10"`, `  to_port  = 80`), "migration.hcl:17:14", `to 198.51.100.10 is the same as address in forward "web"`},
		{"to is address, ranges", fwd(fOn, fAddr, fProto, `  ports    = ["80-90"]`, `  to       = "198.51.100.10"`), "migration.hcl:17:14", `is the same as address in forward "web"`},

		// to_port.
		{"to_port too large", fwd(fOn, fAddr, fProto, fPorts, fTo, `  to_port  = 70000`), "migration.hcl:18:14", `invalid to_port 70000 in forward "web"; to_port is 1..65535`},
		{"to_port zero", fwd(fOn, fAddr, fProto, fPorts, fTo, `  to_port  = 0`), "migration.hcl:18:14", `invalid to_port 0 in forward "web"`},
		{"to_port not a number", fwd(fOn, fAddr, fProto, fPorts, fTo, `  to_port  = "http"`), "migration.hcl:18:14", `to_port in forward "web" must be a number, not string`},
		{"to_port with a range", fwd(fOn, fAddr, fProto, `  ports    = ["8000-8010"]`, fTo, `  to_port  = 80`), "migration.hcl:18:14", `to_port needs exactly one port in ports, but forward "web" has the range 8000-8010; leave to_port out`},
		{"to_port with two ports", fwd(fOn, fAddr, fProto, `  ports    = [80, 443]`, fTo, `  to_port  = 8080`), "migration.hcl:18:14", `to_port needs exactly one port in ports, but forward "web" has 2 ports`},

		// An address:port is a service or a forward, not both.
		{"forward overlaps earlier service", svcThenFwd(`  ports    = ["70-90"]`, `  ports    = [443, 80]`), "migration.hcl:22:20",
			`port 80 of forward "web" overlaps port 70-90 of service "smtp"; 198.51.100.10/tcp port 80 is either a service or a forward, not both; service "smtp" has it at migration.hcl:15:15`},
		{"service overlaps earlier forward", fwdThenSvc(`  ports    = [80]`, `  ports    = ["1-100"]`), "migration.hcl:22:15",
			`port 1-100 of service "smtp" overlaps port 80 of forward "web"; 198.51.100.10/tcp port 1-100 is either a service or a forward, not both; forward "web" has it at migration.hcl:16:15`},
		{"forward on new overlaps service", svc(sAddr, sProto, `  ports    = [80]`, sStage) + "forward \"web\" {\n" + onNew + "\n" + fAddr + "\n" + fProto + "\n" + fPorts + "\n" + fTo + "\n}\n", "migration.hcl:22:15",
			`port 80 of forward "web" overlaps port 80 of service "smtp"`},
		{"forward overlaps forward", twoFwd(`  ports    = ["400-500"]`, `  ports    = [443]`), "migration.hcl:23:15",
			`port 443 of forward "b" overlaps port 400-500 of forward "web"; a port of 198.51.100.10/tcp belongs to one forward only; forward "web" has it at migration.hcl:16:15`},
		{"overlap within forward", fwd(fOn, fAddr, fProto, `  ports    = ["80-90", 85]`, fTo), "migration.hcl:16:24", `port 85 overlaps 80-90 earlier in forward "web"; list each port once`},

		// Migrate's own connections.
		{"forward on old takes OLD's SSH port", fwd(fOn, fAddr, fProto, `  ports    = [80, "20-30"]`, fTo), "migration.hcl:16:19",
			`forward "web" would forward 198.51.100.10:22 away, where migrate reaches host "old" over SSH; migrate would cut its own connection; reach OLD on another address or port`},
		{"forward on new takes NEW's SSH port", fwd(onNew, newAddr, fProto, `  ports    = [22]`, toOld), "migration.hcl:16:15",
			`forward "web" would forward 203.0.113.20:22 away, where migrate reaches host "new" over SSH; migrate would cut its own connection; reach NEW on another address or port`},
		{"forward on old takes OLD's VXLAN port", fwd(fOn, fAddr, `  protocol = "udp"`, `  ports    = ["4000-5000"]`, fTo), "migration.hcl:16:15",
			`forward "web" would forward 198.51.100.10:4789/udp away, the tunnel's own VXLAN port on host "old"`},
		{"forward on new takes NEW's VXLAN port", fwd(onNew, newAddr, `  protocol = "udp"`, `  ports    = [4789]`, toOld), "migration.hcl:16:15",
			`forward "web" would forward 203.0.113.20:4789/udp away, the tunnel's own VXLAN port on host "new"`},

		// Services.
		{"allow_unready not bool", svc(sAddr, sProto, sPorts, sStage, `  allow_unready = "yes"`), "migration.hcl:17:19", `allow_unready in service "smtp" must be true or false, not string`},
		{"services without tunnel, forwards first", hostsOnly + "forward \"web\" {\n" + fOn + "\n" + fAddr + "\n" + fProto + "\n" + fPorts + "\n" + fTo + "\n}\n" + "service \"smtp\" {\n" + sAddr + "\n" + sProto + "\n" + sPorts + "\n" + sStage + "\n}\n",
			"migration.hcl:14:1", "services need a tunnel block"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantErrorAt(t, tc.src, tc.at, tc.want) })
	}
}
