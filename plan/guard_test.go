package plan_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// nftSpecs returns the nft spec each host's plan would write (nil: none
// planned, the table unchanged or absent).
func nftSpecs(p *plan.Plan) map[string]*state.NftSpec {
	out := map[string]*state.NftSpec{}
	for _, h := range p.Hosts {
		for _, s := range h.Steps {
			if s.After != nil && s.After.Nft != nil {
				out[h.Host] = &s.After.Nft.Spec
			}
		}
	}
	return out
}

// The guard follows what each host did before migrate: a host that did
// not forward a family forwards only migrate's flows of it once migrate
// switches forwarding on; a host that forwarded already is left alone.
// The decision rests on the journal's record of the value replaced, so a
// later plan (the live value now 1) keeps it.
func TestGuardFollowsForwardingBeforeMigrate(t *testing.T) {
	const dual = src + `
service "web6" {
  address  = "2001:db8:100::10"
  protocol = "tcp"
  ports    = [8080]
  stage    = "new"
}
forward "back" {
  on       = "new"
  address  = "203.0.113.20"
  protocol = "tcp"
  ports    = [8443]
  to       = "198.51.100.10"
}
`
	oldFacts := func(v4, v6 string) state.Facts {
		f := facts("198.51.100.10/24", 1500)
		f.Addrs = append(f.Addrs, state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix("2001:db8:100::10/64")})
		f.Rules = append(f.Rules, state.Rule{Family: 6, Priority: 0, Table: 255, Protocol: 2})
		f.Sysctls = map[string]string{"net.ipv4.ip_forward": v4, "net.ipv6.conf.all.forwarding": v6}
		return f
	}
	newFacts := func(v4 string) state.Facts {
		f := facts("203.0.113.20/24", 1500)
		f.Rules = append(f.Rules, state.Rule{Family: 6, Priority: 0, Table: 255, Protocol: 2})
		f.Sysctls = map[string]string{"net.ipv4.ip_forward": v4, "net.ipv6.conf.all.forwarding": "0"}
		return f
	}
	mk := func(t *testing.T, hcl string, old, nw state.Facts, j *state.Journal) map[string]*state.NftSpec {
		t.Helper()
		p, err := plan.Make(mustParse(t, hcl), map[string]state.Facts{plan.Old: old, plan.New: nw}, j, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		return nftSpecs(p)
	}
	type guards struct{ old4, old6, new4, new6 bool }
	got := func(s map[string]*state.NftSpec) guards {
		return guards{s[plan.Old].Guard4, s[plan.Old].Guard6, s[plan.New].Guard4, s[plan.New].Guard6}
	}

	t.Run("fresh, nothing forwarded", func(t *testing.T) {
		if g := got(mk(t, dual, oldFacts("0", "0"), newFacts("0"), state.NewJournal())); g != (guards{true, true, true, false}) {
			t.Errorf("guards %+v; want old v4+v6 and new v4 (its forward is IPv4)", g)
		}
	})
	t.Run("fresh, both forwarded already", func(t *testing.T) {
		if g := got(mk(t, dual, oldFacts("1", "1"), newFacts("1"), state.NewJournal())); g != (guards{}) {
			t.Errorf("guards %+v; want none", g)
		}
	})
	t.Run("old forwarded IPv6 only", func(t *testing.T) {
		if g := got(mk(t, dual, oldFacts("0", "1"), newFacts("1"), state.NewJournal())); g != (guards{old4: true}) {
			t.Errorf("guards %+v; want old v4 only", g)
		}
	})
	t.Run("IPv4 plan leaves IPv6 alone", func(t *testing.T) {
		s := mk(t, src, oldFacts("0", "0"), newFacts("0"), state.NewJournal())
		if g := got(map[string]*state.NftSpec{plan.Old: s[plan.Old], plan.New: {}}); g != (guards{old4: true}) {
			t.Errorf("guards %+v; want old v4 only (migrate does not switch IPv6 forwarding on)", g)
		}
	})
	t.Run("later apply: the journal says what it was", func(t *testing.T) {
		// After the first apply: forwarding is 1 on both hosts, and the
		// journal holds the values migrate replaced. A change of stage
		// rewrites both tables; the guards must stay.
		j := state.NewJournal()
		for i, c := range []struct{ host, name string }{
			{plan.Old, "net.ipv4.ip_forward"}, {plan.Old, "net.ipv6.conf.all.forwarding"}, {plan.New, "net.ipv4.ip_forward"},
		} {
			j.Append("run1", i+1, state.Step{Host: c.host, Action: state.Update,
				Before: &state.Object{Sysctl: &state.Sysctl{Name: c.name, Value: "0"}},
				After:  &state.Object{Sysctl: &state.Sysctl{Name: c.name, Value: "1"}}}, time.Unix(0, 0))
		}
		staged := dual + `
forward "more" {
  on       = "new"
  address  = "203.0.113.20"
  protocol = "tcp"
  ports    = [9443]
  to       = "198.51.100.10"
}
forward "more-old" {
  on       = "old"
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [9443]
  to       = "203.0.113.20"
}
`
		if g := got(mk(t, staged, oldFacts("1", "1"), newFacts("1"), j)); g != (guards{true, true, true, false}) {
			t.Errorf("guards %+v after the first apply; want those of before it", g)
		}
	})
}
