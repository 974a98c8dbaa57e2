package main

// The control plane at 10 000 services (issue 18): plan and apply from
// two shapes of plan file, adding one service to them, and one service
// alone, each with the CLI's own account of where the time went
// (MIGRATE_TIMINGS=1, internal/timing).

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/lab"
)

var (
	flagCPN    = flag.Int("cp-n", 10000, "services of the control-plane table (0 skips it)")
	flagSkipCP = flag.Bool("skip-cp", false, "skip the control-plane table")
)

// cpRun is one measured CLI command.
type cpRun struct {
	label  string
	wall   time.Duration
	err    string
	phases map[string]time.Duration // from the timing: lines
	calls  map[string]int
	order  []string
	memOld int64 // kB, VmHWM of the agents during the command
	memNew int64
}

var timingLine = regexp.MustCompile(`^timing: (.*?) +([0-9.]+) s +([0-9]+) call\(s\)`)

// migrateTimed runs the CLI with MIGRATE_TIMINGS=1 and parses its
// "timing:" lines.
func (b *bench) migrateTimed(ctx context.Context, label string, args ...string) *cpRun {
	r := &cpRun{label: label, phases: map[string]time.Duration{}, calls: map[string]int{}}
	mp := b.pollMem()
	t0 := time.Now()
	res, err := b.s.MigrateEnv(ctx, []string{"MIGRATE_TIMINGS=1"}, args...)
	r.wall = time.Since(t0)
	r.memOld, r.memNew = mp.stop()
	if *flagVerbose {
		fmt.Fprintf(os.Stderr, "$ migrate %s (exit %d, %s)\n%s%s", strings.Join(args, " "), res.Code, r.wall.Round(time.Millisecond), res.Stdout, res.Stderr)
	}
	switch {
	case err != nil:
		r.err = firstLine(err.Error())
	case res.Code != 0:
		r.err = fmt.Sprintf("exit %d: %s", res.Code, firstLine(strings.TrimSpace(res.Stderr)))
	}
	for _, ln := range strings.Split(res.Stderr, "\n") {
		// "timing: <name, padded> <seconds> s  <n> call(s)  <share> %"
		m := timingLine.FindStringSubmatch(ln)
		if m == nil {
			continue
		}
		secs, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		name := m[1]
		if _, ok := r.phases[name]; !ok {
			r.order = append(r.order, name)
		}
		r.phases[name] += time.Duration(secs * float64(time.Second))
		n, _ := strconv.Atoi(m[3])
		r.calls[name] += n
	}
	progress("  %s: %s%s", label, r.wall.Round(time.Millisecond), map[bool]string{true: " (" + r.err + ")", false: ""}[r.err != ""])
	return r
}

// blocksPlan: n services as "probe" plus n-1 one-port service blocks
// (scalePlan), with extra one-port blocks appended.
func (b *bench) blocksPlan(n, extra int) string {
	return b.withExtra(b.scalePlan(n), extra)
}

// rangesPlan: the same n (address, port) services as blocksPlan, written
// as few blocks: per address, blocks of 100 ports, each half a range
// ("20000-20049") and half a list of single ports.
func (b *bench) rangesPlan(n, extra int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "service \"probe\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [27000]\n  stage    = \"new\"\n}\n", b.old)
	rest := n - 1
	per := (rest + scaleAddrs - 1) / scaleAddrs
	blk := 0
	for a := 0; a < scaleAddrs && rest > 0; a++ {
		k := min(per, rest)
		rest -= k
		for off := 0; off < k; off += 100 {
			m := min(100, k-off)
			var ports []string
			half := m / 2
			first := 20000 + off
			if half > 1 {
				ports = append(ports, fmt.Sprintf("%q", fmt.Sprintf("%d-%d", first, first+half-1)))
			} else {
				half = 0
			}
			for p := first + half; p < first+m; p++ {
				ports = append(ports, strconv.Itoa(p))
			}
			fmt.Fprintf(&sb, "\nservice \"r%04d\" {\n  address       = %q\n  protocol      = \"tcp\"\n  ports         = [%s]\n  stage         = \"new\"\n  allow_unready = true\n}\n",
				blk, scaleAddr(a), strings.Join(ports, ", "))
			blk++
		}
	}
	text := b.s.HCL(fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", b.old, b.new), sb.String())
	return b.withExtra(text, extra)
}

// withExtra appends extra one-port service blocks (ports 30000 up on the
// first extra address).
func (b *bench) withExtra(text string, extra int) string {
	var sb strings.Builder
	sb.WriteString(text)
	for i := 0; i < extra; i++ {
		fmt.Fprintf(&sb, "\nservice \"added%d\" {\n  address       = %q\n  protocol      = \"tcp\"\n  ports         = [%d]\n  stage         = \"new\"\n  allow_unready = true\n}\n",
			i, scaleAddr(0), 30000+i)
	}
	return sb.String()
}

func (b *bench) controlPlane(ctx context.Context) (string, error) {
	n := *flagCPN
	planFile := filepath.Join(b.planDir, "cp.hcl")
	write := func(text string) error { return os.WriteFile(planFile, []byte(text), 0o644) }
	var runs []*cpRun
	do := func(label string, args ...string) *cpRun {
		r := b.migrateTimed(ctx, label, append(args, "-f", planFile)...)
		runs = append(runs, r)
		return r
	}
	// Addresses and the probe's server, as the scale table has them (it
	// may have run before).
	for i := 0; i < scaleAddrs; i++ {
		_ = b.exec(ctx, lab.RoleOld, "ip", "addr", "replace", scaleAddr(i)+"/32", "dev", "eth0")
	}
	nw, err := b.start(lab.RoleNew, b.loadgen, "serve", "-tcp", ":27000")
	if err != nil {
		return "", err
	}
	defer nw.stop()
	if err := b.waitTCP(ctx, lab.RoleNew, "127.0.0.1:27000"); err != nil {
		return "", err
	}
	type shape struct {
		name string
		plan func(n, extra int) string
	}
	var blocks int
	for _, ln := range strings.Split(b.rangesPlan(n, 0), "\n") {
		if strings.HasPrefix(ln, "service ") {
			blocks++
		}
	}
	shapes := []shape{
		{fmt.Sprintf("%d one-port blocks", n), b.blocksPlan},
		{fmt.Sprintf("%d blocks with port lists and ranges", blocks), b.rangesPlan},
	}
	// The agent binary installed on both hosts first, untimed (with
	// -skip-scale nothing has installed it yet): the table measures
	// commands against hosts that have it, as the scale table does.
	if err := write(b.blocksPlan(1, 0)); err != nil {
		return "", err
	}
	if _, err := b.s.MigrateEnv(ctx, nil, "plan", "-f", planFile); err != nil {
		return "", err
	}
	var rows [][]*cpRun // per shape: plan, apply, add one, rollback
	for _, sh := range shapes {
		progress("control plane: %d services as %s", n, sh.name)
		_ = b.exec(ctx, lab.RoleOld, "conntrack", "-F")
		if err := write(sh.plan(n, 0)); err != nil {
			return "", err
		}
		p := do(sh.name+": plan", "plan")
		a := do(sh.name+": apply", "apply", "--auto-approve")
		if err := write(sh.plan(n, 1)); err != nil {
			return "", err
		}
		one := do(sh.name+": apply of one service more", "apply", "--auto-approve")
		rb := do(sh.name+": rollback --all", "rollback", "--auto-approve", "--all")
		rows = append(rows, []*cpRun{p, a, one, rb})
		if rb.err != "" {
			break // the next shape would not start clean
		}
	}
	progress("control plane: one service")
	_ = b.exec(ctx, lab.RoleOld, "conntrack", "-F")
	if err := write(b.blocksPlan(1, 0)); err != nil {
		return "", err
	}
	p1 := do("1 service: plan", "plan")
	a1 := do("1 service: apply", "apply", "--auto-approve")
	do("1 service: rollback --all", "rollback", "--auto-approve", "--all")
	return b.renderCP(n, shapes[0].name, shapes[len(shapes)-1].name, rows, p1, a1, runs), nil
}

func (b *bench) renderCP(n int, _, _ string, rows [][]*cpRun, p1, a1 *cpRun, runs []*cpRun) string {
	var out strings.Builder
	fmt.Fprintf(&out, "\n### Control plane: %d services, and one\n\n", n)
	out.WriteString("Wall time of the CLI in the admin namespace, SSH included (agent binary already installed),\n")
	out.WriteString("default `--confirm-timeout` (the confirmation over fresh SSH connections is included).\n")
	out.WriteString("\"one service more\": the same plan file plus one one-port service block, applied over the\n")
	out.WriteString("applied plan. OLD's conntrack table is flushed before each shape. Peak RSS: VmHWM of each\n")
	out.WriteString("host's agent during that command.\n\n")
	cell := func(r *cpRun) string {
		if r == nil {
			return "—"
		}
		if r.err != "" {
			return "error: " + r.err
		}
		return fmt.Sprintf("%.2f s", r.wall.Seconds())
	}
	mem := func(r *cpRun) string {
		if r == nil || r.memOld == 0 {
			return "—"
		}
		return fmt.Sprintf("%.1f / %.1f MiB", float64(r.memOld)/1024, float64(r.memNew)/1024)
	}
	var tbl [][]string
	for _, row := range rows {
		name := strings.TrimSuffix(row[0].label, ": plan")
		tbl = append(tbl, []string{name, cell(row[0]), cell(row[1]), cell(row[2]), cell(row[3]), mem(row[1]) + " (apply), " + mem(row[2]) + " (one more)"})
	}
	tbl = append(tbl, []string{"1 service", cell(p1), cell(a1), "—", "—", mem(a1)})
	out.WriteString(mdTable([]string{"plan file", "`plan`", "`apply`", "`apply`, one service more", "`rollback --all`", "agent peak RSS OLD / NEW"}, tbl))

	// The serial split: the steps one after the other, each the wall time
	// of both hosts at once, as shares of the command's wall time.
	var cols0 []*cpRun
	for _, row := range rows {
		cols0 = append(cols0, row[0], row[1], row[2])
	}
	cols0 = append(cols0, p1, a1)
	out.WriteString("\nEach command step by step (seconds and share of its wall time; the steps run one after the\n")
	out.WriteString("other, each with both hosts at once inside it; \"rest\" is what no step covers: the CLI's start\n")
	out.WriteString("and exit, the local lock file):\n\n")
	out.WriteString(serialSplit(cols0))

	// Where the time goes: the phases of each command.
	out.WriteString("\nWhere the time goes (MIGRATE_TIMINGS=1; seconds summed per phase; the two hosts' agents run\n")
	out.WriteString("at the same time, so their lines overlap; an agent call's round trip contains the agent's\n")
	out.WriteString("own lines below it; phases under 10 ms in every column are left out; ×N: calls):\n\n")
	var cols []*cpRun
	for _, row := range rows {
		cols = append(cols, row[0], row[1], row[2])
	}
	cols = append(cols, a1)
	var names []string
	seen := map[string]bool{}
	for _, r := range cols {
		for _, k := range r.order {
			if !seen[k] {
				seen[k] = true
				names = append(names, k)
			}
		}
	}
	header := []string{"phase"}
	for _, r := range cols {
		header = append(header, r.label)
	}
	var pt [][]string
	wall := []string{"**wall**"}
	for _, r := range cols {
		wall = append(wall, fmt.Sprintf("**%.3f**", r.wall.Seconds()))
	}
	pt = append(pt, wall)
	for _, k := range names {
		var most time.Duration
		for _, r := range cols {
			most = max(most, r.phases[k])
		}
		if most < 10*time.Millisecond {
			continue // under 10 ms everywhere: left out
		}
		row := []string{strings.ReplaceAll(k, "|", "/")}
		for _, r := range cols {
			if d, ok := r.phases[k]; ok {
				c := ""
				if n := r.calls[k]; n > 1 {
					c = fmt.Sprintf(" ×%d", n)
				}
				row = append(row, fmt.Sprintf("%.3f%s (%.0f %%)", d.Seconds(), c, 100*d.Seconds()/r.wall.Seconds()))
			} else {
				row = append(row, "")
			}
		}
		pt = append(pt, row)
	}
	out.WriteString(mdTable(header, pt))

	b.cpTargets(rows, a1, runs)
	return out.String()
}

// cpTargets records the control-plane targets of issue 18 (targets.go):
// per shape, plan + apply under 5 s and one service more under 1 s; one
// service applied under 2 s; every agent's peak RSS under 64 MiB.
func (b *bench) cpTargets(rows [][]*cpRun, a1 *cpRun, runs []*cpRun) {
	secs := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
	for _, row := range rows {
		name := strings.TrimSuffix(row[0].label, ": plan")
		what := name + ": plan + apply"
		if row[0].err != "" || row[1].err != "" {
			b.targetNotMeasured(what, "< 5 s", "failed: "+row[0].err+row[1].err)
		} else {
			t := row[0].wall + row[1].wall
			b.target(what, "< 5 s", fmt.Sprintf("%s (plan %s + apply %s)", secs(t), secs(row[0].wall), secs(row[1].wall)), t < 5*time.Second)
		}
		what = name + ": apply of one service more"
		if row[2].err != "" {
			b.targetNotMeasured(what, "< 1 s", "failed: "+row[2].err)
		} else {
			b.target(what, "< 1 s", secs(row[2].wall), row[2].wall < time.Second)
		}
	}
	if a1 == nil || a1.err != "" {
		why := "not run"
		if a1 != nil {
			why = "failed: " + a1.err
		}
		b.targetNotMeasured("1 service: apply", "< 2 s", why)
	} else {
		b.target("1 service: apply", "< 2 s", secs(a1.wall)+" ("+topShares(a1, 3)+")", a1.wall < 2*time.Second)
	}
	var peak int64
	var at string
	for _, r := range runs {
		for _, m := range []int64{r.memOld, r.memNew} {
			if m > peak {
				peak, at = m, r.label
			}
		}
	}
	if peak == 0 {
		b.targetNotMeasured("agent peak RSS, every command above", "< 64 MiB", "no sample")
	} else {
		b.target("agent peak RSS, every command above", "< 64 MiB", fmt.Sprintf("%.1f MiB (%s)", float64(peak)/1024, at), peak < 64*1024)
	}
}

// topShares names the n largest serial steps of a command with their share
// of its wall time.
func topShares(r *cpRun, n int) string {
	type ph struct {
		name string
		d    time.Duration
	}
	var top []ph
	for _, k := range serialSteps {
		if d, ok := r.phases[k]; ok {
			top = append(top, ph{strings.TrimPrefix(k, "step: "), d})
		}
	}
	sort.SliceStable(top, func(i, j int) bool { return top[i].d > top[j].d })
	var parts []string
	for i := 0; i < len(top) && i < n; i++ {
		parts = append(parts, fmt.Sprintf("%s %.0f %%", top[i].name, 100*top[i].d.Seconds()/r.wall.Seconds()))
	}
	return strings.Join(parts, ", ")
}

// serialSteps are the CLI's timing lines of steps that run one after the
// other in plan and apply.
var serialSteps = []string{
	"parse the plan file",
	"step: read the state file",
	"step: connect both hosts",
	"step: reconcile the journals",
	"step: facts of both hosts",
	"step: WireGuard keys, peer routes",
	"step: lock both hosts",
	"plan.Make",
	"step: show the plan",
	"step: readiness and conntrack checks",
	"apply: steps, checks, state file (all)",
	"confirm over fresh SSH connections",
	"prune journals",
}

func serialSplit(cols []*cpRun) string {
	header := []string{"step"}
	for _, r := range cols {
		header = append(header, r.label)
	}
	var rows [][]string
	wall := []string{"**wall**"}
	for _, r := range cols {
		wall = append(wall, fmt.Sprintf("**%.3f**", r.wall.Seconds()))
	}
	rows = append(rows, wall)
	covered := make([]time.Duration, len(cols))
	for _, k := range serialSteps {
		row := []string{strings.TrimPrefix(k, "step: ")}
		for i, r := range cols {
			d, ok := r.phases[k]
			if !ok {
				row = append(row, "")
				continue
			}
			covered[i] += d
			row = append(row, fmt.Sprintf("%.3f (%.0f %%)", d.Seconds(), 100*d.Seconds()/r.wall.Seconds()))
		}
		rows = append(rows, row)
	}
	rest := []string{"rest"}
	for i, r := range cols {
		d := r.wall - covered[i]
		rest = append(rest, fmt.Sprintf("%.3f (%.0f %%)", d.Seconds(), 100*d.Seconds()/r.wall.Seconds()))
	}
	rows = append(rows, rest)
	return mdTable(header, rows)
}
