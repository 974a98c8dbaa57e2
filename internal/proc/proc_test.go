//go:build linux

package proc

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestAliveAndZombie(t *testing.T) {
	if !Self().Alive() {
		t.Fatal("self not alive")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	id := ID{PID: cmd.Process.Pid}
	st, err := stat(id.PID)
	if err != nil {
		t.Fatal(err)
	}
	id.Start = st.start
	if !id.Alive() {
		t.Fatal("sleep not alive")
	}
	// The same PID with another start time is another process.
	if (ID{PID: id.PID, Start: id.Start + 1}).Alive() {
		t.Fatal("a different start time counts as alive")
	}
	if err := (ID{PID: id.PID, Start: id.Start + 1}).Kill(); err != ErrGone {
		t.Fatalf("kill with a wrong start time: %v, want ErrGone", err)
	}
	if syscall.Kill(id.PID, 0) != nil {
		t.Fatal("the wrong-start kill signalled the process")
	}
	if err := id.Kill(); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: a zombie. kill(pid, 0) still succeeds on it; it
	// must count as gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s, _ := stat(id.PID); s.state == 'Z' {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never a zombie")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if syscall.Kill(id.PID, 0) != nil {
		t.Fatal("zombie not signalable: the test proves nothing")
	}
	if id.Alive() {
		t.Fatal("a zombie counts as alive")
	}
	_ = cmd.Wait()
	if id.Alive() {
		t.Fatal("reaped process alive")
	}
}
