package apply

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// Change is what one `migrate rollback` undoes: an apply that changed
// what the hosts should look like, together with the applies after it
// that only repaired drift (each of their steps put back a value that an
// earlier apply had set). Undoing the repair alone would leave the hosts
// half way: a tunnel and rules without the nft table that was deleted by
// hand and put back.
type Change struct {
	Runs    []string       // oldest first
	Time    time.Time      // of its first step
	Intent  string         // digest of what the first run applied, when recorded
	Entries []*state.Entry // active entries, journal order
}

// Changes groups the journal's active entries into changes, oldest first.
func Changes(j *state.Journal) []Change {
	var runs []string
	byRun := map[string][]*state.Entry{}
	for _, e := range j.Active() {
		if _, ok := byRun[e.Run]; !ok {
			runs = append(runs, e.Run)
		}
		byRun[e.Run] = append(byRun[e.Run], e)
	}
	var out []Change
	set := map[string]*state.Object{} // host+key -> what the newest earlier entry left
	for _, r := range runs {
		entries := byRun[r]
		repair := len(out) > 0
		for _, e := range entries {
			prev, ok := set[hostKey(e.Step)]
			if !ok || !j.SameObject(prev, e.Step.After) {
				repair = false
				break
			}
		}
		if repair {
			c := &out[len(out)-1]
			c.Runs = append(c.Runs, r)
			c.Entries = append(c.Entries, entries...)
		} else {
			out = append(out, Change{Runs: []string{r}, Time: entries[0].Time, Intent: j.RunIntent(r), Entries: entries})
		}
		for _, e := range entries {
			set[hostKey(e.Step)] = e.Step.After
		}
	}
	return out
}

func hostKey(s state.Step) string { return s.Host + "\x00" + s.Key() }

// Restore is one object a rollback puts back: its value after the
// rollback (nil: absent), and the entries it undoes, newest first.
type Restore struct {
	Host    string
	Key     string
	Target  *state.Object
	Entries []*state.Entry
}

// Restores computes, for every object the entries of undo touched, the
// value it must have once they are undone: what the newest other active
// entry set (an earlier change), or else the value before the first of
// them (before migrate's change). Every other object migrate still owns
// gets a restore too, without entries: to what the newest entry set, so
// that what was changed by hand since is put back and the hosts land
// exactly on the previous change. Those come first, in apply order; then
// the undone objects by the first entry of each, newest first: the
// reverse of the order apply first made them in. (By the first entry, not
// the newest: pruning drops the later entries of an object within a
// change, see Prunable, and the order must not depend on it.)
func Restores(j *state.Journal, undo []*state.Entry) []Restore {
	in := map[*state.Entry]bool{}
	for _, e := range undo {
		in[e] = true
	}
	earlier := map[string]*state.Object{} // host+key -> After of the newest active entry outside undo
	has := map[string]bool{}
	for _, e := range j.Active() {
		if !in[e] {
			earlier[hostKey(e.Step)], has[hostKey(e.Step)] = e.Step.After, true
		}
	}
	byKey := map[string]*Restore{}
	first := map[string]int{}
	for i, e := range undo {
		hk := hostKey(e.Step)
		r := byKey[hk]
		if r == nil {
			r = &Restore{Host: e.Step.Host, Key: e.Step.Key(), Target: e.Step.Before}
			if has[hk] {
				r.Target = earlier[hk]
			}
			byKey[hk] = r
			first[hk] = i
		}
		r.Entries = append([]*state.Entry{e}, r.Entries...)
	}
	// What stays applied comes first, put back where it drifted, in the
	// order apply made it (a device before its addresses and routes).
	var out []Restore
	kept := map[string]bool{}
	for _, e := range j.Active() {
		hk := hostKey(e.Step)
		if in[e] || byKey[hk] != nil || kept[hk] {
			continue
		}
		kept[hk] = true
		out = append(out, Restore{Host: e.Step.Host, Key: e.Step.Key(), Target: earlier[hk]})
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return first[keys[a]] > first[keys[b]] })
	for _, k := range keys {
		out = append(out, *byKey[k])
	}
	return out
}

// RollbackStep is one restore made concrete against a host's live state.
type RollbackStep struct {
	Restore
	// Step brings the object to Target; nil when it is there already
	// (the entries are then only marked undone).
	Step *state.Step
}

// RollbackSteps compares each restore with its host's facts.
func RollbackSteps(restores []Restore, facts map[string]state.Facts) ([]RollbackStep, error) {
	cur := map[string]map[string]state.Object{}
	for h, f := range facts {
		cur[h] = plan.Current(f)
	}
	var out []RollbackStep
	for _, r := range restores {
		f, ok := facts[r.Host]
		if !ok {
			return nil, fmt.Errorf("no facts from host %s", r.Host)
		}
		live, exists := cur[r.Host][r.Key]
		drifted := exists && live.Nft != nil && f.NftDrift != ""
		rs := RollbackStep{Restore: r}
		switch {
		case r.Target == nil && exists:
			l := live
			if drifted && l.Nft.Spec.Role == "" {
				l = r.Entries[0].Step.Object()
			}
			rs.Step = &state.Step{Host: r.Host, Action: state.Delete, Before: &l}
		case r.Target == nil:
		case !exists:
			t := *r.Target
			rs.Step = &state.Step{Host: r.Host, Action: state.Create, After: &t}
		case drifted || !live.Equal(*r.Target):
			l, t := live, *r.Target
			if drifted && l.Nft.Spec.Role == "" {
				l = t
			}
			rs.Step = &state.Step{Host: r.Host, Action: state.Update, Before: &l, After: &t}
		}
		if rs.Step == nil && len(rs.Entries) == 0 {
			continue // kept, and as it must be
		}
		out = append(out, rs)
	}
	return out, nil
}

// FactsRequestFor asks a host for what the restores of that host touch.
func FactsRequestFor(host string, restores []Restore) state.FactsRequest {
	var req state.FactsRequest
	tables := map[int]bool{}
	for _, r := range restores {
		if r.Host != host {
			continue
		}
		objs := []*state.Object{r.Target}
		for _, e := range r.Entries {
			objs = append(objs, e.Step.Before, e.Step.After)
		}
		for _, o := range objs {
			switch {
			case o == nil:
			case o.Sysctl != nil:
				req.Sysctls = appendOnce(req.Sysctls, o.Sysctl.Name)
			case o.Route != nil:
				if !tables[o.Route.Table] {
					tables[o.Route.Table] = true
					req.Tables = append(req.Tables, o.Route.Table)
				}
			case o.Nft != nil:
				req.NftTable = o.Nft.Name
			}
		}
	}
	sort.Strings(req.Sysctls)
	sort.Ints(req.Tables)
	return req
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// Undo runs the rollback steps in order. Each entry is marked undone in
// the state file and in its host's journal as soon as its object is back:
// the first entry of an object with the step that puts it back, the others
// with the same step again, which then changes nothing (creating what is
// there, deleting what is gone and setting a value twice are no-ops).
func (e *Executor) Undo(ctx context.Context, steps []RollbackStep) error {
	defer e.compact()
	for _, rs := range steps {
		h, ok := e.Hosts[rs.Host]
		if !ok {
			return fmt.Errorf("no connection to host %s", rs.Host)
		}
		if len(rs.Entries) == 0 {
			// Drift of what stays applied: put back, nothing to mark.
			start := time.Now()
			err := h.Apply(ctx, *rs.Step, state.Record{})
			if err != nil {
				err = fmt.Errorf("host %s: put back %s: %w", rs.Host, rs.Step.String(), err)
			}
			if e.Progress != nil {
				e.Progress(rs.Host, *rs.Step, time.Since(start), err)
			}
			if err != nil {
				return err
			}
			continue
		}
		for i, en := range rs.Entries {
			s := ensureStep(rs, i)
			start := time.Now()
			if err := h.Apply(ctx, s, state.Record{Run: en.Run, Seq: en.Seq, Undo: true}); err != nil {
				err = fmt.Errorf("host %s: undo step %d (%s): %w", rs.Host, en.Seq, s.String(), err)
				if e.Progress != nil && (i == 0 && rs.Step != nil) {
					e.Progress(rs.Host, s, time.Since(start), err)
				}
				return err
			}
			if err := e.Journal.Commit(e.StatePath, state.LogRecord{Op: state.OpUndo, Run: en.Run, Seq: en.Seq, Time: e.now()}); err != nil {
				return fmt.Errorf("host %s: step undone but the state file could not be written: %w", rs.Host, err)
			}
			if e.Progress != nil && i == 0 && rs.Step != nil {
				e.Progress(rs.Host, s, time.Since(start), nil)
			}
		}
	}
	return nil
}

// ensureStep is the step sent for the i-th entry of a restore: the one
// that puts the object back first, then ones that only confirm it.
func ensureStep(rs RollbackStep, i int) state.Step {
	if i == 0 && rs.Step != nil {
		return *rs.Step
	}
	if rs.Target == nil {
		gone := rs.Entries[i].Step.Object()
		return state.Step{Host: rs.Host, Action: state.Delete, Before: &gone}
	}
	t := *rs.Target
	return state.Step{Host: rs.Host, Action: state.Update, Before: &t, After: &t}
}
