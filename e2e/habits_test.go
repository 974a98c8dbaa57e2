package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// inTerminal runs the CLI under `script`, which gives it a pseudo-terminal
// as stdin and stdout, with input typed at its prompt.
func inTerminal(t *testing.T, ctx context.Context, s *scenario.Scenario, env, input string, args ...string) string {
	t.Helper()
	line := "env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=" + s.Lab.Dir + " " + env + " " + s.MigrateBin + " " + strings.Join(args, " ")
	cmd, err := s.Lab.Command(lab.RoleAdmin, "script", "-q", "-e", "-c", line, "/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(input), &out, &out
	cmd.WaitDelay = 2 * time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(scenario.Slow(90 * time.Second)):
		_ = cmd.Process.Kill()
		t.Fatalf("migrate %v in a terminal did not finish:\n%s", args, out.String())
	}
	return out.String()
}

// TestTerraformHabits: the prompt, colour, JSON and completion behave the
// way Terraform taught operators.
func TestTerraformHabits(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	if err := s.WritePlan(scenario.PlanOptions{TunnelType: "vxlan", Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// plan --json is one document with a summary.
	r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile, "--json")
	var doc struct {
		SchemaVersion string         `json:"schema_version"`
		Type          string         `json:"type"`
		Summary       map[string]int `json:"summary"`
	}
	if err := json.Unmarshal([]byte(lastLine(r.Stdout)), &doc); err != nil || doc.Type != "plan" || doc.SchemaVersion == "" || doc.Summary["add"] == 0 {
		t.Fatalf("plan --json: %v %+v\n%s", err, doc, r.Stdout)
	}

	// No terminal, no --auto-approve: refused, nothing changed.
	r = mustMigrate(t, ctx, s, 1, "apply", "-f", s.PlanFile)
	if !strings.Contains(r.Stderr, "no terminal to ask for confirmation") || !strings.Contains(r.Stderr, "--auto-approve") {
		t.Errorf("apply without a terminal: %s", r.Stderr)
	}
	// --json cannot prompt either.
	r = mustMigrate(t, ctx, s, 1, "apply", "-f", s.PlanFile, "--json")
	if !strings.Contains(r.Stderr, "--auto-approve") || !strings.Contains(r.Stderr, `"type":"error"`) {
		t.Errorf("apply --json without --auto-approve: %s", r.Stderr)
	}

	// In a terminal: colour, the prompt, and anything but "yes" cancels.
	out := inTerminal(t, ctx, s, "", "no\n", "apply", "-f", s.PlanFile)
	if !strings.Contains(out, "\x1b[32m+\x1b[0m") || !strings.Contains(out, "Only 'yes' will be accepted") || !strings.Contains(out, "apply cancelled; nothing was changed") {
		t.Errorf("apply in a terminal answered no:\n%q", out)
	}
	// NO_COLOR turns colour off even on a terminal.
	out = inTerminal(t, ctx, s, "NO_COLOR=1", "", "plan", "-f", s.PlanFile)
	if strings.Contains(out, "\x1b[") || !strings.Contains(out, "Plan:") {
		t.Errorf("plan with NO_COLOR in a terminal:\n%q", out)
	}
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "refused and cancelled applies", before, after)

	// "yes" applies, with a timed progress line per step.
	out = inTerminal(t, ctx, s, "NO_COLOR=1", "yes\n", "apply", "-f", s.PlanFile)
	if !strings.Contains(out, "Apply complete!") || !strings.Contains(out, "... done [") {
		t.Fatalf("apply answered yes:\n%s", out)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "new")

	// rollback --json --auto-approve: a progress event per step, each timed.
	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--json", "--auto-approve", "--all")
	steps := 0
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		var ev struct {
			Type    string `json:"type"`
			Host    string `json:"host"`
			Elapsed *int64 `json:"elapsed_ms"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("rollback --json printed a line that is not JSON: %q", l)
		}
		if ev.Type == "progress" {
			steps++
			if ev.Host == "" || ev.Elapsed == nil {
				t.Errorf("progress event without host or time: %s", l)
			}
		}
	}
	if steps == 0 {
		t.Errorf("rollback --json printed no progress:\n%s", r.Stdout)
	}
	after, err = s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)

	// Shell completion comes from cobra, including the state addresses.
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r = mustMigrate(t, ctx, s, 0, "completion", sh)
		if !strings.Contains(r.Stdout, "migrate") || len(r.Stdout) < 500 {
			t.Errorf("completion %s: %d bytes", sh, len(r.Stdout))
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
