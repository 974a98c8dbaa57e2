package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestJournalBenchRealPath is the real-path half of the journal benchmark
// (issue 15 item 5; the code-path half, to 1 000 changes, is
// apply.BenchmarkJournalStageChanges): the CLI and the agents over SSH in
// the lab, a service of 64 512 ports (ports = ["1024-65535"]) going old ->
// canary -> new -> old ..., applied with --confirm-timeout 0. At each
// checkpoint it measures the state file, OLD's journal (snapshot and log),
// `migrate plan` and `migrate rollback` of the last change (then applied
// again), against the first checkpoint. It only runs with
// MIGRATE_JOURNAL_BENCH=1 (MIGRATE_JOURNAL_BENCH_CHANGES: the
// checkpoints, default 1,10,50); it asserts nothing about time.
func TestJournalBenchRealPath(t *testing.T) {
	if os.Getenv("MIGRATE_JOURNAL_BENCH") != "1" {
		t.Skip("a benchmark: MIGRATE_JOURNAL_BENCH=1 runs it")
	}
	needRoot(t)
	checkpoints := []int{1, 10, 50}
	if s := os.Getenv("MIGRATE_JOURNAL_BENCH_CHANGES"); s != "" {
		checkpoints = nil
		for _, f := range strings.Split(s, ",") {
			n, _ := strconv.Atoi(f)
			checkpoints = append(checkpoints, n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	if err := s.WritePlan(scenario.PlanOptions{Stage: "old"}); err != nil {
		t.Fatal(err)
	}
	tmpl, err := os.ReadFile(s.PlanFile)
	if err != nil {
		t.Fatal(err)
	}
	write := func(i int) {
		stage := []string{"old", "canary", "new"}[i%3]
		src := strings.Replace(string(tmpl), "ports    = [8080]", "ports    = [\"1024-65535\"]\n  allow_unready = true", 1)
		src = strings.Replace(src, `stage    = "old"`, `stage    = "`+stage+`"`, 1)
		if stage == "canary" {
			src = strings.Replace(src, `stage    = "canary"`, "stage    = \"canary\"\n  canary_percent = 25", 1)
		}
		if err := os.WriteFile(s.PlanFile, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	apply := func(i int) {
		write(i)
		mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", "0")
	}
	size := func(paths ...string) int64 {
		var n int64
		for _, p := range paths {
			if st, err := os.Stat(p); err == nil {
				n += st.Size()
			}
		}
		return n
	}
	statePath := filepath.Join(filepath.Dir(s.PlanFile), "migration.state.json")
	hostPath := filepath.Join(s.Lab.OldStateDir, "journal.json")
	type point struct {
		changes     int
		state, host int64
		plan, roll  time.Duration
	}
	var pts []point
	apply(0)
	done := 0
	for _, n := range checkpoints {
		for ; done < n; done++ {
			apply(done + 1)
		}
		p := point{changes: n, state: size(statePath, statePath+".log"), host: size(hostPath, hostPath+".log")}
		write(n + 1)
		start := time.Now()
		mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
		p.plan = time.Since(start)
		start = time.Now()
		mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
		p.roll = time.Since(start)
		apply(n) // the change again
		pts = append(pts, p)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| stage changes | state file | per change | OLD's journal | per change | migrate plan | x | migrate rollback | x |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range pts {
		fmt.Fprintf(&b, "| %d | %d B | %d B | %d B | %d B | %s | %.2f | %s | %.2f |\n", p.changes, p.state, p.state/int64(p.changes), p.host, p.host/int64(p.changes),
			p.plan.Round(10*time.Millisecond), float64(p.plan)/float64(pts[0].plan), p.roll.Round(10*time.Millisecond), float64(p.roll)/float64(pts[0].roll))
	}
	t.Log(b.String())
}
