package ops

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// LocalLock is the lock file beside the state file. It is created with
// O_EXCL and removed when the command ends; a migrate killed outright
// leaves it behind, and `force-unlock ID` removes it.
type LocalLock struct {
	path string
	// Info identifies the lock; apply and rollback take the host locks
	// with the same ID.
	Info proto.LockInfo
}

// LockFile is what the lock file holds.
type LockFile struct {
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

// AcquireLocalLock takes the lock of statePath for op ("apply",
// "rollback"), taking over one whose holder on this machine is gone.
func AcquireLocalLock(statePath, op string) (*LocalLock, error) {
	l := &LocalLock{path: statePath + ".lock", Info: proto.LockInfo{
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
		var held LockFile
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
	b, _ := json.Marshal(LockFile{LockInfo: l.Info, PID: os.Getpid()})
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
	var held LockFile
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

// Release removes the lock file if it is still this lock.
func (l *LocalLock) Release() {
	if l == nil {
		return
	}
	var held LockFile
	if b, err := os.ReadFile(l.path); err == nil && json.Unmarshal(b, &held) == nil && held.ID == l.Info.ID {
		os.Remove(l.path)
	}
}

// RemoveLocalLock removes the lock file of statePath when it holds lock
// id (force-unlock). It returns the lock it removed, nil when there was
// none; a lock with another ID is an error and stays.
func RemoveLocalLock(statePath, id string) (*LockFile, error) {
	lp := statePath + ".lock"
	var held LockFile
	b, err := os.ReadFile(lp)
	if err != nil || json.Unmarshal(b, &held) != nil {
		return nil, nil
	}
	if held.ID != id {
		return nil, fmt.Errorf("the local lock %s has ID %s, not %s; nothing was changed", lp, held.ID, id)
	}
	if err := os.Remove(lp); err != nil {
		return nil, err
	}
	return &held, nil
}
