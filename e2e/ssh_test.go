package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestAgentInstallAndSSHAgent: the CLI installs its own binary on each
// host at a path holding its hash and reuses it on the next run; keys can
// come from an ssh-agent instead of identity_file.
func TestAgentInstallAndSSHAgent(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab

	bin, err := os.ReadFile(s.MigrateBin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	hash := hex.EncodeToString(sum[:])

	// No identity_file: the key comes from an ssh-agent in the admin
	// namespace.
	text := s.PlanText(scenario.PlanOptions{Stage: "old"})
	text = strings.ReplaceAll(text, "  identity_file = \""+l.IdentityFile+"\"\n", "")
	if strings.Contains(text, "identity_file") {
		t.Fatal("could not remove identity_file from the plan")
	}
	if err := os.WriteFile(s.PlanFile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(l.Dir, "agent.sock")
	if _, err := l.Start(lab.RoleAdmin, "ssh-agent", "-D", "-a", sock); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatal("ssh-agent did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := l.Exec(ctx, lab.RoleAdmin, "env", "SSH_AUTH_SOCK="+sock, "ssh-add", l.IdentityFile); err != nil {
		t.Fatalf("ssh-add: %v: %s", err, out)
	}
	run := func() {
		t.Helper()
		r, err := s.MigrateEnv(ctx, []string{"SSH_AUTH_SOCK=" + sock}, "plan", "-f", s.PlanFile)
		if err != nil || r.Code != 0 {
			t.Fatalf("plan with ssh-agent keys: %v exit %d\n%s\n%s", err, r.Code, r.Stdout, r.Stderr)
		}
	}
	run()
	var mtimes []time.Time
	for _, dir := range []string{l.OldStateDir, l.NewStateDir} {
		p := filepath.Join(dir, "bin", "migrate-"+hash)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("agent not installed at %s: %v", p, err)
		}
		got, _ := os.ReadFile(p)
		if sha256.Sum256(got) != sum {
			t.Fatalf("installed agent %s differs from the CLI binary", p)
		}
		mtimes = append(mtimes, fi.ModTime())
	}
	time.Sleep(20 * time.Millisecond)
	run()
	for i, dir := range []string{l.OldStateDir, l.NewStateDir} {
		fi, _ := os.Stat(filepath.Join(dir, "bin", "migrate-"+hash))
		if !fi.ModTime().Equal(mtimes[i]) {
			t.Errorf("agent in %s was uploaded again although its hash matched", dir)
		}
	}
}

// TestAgentSwappedBeforeExec: the agent's hash is checked by the exec
// that runs it. migrate checks the installed agent, then (test fault
// pause-agent-start-at:old) waits while the test swaps the file for
// another working migrate (one byte more); the agent that starts refuses
// to run, with a clear error, before it touches anything. The next plan
// installs the right one again. A state directory others could read is
// refused the same way.
func TestAgentSwappedBeforeExec(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := s.WritePlan(scenario.PlanOptions{Stage: "old"}); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(s.MigrateBin)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256Hex(bin)
	mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	agentPath := filepath.Join(l.OldStateDir, "bin", "migrate-"+hash)

	cmd, err := s.StartMigrate([]string{"MIGRATE_TEST_FAULT=pause-agent-start-at:old"}, "plan", "-f", s.PlanFile)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	logText := func() string { b, _ := os.ReadFile(l.LogPath(cmd)); return string(b) }
	deadline := time.Now().Add(scenario.Slow(60 * time.Second))
	for !strings.Contains(logText(), "paused before starting the agent on old") {
		select {
		case err := <-done:
			t.Fatalf("migrate ended (%v) before pausing:\n%s", err, logText())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("migrate never paused:\n%s", logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	f, err := os.OpenFile(agentPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var code int
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
	case <-time.After(scenario.Slow(60 * time.Second)):
		t.Fatalf("migrate still running after the swap:\n%s", logText())
	}
	out := logText()
	want := "host old: the agent refused to start: agent binary " + agentPath + " has sha256 " + sha256Hex(append(bin, 0)) + ", not " + hash
	if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, "refusing to run") {
		t.Fatalf("swapped agent: exit %d\n%s\nwant exit 1 and %q", code, out, want)
	}
	t.Logf("swapped agent: %s", out)
	if _, err := os.Stat(filepath.Join(l.OldStateDir, "lock.json")); err == nil {
		t.Error("the refused agent took the host lock")
	}

	// The next run sees the wrong hash before it starts anything and
	// installs the agent again.
	mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if got, _ := os.ReadFile(agentPath); sha256Hex(got) != hash {
		t.Errorf("%s was not installed again", agentPath)
	}

	// A state directory others may read is refused by the agent, before
	// it reads or writes anything there.
	if err := os.Chmod(l.OldStateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := s.Migrate(ctx, "plan", "-f", s.PlanFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := "host old: the agent refused to start: state directory " + l.OldStateDir + " has mode 0755"; r.Code != 1 || !strings.Contains(r.Stderr, want) {
		t.Errorf("state directory 0755: exit %d\n%s\nwant %q", r.Code, r.Stderr, want)
	}
	if err := os.Chmod(l.OldStateDir, 0o700); err != nil {
		t.Fatal(err)
	}
}
