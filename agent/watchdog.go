package agent

import (
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/internal/proc"
	"github.com/opsmigrate/migrate/state"
)

// WatchdogCommand is the hidden subcommand the agent re-executes itself as.
const WatchdogCommand = "agent-watchdog"

// watchdogPoll is how often the revert timer looks at the run's record.
// The decision does not depend on it (confirm compares the clock with the
// deadline under the lock itself); only how soon a revert starts does.
const watchdogPoll = 20 * time.Millisecond

// Arm records the run as armed with a deadline timeout from now on this
// host's monotonic clock, then starts the revert timer: a process in its
// own session, so it outlives the SSH session and the agent. Unless the
// run is confirmed before the deadline, it undoes the run's steps on this
// host by itself.
// Arm is the first write of a forward apply: it checks the space first
// (agent/reserve), so a full file system refuses the apply before any step.
func (h *HostFiles) Arm(p proto.ArmParams) error {
	if err := h.ensureReserve(); err != nil {
		return err
	}
	return h.arm(p, proc.Self())
}

// arm records agent as the process the timer stops when it reverts.
func (h *HostFiles) arm(p proto.ArmParams, agent proc.ID) error {
	return h.withRun(p.Run, true, func(r *runRecord, now int64) (bool, error) {
		*r = runRecord{
			Run:        p.Run,
			State:      proto.RunArmed,
			BootID:     bootID(),
			DeadlineNS: now + p.TimeoutMS*int64(time.Millisecond),
			Agent:      agent,
		}
		w, err := h.startWatchdog(p.Run)
		if err != nil {
			// Nothing was applied yet; no record, no run.
			return false, err
		}
		r.Watchdog = w
		return true, nil
	})
}

func (h *HostFiles) startWatchdog(run string) (proc.ID, error) {
	// The revert timer runs the very file this agent runs (the inode
	// the kernel maps, whose sha256 the agent checked at start), not
	// whatever is at its path by now.
	const exe = "/proc/self/exe"
	logf, err := openNoFollow(h.path("watchdog-"+run+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return proc.ID{}, err
	}
	defer logf.Close()
	cmd := exec.Command(exe, WatchdogCommand, "--run", run)
	cmd.Env = append(os.Environ(), "MIGRATE_STATE_DIR="+h.Dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return proc.ID{}, fmt.Errorf("start revert timer: %w", err)
	}
	id := proc.Of(cmd.Process.Pid)
	// Not waited for: it belongs to init once the agent exits.
	_ = cmd.Process.Release()
	return id, nil
}

// errStandDown ends the wait: the run was confirmed.
var errStandDown = errors.New("confirmed")

// RunWatchdog waits until the run is decided. Confirmed: it stands down.
// Deadline passed (on the host's monotonic clock, under the run lock, so
// a confirm racing it either came first and won or comes after and finds
// "reverting"), or aborted: it stops the agent that applied the run (if
// that is still the same process), waits for the host lock as long as it
// takes, and undoes the run's steps in reverse, recording each undo in the
// host journal, then records "reverted".
func RunWatchdog(h *HostFiles, k Kernel, run string) error {
	log.SetFlags(log.LstdFlags | log.LUTC | log.Lmicroseconds)
	var rec runRecord
	first := true
	for {
		err := h.withRun(run, false, func(r *runRecord, now int64) (bool, error) {
			if first {
				log.Printf("revert timer for run %s: %s, %s left (host monotonic clock)", run, r.State, time.Duration(r.DeadlineNS-now).Round(time.Millisecond))
				first = false
			}
			rec = *r
			switch r.State {
			case proto.RunConfirmed:
				return false, errStandDown
			case proto.RunReverting, proto.RunReverted:
				return false, nil
			}
			if r.BootID != bootID() {
				return false, errors.New("armed in another boot: nothing to undo in this kernel")
			}
			if now < r.DeadlineNS {
				return false, errWait
			}
			decideRevert(r, "not confirmed before the deadline")
			rec = *r
			return true, nil
		})
		if errors.Is(err, errStandDown) {
			log.Printf("run %s confirmed; standing down", run)
			return nil
		}
		if errors.Is(err, errWait) {
			time.Sleep(watchdogPoll)
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	if rec.State == proto.RunReverted {
		log.Printf("run %s already reverted", run)
		return nil
	}
	log.Printf("reverting run %s: %s", run, rec.Reason)
	// The agent may still be mid-session on a dead connection; it must not
	// apply anything more. Killing it also releases the host lock. Only
	// if it is still that process: its PID may belong to another by now.
	if err := rec.Agent.Kill(); err == nil {
		log.Printf("stopped agent pid %d", rec.Agent.PID)
		rec.Agent.WaitGone(100, func() { time.Sleep(10 * time.Millisecond) })
	} else if !errors.Is(err, proc.ErrGone) {
		log.Printf("stop agent pid %d: %v", rec.Agent.PID, err)
	}
	info := proto.LockInfo{ID: "watchdog-" + run, Holder: "revert timer", Operation: "revert", Started: time.Now().UTC()}
	// The decision is made: wait for the host lock as long as it takes
	// (another session's apply or rollback), saying so now and then.
	for i := 0; ; i++ {
		err := h.Lock(info)
		if err == nil {
			break
		}
		if i%500 == 0 {
			log.Printf("waiting for the host lock: %v", err)
		}
		time.Sleep(watchdogPoll)
	}
	defer h.Unlock()
	firstErr := undoRun(h, k, run)
	reason := rec.Reason
	if firstErr != nil {
		reason += fmt.Sprintf("; some undo steps failed: %v", firstErr)
	}
	if err := h.withRun(run, false, func(r *runRecord, _ int64) (bool, error) {
		r.State = proto.RunReverted
		r.Reason = reason
		r.Decided = time.Now().UTC()
		return true, nil
	}); err != nil {
		return err
	}
	log.Printf("revert of run %s finished", run)
	return firstErr
}

var errWait = errors.New("wait")

func undoRun(h *HostFiles, k Kernel, run string) error {
	j, err := h.Journal()
	if err != nil {
		return err
	}
	var todo []state.Entry
	for _, e := range j.Entries {
		if e.Run == run && e.RolledBack == nil {
			todo = append(todo, e)
		}
	}
	var firstErr error
	for i := len(todo) - 1; i >= 0; i-- {
		e := todo[i]
		inv := e.Step.Inverse()
		// The host journal is a file: what it says is checked like a
		// request before anything is undone.
		if err := checkOwned(k, inv); err != nil {
			log.Printf("undo step %d (%s): %v", e.Seq, inv, err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if err := k.Apply(inv); err != nil {
			log.Printf("undo step %d (%s): %v", e.Seq, inv, err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if err := h.EndStep(proto.ApplyParams{Step: inv, Run: run, Seq: e.Seq, Undo: true}, nil); err != nil {
			log.Printf("record undo of step %d: %v", e.Seq, err)
		}
		log.Printf("undid step %d: %s", e.Seq, inv)
	}
	return firstErr
}
