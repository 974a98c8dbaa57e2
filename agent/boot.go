package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/state"
)

// Boot restore: what the boot unit (bootunit.go) runs. A reboot empties
// the kernel of everything migrate made; the host journal and the run
// records in the state directory survive. From them the restore puts back
// this host's part of the LAST CONFIRMED state:
//
//   - A run still armed or prepared (or reverting) when the host went
//     down was never confirmed: a reboot inside the confirm window means
//     revert. It is decided "reverted" (a later confirm is refused), its
//     entries are marked rolled back in the host journal, and anything of
//     it that outlived the reboot (the unit files) is removed.
//   - Every other object the journal owns is brought to the value the
//     newest kept entry set, against the live state, in the order apply
//     first made them (apply.Restores and apply.RollbackSteps, the same
//     computation as a rollback of the unconfirmed runs).
//   - Each step passes the same ownership checks as an apply (checkOwned).
//   - If a step fails, the steps already made are undone in reverse: the
//     host is left as it was before migrate (kernel state after a boot is
//     the state before migrate's first change), never half restored.
//
// The outcome is written to boot.json (state.BootRecord); plan and status
// show it.

// bootRecordFile is the last boot restore's record in the state directory.
const bootRecordFile = "boot.json"

// rebootReason is the decision recorded for a run the reboot left
// unconfirmed.
const rebootReason = "host rebooted inside the confirm window: the change was never confirmed, so it was not restored"

// afterRecordFile is the record of the last restore a drop-in ran
// (AfterRestore) that put something back or failed.
const afterRecordFile = "restore-after.json"

// LastBoot reads boot.json (nil when no restore ran yet).
func (h *HostFiles) LastBoot() (*state.BootRecord, error) { return h.readRecord(bootRecordFile) }

// LastAfterRestore reads restore-after.json (nil when no drop-in ever
// restored anything).
func (h *HostFiles) LastAfterRestore() (*state.BootRecord, error) {
	return h.readRecord(afterRecordFile)
}

func (h *HostFiles) readRecord(name string) (*state.BootRecord, error) {
	b, err := os.ReadFile(h.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r state.BootRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", h.path(name), err)
	}
	return &r, nil
}

func (h *HostFiles) writeRecord(name string, r state.BootRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := h.path(name + ".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, h.path(name))
}

// bootLockWait bounds how long the restore waits for the host lock (at
// boot nobody holds it; run by hand, a migrate session might).
const bootLockWait = 30 * time.Second

// afterLockWait bounds a drop-in's wait: it runs inside its service's
// start or reload job, which waits for it.
const afterLockWait = 10 * time.Second

// BootRestore restores this host's part of the last confirmed state and
// records the outcome in boot.json. It returns the record and, when the
// restore failed (and was undone), the error.
func BootRestore(h *HostFiles, k Kernel) (state.BootRecord, error) {
	return restoreAndRecord(h, k, bootRecordFile, "", "", bootLockWait)
}

// AfterRestore is what a drop-in (state.DropInServices) runs after its
// service's start or reload (after: AfterStart, AfterReload): the same
// restore as at boot. Its job is what the service undid (the table a
// `flush ruleset` removed, a sysctl a file set back); anything else that
// differs from the last confirmed state is put back too, as at boot. It
// is recorded in restore-after.json when it put something back or
// failed (a service's start that undid nothing leaves the last record).
//
// It does nothing (ran false) at boot: there both services start before
// the boot unit, which is ordered after them and decides what a reboot
// left unconfirmed before anything is restored. "At boot" is: the boot
// unit has not run in this boot and no apply armed in it either (a host
// never rebooted since its first apply has no boot record).
func AfterRestore(h *HostFiles, k Kernel, service, after string) (rec state.BootRecord, ran bool, err error) {
	if !h.activeThisBoot() {
		return rec, false, nil
	}
	rec, err = restoreAndRecord(h, k, afterRecordFile, service, after, afterLockWait)
	return rec, true, err
}

// activeThisBoot reports whether the boot unit or an apply ran in the
// host's current boot (boot.json, the run records).
func (h *HostFiles) activeThisBoot() bool {
	boot := bootID()
	if last, err := h.LastBoot(); err == nil && last != nil && last.BootID == boot {
		return true
	}
	ids, err := h.runIDs()
	if err != nil {
		return false
	}
	for _, run := range ids {
		this := false
		_ = h.withRun(run, false, func(r *runRecord, _ int64) (bool, error) {
			this = r.BootID == boot
			return false, nil
		})
		if this {
			return true
		}
	}
	return false
}

func restoreAndRecord(h *HostFiles, k Kernel, file, service, after string, wait time.Duration) (state.BootRecord, error) {
	log.SetFlags(log.LstdFlags | log.LUTC | log.Lmicroseconds)
	start := time.Now()
	rec := state.BootRecord{BootID: bootID(), After: after, Service: service}
	op, holder := "restore at boot", "boot unit "+state.BootUnitName
	if after != "" {
		op, holder = "restore after "+service+" "+after, "drop-in "+state.BootDropInPath(UnitDir(), service)
	}
	err := h.ensureDir()
	if err == nil {
		err = lockFor(h, proto.LockInfo{ID: "boot-restore", Holder: holder, Operation: op, Started: start.UTC()}, wait)
	}
	if err == nil {
		defer h.Unlock()
		err = bootRestore(h, k, &rec)
	}
	rec.Time = time.Now().UTC()
	rec.TookMS = time.Since(start).Milliseconds()
	switch {
	case err != nil:
		rec.Outcome, rec.Error = state.BootFailed, err.Error()
	case rec.Steps == 0:
		rec.Outcome = state.BootNothing
	default:
		rec.Outcome = state.BootRestored
	}
	if after != "" && rec.Outcome == state.BootNothing {
		return rec, err
	}
	if werr := h.writeRecord(file, rec); werr != nil {
		err = errors.Join(err, fmt.Errorf("write %s: %w", h.path(file), werr))
	}
	return rec, err
}

func lockFor(h *HostFiles, info proto.LockInfo, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := h.Lock(info)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runIDs lists the runs that have a record (run-RUN.json).
func (h *HostFiles) runIDs() ([]string, error) {
	m, err := filepath.Glob(h.path("run-*.json"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range m {
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "run-"), ".json"))
	}
	sort.Strings(out)
	return out, nil
}

// decideAtBoot decides the runs a reboot left open and returns the runs
// that are not kept (every run with a record that is not confirmed) and
// those it decided now.
func decideAtBoot(h *HostFiles) (unkept map[string]bool, decided []string, err error) {
	ids, err := h.runIDs()
	if err != nil {
		return nil, nil, err
	}
	unkept = map[string]bool{}
	boot := bootID()
	for _, run := range ids {
		err := h.withRun(run, false, func(r *runRecord, _ int64) (bool, error) {
			switch {
			case r.State == proto.RunConfirmed:
				return false, nil
			case r.State == proto.RunReverted:
				unkept[run] = true
				return false, nil
			case r.BootID == boot:
				// Its revert timer runs in this boot: the restore would
				// undo what that run has just applied.
				return false, fmt.Errorf("run %s is %s in this boot (an apply waiting for its confirm): not restoring under it; run the restore again once it is decided", run, r.State)
			}
			unkept[run] = true
			decided = append(decided, run)
			r.State = proto.RunReverted
			r.Reason = rebootReason
			r.Decided = time.Now().UTC()
			return true, nil
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return unkept, decided, nil
}

// KeptRestores computes, from a host journal, what the host must look like
// to be in its last confirmed state: every owned object, with the value
// the newest entry of a kept run set, and the entries of unkept runs
// (their objects back to the value before them). Kept objects come first
// in the order apply made them; see apply.Restores.
func KeptRestores(j *state.Journal, unkept map[string]bool) (restores []apply.Restore, undo []*state.Entry) {
	for _, e := range j.Active() {
		if unkept[e.Run] {
			undo = append(undo, e)
		}
	}
	return apply.Restores(j, undo), undo
}

func bootRestore(h *HostFiles, k Kernel, rec *state.BootRecord) error {
	unkept, decided, err := decideAtBoot(h)
	if err != nil {
		return err
	}
	rec.RevertedRuns = decided
	for _, run := range decided {
		log.Printf("run %s: %s", run, rebootReason)
	}
	j, err := h.Journal()
	if err != nil {
		return err
	}
	restores, undo := KeptRestores(j, unkept)
	facts := map[string]state.Facts{}
	for _, r := range restores {
		if _, ok := facts[r.Host]; ok {
			continue
		}
		f, err := k.Facts(apply.FactsRequestFor(r.Host, restores))
		if err != nil {
			return fmt.Errorf("read the host's state: %w", err)
		}
		f.Boot = BootFacts(h)
		facts[r.Host] = f
	}
	steps, err := apply.RollbackSteps(restores, facts)
	if err != nil {
		return err
	}
	var done []state.Step
	kept := 0 // steps that put back what a kept run set
	for _, rs := range steps {
		if rs.Step == nil {
			continue
		}
		if len(rs.Entries) == 0 {
			kept++
		}
		s := *rs.Step
		err := checkOwned(k, s)
		if err == nil {
			err = k.Apply(s)
		}
		if err != nil {
			err = fmt.Errorf("restore %s: %w", s, err)
			log.Print(err)
			if uerr := undoSteps(k, done); uerr != nil {
				return fmt.Errorf("%w; undoing the %d step(s) made before it failed too: %v (the host is half restored: run migrate apply or migrate rollback)", err, len(done), uerr)
			}
			rec.Steps = len(done)
			return fmt.Errorf("%w (the %d step(s) made before it were undone: the host is as before migrate)", err, len(done))
		}
		log.Printf("restored: %s", s)
		done = append(done, s)
	}
	rec.Steps = kept
	// The runs the reboot left unconfirmed are undone now: say so in the
	// host journal, as the revert timer would have (the CLI's next
	// session marks them in its state file: reconcile).
	for _, e := range undo {
		if err := h.EndStep(proto.ApplyParams{Step: e.Step.Inverse(), Run: e.Run, Seq: e.Seq, Undo: true}, nil); err != nil {
			return fmt.Errorf("restored, but the host journal could not record run %s as undone: %w", e.Run, err)
		}
	}
	return nil
}

// undoSteps undoes done in reverse.
func undoSteps(k Kernel, done []state.Step) error {
	var errs []error
	for i := len(done) - 1; i >= 0; i-- {
		inv := done[i].Inverse()
		err := checkOwned(k, inv)
		if err == nil {
			err = k.Apply(inv)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", inv, err))
			continue
		}
		log.Printf("undid: %s", inv)
	}
	return errors.Join(errs...)
}
