package apply_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// Issue 15 item 5: the journal after many stage changes of a service of
// 64 512 ports (ports = ["1024-65535"]). The service goes old -> canary
// -> new -> old ..., each canary with another percent (1..99), so the
// journal holds about a hundred distinct nft specs, not three. Every
// apply is followed by the prune the CLI does after a confirmed apply.
// The figures are printed as a table, each against the first checkpoint
// (1 change) measured in the same run.

const wideHCL = `
host "old" {
  ssh         = "root@198.51.100.10"
  known_hosts = "/dev/null"
}
host "new" {
  ssh         = "root@203.0.113.20"
  known_hosts = "/dev/null"
}
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
service "wide" {
  address       = "198.51.100.10"
  protocol      = "tcp"
  ports         = ["1024-65535"]
  stage         = "STAGE"
  allow_unready = true
}
`

// wideConfig is the plan of change i (0: the first apply, stage old).
// varying: each canary at another percent, else always 25.
func wideConfig(tb testing.TB, i int, varying bool) *config.Config {
	tb.Helper()
	stage := []string{"old", "canary", "new"}[i%3]
	src := strings.Replace(wideHCL, "STAGE", stage, 1)
	if stage == "canary" {
		pct := 25
		if varying {
			pct = 1 + (i/3)%99
		}
		src = strings.Replace(src, `stage         = "canary"`, `stage         = "canary"`+"\n  canary_percent = "+strconv.Itoa(pct), 1)
	}
	c, err := config.Parse([]byte(src), "wide.hcl")
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

type journalPoint struct {
	changes    int
	snapshot   int64 // state file bytes after the last compaction
	inline     int   // the same entries with their objects inline (format 1)
	entries    int
	objects    int
	heap       uint64 // live heap of the loaded journal
	plan, roll time.Duration
}

type wideLab struct {
	*lab
	varying bool
}

func (l wideLab) applyWide(tb testing.TB, i int) {
	tb.Helper()
	p := l.plan(tb, wideConfig(tb, i, l.varying))
	ex := l.executor()
	ex.Intent = p.Intent
	if err := ex.Apply(context.Background(), p); err != nil {
		tb.Fatal(err)
	}
	// The fake keeps every step it applied; nothing here reads them.
	for _, h := range l.hosts {
		h.Applied = nil
	}
	// What the CLI does once the apply is confirmed.
	apply.Prune(l.journal, apply.Prunable(l.journal, nil), nil)
	if err := l.journal.Save(l.path); err != nil {
		tb.Fatal(err)
	}
}

func median(ds []time.Duration) time.Duration {
	for i := range ds {
		for j := i + 1; j < len(ds); j++ {
			if ds[j] < ds[i] {
				ds[i], ds[j] = ds[j], ds[i]
			}
		}
	}
	return ds[len(ds)/2]
}

func measure(b *testing.B, l wideLab, changes int) journalPoint {
	pt := journalPoint{changes: changes}
	st, err := os.Stat(l.path)
	if err != nil {
		b.Fatal(err)
	}
	pt.snapshot = st.Size()
	inline, _ := json.Marshal(struct {
		Entries []state.Entry `json:"entries"`
		Runs    []state.Run   `json:"runs"`
	}{l.journal.Entries, l.journal.Runs})
	pt.inline = len(inline)
	pt.entries = len(l.journal.Entries)
	var raw struct {
		Objects map[string]json.RawMessage `json:"objects"`
	}
	sb, _ := os.ReadFile(l.path)
	_ = json.Unmarshal(sb, &raw)
	pt.objects = len(raw.Objects)

	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	j, err := state.LoadJournal(l.path)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	runtime.KeepAlive(j)
	if m1.HeapAlloc > m0.HeapAlloc {
		pt.heap = m1.HeapAlloc - m0.HeapAlloc
	}

	next := wideConfig(b, changes+1, l.varying)
	facts := map[string]state.Facts{}
	for name, h := range l.hosts {
		f, _ := h.Facts(context.Background(), plan.FactsRequest(next, name))
		facts[name] = f
	}
	var plans, rolls []time.Duration
	for k := 0; k < 5; k++ {
		// plan: read the state file, then diff against the hosts.
		start := time.Now()
		j, err := state.LoadJournal(l.path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := plan.Make(next, facts, j, time.Unix(0, 0)); err != nil {
			b.Fatal(err)
		}
		plans = append(plans, time.Since(start))
	}
	for k := 0; k < 3; k++ {
		// rollback: read the state file, plan the rollback of the last
		// change against the hosts, undo it. Then the change is applied
		// again (not timed).
		start := time.Now()
		j, err := state.LoadJournal(l.path)
		if err != nil {
			b.Fatal(err)
		}
		l.journal = j
		if err := l.executor().Rollback(context.Background(), false); err != nil {
			b.Fatal(err)
		}
		rolls = append(rolls, time.Since(start))
		l.applyWide(b, changes)
	}
	pt.plan, pt.roll = median(plans), median(rolls)
	return pt
}

// BenchmarkJournalStageChanges builds the journal up to 1 000 stage
// changes and measures it at 1, 10, 100 and 1 000. Run it with
// `go test -run '^$' -bench JournalStageChanges -benchtime 1x ./apply/`.
func BenchmarkJournalStageChanges(b *testing.B) {
	checkpoints := []int{1, 10, 100, 1000}
	if s := os.Getenv("MIGRATE_BENCH_CHANGES"); s != "" {
		checkpoints = nil
		for _, f := range strings.Split(s, ",") {
			n, _ := strconv.Atoi(f)
			checkpoints = append(checkpoints, n)
		}
	}
	for _, varying := range []bool{false, true} {
		name := "canary=25%"
		if varying {
			name = "canary=1..99%"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				journalTable(b, wideLab{lab: newLab(b), varying: varying}, checkpoints)
			}
		})
	}
}

func journalTable(b *testing.B, l wideLab, checkpoints []int) {
	l.applyWide(b, 0) // the first apply: the path, stage old
	var pts []journalPoint
	done := 0
	for _, n := range checkpoints {
		for ; done < n; done++ {
			l.applyWide(b, done+1)
		}
		pts = append(pts, measure(b, l, n))
	}
	base := pts[0]
	var t strings.Builder
	fmt.Fprintf(&t, "\n| stage changes | entries | distinct objects | state file | per change | format 1 (objects inline) | heap of the loaded journal | plan | x | rollback of the last change | x |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range pts {
		fmt.Fprintf(&t, "| %d | %d | %d | %s | %s | %s | %s | %s | %.2f | %s | %.2f |\n",
			p.changes, p.entries, p.objects, kib(p.snapshot), kib(p.snapshot/int64(p.changes)), kib(int64(p.inline)), kib(int64(p.heap)),
			p.plan.Round(100*time.Microsecond), float64(p.plan)/float64(base.plan), p.roll.Round(100*time.Microsecond), float64(p.roll)/float64(base.roll))
	}
	b.Log(t.String())
	last := pts[len(pts)-1]
	b.ReportMetric(float64(last.snapshot), "state-bytes")
	b.ReportMetric(float64(last.snapshot)/float64(last.changes), "bytes/change")
}

func kib(n int64) string {
	if n < 10<<10 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/1024)
}
