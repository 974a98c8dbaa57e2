package plan_test

import (
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// natFacts: OLD and NEW, each holding either its public endpoint or a
// private address behind a 1:1 NAT, with the source address each uses
// towards the other's endpoint (what the CLI asks the agent).
func natFacts(oldAddr, newAddr string) map[string]state.Facts {
	o, n := facts(oldAddr+"/24", 1500), facts(newAddr+"/24", 1500)
	o.RouteSrc = map[string]string{"203.0.113.20": oldAddr}
	n.RouteSrc = map[string]string{"198.51.100.10": newAddr}
	return map[string]state.Facts{plan.Old: o, plan.New: n}
}

// tunnelObjs returns the tunnel link and the nft underlay of a host's
// planned steps.
func tunnelObjs(t *testing.T, p *plan.Plan, host string) (*state.Link, *state.NftUnderlay) {
	t.Helper()
	var l *state.Link
	var u *state.NftUnderlay
	for _, s := range p.Steps(host) {
		if s.After == nil {
			continue
		}
		if s.After.Link != nil && s.After.Link.Name == "mig0" {
			l = s.After.Link
		}
		if s.After.Nft != nil {
			u = s.After.Nft.Spec.Underlay
		}
	}
	if l == nil || u == nil {
		t.Fatalf("%s: no tunnel link or underlay in the plan", host)
	}
	return l, u
}

func TestNATBindings(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, src string
		// want: local and remote of the link, and the underlay's local
		// and peer, per host: local is what the host holds, remote and
		// peer the other's endpoint (the NAT rewrote its source to it).
		oldLocal, newLocal string
		notes              []string
	}{
		{"none", "198.51.100.10", "203.0.113.20", src, "198.51.100.10", "203.0.113.20", nil},
		{"new", "198.51.100.10", "198.18.0.20", src, "198.51.100.10", "198.18.0.20",
			[]string{"NEW is behind NAT: its tunnel binds 198.18.0.20 (its source address towards OLD, an address it holds), and OLD sends to 203.0.113.20. The NAT must pass UDP port 4789 to 198.18.0.20."}},
		{"old", "198.18.1.10", "203.0.113.20", strings.Replace(src, `address  = "198.51.100.10"`, `address  = "198.18.1.10"`, 1), "198.18.1.10", "203.0.113.20",
			[]string{"OLD is behind NAT: its tunnel binds 198.18.1.10"}},
		{"both", "198.18.1.10", "198.18.0.20", strings.Replace(src, `address  = "198.51.100.10"`, `address  = "198.18.1.10"`, 1), "198.18.1.10", "198.18.0.20",
			[]string{"NEW is behind NAT: its tunnel binds 198.18.0.20", "OLD is behind NAT: its tunnel binds 198.18.1.10"}},
		{"override", "198.18.1.10", "198.18.0.20", strings.Replace(strings.Replace(src, `address  = "198.51.100.10"`, `address  = "198.18.1.10"`, 1), "}\nservice", "  old_bind = \"198.18.1.10\"\n}\nservice", 1), "198.18.1.10", "198.18.0.20",
			[]string{"OLD is behind NAT: its tunnel binds 198.18.1.10 (old_bind, an address it holds)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, tc.src)
			p, err := plan.Make(c, natFacts(tc.old, tc.new), state.NewJournal(), time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range []struct{ host, local, peer, mac string }{
				{plan.Old, tc.oldLocal, "203.0.113.20", "02:6d:67:fe:2a:01"}, {plan.New, tc.newLocal, "198.51.100.10", "02:6d:67:fe:2a:02"},
			} {
				l, u := tunnelObjs(t, p, h.host)
				if l.Local.String() != h.local || l.Remote.String() != h.peer || u.Local.String() != h.local || u.Peer.String() != h.peer {
					t.Errorf("%s: link %s -> %s, underlay %s from %s; want %s -> %s both", h.host, l.Local, l.Remote, u.Local, u.Peer, h.local, h.peer)
				}
				// Each end's fixed MAC follows its inner address, not
				// the address it binds.
				if l.MAC != h.mac {
					t.Errorf("%s: link address %s, want %s", h.host, l.MAC, h.mac)
				}
			}
			notes := strings.Join(p.Notes, "\n")
			for _, n := range tc.notes {
				if !strings.Contains(notes, n) {
					t.Errorf("notes lack %q:\n%s", n, notes)
				}
			}
			if len(tc.notes) == 0 && strings.Contains(notes, "NAT") {
				t.Errorf("a NAT note without a NAT:\n%s", notes)
			}
		})
	}
}

func TestNATErrors(t *testing.T) {
	noRoute := natFacts("198.51.100.10", "198.18.0.20")
	nf := noRoute[plan.New]
	nf.RouteSrc = nil
	noRoute[plan.New] = nf
	oldSvc := strings.Replace(src, `address  = "198.51.100.10"`, `address  = "198.18.1.10"`, 1)
	for _, tc := range []struct {
		name, src string
		facts     map[string]state.Facts
		want      string
	}{
		{"public service address on a NATed OLD", src, natFacts("198.18.1.10", "203.0.113.20"),
			`m.hcl:15:1: service "web": host old does not hold address 198.51.100.10. OLD is behind NAT: it holds 198.18.1.10, and the NAT rewrites the packets its clients send to 198.51.100.10 before OLD sees them; a service address is the one OLD's kernel sees: write address = "198.18.1.10"`},
		{"no route", src, noRoute, `tunnel new_endpoint 203.0.113.20 is not an address of host new, and new has no address of its own towards old's endpoint 198.51.100.10 to bind instead (it holds 198.18.0.20)`},
		{"bind not held", strings.Replace(src, "}\nservice", "  new_bind = \"198.18.0.99\"\n}\nservice", 1), natFacts("198.51.100.10", "198.18.0.20"),
			`tunnel new_bind 198.18.0.99 is not an address of host new; it holds 198.18.0.20`},
		{"gre through NAT", strings.Replace(src, `"vxlan"`, `"gre"`, 1), natFacts("198.51.100.10", "198.18.0.20"),
			`NEW is behind NAT (its tunnel would bind 198.18.0.20; its peer sends to 203.0.113.20), and gre tunnels carry no port`},
		{"gre through a NAT the operator vouches for", strings.Replace(strings.Replace(oldSvc, `"vxlan"`, `"gre"`, 1), "}\nservice", "  old_bind = \"198.18.1.10\"\n}\nservice", 1), natFacts("198.18.1.10", "203.0.113.20"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := plan.Make(mustParse(t, tc.src), tc.facts, state.NewJournal(), time.Unix(0, 0))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// Behind NAT, migrate reaches OLD's public address and sshd sees the
// private one: moving port 22 of the private address cuts migrate off.
func TestNATSelfLockout(t *testing.T) {
	s := strings.Replace(strings.Replace(src, `address  = "198.51.100.10"`, `address  = "198.18.1.10"`, 1), `ports    = [8080, "9000-9001"]`, `ports    = [22]`, 1)
	_, err := plan.Make(mustParse(t, s), natFacts("198.18.1.10", "203.0.113.20"), state.NewJournal(), time.Unix(0, 0))
	if err == nil || !strings.Contains(err.Error(), `service "web" would move 198.18.1.10:22, the SSH port migrate reaches host old on`) {
		t.Fatalf("err = %v; want the self-lockout refusal at the private address", err)
	}
}
