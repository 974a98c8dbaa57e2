package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/ops"
	"github.com/opsmigrate/migrate/state"
)

// localLock is the lock file beside the state file. It is created with
// O_EXCL and removed when the command ends; a migrate killed outright
// leaves it behind, and `force-unlock ID` removes it.
type localLock struct {
	path string
	info proto.LockInfo
}

type lockFile struct {
	proto.LockInfo
	PID int `json:"pid"`
}

func lockHolder() string {
	u := "unknown"
	if cu, err := user.Current(); err == nil {
		u = cu.Username
	}
	h, _ := os.Hostname()
	return u + "@" + h
}

func acquireLocalLock(statePath, op string) (*localLock, error) {
	l := &localLock{path: statePath + ".lock", info: proto.LockInfo{
		ID: state.NewID(), Holder: lockHolder(), Operation: op, Started: time.Now().UTC(),
	}}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, fs.ErrExist) && staleLocalLock(l.path) {
		// Its holder ran on this machine and is gone: nothing can be
		// holding it. Say so and take over.
		fmt.Fprintf(os.Stderr, "Note: removing the stale lock %s: the migrate that held it (on this machine) is no longer running.\n", l.path)
		os.Remove(l.path)
		f, err = os.OpenFile(l.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	}
	if errors.Is(err, fs.ErrExist) {
		var held lockFile
		b, _ := os.ReadFile(l.path)
		if json.Unmarshal(b, &held) == nil {
			alive := ""
			if h, _ := os.Hostname(); held.PID > 0 && strings.HasSuffix(held.Holder, "@"+h) {
				if processGone(held.PID) {
					alive = " (that process is no longer running)"
				}
			}
			return nil, fmt.Errorf("state %s is locked by %s for %s since %s, lock ID %s%s; wait for it, or if it is gone run `migrate force-unlock %s`",
				statePath, held.Holder, held.Operation, held.Started.Format(time.RFC3339), held.ID, alive, held.ID)
		}
		return nil, fmt.Errorf("state %s is locked (%s exists); if no migrate is running, remove it", statePath, l.path)
	}
	if err != nil {
		return nil, fmt.Errorf("lock state: %w", err)
	}
	b, _ := json.Marshal(lockFile{LockInfo: l.info, PID: os.Getpid()})
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(l.path)
		return nil, err
	}
	return l, nil
}

// staleLocalLock reports a lock whose holder ran on this machine and whose
// process no longer exists.
func staleLocalLock(path string) bool {
	var held lockFile
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &held) != nil || held.PID <= 0 {
		return false
	}
	h, _ := os.Hostname()
	if !strings.HasSuffix(held.Holder, "@"+h) {
		return false
	}
	return processGone(held.PID)
}

func (l *localLock) release() {
	if l == nil {
		return
	}
	var held lockFile
	if b, err := os.ReadFile(l.path); err == nil && json.Unmarshal(b, &held) == nil && held.ID == l.info.ID {
		os.Remove(l.path)
	}
}

// FaultEnv is a test-only switch: "die-at:N", "drop-ssh-at:N",
// "kill-agent-at:N" or "hang-at:N" makes apply fail just before its Nth
// step, the way a crash, a dropped connection or a killed agent would.
// The confirm has its own (confirm.go): "die-between-confirms-at:1"
// exits right after NEW confirmed, before OLD's confirm is sent;
// "delay-confirm-old-at:MS" waits MS milliseconds before it.
const FaultEnv = "MIGRATE_TEST_FAULT"

func faultHook(s *session) func(n int, st state.Step) error {
	spec := os.Getenv(FaultEnv)
	if spec == "" {
		return nil
	}
	kind, nstr, ok := strings.Cut(spec, "-at:")
	at, err := strconv.Atoi(nstr)
	if strings.HasSuffix(kind, "confirm-old") || strings.HasSuffix(kind, "between-confirms") {
		return nil // confirmFault
	}
	if !ok || err != nil {
		fmt.Fprintf(os.Stderr, "ignoring malformed %s=%q\n", FaultEnv, spec)
		return nil
	}
	return func(n int, st state.Step) error {
		if n != at {
			return nil
		}
		switch kind {
		case "die":
			fmt.Fprintf(os.Stderr, "%s: dying before step %d\n", FaultEnv, n)
			os.Exit(3)
		case "drop-ssh":
			for _, c := range s.Clients {
				c.DropConnection()
			}
		case "kill-agent":
			if c := s.Clients[st.Host]; c != nil {
				if err := c.KillAgent(); err != nil {
					return err
				}
			}
		case "hang":
			fmt.Fprintf(os.Stderr, "%s: hanging before step %d\n", FaultEnv, n)
			select {}
		}
		return nil
	}
}

// faultHooks are the test-only faults of FaultEnv for an operation; s
// is the session apply runs on (nil for rollback, which only pauses).
func faultHooks(s *session) ops.Hooks {
	h := ops.Hooks{WrapHosts: pauseHosts, Confirm: confirmFault}
	if s != nil {
		h.BeforeStep = faultHook(s)
	}
	return h
}
