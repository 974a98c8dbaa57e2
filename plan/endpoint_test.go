package plan_test

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// NEW's endpoint changed (a cloud VM's new address): OLD's underlay filter
// must let the new address in before apply's tunnel check, which runs
// before OLD's first route or nft step that is not UnderlayOnly. The
// filter's update goes right after the link; with other changes of the
// table (a service moved in the same edit) it is a step of its own and
// the rest comes after the routes, as ever.
func TestEndpointChangeOrder(t *testing.T) {
	oldEP := netip.MustParseAddr("198.51.100.10")
	was, now := netip.MustParseAddr("203.0.113.20"), netip.MustParseAddr("198.18.2.20")
	link := func(remote netip.Addr) state.Object {
		return state.Object{Link: &state.Link{Name: "mig0", Type: state.VXLAN, Local: oldEP, Remote: remote, VNI: 4242, Port: 4789, MTU: 1450, Up: true}}
	}
	throw := func(ep netip.Addr) state.Object {
		return state.Object{Route: &state.Route{Family: 4, Table: 4242, Type: "throw", Dst: netip.PrefixFrom(ep, 32), Protocol: plan.RouteProto}}
	}
	web := state.NftService{Addr: oldEP, Proto: "tcp", Port: 8080, Percent: 100}
	mail := state.NftService{Addr: oldEP, Proto: "tcp", Port: 25, Percent: 100}
	table := func(peer netip.Addr, svcs ...state.NftService) state.Object {
		return state.Object{Nft: &state.NftTable{Family: "inet", Name: plan.NftTableName, Spec: state.NftSpec{
			Role: state.RoleOld, TunnelDev: "mig0", Mark: 0x20000, Services: svcs, Accounted: svcs,
			Underlay: &state.NftUnderlay{Proto: "udp", Port: 4789, Local: oldEP, Peer: peer},
		}}}
	}
	facts := state.Facts{
		Links:  []state.Link{*link(was).Link},
		Routes: []state.Route{*throw(was).Route},
		Nft:    table(was, web).Nft,
	}
	owned := map[string]*state.Object{link(was).Key(): nil, throw(was).Key(): nil, table(was).Key(): nil}
	type want struct {
		action   state.Action
		key      string
		underlay bool // plan.UnderlayOnly
	}
	for _, c := range []struct {
		name  string
		table state.Object
		steps []want
	}{
		{"endpoint only", table(now, web), []want{
			{state.Update, link(now).Key(), false},
			{state.Update, table(now).Key(), true},
			{state.Create, throw(now).Key(), false},
			{state.Delete, throw(was).Key(), false},
		}},
		{"endpoint and a service", table(now, mail, web), []want{
			{state.Update, link(now).Key(), false},
			{state.Update, table(now).Key(), true},
			{state.Create, throw(now).Key(), false},
			{state.Update, table(now).Key(), false},
			{state.Delete, throw(was).Key(), false},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			steps, err := plan.Diff(plan.Old, plan.HostDesired{Objects: []state.Object{link(now), throw(now), c.table}}, facts, owned)
			if err != nil {
				t.Fatal(err)
			}
			var got []want
			for _, s := range steps {
				got = append(got, want{s.Action, s.Key(), plan.UnderlayOnly(s)})
			}
			if !reflect.DeepEqual(got, c.steps) {
				t.Fatalf("steps:\n got %v\nwant %v", got, c.steps)
			}
			// The table's steps chain from what the host has to what
			// the plan wants.
			var tables []state.Step
			for _, s := range steps {
				if s.Object().Nft != nil {
					tables = append(tables, s)
				}
			}
			if !tables[0].Before.Equal(table(was, web)) || !tables[len(tables)-1].After.Equal(c.table) {
				t.Errorf("table steps do not go from the host's table to the plan's: %v", tables)
			}
			for i := 1; i < len(tables); i++ {
				if !tables[i].Before.Equal(*tables[i-1].After) {
					t.Errorf("table step %d starts from %v, not from step %d's %v", i, tables[i].Before, i-1, tables[i-1].After)
				}
			}
		})
	}

	// A change without a new endpoint is not UnderlayOnly: after the routes.
	steps, err := plan.Diff(plan.Old, plan.HostDesired{Objects: []state.Object{link(was), throw(was), table(was, mail, web)}}, facts, owned)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 1 || steps[0].Object().Nft == nil || plan.UnderlayOnly(steps[0]) {
		t.Errorf("a service added, same endpoint: %v", steps)
	}
}
