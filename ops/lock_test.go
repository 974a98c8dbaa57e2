package ops

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
)

// writeLock leaves a lock file as a migrate with pid on this machine would.
func writeLock(t *testing.T, statePath string, pid int) {
	t.Helper()
	b, err := json.Marshal(LockFile{LockInfo: proto.LockInfo{ID: "held-1", Holder: lockHolder(), Operation: "apply", Started: time.Now().UTC()}, PID: pid})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(statePath+".lock", b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A lock held by a running migrate on this machine is respected; one whose
// process has ended is taken over. Both through real processes.
func TestLocalLockHolderAliveOrGone(t *testing.T) {
	statePath := filepath.Join(t.TempDir(), "migration.state.json")

	// Alive: a sleeping child holds it.
	holder := exec.Command("sleep", "30")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	writeLock(t, statePath, holder.Process.Pid)
	if _, err := AcquireLocalLock(statePath, "apply"); err == nil || !strings.Contains(err.Error(), "locked by") || strings.Contains(err.Error(), "no longer running") {
		t.Fatalf("lock of a live holder: %v", err)
	}

	// Gone: the same PID after the process has exited and been reaped.
	holder.Process.Kill()
	holder.Wait()
	if !processGone(holder.Process.Pid) {
		t.Skip("the PID was reused at once; cannot test the stale case")
	}
	l, err := AcquireLocalLock(statePath, "apply")
	if err != nil {
		t.Fatalf("stale lock not taken over: %v", err)
	}
	l.Release()
	if _, err := os.Stat(statePath + ".lock"); !os.IsNotExist(err) {
		t.Errorf("lock file left after release: %v", err)
	}
}
