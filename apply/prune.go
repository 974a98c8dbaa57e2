package apply

import "github.com/opsmigrate/migrate/state"

// Prunable lists the entries rollback will never need, per host:
//
//   - entries already rolled back (Changes and Restores read only active
//     entries);
//   - within one change, every entry of an object after the first that
//     put back the After the first one set: a repair (that is what makes
//     its run part of the change). Restores read, per change and object,
//     the first entry's Before and the After, both kept. (One apply may
//     change an object in two steps with different Afters, OLD's nft
//     table when a tunnel endpoint changes: plan.UnderlayOnly. Both are
//     kept.)
//
// Entries of runs for which keep returns true are never listed: a run
// whose revert timer may still fire replays its own entries from the host
// journal. Dropping what Prunable lists leaves Changes (but for runs left
// without entries) and Restores, hence every rollback, as they were.
func Prunable(j *state.Journal, keep func(run string) bool) map[string][]state.EntryID {
	out := map[string][]state.EntryID{}
	add := func(e *state.Entry) {
		if keep != nil && keep(e.Run) {
			return
		}
		out[e.Step.Host] = append(out[e.Step.Host], state.EntryID{Run: e.Run, Seq: e.Seq})
	}
	for i := range j.Entries {
		if j.Entries[i].RolledBack != nil {
			add(&j.Entries[i])
		}
	}
	for _, c := range Changes(j) {
		first := map[string]*state.Entry{}
		kept := map[string]bool{} // runs with an entry kept
		for _, e := range c.Entries {
			hk := hostKey(e.Step)
			f, seen := first[hk]
			if !seen {
				first[hk] = e
				kept[e.Run] = true
				continue
			}
			// One entry of each repair run stays, so that rollback
			// still says which applies only repaired drift.
			if j.SameObject(f.Step.After, e.Step.After) && kept[e.Run] {
				add(e)
				continue
			}
			kept[e.Run] = true
		}
	}
	return out
}

// Prune drops from the journal what Prunable lists (hosts: only the
// entries of these hosts, whose own journals dropped them too; nil: all).
func Prune(j *state.Journal, ids map[string][]state.EntryID, hosts []string) int {
	var drop []state.EntryID
	for h, list := range ids {
		if hosts != nil && !contains(hosts, h) {
			continue
		}
		drop = append(drop, list...)
	}
	return j.Drop(drop)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
