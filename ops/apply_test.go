package ops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// recorder is a view that keeps what the operation said, one line each.
type recorder struct{ lines []string }

func (r *recorder) Info(format string, args ...any) { r.add("info: " + fmt.Sprintf(format, args...)) }
func (r *recorder) Note(msg string)                 { r.add("note: " + msg) }
func (r *recorder) Progress(host string, s state.Step, _ time.Duration, err error) {
	r.add(fmt.Sprintf("progress: %s %s %s %v", host, s.Action, s.Key(), err))
}
func (r *recorder) Plan(p *plan.Plan) {
	add, change, destroy := p.Counts()
	r.add(fmt.Sprintf("plan: %d %d %d", add, change, destroy))
}
func (r *recorder) ApplyComplete(add, change, destroy int, sp string) {
	r.add(fmt.Sprintf("apply complete: %d %d %d %s", add, change, destroy, filepath.Base(sp)))
}
func (r *recorder) RollbackPlan(p *apply.RollbackPlan, what string) {
	n, _ := p.Count()
	r.add(fmt.Sprintf("rollback plan: %s, %d", what, n))
}
func (r *recorder) RollbackComplete(n int, sp string) {
	r.add(fmt.Sprintf("rollback complete: %d %s", n, filepath.Base(sp)))
}
func (r *recorder) add(l string) { r.lines = append(r.lines, l) }

func (r *recorder) count(prefix string) int {
	n := 0
	for _, l := range r.lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

func dumps(f *fakeHosts) string {
	return f.hosts[plan.Old].Dump() + "\n---\n" + f.hosts[plan.New].Dump()
}

// The apply and rollback operations, whole, on two fake hosts: prepare,
// locks, revert timers, the steps, the probe, the two-phase confirm in
// NEW-then-OLD order, the state file; then rollback from the state file
// alone (the plan file is gone) puts both hosts back exactly.
func TestApplyThenRollback(t *testing.T) {
	ctx := context.Background()
	cfg := loadTestConfig(t)
	f := newFakeHosts()
	before := dumps(f)
	sp := filepath.Join(t.TempDir(), "migration.state.json")
	lock := proto.LockInfo{ID: "lock-1", Holder: "test", Operation: "apply", Started: time.Now()}

	var notes []string
	p, err := Prepare(ctx, cfg, sp, f.dial, time.Second, ForApply, func(n string) { notes = append(notes, n) })
	if err != nil {
		t.Fatal(err)
	}
	v := &recorder{}
	if err := Apply(ctx, p, v, ApplyOptions{ConfirmTimeout: time.Minute, Lock: lock}); err != nil {
		t.Fatalf("apply: %v\n%s", err, strings.Join(v.lines, "\n"))
	}
	p.Session.Close()
	steps := len(f.hosts[plan.Old].Applied) + len(f.hosts[plan.New].Applied)
	if steps == 0 || v.count("progress: ") != steps || v.count("plan: ") != 1 || v.lines[len(v.lines)-1] != fmt.Sprintf("apply complete: %s migration.state.json", strings.TrimPrefix(v.lines[0], "plan: ")) {
		t.Errorf("apply said:\n%s", strings.Join(v.lines, "\n"))
	}
	if dumps(f) == before {
		t.Fatal("apply changed nothing on the fakes")
	}
	// Locks and timers before any step, the probe after, then the
	// confirm: both prepared, NEW confirmed before OLD.
	log := strings.Join(f.events, "\n")
	for _, want := range []string{"new lock lock-1", "old lock lock-1", "new arm 1m0s", "old arm 1m0s", "old probe 198.51.100.10 8080",
		"new prepare\nold prepare\nnew confirm\nold confirm"} {
		if !strings.Contains(log, want) {
			t.Errorf("host calls lack %q:\n%s", want, log)
		}
	}
	j, err := state.LoadJournal(sp)
	if err != nil || len(j.Active()) != steps || j.Targets[plan.Old].Address != "198.51.100.10" || j.Targets[plan.New].Address != "203.0.113.20" {
		t.Fatalf("state file: %v, %d active entries for %d steps, targets %+v", err, len(j.Active()), steps, j.Targets)
	}

	// Rollback knows the hosts from the state file: the plan file given
	// does not exist.
	f.events = nil
	rv := &recorder{}
	err = Rollback(ctx, f.dial, rv, RollbackOptions{PlanFile: "/nonexistent/migration.hcl", StatePath: sp, All: true, Timeout: time.Second,
		Lock: proto.LockInfo{ID: "lock-2"}})
	if err != nil {
		t.Fatalf("rollback: %v\n%s", err, strings.Join(rv.lines, "\n"))
	}
	if got := dumps(f); got != before {
		t.Errorf("after rollback the hosts differ from before apply:\n%s\n--- before\n%s", got, before)
	}
	if rv.lines[0] != fmt.Sprintf("rollback plan: everything migrate applied, %d", steps) || rv.lines[len(rv.lines)-1] != fmt.Sprintf("rollback complete: %d migration.state.json", steps) {
		t.Errorf("rollback said:\n%s", strings.Join(rv.lines, "\n"))
	}
	if !strings.Contains(strings.Join(f.events, "\n"), "old lock lock-2") {
		t.Errorf("rollback did not lock the hosts: %v", f.events)
	}

	// Nothing left: a second rollback says so and changes nothing.
	rv = &recorder{}
	if err := Rollback(ctx, f.dial, rv, RollbackOptions{StatePath: sp, Timeout: time.Second}); err != nil || !strings.HasPrefix(strings.Join(rv.lines, "\n"), "info: Nothing to roll back") {
		t.Errorf("second rollback: %v %v", err, rv.lines)
	}
}

// An apply the operator declines touches nothing: no step, no timer.
func TestApplyDeclined(t *testing.T) {
	ctx := context.Background()
	cfg := loadTestConfig(t)
	f := newFakeHosts()
	before := dumps(f)
	sp := filepath.Join(t.TempDir(), "migration.state.json")
	p, err := Prepare(ctx, cfg, sp, f.dial, time.Second, ForApply, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Session.Close()
	asked := 0
	err = Apply(ctx, p, &recorder{}, ApplyOptions{ConfirmTimeout: time.Minute, Approve: func() (bool, error) { asked++; return false, nil }})
	if err == nil || err.Error() != "apply cancelled; nothing was changed" || asked != 1 {
		t.Fatalf("declined apply: %v (asked %d times)", err, asked)
	}
	if dumps(f) != before || strings.Contains(strings.Join(f.events, "\n"), "arm") {
		t.Errorf("a declined apply changed the hosts: %v", f.events)
	}
	if _, err := os.Stat(sp); err == nil {
		t.Error("a declined apply wrote the state file")
	}
}

// Prepare refuses a plan whose OLD address and port are the SSH
// connection migrate itself uses, and leaves nothing connected.
func TestPrepareSelfLockout(t *testing.T) {
	cfg := loadTestConfig(t)
	cfg.Services[0].Ports[0].From, cfg.Services[0].Ports[0].To = 22, 22
	f := newFakeHosts()
	_, err := Prepare(context.Background(), cfg, filepath.Join(t.TempDir(), "s.json"), f.dial, time.Second, ForApply, func(string) {})
	if err == nil {
		t.Fatal("a plan moving migrate's own SSH port was prepared")
	}
	for name, c := range f.conns {
		if !c.closed {
			t.Errorf("host %s left connected after the refusal", name)
		}
	}
}

// force-unlock removes the local lock only when it holds that ID, and
// the host locks on both hosts the state file (else the plan file) names.
func TestForceUnlock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sp := filepath.Join(dir, "migration.state.json")
	f := newFakeHosts()
	r := &recorder{}
	if err := ForceUnlock(ctx, f.dial, sp, filepath.Join(dir, "none.hcl"), "x", time.Second, r); err == nil || !strings.Contains(err.Error(), "no way to reach the hosts") {
		t.Fatalf("nothing to unlock: %v", err)
	}
	l, err := AcquireLocalLock(sp, "apply")
	if err != nil {
		t.Fatal(err)
	}
	if err := ForceUnlock(ctx, f.dial, sp, "", "other-id", time.Second, r); err == nil || !strings.Contains(err.Error(), "not other-id; nothing was changed") {
		t.Fatalf("wrong ID: %v", err)
	}
	if _, err := os.Stat(sp + ".lock"); err != nil {
		t.Fatal("a lock with another ID was removed")
	}
	j := state.NewJournal()
	j.Targets = map[string]state.Target{plan.Old: {User: "root", Address: "198.51.100.10", Port: 22, KnownHosts: "/dev/null"}, plan.New: {User: "root", Address: "203.0.113.20", Port: 22, KnownHosts: "/dev/null"}}
	if err := j.Save(sp); err != nil {
		t.Fatal(err)
	}
	if err := ForceUnlock(ctx, f.dial, sp, "", l.Info.ID, time.Second, r); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sp + ".lock"); !os.IsNotExist(err) {
		t.Errorf("local lock still there: %v", err)
	}
	log := strings.Join(f.events, "\n")
	for _, want := range []string{"old force-unlock " + l.Info.ID, "new force-unlock " + l.Info.ID} {
		if !strings.Contains(log, want) {
			t.Errorf("host calls lack %q:\n%s", want, log)
		}
	}
	if !strings.HasPrefix(r.lines[0], "info: Removed the local lock") || len(r.lines) != 3 {
		t.Errorf("force-unlock said:\n%s", strings.Join(r.lines, "\n"))
	}
}
