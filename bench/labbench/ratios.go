package main

import (
	"fmt"
	"sort"
	"strings"
)

// spread is the median and range of per-round ratios a ÷ base: both
// columns are measured in the same round, a few seconds apart, so load
// that changes over minutes cancels out of each round's ratio.
type spread struct {
	med, lo, hi float64
	n, of       int
}

func roundRatios(a, base []cell) (spread, bool) {
	var rs []float64
	for i := range a {
		if i < len(base) && a[i].valid() && base[i].valid() {
			rs = append(rs, a[i].v/base[i].v)
		}
	}
	if len(rs) == 0 {
		return spread{}, false
	}
	sort.Float64s(rs)
	m := rs[len(rs)/2]
	if len(rs)%2 == 0 {
		m = (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2
	}
	return spread{med: m, lo: rs[0], hi: rs[len(rs)-1], n: len(rs), of: len(a)}, true
}

func (s spread) String() string {
	t := fmt.Sprintf("%.2f [%.2f–%.2f]", s.med, s.lo, s.hi)
	if s.n < s.of {
		t += fmt.Sprintf(" (%d of %d rounds)", s.n, s.of)
	}
	return t
}

// renderRatios prints, per metric, each column's per-round ratio to
// routed (median [min–max] over the rounds), the unmoved service's after
// ÷ before, and the data-path targets of issue 18 against them (also
// recorded in the run's targets table).
func (b *bench) renderRatios(cols []*column, res map[string]map[string][]cell) string {
	var out strings.Builder
	var header []string
	var pairs [][2]string // column, baseline
	for _, c := range cols {
		switch {
		case c.name == "routed" || c.name == colUnmovedBefore:
		case strings.HasPrefix(c.name, colUnmovedAfter):
			if _, ok := res[colUnmovedBefore]; ok {
				pairs = append(pairs, [2]string{c.name, colUnmovedBefore})
			}
		default:
			if _, ok := res["routed"]; ok {
				pairs = append(pairs, [2]string{c.name, "routed"})
			}
		}
	}
	if len(pairs) == 0 {
		return ""
	}
	header = append(header, "metric")
	for _, p := range pairs {
		if p[1] == "routed" {
			header = append(header, p[0]+" ÷ routed")
		} else {
			header = append(header, "unmoved service: "+strings.TrimPrefix(p[0], "unmoved on OLD ")+" ÷ before apply")
		}
	}
	var rows [][]string
	for _, m := range metrics {
		row := []string{m.label}
		any := false
		for _, p := range pairs {
			if s, ok := roundRatios(res[p[0]][m.key], res[p[1]][m.key]); ok {
				row = append(row, s.String())
				any = true
			} else {
				row = append(row, "–")
			}
		}
		if any {
			rows = append(rows, row)
		}
	}
	out.WriteString("\nRatios per round (each round measures every column once, a few seconds apart): median [min–max] over the rounds.\n\n")
	out.WriteString(mdTable(header, rows))

	out.WriteString("\nTargets (issue 18), on the per-round ratios: the median decides, [min–max] shows what the spread allows:\n\n")
	check := func(what, col, base, key string, min float64) {
		s, ok := roundRatios(res[col][key], res[base][key])
		goal := fmt.Sprintf("≥ %.2f", min)
		if !ok {
			fmt.Fprintf(&out, "- %s ≥ %.2f: not measured\n", what, min)
			b.targetNotMeasured(what, goal, "column not run or no valid round")
			return
		}
		b.target(what, goal, s.String()+" (per-round ratio: median [min–max])", s.med >= min)
		verdict := "met"
		switch {
		case s.med < min:
			verdict = "MISSED"
		case s.lo < min:
			verdict = "met on the median, not in every round"
		}
		fmt.Fprintf(&out, "- %s ≥ %.2f: %s, %s\n", what, min, s, verdict)
	}
	check("tunnel ÷ routed, TCP throughput 1 stream", colTunnel, "routed", "tput1", 0.9)
	check("tunnel ÷ routed, TCP throughput 4 streams", colTunnel, "routed", "tput4", 0.9)
	check("tunnel ÷ routed, connection rate", colTunnel, "routed", "conn", 0.8)
	check("unmoved service on OLD, after ÷ before apply, TCP throughput 1 stream", colUnmovedAfter, colUnmovedBefore, "tput1", 0.95)
	check("unmoved service on OLD, after ÷ before apply, TCP throughput 4 streams", colUnmovedAfter, colUnmovedBefore, "tput4", 0.95)
	check("unmoved service on OLD, after ÷ before apply, connection rate", colUnmovedAfter, colUnmovedBefore, "conn", 0.95)
	return out.String()
}
