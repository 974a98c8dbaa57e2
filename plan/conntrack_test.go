package plan_test

import (
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

func TestConntrackEstimateAndShare(t *testing.T) {
	for _, tc := range []struct {
		name           string
		c              state.Conntrack
		estimate       int64
		over           bool
		raise          int64
		percentAtLeast float64
	}{
		// The estimate is the larger of what is tracked and the sockets
		// (TIME_WAIT included).
		{"count wins", state.Conntrack{Loaded: true, Count: 600, Max: 1000, TCPInUse: 10}, 600, true, 65536, 60},
		{"sockets win", state.Conntrack{Loaded: true, Count: 0, Max: 1000, TCPInUse: 200, TCPTimeWait: 250, UDPInUse: 51}, 501, true, 65536, 0},
		// Exactly half is not over; one more is.
		{"at the share", state.Conntrack{Loaded: true, Max: 262144, TCPTimeWait: 131072}, 131072, false, 0, 0},
		{"past the share", state.Conntrack{Loaded: true, Max: 262144, TCPTimeWait: 131073}, 131073, true, 524292 + 65536 - 524292%65536, 0},
		{"quiet", state.Conntrack{Loaded: true, Count: 10, Max: 262144, TCPInUse: 20}, 20, false, 0, 0},
		// No limit, or no conntrack yet: never over.
		{"no limit", state.Conntrack{Loaded: true, Count: 1 << 20, Max: 0}, 1 << 20, false, 0, 0},
		{"not loaded", state.Conntrack{TCPInUse: 1 << 20}, 1 << 20, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := plan.CheckConntrack(tc.c)
			if r.Estimate != tc.estimate || r.Over != tc.over || r.Raise != tc.raise {
				t.Fatalf("%+v: estimate %d over %v raise %d; want %d %v %d", tc.c, r.Estimate, r.Over, r.Raise, tc.estimate, tc.over, tc.raise)
			}
			if r.Percent() < tc.percentAtLeast {
				t.Errorf("percent %.1f < %.1f", r.Percent(), tc.percentAtLeast)
			}
			if r.Over && r.Estimate*100 > r.Raise*plan.ConntrackTargetPercent {
				t.Errorf("raise %d leaves the estimate %d above %d%%", r.Raise, r.Estimate, plan.ConntrackTargetPercent)
			}
		})
	}
	// Never lower than the current limit, and a multiple of 65536.
	if got := plan.ConntrackRaise(10, 1<<20); got != 1<<20 {
		t.Errorf("ConntrackRaise(10, 1M) = %d", got)
	}
	if got := plan.ConntrackRaise(100000, 1000); got != 458752 {
		t.Errorf("ConntrackRaise(100000, 1000) = %d, want 458752 (400000 rounded up to 65536s)", got)
	}
}

// busyOld is OLD with 200000 TIME_WAIT sockets and a limit of 262144.
func busyOld(writable bool) state.Facts {
	f := facts("198.51.100.10/24", 1500)
	f.Sysctls[state.ConntrackMax] = "262144"
	f.Conntrack = &state.Conntrack{Loaded: true, Count: 12, Max: 262144, Buckets: 262144, MaxWritable: writable, TCPInUse: 100, TCPTimeWait: 200000}
	return f
}

func oldSteps(p *plan.Plan) string { return lines(p.Steps(plan.Old)) }

func TestConntrackPlanRaisesWhenWritable(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: busyOld(true), plan.New: facts("203.0.113.20/24", 1500)}
	p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	var raise *state.Step
	for i, s := range p.Steps(plan.Old) {
		if o := s.Object(); o.Sysctl != nil && o.Sysctl.Name == state.ConntrackMax {
			raise = &p.Steps(plan.Old)[i]
		}
	}
	// 200100 at 25%: 800400, rounded up to 851968. An update: the old
	// value is recorded for rollback.
	if raise == nil || raise.Action != state.Update || raise.Before.Sysctl.Value != "262144" || raise.After.Sysctl.Value != "851968" {
		t.Fatalf("raise step %+v", raise)
	}
	if !strings.Contains(strings.Join(p.Notes, "\n"), "WARNING host old: conntrack would track about 200100 flow(s)") ||
		!strings.Contains(strings.Join(p.Notes, "\n"), "apply raises net.netfilter.nf_conntrack_max to 851968 (recorded; rollback restores 262144)") {
		t.Errorf("notes: %q", p.Notes)
	}
	if err := plan.ConntrackError(c, f[plan.Old]); err != nil {
		t.Errorf("writable limit refused: %v", err)
	}

	// After the raise (journal owns it, the host shows 851968), a quiet
	// OLD keeps the raised limit: no step lowers it before rollback.
	j := state.NewJournal()
	j.Append("r1", 1, *raise, time.Unix(0, 0))
	quiet := busyOld(true)
	quiet.Sysctls[state.ConntrackMax] = "851968"
	quiet.Conntrack.Max, quiet.Conntrack.TCPTimeWait = 851968, 10
	f[plan.Old] = quiet
	p, err = plan.Make(c, f, j, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(oldSteps(p), "nf_conntrack_max") {
		t.Errorf("a later plan changes the raised limit:\n%s", oldSteps(p))
	}
}

func TestConntrackPlanRefusesWhenReadOnly(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: busyOld(false), plan.New: facts("203.0.113.20/24", 1500)}
	p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(oldSteps(p), "nf_conntrack_max") {
		t.Errorf("a step writes a read-only limit:\n%s", oldSteps(p))
	}
	notes := strings.Join(p.Notes, "\n")
	if !strings.Contains(notes, "apply refuses until it is raised") || !strings.Contains(notes, "sysctl -w net.netfilter.nf_conntrack_max=851968") {
		t.Errorf("notes: %q", p.Notes)
	}
	err = plan.ConntrackError(c, f[plan.Old])
	if err == nil || !strings.Contains(err.Error(), "sysctl -w net.netfilter.nf_conntrack_max=851968") {
		t.Fatalf("apply not refused, or without what to set: %v", err)
	}
	// Once migrate's table is on OLD, tracking is on already: apply must
	// not refuse (it would block moving services back); plan still warns.
	on := busyOld(false)
	on.Nft = &state.NftTable{Family: "inet", Name: plan.NftTableName}
	if err := plan.ConntrackError(c, on); err != nil {
		t.Errorf("refused with migrate's table already on OLD: %v", err)
	}
	// A quiet OLD passes.
	quiet := busyOld(false)
	quiet.Conntrack.TCPTimeWait = 1000
	if err := plan.ConntrackError(c, quiet); err != nil {
		t.Errorf("quiet OLD refused: %v", err)
	}
}

// Without conntrack loaded, OLD reports no limit: plan notes it, and
// neither warns nor fails.
func TestConntrackNotLoaded(t *testing.T) {
	c := mustParse(t, src)
	old := facts("198.51.100.10/24", 1500)
	old.Conntrack = &state.Conntrack{TCPInUse: 500000}
	p, err := plan.Make(c, map[string]state.Facts{plan.Old: old, plan.New: facts("203.0.113.20/24", 1500)}, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(oldSteps(p), "nf_conntrack_max") || plan.ConntrackError(c, old) != nil {
		t.Errorf("steps or refusal without a limit to read:\n%s", oldSteps(p))
	}
	if !strings.Contains(strings.Join(p.Notes, "\n"), "conntrack on host old: not loaded yet") {
		t.Errorf("notes: %q", p.Notes)
	}
}

// The readiness line's count: established conntrack entries plus OLD's
// connections only its sockets show.
func TestFlowsCountSockets(t *testing.T) {
	c := mustParse(t, src)
	old := facts("198.51.100.10/24", 1500)
	old.Stats = &state.Stats{Flows: map[string]state.FlowCount{
		"198.51.100.10 tcp 8080": {Total: 3, Established: 2, ToNew: 1, OnOld: 1, Sockets: 2, SocketsOnly: 1},
		"198.51.100.10 tcp 9000": {Sockets: 4, SocketsOnly: 4},
	}}
	got := plan.Flows(c, old)
	if len(got) != 1 || got[0].Established != 7 || got[0].SocketsOnly != 5 || got[0].ToNew != 1 {
		t.Fatalf("flows %+v; want 7 established (2 in conntrack, 5 only in sockets), 1 to NEW", got)
	}
}
