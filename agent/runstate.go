package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/agent/reserve"
	"github.com/opsmigrate/migrate/internal/proc"
)

// The outcome of a run on a host is decided once, in run-RUN.json, under
// the flock on runs.lock: confirm (the CLI) and the revert timer race for
// the same transition out of armed/prepared, and whichever takes the
// lock first decides by the host's monotonic clock, so exactly one wins:
//
//	armed -> prepared -> confirmed            (kept)
//	armed/prepared -> reverting -> reverted   (undone by the revert timer)
//
// A confirm that takes the lock at or after the deadline itself records
// "reverting" and answers "too late". confirmed -> reverting happens only
// on an explicit abort: the CLI undoing this host because the other one
// reverted (see docs/design.md, "Two-host confirm").
//
// Deadlines are CLOCK_BOOTTIME nanoseconds: a duration from the moment the
// host armed, on the host's own clock, which wall-clock steps (NTP, a
// skewed host, a skewed laptop) do not move and which keeps counting while
// a VM is suspended. They are only valid in the boot that wrote them
// (BootID): after a reboot the change is gone from the kernel and the run
// cannot be confirmed.
type runRecord struct {
	Run        string  `json:"run"`
	State      string  `json:"state"`
	BootID     string  `json:"boot_id"`
	DeadlineNS int64   `json:"deadline_boottime_ns"`
	Agent      proc.ID `json:"agent"`
	Watchdog   proc.ID `json:"watchdog"`
	Reason     string  `json:"reason,omitempty"`
	// Decided is informational (wall clock, for humans).
	Decided time.Time `json:"decided,omitempty"`
}

// monoNow is the host's monotonic clock (CLOCK_BOOTTIME) in ns.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic(err) // cannot fail on linux
	}
	return ts.Nano()
}

// rebootedReason decides a run whose host rebooted before it was
// confirmed (the boot restore records rebootReason, which says the same).
const rebootedReason = "host rebooted inside the confirm window: its changes are no longer in the kernel"

// bootID identifies the kernel state a run's changes live in: the boot
// (/proc/sys/kernel/random/boot_id) and the network namespace, by its
// cookie, which the kernel never reuses. A host's namespace is the same
// for the whole boot; one that is made again (a container restarted, a
// lab host "rebooted" by deleting its namespace) holds none of the
// changes either, so it counts as another boot.
func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	id := strings.TrimSpace(string(b))
	if c, err := netnsCookie(); err == nil {
		id += "/netns-" + strconv.FormatUint(c, 10)
	}
	return id
}

// netnsCookie is the network namespace's cookie (SO_NETNS_COOKIE, Linux
// 5.14 and later).
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
}

func (h *HostFiles) runPath(run string) string { return h.path("run-" + run + ".json") }

// withRun runs fn on run's record under the runs.lock flock and, when fn
// returns save, replaces the record atomically (write, fsync, rename,
// fsync the directory). create allows a missing record (arm).
func (h *HostFiles) withRun(run string, create bool, fn func(r *runRecord, now int64) (save bool, err error)) error {
	if err := h.ensureDir(); err != nil {
		return err
	}
	lf, err := openNoFollow(h.path("runs.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock run states: %w", err)
	}
	var r runRecord
	b, err := readNoFollow(h.runPath(run))
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("no revert timer was armed for run %s on this host", run)
	case err != nil:
		return err
	default:
		if create {
			return fmt.Errorf("run %s is already armed on this host", run)
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("run %s: corrupt %s: %w", run, h.runPath(run), err)
		}
		if r.Run != run {
			return fmt.Errorf("run %s: %s names run %q", run, h.runPath(run), r.Run)
		}
	}
	save, ferr := fn(&r, monoNow())
	if save {
		if err := h.writeRun(&r); err != nil {
			return err
		}
	}
	return ferr
}

func (h *HostFiles) writeRun(r *runRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return reserve.Retry(h.Dir, func() error { return writeReplace(h.runPath(r.Run), b) })
}

// decideRevert records reverting with reason.
func decideRevert(r *runRecord, reason string) {
	r.State = proto.RunReverting
	r.Reason = reason
	r.Decided = time.Now().UTC()
}

// live checks an armed or prepared run before it may be kept: the boot
// that armed it, the deadline not passed (else it decides to revert), the
// revert timer still running. It returns save=true when it decided.
func (r *runRecord) live(now int64) (bool, error) {
	if b := bootID(); r.BootID != b {
		if r.State != proto.RunReverted {
			r.State = proto.RunReverted
			r.Reason = rebootedReason
			r.Decided = time.Now().UTC()
			return true, fmt.Errorf("run %s cannot be confirmed: %s", r.Run, r.Reason)
		}
		return false, fmt.Errorf("run %s cannot be confirmed: %s", r.Run, r.Reason)
	}
	if now >= r.DeadlineNS {
		late := time.Duration(now - r.DeadlineNS)
		decideRevert(r, fmt.Sprintf("not confirmed in time (the request came %s after the deadline)", late.Round(time.Millisecond)))
		return true, fmt.Errorf("too late: run %s is reverting on this host: %s", r.Run, r.Reason)
	}
	if !r.Watchdog.Alive() {
		return false, fmt.Errorf("run %s: its revert timer (pid %d) is no longer running, so nothing would undo a failed confirm; the run stays %s; use `migrate rollback`", r.Run, r.Watchdog.PID, r.State)
	}
	return false, nil
}

func (r *runRecord) status(now int64) proto.RunStatus {
	s := proto.RunStatus{Run: r.Run, State: r.State, Reason: r.Reason}
	if (r.State == proto.RunArmed || r.State == proto.RunPrepared) && r.DeadlineNS > now {
		s.RemainingMS = (r.DeadlineNS - now) / 1e6
	}
	return s
}

// Prepare moves an armed run to prepared and sets its deadline grace from
// now: the first phase of confirming two hosts. It may also shorten an
// armed run's deadline; it never revives one that passed.
func (h *HostFiles) Prepare(run string, grace time.Duration) (proto.RunStatus, error) {
	var st proto.RunStatus
	err := h.withRun(run, false, func(r *runRecord, now int64) (bool, error) {
		defer func() { st = r.status(now) }()
		switch r.State {
		case proto.RunArmed, proto.RunPrepared:
		default:
			return false, fmt.Errorf("run %s cannot be prepared: it is %s on this host", run, r.State)
		}
		if save, err := r.live(now); err != nil {
			return save, err
		}
		r.State = proto.RunPrepared
		r.DeadlineNS = now + int64(grace)
		return true, nil
	})
	return st, err
}

// Confirm decides to keep run, unless the revert timer decided first. A
// nil error means the host recorded "confirmed" and its timer stands down.
func (h *HostFiles) Confirm(run string) (proto.RunStatus, error) {
	var st proto.RunStatus
	err := h.withRun(run, false, func(r *runRecord, now int64) (bool, error) {
		defer func() { st = r.status(now) }()
		switch r.State {
		case proto.RunConfirmed:
			return false, nil // a retry
		case proto.RunArmed, proto.RunPrepared:
		default:
			return false, fmt.Errorf("too late: run %s is %s on this host (%s)", run, r.State, r.Reason)
		}
		if save, err := r.live(now); err != nil {
			return save, err
		}
		r.State = proto.RunConfirmed
		r.Decided = time.Now().UTC()
		return true, nil
	})
	return st, err
}

// Abort decides to revert run now; the revert timer undoes it. Aborting a
// confirmed run is the CLI undoing this host because the other host
// reverted; its timer has stood down, so a new one is started.
func (h *HostFiles) Abort(run, reason string) (proto.RunStatus, error) {
	var st proto.RunStatus
	err := h.withRun(run, false, func(r *runRecord, now int64) (bool, error) {
		defer func() { st = r.status(now) }()
		switch r.State {
		case proto.RunReverting, proto.RunReverted:
			return false, nil
		}
		decideRevert(r, reason)
		if !r.Watchdog.Alive() {
			// A confirmed run's timer has stood down: start one
			// that finds the decision made and reverts at once.
			w, err := h.startWatchdog(run)
			if err != nil {
				return true, fmt.Errorf("run %s: decided to revert, but the revert timer could not start: %w", run, err)
			}
			r.Watchdog = w
		}
		return true, nil
	})
	return st, err
}

// RunStatus returns the host's decision for run.
func (h *HostFiles) RunStatus(run string) (proto.RunStatus, error) {
	var st proto.RunStatus
	err := h.withRun(run, false, func(r *runRecord, now int64) (bool, error) {
		if (r.State == proto.RunArmed || r.State == proto.RunPrepared) && r.BootID != bootID() {
			r.State = proto.RunReverted
			r.Reason = rebootedReason
			st = r.status(now)
			return true, nil
		}
		st = r.status(now)
		return false, nil
	})
	return st, err
}
