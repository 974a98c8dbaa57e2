package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
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
