package plan_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

const src = `
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
service "web" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [8080, "9000-9001"]
  stage    = "new"
}
`

func facts(cidr string, mtu int) state.Facts {
	return state.Facts{
		Links: []state.Link{{Name: "eth0", Type: "veth", MTU: mtu, Up: true}},
		Addrs: []state.Addr{{Dev: "eth0", CIDR: netip.MustParsePrefix(cidr)}},
		Rules: []state.Rule{
			{Family: 4, Priority: 0, Table: 255, Protocol: 2},
			{Family: 4, Priority: 32766, Table: 254, Protocol: 2},
		},
		Sysctls: map[string]string{"net.ipv4.ip_forward": "0", "net.ipv4.ip_early_demux": "1"},
	}
}

func mustParse(t *testing.T, s string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(s), "m.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func lines(steps []state.Step) string {
	var b strings.Builder
	for _, s := range steps {
		b.WriteString(s.String() + "\n")
	}
	return b.String()
}

// The golden step order for a fresh migration of one address.
func TestFreshPlanOrder(t *testing.T) {
	c := mustParse(t, src)
	p, err := plan.Make(c, map[string]state.Facts{
		plan.Old: facts("198.51.100.10/24", 1500),
		plan.New: facts("203.0.113.20/24", 9000),
	}, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if p.Hosts[0].Host != plan.New || p.Hosts[1].Host != plan.Old {
		t.Fatalf("host order %s, %s; want new first", p.Hosts[0].Host, p.Hosts[1].Host)
	}
	wantNew := `+ link mig0 type vxlan local 203.0.113.20 remote 198.51.100.10 vni 4242 dstport 4789 address 02:6d:67:fe:2a:02 mtu 8950 up
+ sysctl net.ipv4.conf.mig0.rp_filter = 2
+ rule v4 pref 1000 lookup local proto 77
+ rule v4 pref 1100 from 198.51.100.10/32 lookup 4242 proto 77
+ rule v4 pref 500 to 198.51.100.10/32 iif lo lookup main proto 77
- rule v4 pref 0 lookup local proto 2
+ addr 198.51.100.10/32 dev lo
+ addr 169.254.42.2/30 dev mig0
+ route table 4242 0.0.0.0/0 via 169.254.42.1 dev mig0
+ nft table inet migrate: role new, mark 0x20000, no ARP for 198.51.100.10, udp/4789 to 203.0.113.20 only from 198.51.100.10 (digest ` + p.Hosts[0].Steps[9].After.Nft.Spec.Digest() + `)
`
	if got := lines(p.Hosts[0].Steps); got != wantNew {
		t.Errorf("new steps:\n%s\nwant:\n%s", got, wantNew)
	}
	wantOld := `+ link mig0 type vxlan local 198.51.100.10 remote 203.0.113.20 vni 4242 dstport 4789 address 02:6d:67:fe:2a:01 mtu 1450 up
+ sysctl net.ipv4.conf.mig0.accept_local = 1
+ sysctl net.ipv4.conf.mig0.rp_filter = 2
~ sysctl: net.ipv4.ip_early_demux = 1 -> net.ipv4.ip_early_demux = 0
~ sysctl: net.ipv4.ip_forward = 0 -> net.ipv4.ip_forward = 1
+ rule v4 pref 1000 lookup local proto 77
+ rule v4 pref 900 fwmark 0x20000/0x20000 lookup 4242 proto 77
- rule v4 pref 0 lookup local proto 2
+ addr 169.254.42.1/30 dev mig0
+ route table 4242 throw 203.0.113.20/32
+ route table 4242 0.0.0.0/0 via 169.254.42.2 dev mig0
+ nft table inet migrate: role old, mark 0x20000, 3 port(s) to NEW, 3 counted, forwards only its own ipv4, udp/4789 to 198.51.100.10 only from 203.0.113.20 (digest ` + p.Hosts[1].Steps[11].After.Nft.Spec.Digest() + `)
`
	if got := lines(p.Hosts[1].Steps); got != wantOld {
		t.Errorf("old steps:\n%s\nwant:\n%s", got, wantOld)
	}
	if a, c, d := p.Counts(); a != 18 || c != 2 || d != 2 {
		t.Errorf("counts %d %d %d", a, c, d)
	}
}

func TestRefusesAddressOldDoesNotHold(t *testing.T) {
	c := mustParse(t, strings.Replace(src, `address  = "198.51.100.10"`, `address  = "198.51.100.99"`, 1))
	_, err := plan.Make(c, map[string]state.Facts{
		plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500),
	}, state.NewJournal(), time.Now())
	if err == nil || !strings.Contains(err.Error(), "m.hcl:") || !strings.Contains(err.Error(), "does not hold address 198.51.100.99") {
		t.Fatalf("err = %v", err)
	}
}

func TestRefusesMovingOwnSSHPort(t *testing.T) {
	_, err := config.Parse([]byte(strings.Replace(src, `[8080, "9000-9001"]`, `["20-30"]`, 1)), "m.hcl")
	if err == nil || !strings.Contains(err.Error(), "m.hcl:18:") || !strings.Contains(err.Error(), "SSH") {
		t.Fatalf("err = %v", err)
	}
	// The check against the address the connection really reached.
	c := mustParse(t, src)
	if err := plan.CheckSelfLockout(c, plan.Old, "198.51.100.10", 8080); err == nil {
		t.Fatal("moving the port the SSH connection uses was not refused")
	}
}

func TestForeignLinkWithOurNameIsRefused(t *testing.T) {
	c := mustParse(t, src)
	f := facts("203.0.113.20/24", 1500)
	f.Links = append(f.Links, state.Link{Name: "mig0", Type: "dummy", MTU: 1500})
	_, err := plan.Make(c, map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: f}, state.NewJournal(), time.Now())
	if err == nil || !strings.Contains(err.Error(), "did not create it") {
		t.Fatalf("err = %v", err)
	}
}

func TestForwardOnlyPlan(t *testing.T) {
	c := mustParse(t, `
host "old" {
  ssh         = "root@198.51.100.10"
  known_hosts = "/dev/null"
}
host "new" {
  ssh         = "root@203.0.113.20"
  known_hosts = "/dev/null"
}
forward "bounce" {
  on       = "old"
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [80, 443]
  to       = "203.0.113.20"
}
forward "back" {
  on       = "new"
  address  = "203.0.113.20"
  protocol = "udp"
  ports    = [53]
  to       = "198.51.100.10"
  to_port  = 5353
}
`)
	p, err := plan.Make(c, map[string]state.Facts{
		plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500),
	}, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if p.Verify != nil {
		t.Error("a plan without a tunnel verifies a tunnel")
	}
	var oldNft, newNft *state.NftSpec
	for _, h := range p.Hosts {
		for _, s := range h.Steps {
			if s.After != nil && s.After.Nft != nil {
				if h.Host == plan.Old {
					oldNft = &s.After.Nft.Spec
				} else {
					newNft = &s.After.Nft.Spec
				}
			}
			if s.Object().Link != nil || s.Object().Rule != nil {
				t.Errorf("forward-only plan touches %s", s)
			}
		}
	}
	if oldNft == nil || len(oldNft.Forwards) != 2 || oldNft.Forwards[0] != (state.NftForward{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 80, To: netip.MustParseAddr("203.0.113.20"), ToPort: 80}) {
		t.Errorf("old forwards: %+v", oldNft)
	}
	if newNft == nil || len(newNft.Forwards) != 1 || newNft.Forwards[0].ToPort != 5353 || newNft.ForwardMark == 0 {
		t.Errorf("new forwards: %+v", newNft)
	}
	if !strings.Contains(lines(p.Steps(plan.Old)), "ip_forward = 0 -> net.ipv4.ip_forward = 1") {
		t.Errorf("old does not enable forwarding:\n%s", lines(p.Steps(plan.Old)))
	}
}

// A foreign rule below 1100 must keep seeing what it saw before: migrate's
// rules and the moved local rule go ahead of it.
func TestRulePrefsStayAheadOfForeignRules(t *testing.T) {
	c := mustParse(t, src)
	old := facts("198.51.100.10/24", 1500)
	old.Rules = append(old.Rules, state.Rule{Family: 4, Priority: 200, Mark: 1, Mask: 1, Table: 100})
	p, err := plan.Make(c, map[string]state.Facts{plan.Old: old, plan.New: facts("203.0.113.20/24", 1500)}, state.NewJournal(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got := lines(p.Steps(plan.Old))
	for _, want := range []string{"+ rule v4 pref 120 lookup local", "+ rule v4 pref 80 fwmark 0x20000/0x20000 lookup 4242"} {
		if !strings.Contains(got, want) {
			t.Errorf("old steps lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "pref 200") {
		t.Errorf("the foreign rule was touched:\n%s", got)
	}
	old.Rules = append(old.Rules, state.Rule{Family: 4, Priority: 3, Table: 100})
	if _, err := plan.Make(c, map[string]state.Facts{plan.Old: old, plan.New: facts("203.0.113.20/24", 1500)}, state.NewJournal(), time.Now()); err == nil || !strings.Contains(err.Error(), "no room") {
		t.Errorf("a foreign rule at 3: err = %v", err)
	}
}
