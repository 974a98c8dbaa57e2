package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/agent/reserve"
	"github.com/opsmigrate/migrate/internal/proc"
	"github.com/opsmigrate/migrate/state"
)

// HostFiles are the agent's files on its host, under Dir:
//
//	journal.json   the host's own journal: every step applied here, written
//	               ahead of the step and completed after it; a snapshot, and
//	journal.json.log the records since (one line per step, fsynced;
//	               state/journalfile.go), folded into the snapshot by a prune
//	               or once it outgrows it
//	journal.lock   flock guarding both (agent and watchdog)
//	lock, lock.json the host lock (flock held by the agent session) and who
//	               holds it
//	runs.lock      flock guarding the run-RUN.json records
//	run-RUN.json   the run's decision: armed, prepared, confirmed,
//	               reverting, reverted (runstate.go)
//	watchdog-RUN.log what a revert timer did
//	reserve        space set aside so that undo and rollback records can be
//	               written on a full file system (agent/reserve)
//
// Dir is checked before any of them is touched (CheckStateDir: root's,
// 0700, no symbolic link on the way), and none is ever followed through
// a symbolic link (statedir.go).
type HostFiles struct {
	Dir  string
	lock *os.File
	// paging is the journal a journal-page reader is paging through.
	paging *state.Journal
	// reserveChecked: this session's forward apply checked the space
	// (reserve.Ensure) once; later steps may use up the reserve.
	reserveChecked bool
}

func (h *HostFiles) path(name string) string { return filepath.Join(h.Dir, name) }

// ensureDir checks the state directory (statedir.go), creating it when
// missing, before any file in it is touched.
func (h *HostFiles) ensureDir() error { return CheckStateDir(h.Dir) }

// withJournalLock runs fn under the journal's flock.
func (h *HostFiles) withJournalLock(fn func(path string) error) error {
	if err := h.ensureDir(); err != nil {
		return err
	}
	lf, err := openNoFollow(h.path("journal.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock host journal: %w", err)
	}
	return fn(h.path("journal.json"))
}

// withJournal runs fn on the journal under its flock and saves it (a
// compaction) when fn returns true.
func (h *HostFiles) withJournal(fn func(j *state.Journal) (bool, error)) error {
	return h.withJournalLock(func(path string) error {
		j := state.NewJournal()
		b, err := readNoFollow(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("read host journal: %w", err)
		default:
			if j, err = state.ParseJournal(b, path); err != nil {
				return err
			}
		}
		save, err := fn(j)
		if err != nil {
			return err
		}
		if save {
			return reserve.Retry(h.Dir, func() error { return j.Save(path) })
		}
		return nil
	})
}

// commit appends records to the journal's log: the cost of a step does
// not depend on the journal's size.
// A full file system frees the reserve (agent/reserve) and tries again.
func (h *HostFiles) commit(recs ...state.LogRecord) error {
	return reserve.Retry(h.Dir, func() error {
		return h.withJournalLock(func(path string) error { return state.CommitTo(path, recs...) })
	})
}

// ensureReserve checks, once per session and before a forward apply
// changes anything, that the state directory can record it and its undo
// (agent/reserve).
func (h *HostFiles) ensureReserve() error {
	if h.reserveChecked {
		return nil
	}
	if err := h.ensureDir(); err != nil {
		return err
	}
	if err := reserve.Ensure(h.Dir, h.recordFiles()...); err != nil {
		return err
	}
	h.reserveChecked = true
	return nil
}

// recordFiles are the files an apply rewrites whole (a compaction of the
// journal, the nft record): reserve.Check counts twice their size.
func (h *HostFiles) recordFiles() []string {
	files := []string{h.path("journal.json"), h.path("journal.json.log")}
	nft, _ := filepath.Glob(h.path("nft-*.json"))
	return append(files, nft...)
}

// Space is the state directory's part of the facts: what an apply needs
// there and has (reserve.Check). nil when the directory is not there yet
// (the first apply makes it) or cannot be measured.
func (h *HostFiles) Space() *state.StateDirSpace {
	if _, err := os.Lstat(h.Dir); err != nil {
		return nil
	}
	sp, err := reserve.Check(h.Dir, h.recordFiles()...)
	if err != nil {
		return nil
	}
	return &sp
}

// Journal returns a copy of the host journal.
func (h *HostFiles) Journal() (*state.Journal, error) {
	var out *state.Journal
	err := h.withJournal(func(j *state.Journal) (bool, error) {
		out = j
		return false, nil
	})
	return out, err
}

// BeginStep records a step before it runs: one fsynced line in the
// journal's log. For an undo it does nothing yet: the entry is marked
// only once the undo succeeded. A retry of a step already recorded
// changes nothing (state.OpStep).
func (h *HostFiles) BeginStep(p proto.ApplyParams) error {
	if p.Run == "" || p.Undo {
		return nil
	}
	if err := h.ensureReserve(); err != nil {
		return err
	}
	s := p.Step
	return h.commit(state.LogRecord{Op: state.OpStep, Run: p.Run, Seq: p.Seq, Time: time.Now().UTC(), Step: &s, Pending: true})
}

// EndStep completes the record: a forward step is no longer pending (or
// is dropped when it failed, since nothing changed); an undo marks its
// entry rolled back.
func (h *HostFiles) EndStep(p proto.ApplyParams, stepErr error) error {
	if p.Run == "" {
		return nil
	}
	rec := state.LogRecord{Run: p.Run, Seq: p.Seq, Time: time.Now().UTC()}
	switch {
	case p.Undo && stepErr == nil:
		rec.Op = state.OpUndo
	case !p.Undo && stepErr == nil:
		rec.Op = state.OpDone
	case !p.Undo:
		rec.Op = state.OpFail
	default:
		return nil
	}
	return h.commit(rec)
}

// Prune drops the named entries (the CLI's apply.Prunable) and returns
// those dropped. It keeps, whatever it is asked, the entries of a run
// whose revert timer may still fire (armed, not confirmed, and not all
// undone yet: the timer replays the run's entries from this journal) and
// pending entries (a step that may be half done).
func (h *HostFiles) Prune(ids []state.EntryID) ([]state.EntryID, error) {
	var dropped []state.EntryID
	err := h.withJournal(func(j *state.Journal) (bool, error) {
		want := map[state.EntryID]bool{}
		for _, id := range ids {
			want[id] = true
		}
		live := map[string]bool{} // runs with an entry not undone
		for _, e := range j.Entries {
			if e.RolledBack == nil {
				live[e.Run] = true
			}
		}
		for _, e := range j.Entries {
			id := state.EntryID{Run: e.Run, Seq: e.Seq}
			if !want[id] || e.Pending || (live[e.Run] && h.timerMayFire(e.Run)) {
				continue
			}
			dropped = append(dropped, id)
		}
		return j.Drop(dropped) > 0, nil
	})
	if err != nil {
		return nil, err
	}
	return dropped, nil
}

// timerMayFire reports a run whose revert timer was armed and that is
// not confirmed.
func (h *HostFiles) timerMayFire(run string) bool {
	b, err := readNoFollow(h.runPath(run))
	if errors.Is(err, fs.ErrNotExist) {
		return false // never armed (--confirm-timeout 0)
	}
	var r runRecord
	if err != nil || json.Unmarshal(b, &r) != nil {
		return true // unknown: keep its entries
	}
	// armed, prepared or reverting: the timer may still need them.
	return r.State != proto.RunConfirmed && r.State != proto.RunReverted
}

// Lock takes the host lock for this agent's lifetime. The kernel drops
// the flock when the agent exits, however it exits, so a host lock can
// never outlive its session.
func (h *HostFiles) Lock(info proto.LockInfo) error {
	if h.lock != nil {
		return nil
	}
	if err := h.ensureDir(); err != nil {
		return err
	}
	f, err := openNoFollow(h.path("lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			var held lockRecord
			if b, rerr := readNoFollow(h.path("lock.json")); rerr == nil && json.Unmarshal(b, &held) == nil {
				return fmt.Errorf("host is locked by %s for %s since %s (lock ID %s); wait for it to finish, or if it hangs run `migrate force-unlock %s`",
					held.Holder, held.Operation, held.Started.Format(time.RFC3339), held.ID, held.ID)
			}
			return errors.New("host is locked by another migrate session")
		}
		return fmt.Errorf("lock host: %w", err)
	}
	rec := lockRecord{LockInfo: info, Proc: proc.Self()}
	b, _ := json.Marshal(rec)
	if err := reserve.Retry(h.Dir, func() error { return writeReplace(h.path("lock.json"), b) }); err != nil {
		f.Close()
		return err
	}
	h.lock = f
	return nil
}

type lockRecord struct {
	proto.LockInfo
	// ID is the agent holding the lock, with its start time, so that
	// force-unlock never signals a PID reused by another process.
	Proc proc.ID `json:"process"`
}

// ForceUnlock ends the session holding lock id (its agent is killed,
// which releases the flock).
func (h *HostFiles) ForceUnlock(id string) error {
	if err := h.ensureDir(); err != nil {
		return err
	}
	b, err := readNoFollow(h.path("lock.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no lock %s on this host", id)
	}
	if err != nil {
		return err
	}
	var rec lockRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return err
	}
	if rec.ID != id {
		return fmt.Errorf("the host lock has ID %s, not %s", rec.ID, id)
	}
	if rec.Proc.PID != os.Getpid() {
		// Only if it is still the agent that took the lock: a
		// stale lock.json may name a PID that is now another process.
		if err := rec.Proc.Kill(); err != nil && !errors.Is(err, proc.ErrGone) {
			return err
		}
	}
	return os.Remove(h.path("lock.json"))
}

// Unlock releases the lock (also done by exiting).
func (h *HostFiles) Unlock() {
	if h.lock != nil {
		os.Remove(h.path("lock.json"))
		h.lock.Close()
		h.lock = nil
	}
}
