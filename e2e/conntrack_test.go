package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// TestConntrackCapacity fills OLD's conntrack table past the share plan
// warns at (entries inserted by ctnetlink in OLD's namespace, as a busy
// server's flows would be) and checks what each command does about it.
// OLD is a network namespace here, where Linux (6.1, 6.18) shows the
// global nf_conntrack_max read-only: plan warns and says what to set,
// apply refuses and changes nothing, status shows how full the table is.
// Where the namespace may write the limit, apply raises it as a recorded
// step and rollback restores it exactly.
//
// The VM lane runs it after lowering the guest's global limit, so few
// entries reach the share there; here it takes half of this machine's
// limit (131 073 entries for 262 144, ~3 s).
func TestConntrackCapacity(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := s.WritePlan(scenario.PlanOptions{TunnelType: "vxlan", Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	readMax := func() int64 {
		t.Helper()
		out, err := l.Exec(ctx, lab.RoleOld, "cat", "/proc/sys/net/netfilter/nf_conntrack_max")
		if err != nil {
			t.Fatalf("read OLD's limit: %v %s", err, out)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	max0 := readMax()
	if max0 <= 0 || max0 > 1<<21 {
		t.Skipf("nf_conntrack_max %d: no limit, or too many entries to fill in a test", max0)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Under the share, plan says nothing about conntrack.
	p := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if strings.Contains(p.Stdout, "conntrack") {
		t.Fatalf("plan on a quiet OLD mentions conntrack:\n%s", p.Stdout)
	}

	fill := max0*plan.ConntrackWarnPercent/100 + 1 + max0/100
	out, err := s.Labtool(ctx, 2*time.Minute, lab.RoleOld, "ctfill", "-n", fmt.Sprint(fill))
	if err != nil {
		t.Fatalf("fill OLD's conntrack table: %v %s", err, out)
	}
	t.Logf("OLD (limit %d): %s", max0, out)

	p = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	// The estimate is what OLD tracks: the inserted entries, and any
	// flow of the lab's own traffic tracked meanwhile.
	m := regexp.MustCompile(`WARNING host old: conntrack would track about (\d+) flow\(s\) \((\d+) tracked now, \d+ sockets\), over 50% of its limit (\d+)`).FindStringSubmatch(p.Stdout)
	if m == nil || m[3] != fmt.Sprint(max0) {
		t.Fatalf("plan does not warn about the limit %d:\n%s", max0, p.Stdout)
	}
	t.Logf("plan:\n%s", p.Stdout)
	estimate, _ := strconv.ParseInt(m[1], 10, 64)
	if estimate < fill || estimate > fill+100 {
		t.Fatalf("plan estimates %d flows, %d entries were inserted", estimate, fill)
	}
	raise := plan.ConntrackRaise(estimate, max0)
	setLine := fmt.Sprintf("sysctl -w %s=%d", state.ConntrackMax, raise)

	// status: how full the table is, text and JSON.
	st := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	full := regexp.MustCompile(`Conntrack on OLD: (\d+) of (\d+) entries \(([0-9.]+)% full\), over 50%`).FindStringSubmatch(st.Stdout)
	if full == nil || full[2] != fmt.Sprint(max0) {
		t.Fatalf("status shows no full conntrack table:\n%s", st.Stdout)
	}
	t.Logf("status:\n%s", st.Stdout)
	if n, _ := strconv.ParseInt(full[1], 10, 64); n < fill {
		t.Errorf("status counts %d entries, %d were inserted", n, fill)
	}
	if r := readStatus(t, ctx, s); r.Conntrack == nil || !r.Conntrack.Over || r.Conntrack.Max != max0 || r.Conntrack.Count < fill || r.Conntrack.Percent <= 50 {
		t.Errorf("status --json conntrack: %+v", r.Conntrack)
	}

	if strings.Contains(p.Stdout, "apply refuses until it is raised") {
		// OLD's namespace cannot write the limit.
		if !strings.Contains(p.Stdout, setLine) || strings.Contains(p.Stdout, "sysctl "+state.ConntrackMax) {
			t.Fatalf("plan: want %q and no step on the limit:\n%s", setLine, p.Stdout)
		}
		a := mustMigrate(t, ctx, s, 1, "apply", "-f", s.PlanFile, "--auto-approve")
		t.Logf("apply:\n%s", a.Stderr)
		for _, want := range []string{"refusing to turn on connection tracking on host old", setLine, "nothing was changed"} {
			if !strings.Contains(a.Stderr, want) {
				t.Errorf("apply's refusal lacks %q:\n%s", want, a.Stderr)
			}
		}
		after, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		diffSnap(t, "refused apply", before, after)
		if m := readMax(); m != max0 {
			t.Errorf("limit %d after the refused apply, was %d", m, max0)
		}
		return
	}

	// OLD's namespace may write the limit: apply raises it, rollback
	// restores it.
	if !strings.Contains(p.Stdout, fmt.Sprintf("~ sysctl %s: %d -> %d", state.ConntrackMax, max0, raise)) {
		t.Fatalf("plan neither refuses nor raises the limit:\n%s", p.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if m := readMax(); m != raise {
		t.Fatalf("limit %d after apply, want %d", m, raise)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	if m := readMax(); m != max0 {
		t.Fatalf("limit %d after rollback, want %d", m, max0)
	}
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)
}
