package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// WatchdogCommand is the hidden subcommand the agent re-executes itself as.
const WatchdogCommand = "agent-watchdog"

// Arm starts the revert timer for a run: a process in its own session, so
// it outlives the SSH session and the agent. Unless the run is confirmed
// before the deadline, it undoes the run's steps on this host by itself.
func (h *HostFiles) Arm(p proto.ArmParams) error {
	if err := h.ensureDir(); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(h.path("watchdog-"+p.Run+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, WatchdogCommand,
		"--run", p.Run,
		"--deadline", p.Deadline.UTC().Format(time.RFC3339Nano),
		"--agent-pid", strconv.Itoa(os.Getpid()))
	cmd.Env = append(os.Environ(), "MIGRATE_STATE_DIR="+h.Dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start revert timer: %w", err)
	}
	// Not waited for: it belongs to init once the agent exits.
	_ = cmd.Process.Release()
	return nil
}

// Confirm keeps a run: its watchdog stands down.
func (h *HostFiles) Confirm(run string) error {
	if err := h.ensureDir(); err != nil {
		return err
	}
	f, err := os.OpenFile(h.path("confirmed-"+run), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// A confirmation that came too late is no confirmation: say so.
	j, err := h.Journal()
	if err != nil {
		return err
	}
	for _, e := range j.Entries {
		if e.Run == run && e.RolledBack != nil {
			return fmt.Errorf("too late: the revert timer already undid run %s on this host at %s", run, e.RolledBack.Format(time.RFC3339))
		}
	}
	return nil
}

func (h *HostFiles) confirmed(run string) bool {
	_, err := os.Stat(h.path("confirmed-" + run))
	return !errors.Is(err, fs.ErrNotExist)
}

// RunWatchdog waits for the deadline and, unless the run was confirmed,
// stops the agent that applied it and undoes the run's steps in reverse,
// recording each undo in the host journal.
func RunWatchdog(h *HostFiles, k Kernel, run string, deadline time.Time, agentPID int) error {
	log.SetFlags(log.LstdFlags | log.LUTC)
	log.Printf("revert timer for run %s armed until %s", run, deadline.Format(time.RFC3339))
	for time.Now().Before(deadline) {
		if h.confirmed(run) {
			log.Printf("run %s confirmed; standing down", run)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	if h.confirmed(run) {
		log.Printf("run %s confirmed; standing down", run)
		return nil
	}
	log.Printf("deadline passed without confirmation: reverting run %s", run)
	// The agent may still be mid-session on a dead connection; it must not
	// apply anything more. Killing it also releases the host lock.
	if agentPID > 0 && unix.Kill(agentPID, 0) == nil {
		log.Printf("stopping agent pid %d", agentPID)
		_ = unix.Kill(agentPID, unix.SIGKILL)
		time.Sleep(100 * time.Millisecond)
	}
	if err := h.Lock(proto.LockInfo{ID: "watchdog-" + run, Holder: "revert timer", Operation: "revert", Started: time.Now().UTC()}); err != nil {
		log.Printf("waiting for the host lock: %v", err)
		for i := 0; i < 100 && err != nil; i++ {
			time.Sleep(100 * time.Millisecond)
			err = h.Lock(proto.LockInfo{ID: "watchdog-" + run, Holder: "revert timer", Operation: "revert", Started: time.Now().UTC()})
		}
		if err != nil {
			return err
		}
	}
	defer h.Unlock()
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
	log.Printf("revert of run %s finished", run)
	return firstErr
}
