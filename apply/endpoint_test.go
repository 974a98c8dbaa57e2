package apply_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// NEW's address changes mid-migration, and the edit that follows it also
// adds a service: OLD's table changes in two steps of one apply (the
// underlay filter before the tunnel check, the rest after). Pruning keeps
// both, rollback lands on the first apply (with NEW at its new address),
// and rollback --all on the hosts as before migrate.
func TestRollbackAfterNewEndpoint(t *testing.T) {
	l := newLab(t)
	before := l.dump()
	l.apply(t, "new")
	// The re-IP, as the provider does it: not migrate's.
	reip := func(add, del string) {
		t.Helper()
		a := state.Object{Addr: &state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix(add)}}
		d := state.Object{Addr: &state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix(del)}}
		l.handEdit(t, plan.New, state.Step{Action: state.Create, After: &a})
		l.handEdit(t, plan.New, state.Step{Action: state.Delete, Before: &d})
	}
	reip("198.18.2.20/24", "203.0.113.20/24")
	atFirst := l.dump()

	src := strings.Replace(hcl, `new_endpoint = "203.0.113.20"`, `new_endpoint = "198.18.2.20"`, 1)
	src = strings.Replace(src, "%s", "new", 1) + "service \"api\" {\n  address  = \"198.51.100.10\"\n  protocol = \"tcp\"\n  ports    = [8081]\n  stage    = \"old\"\n}\n"
	c, err := config.Parse([]byte(src), "m.hcl")
	if err != nil {
		t.Fatal(err)
	}
	p := l.plan(t, c)
	var tables []state.Step
	for _, s := range p.Steps(plan.Old) {
		if s.Object().Nft != nil {
			tables = append(tables, s)
		}
	}
	if len(tables) != 2 || !plan.UnderlayOnly(tables[0]) || plan.UnderlayOnly(tables[1]) {
		t.Fatalf("OLD's table steps: %v", tables)
	}
	ex := l.executor()
	ex.Intent = p.Intent
	if err := ex.Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if p := l.plan(t, c); !p.Empty() {
		t.Fatalf("not converged: %+v", p.Hosts)
	}
	apply.Prune(l.journal, apply.Prunable(l.journal, nil), nil)
	if err := l.journal.Save(l.path); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range l.journal.Active() {
		if e.Step.Host == plan.Old && e.Step.Object().Nft != nil {
			n++
		}
	}
	if n != 3 {
		t.Errorf("after pruning OLD's table has %d journal entries, want 3 (the first apply's, and this one's two)", n)
	}

	l.rollback(t, false)
	sameHosts(t, "rollback of the endpoint change", l.dump(), atFirst)
	l.rollback(t, true)
	reip("203.0.113.20/24", "198.18.2.20/24")
	sameHosts(t, "rollback --all, NEW's first address back", l.dump(), before)
}
