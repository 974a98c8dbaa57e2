package ops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/state"
)

// StatePath is the state file: the one given (flag), else
// migration.state.json beside the plan file.
func StatePath(planFile, flag string) string {
	if flag != "" {
		return flag
	}
	return filepath.Join(filepath.Dir(planFile), "migration.state.json")
}

// LoadState reads the state file at sp for the commands that read it
// only (`migrate state`); its absence means nothing was applied from here.
func LoadState(sp string) (*state.Journal, error) {
	if _, err := os.Stat(sp); err != nil {
		return nil, fmt.Errorf("no state file at %s (%v): nothing has been applied from here; give --state PATH or -f PLANFILE", sp, err)
	}
	return state.LoadJournal(sp)
}

// LockHosts takes the host lock on every host of the session, with the
// same ID as the local lock.
func LockHosts[H Host](ctx context.Context, s *Session[H], info proto.LockInfo) error {
	for _, name := range s.Names() {
		if err := s.Clients[name].Lock(ctx, info); err != nil {
			return fmt.Errorf("host %s: %w", name, err)
		}
	}
	return nil
}

// Reconcile brings the local journal in line with the hosts' own
// journals: steps a host recorded that the state file lacks (a migrate
// that died between the two writes, or a lost state file) are added, and
// steps a host's revert timer undid are marked rolled back. It returns a
// note for each change and saves the state file when it changed.
func Reconcile[H Host](ctx context.Context, s *Session[H], j *state.Journal, statePath string) ([]string, error) {
	var notes []string
	changed := false
	for _, name := range s.Names() {
		hj, err := s.Clients[name].Journal(ctx)
		if err != nil {
			return nil, fmt.Errorf("host %s: read its journal: %w", name, err)
		}
		adopted, reverted := 0, 0
		for _, he := range hj.Entries {
			le := j.Find(he.Run, he.Seq)
			if le == nil {
				if he.RolledBack != nil {
					continue
				}
				e := he
				e.Pending = false
				j.Entries = append(j.Entries, e)
				adopted++
				changed = true
				continue
			}
			if he.RolledBack != nil && le.RolledBack == nil {
				t := *he.RolledBack
				le.RolledBack = &t
				reverted++
				changed = true
			}
		}
		if adopted > 0 {
			notes = append(notes, fmt.Sprintf("host %s journal records %d applied step(s) that the state file %s did not; they were added to it", name, adopted, statePath))
		}
		if reverted > 0 {
			notes = append(notes, fmt.Sprintf("host %s undid %d step(s) by itself (never confirmed: its revert timer expired, or it rebooted inside the confirm window); the state file now says so", name, reverted))
		}
	}
	if !changed {
		return notes, nil
	}
	sort.SliceStable(j.Entries, func(a, b int) bool { return j.Entries[a].Seq < j.Entries[b].Seq })
	if j.Targets == nil {
		j.Targets = map[string]state.Target{}
	}
	for name := range s.Clients {
		if _, ok := j.Targets[name]; !ok {
			j.Targets[name] = StateTarget(s.Targets[name])
		}
	}
	return notes, j.Save(statePath)
}

// PruneJournals drops what no rollback needs (apply.Prunable) from each
// host's journal, then the same entries from the state file: a host first,
// so that reconcile never finds on a host an entry the state file dropped
// and adopts it again. A host refuses to drop entries its revert timer may
// still replay; the state file drops only what each host dropped. Pruning
// is housekeeping: a failure is a note, never a failed command.
func PruneJournals[H Host](ctx context.Context, s *Session[H], j *state.Journal, statePath string) []string {
	ids := apply.Prunable(j, nil)
	if len(ids) == 0 {
		return nil
	}
	var notes []string
	var dropped []state.EntryID
	for _, name := range s.Names() {
		if len(ids[name]) == 0 {
			continue
		}
		d, err := s.Clients[name].Prune(ctx, ids[name])
		if err != nil {
			notes = append(notes, fmt.Sprintf("host %s: could not prune its journal (%v); it will be tried again next time", name, err))
			continue
		}
		dropped = append(dropped, d...)
	}
	if j.Drop(dropped) == 0 {
		return notes
	}
	if err := j.Save(statePath); err != nil {
		notes = append(notes, fmt.Sprintf("could not save the pruned state file %s (%v); the hosts' journals hold what it needs", statePath, err))
	}
	return notes
}
