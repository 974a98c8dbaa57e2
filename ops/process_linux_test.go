//go:build linux

package ops

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProcessGoneZombie: a lock holder that exited but was not reaped yet
// (a zombie) no longer holds anything.
func TestProcessGoneZombie(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never a zombie")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !processGone(pid) {
		t.Fatal("a zombie lock holder counts as running")
	}
	if processGone(os.Getpid()) {
		t.Fatal("this process counts as gone")
	}
}
