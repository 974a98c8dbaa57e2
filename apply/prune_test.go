package apply_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// twin runs the same operations on two labs, one of which prunes its
// journal; nothing else differs (run ids and clocks are the same).
type twin struct {
	t      *testing.T
	labs   [2]*lab // 0: never pruned, 1: pruned
	runs   int
	clock  time.Time
	pruned int
	log    []string
}

func (w *twin) exec(i int) *apply.Executor {
	ex := w.labs[i].executor()
	ex.Now = func() time.Time { return w.clock }
	return ex
}

func (w *twin) applyStage(stage string) {
	w.runs++
	w.clock = w.clock.Add(time.Minute)
	w.log = append(w.log, "apply "+stage)
	for i, l := range w.labs {
		c := loadStage(w.t, stage)
		p := l.plan(w.t, c)
		ex := w.exec(i)
		ex.Run = fmt.Sprintf("run%04d", w.runs)
		ex.Intent = p.Intent
		if err := ex.Apply(context.Background(), p); err != nil {
			w.t.Fatalf("%v: %v", w.log, err)
		}
	}
}

func (w *twin) rollback(all bool) {
	w.clock = w.clock.Add(time.Minute)
	w.log = append(w.log, fmt.Sprintf("rollback all=%v", all))
	var errs [2]error
	for i, l := range w.labs {
		// From the state file on disk, as the CLI does.
		j, err := state.LoadJournal(l.path)
		if err != nil {
			w.t.Fatal(err)
		}
		l.journal = j
		errs[i] = w.exec(i).Rollback(context.Background(), all)
	}
	if errs[0] != errs[1] {
		w.t.Fatalf("%v: rollback: %v without pruning, %v with", w.log, errs[0], errs[1])
	}
}

// drift edits one object by hand on both labs' hosts, when it exists.
func (w *twin) drift(r *rand.Rand) {
	type edit struct{ host, key string }
	edits := []edit{
		{plan.Old, "nft table inet migrate"},
		{plan.Old, "sysctl net.ipv4.ip_forward"},
		{plan.New, "link mig0"},
		{plan.Old, "link mig0"},
		{plan.New, "rule v4 pref 1100 from 198.51.100.10/32 lookup 4242"},
	}
	e := edits[r.Intn(len(edits))]
	modify := r.Intn(2) == 0
	w.log = append(w.log, fmt.Sprintf("drift %s %s modify=%v", e.host, e.key, modify))
	for _, l := range w.labs {
		f, _ := l.hosts[e.host].Facts(context.Background(), state.FactsRequest{NftTable: plan.NftTableName, Tables: []int{4242}, Sysctls: []string{"net.ipv4.ip_forward"}})
		o, ok := plan.Current(f)[e.key]
		if !ok {
			continue
		}
		s := state.Step{Host: e.host, Action: state.Delete, Before: &o}
		if modify {
			n := o
			switch {
			case o.Sysctl != nil:
				n.Sysctl = &state.Sysctl{Name: o.Sysctl.Name, Value: "0"}
			case o.Link != nil:
				lk := *o.Link
				lk.MTU = 1300
				n.Link = &lk
			case o.Nft != nil:
				t := *o.Nft
				t.Spec.Mark++
				n.Nft = &t
			default:
				continue
			}
			s = state.Step{Host: e.host, Action: state.Update, Before: &o, After: &n}
		}
		if err := l.hosts[e.host].Apply(context.Background(), s, state.Record{}); err != nil {
			w.t.Fatal(err)
		}
	}
}

func (w *twin) prune() {
	w.log = append(w.log, "prune")
	l := w.labs[1]
	ids := apply.Prunable(l.journal, nil)
	w.pruned += apply.Prune(l.journal, ids, nil)
	if err := l.journal.Save(l.path); err != nil {
		w.t.Fatal(err)
	}
	if again := apply.Prunable(l.journal, nil); len(again) != 0 {
		w.t.Fatalf("%v: pruning twice prunes more: %v", w.log, again)
	}
}

// What rollback would do now, and how the hosts are.
func (w *twin) check() {
	var seen [2]string
	for i, l := range w.labs {
		type change struct {
			First  string
			Time   time.Time
			Intent string
		}
		var cs []change
		for _, c := range apply.Changes(l.journal) {
			cs = append(cs, change{strings.Join(c.Runs, ","), c.Time, c.Intent})
		}
		view := map[string]any{"old": l.hosts[plan.Old].Dump(), "new": l.hosts[plan.New].Dump(), "changes": cs}
		for _, all := range []bool{false, true} {
			p, err := w.exec(i).PlanRollback(context.Background(), all)
			if err != nil {
				view[fmt.Sprint("plan", all)] = err.Error()
				continue
			}
			var steps []string
			for _, s := range p.Steps {
				b, _ := json.Marshal(struct {
					H, K string
					T    *state.Object
					S    *state.Step
				}{s.Host, s.Key, s.Target, s.Step})
				steps = append(steps, string(b))
			}
			view[fmt.Sprint("plan", all)] = steps
		}
		b, _ := json.MarshalIndent(view, "", " ")
		seen[i] = string(b)
	}
	if seen[0] != seen[1] {
		w.t.Fatalf("after %v\nwithout pruning:\n%s\nwith pruning:\n%s", w.log, seen[0], seen[1])
	}
}

// Random applies, repairs, hand edits and rollbacks, pruning at random
// points: rollback plans and results are identical with and without
// pruning.
func TestPruningKeepsEveryRollback(t *testing.T) {
	stages := []string{"old", "canary", "new"}
	for seed := int64(1); seed <= 25; seed++ {
		r := rand.New(rand.NewSource(seed))
		w := &twin{t: t, labs: [2]*lab{newLab(t), newLab(t)}, clock: time.Unix(1e9, 0)}
		stage := ""
		for op := 0; op < 40; op++ {
			switch k := r.Intn(10); {
			case k < 3 || stage == "":
				stage = stages[r.Intn(len(stages))]
				w.applyStage(stage)
			case k < 5:
				w.drift(r)
			case k < 7:
				w.applyStage(stage) // repairs what drifted, if anything
			case k < 9:
				w.rollback(r.Intn(6) == 0)
			default:
				w.prune()
			}
			if r.Intn(3) == 0 {
				w.prune()
			}
			w.check()
		}
		w.rollback(true)
		w.check()
		if w.pruned == 0 {
			t.Errorf("seed %d: nothing was ever pruned", seed)
		}
	}
}
