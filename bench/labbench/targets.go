package main

// The targets table (issue 18, "Done when"): every target a part of the
// run measures is recorded with b.target (or b.targetNotMeasured) as the
// part finishes, and main prints them all once, as one table, at the end of
// the report. A part that is skipped records nothing; a part that ran but
// could not measure a target says so instead of leaving the row out, so a
// reader sees every goal that was meant to be checked.
//
// Safe for concurrent use (a part may record from several goroutines).

import (
	"fmt"
	"strings"
	"sync"
)

// targetRow is one goal against what the run measured.
type targetRow struct {
	name     string // what is measured, e.g. "one service: apply"
	goal     string // e.g. "< 2 s", "≥ 0.9 × routed"
	result   string // the measured value, with whatever helps to read it
	met      bool
	measured bool // false: result says why there is no value (counts as missed)
}

var targets struct {
	mu   sync.Mutex
	rows []targetRow
}

// target records one target and its result, in the order the run checks
// them. result is the measured value as it should read in the table (units
// included); met is the verdict, decided by the caller against the goal.
func (b *bench) target(name, goal, result string, met bool) {
	targets.mu.Lock()
	defer targets.mu.Unlock()
	targets.rows = append(targets.rows, targetRow{name: name, goal: goal, result: result, met: met, measured: true})
}

// targetNotMeasured records a target the run meant to check but could not
// (the command failed, a column was not run, ...): why goes in the result
// column and the verdict reads "not measured".
func (b *bench) targetNotMeasured(name, goal, why string) {
	targets.mu.Lock()
	defer targets.mu.Unlock()
	targets.rows = append(targets.rows, targetRow{name: name, goal: goal, result: why})
}

// targetsTable renders every recorded target as one markdown table, or ""
// when nothing was recorded (all parts skipped).
func targetsTable() string {
	targets.mu.Lock()
	defer targets.mu.Unlock()
	if len(targets.rows) == 0 {
		return ""
	}
	var out strings.Builder
	out.WriteString("\n### Targets (issue 18)\n\n")
	out.WriteString("Every target this run measured, against its goal, as measured in this run (no adjustment\n")
	out.WriteString("for the machine's load: see the load average below).\n\n")
	var rows [][]string
	met := 0
	for _, r := range targets.rows {
		verdict := "MISSED"
		switch {
		case !r.measured:
			verdict = "not measured"
		case r.met:
			verdict = "met"
			met++
		}
		rows = append(rows, []string{r.name, r.goal, r.result, verdict})
	}
	out.WriteString(mdTable([]string{"target", "goal", "result", "met/missed"}, rows))
	fmt.Fprintf(&out, "\n%d of %d targets met.\n", met, len(targets.rows))
	return out.String()
}
