package apply_test

import (
	"context"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/apply/applytest"
	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

func loadStage(t *testing.T, stage string) *config.Config {
	t.Helper()
	src := strings.Replace(hcl, `stage    = "%s"`, `stage    = "`+stage+`"`, 1)
	if stage == "canary" {
		src = strings.Replace(src, `stage    = "canary"`, "stage    = \"canary\"\n  canary_percent = 25", 1)
	}
	c, err := config.Parse([]byte(src), "m.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (l *lab) dump() map[string]string {
	return map[string]string{plan.Old: l.hosts[plan.Old].Dump(), plan.New: l.hosts[plan.New].Dump()}
}

func (l *lab) apply(t *testing.T, stage string) {
	t.Helper()
	c := loadStage(t, stage)
	p := l.plan(t, c)
	ex := l.executor()
	ex.Intent = p.Intent
	if err := ex.Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if p := l.plan(t, c); !p.Empty() {
		t.Fatalf("stage %s: not converged", stage)
	}
}

func (l *lab) rollback(t *testing.T, all bool) {
	t.Helper()
	// As the CLI does: from the state file on disk.
	j, err := state.LoadJournal(l.path)
	if err != nil {
		t.Fatal(err)
	}
	l.journal = j
	if err := l.executor().Rollback(context.Background(), all); err != nil {
		t.Fatal(err)
	}
}

func sameHosts(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for h := range want {
		if got[h] != want[h] {
			t.Errorf("%s: host %s is\n%s\nwant\n%s", what, h, got[h], want[h])
		}
	}
}

// handEdit changes one object on a host as a person would: outside
// migrate, unrecorded.
func (l *lab) handEdit(t *testing.T, host string, s state.Step) {
	t.Helper()
	s.Host = host
	if err := l.hosts[host].Apply(context.Background(), s, state.Record{}); err != nil {
		t.Fatal(err)
	}
}

func (l *lab) object(t *testing.T, host, key string) state.Object {
	t.Helper()
	f, _ := l.hosts[host].Facts(context.Background(), state.FactsRequest{NftTable: plan.NftTableName, Tables: []int{4242}, Sysctls: []string{"net.ipv4.ip_forward"}})
	o, ok := plan.Current(f)[key]
	if !ok {
		t.Fatalf("host %s has no %s", host, key)
	}
	return o
}

// The sequence: apply, the nft table deleted by hand, an apply
// that repairs it, rollback. The repair belongs to the change it
// repaired: rollback undoes both, not the repair alone (which left the
// tunnel, rules and forwarding without the table).
func TestRollbackUndoesARepairWithTheChangeItRepaired(t *testing.T) {
	l := newLab(t)
	before := l.dump()
	l.apply(t, "new")
	table := l.object(t, plan.Old, "nft table inet migrate")
	l.handEdit(t, plan.Old, state.Step{Action: state.Delete, Before: &table})
	p := l.plan(t, loadStage(t, "new"))
	if a, c, d := p.Counts(); a != 1 || c != 0 || d != 0 {
		t.Fatalf("repair plan: %d %d %d", a, c, d)
	}
	l.apply(t, "new")
	changes := apply.Changes(l.journal)
	if len(changes) != 1 || len(changes[0].Runs) != 2 {
		t.Fatalf("changes: %+v", changes)
	}
	l.rollback(t, false)
	sameHosts(t, "after rollback", l.dump(), before)
}

// old -> canary -> new, then rollback steps back one stage at a time.
func TestRollbackWalksBackThroughStages(t *testing.T) {
	l := newLab(t)
	before := l.dump()
	l.apply(t, "old")
	atOld := l.dump()
	l.apply(t, "canary")
	atCanary := l.dump()
	l.apply(t, "new")
	if n := len(apply.Changes(l.journal)); n != 3 {
		t.Fatalf("%d changes, want 3", n)
	}
	l.rollback(t, false)
	sameHosts(t, "first rollback (back at canary)", l.dump(), atCanary)
	l.rollback(t, false)
	sameHosts(t, "second rollback (back at the first apply)", l.dump(), atOld)
	l.rollback(t, true)
	sameHosts(t, "rollback --all", l.dump(), before)
	if err := l.executor().Rollback(context.Background(), false); err != apply.ErrNothingToRollBack {
		t.Errorf("a fourth rollback: %v", err)
	}
}

// Hand edits after the last apply (a sysctl, a rule gone, a link
// changed): rollback still lands exactly on the previous change.
func TestRollbackLandsExactlyAfterHandEdits(t *testing.T) {
	l := newLab(t)
	l.apply(t, "old")
	atOld := l.dump()
	l.apply(t, "new")
	fwd := l.object(t, plan.Old, "sysctl net.ipv4.ip_forward")
	off := fwd
	off.Sysctl = &state.Sysctl{Name: fwd.Sysctl.Name, Value: "0"}
	l.handEdit(t, plan.Old, state.Step{Action: state.Update, Before: &fwd, After: &off})
	rule := l.object(t, plan.New, "rule v4 pref 1100 from 198.51.100.10/32 lookup 4242")
	l.handEdit(t, plan.New, state.Step{Action: state.Delete, Before: &rule})
	link := l.object(t, plan.Old, "link mig0")
	small := link
	lk := *link.Link
	lk.MTU = 1300
	small.Link = &lk
	l.handEdit(t, plan.Old, state.Step{Action: state.Update, Before: &link, After: &small})
	l.rollback(t, false)
	sameHosts(t, "rollback after hand edits", l.dump(), atOld)
}

// One apply both repairs drift (the table deleted by hand) and changes
// the stage. Undoing it must land on the previous change, the table as
// that change wrote it: replaying the inverse of each step would delete
// the table instead.
func TestRollbackOfAnApplyThatRepairedAndChanged(t *testing.T) {
	l := newLab(t)
	l.apply(t, "old")
	atOld := l.dump()
	table := l.object(t, plan.Old, "nft table inet migrate")
	l.handEdit(t, plan.Old, state.Step{Action: state.Delete, Before: &table})
	l.apply(t, "new")
	if n := len(apply.Changes(l.journal)); n != 2 {
		t.Fatalf("%d changes, want 2", n)
	}
	l.rollback(t, false)
	sameHosts(t, "rollback", l.dump(), atOld)
}

// The rollback plan names what it undoes and lists only the steps that
// change something; objects already right are only marked.
func TestRollbackPlanNamesTheChange(t *testing.T) {
	l := newLab(t)
	l.apply(t, "old")
	l.apply(t, "new")
	p, err := l.executor().PlanRollback(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Changes) != 1 || p.Changes[0].Intent == "" || p.Changes[0].Intent == l.journal.Runs[0].Intent {
		t.Errorf("changes: %+v (runs %+v)", p.Changes, l.journal.Runs)
	}
	entries, steps := p.Count()
	if entries != 1 || steps != 1 || p.Steps[0].Step.Action != state.Update || p.Steps[0].Step.Object().Nft == nil {
		t.Errorf("rollback of a stage change: %d entries, %d steps: %+v", entries, steps, p.Steps)
	}
}

// A copy of migrate's table in the host's nftables configuration comes
// back at the next boot after the rollback: the rollback says so before
// it asks.
func TestRollbackWarnsOfSavedTable(t *testing.T) {
	l := newLab(t)
	f := baseFacts("198.51.100.10", "198.51.100.10/24")
	f.NftConf = []state.NftConfTable{{Family: "inet", Name: "migrate", File: "/etc/nftables.conf", Line: 2}}
	l.hosts[plan.Old] = applytest.NewFake(f)
	l.apply(t, "new")
	p, err := l.executor().PlanRollback(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings) != 1 || !strings.HasPrefix(p.Warnings[0], "WARNING host old: a file nftables.service loads holds a saved copy of migrate's table: /etc/nftables.conf:2 (table inet migrate).") {
		t.Errorf("warnings: %q", p.Warnings)
	}
}
