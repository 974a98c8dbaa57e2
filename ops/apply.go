package ops

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/internal/timing"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// Reporter is what an operation says while it runs. The command's view
// implements it (views.Apply, views.Rollback).
type Reporter interface {
	Info(format string, args ...any)
	Note(msg string)
	Progress(host string, s state.Step, took time.Duration, err error)
}

// Prepared is a config, its journal and live connections with the facts
// read through them: what plan and apply start from.
type Prepared[H Host] struct {
	Config    *config.Config
	StatePath string
	Journal   *state.Journal
	Session   *Session[H]
	Facts     map[string]state.Facts
}

// Prepare connects to both hosts of cfg, refuses a plan that would cut
// migrate's own SSH connection, brings the state file in line with the
// hosts' journals (each change a note), and reads the facts. On error
// nothing stays connected.
func Prepare[H Host](ctx context.Context, cfg *config.Config, statePath string, dial Dialer[H], timeout time.Duration, purpose Purpose, note func(string)) (*Prepared[H], error) {
	t0 := time.Now()
	j, err := state.LoadJournal(statePath)
	if err != nil {
		return nil, err
	}
	timing.CLI.Since("step: read the state file", t0)
	sess := NewSession(ConfigTargets(cfg.Hosts, timeout), dial)
	// The "step:" lines are the wall time of each serial step (both hosts
	// at once inside it), so that a command's split adds up.
	t0 = time.Now()
	if err := sess.Connect(ctx); err != nil {
		return nil, err
	}
	timing.CLI.Since("step: connect both hosts", t0)
	// The static check compares the configured address; this one the
	// address the connection really reached (a DNS name in the file).
	ip, port := sess.Clients[plan.Old].Reached()
	if err := plan.CheckSelfLockout(cfg, plan.Old, ip, port); err != nil {
		sess.Close()
		return nil, err
	}
	t0 = time.Now()
	notes, err := Reconcile(ctx, sess, j, statePath)
	if err != nil {
		sess.Close()
		return nil, err
	}
	timing.CLI.Since("step: reconcile the journals", t0)
	for _, n := range notes {
		note(n)
	}
	t0 = time.Now()
	facts, err := Facts(ctx, sess, cfg, purpose)
	if err != nil {
		sess.Close()
		return nil, err
	}
	timing.CLI.Since("step: facts of both hosts", t0)
	t0 = time.Now()
	if err := WGKeys(ctx, sess, cfg, facts); err != nil {
		sess.Close()
		return nil, err
	}
	if err := PeerRoutes(ctx, sess, cfg, facts); err != nil {
		sess.Close()
		return nil, err
	}
	timing.CLI.Since("step: WireGuard keys, peer routes", t0)
	return &Prepared[H]{Config: cfg, StatePath: statePath, Journal: j, Session: sess, Facts: facts}, nil
}

// ApplyView is what apply shows: the plan, then prose and progress.
type ApplyView interface {
	Reporter
	Plan(p *plan.Plan)
	ApplyComplete(add, change, destroy int, statePath string)
}

// Hooks are test-only faults the command line injects (MIGRATE_TEST_FAULT).
type Hooks struct {
	// BeforeStep runs before apply's Nth step (apply.Executor.BeforeStep).
	BeforeStep func(n int, st state.Step) error
	// WrapHosts may wrap the hosts steps are sent to.
	WrapHosts func(map[string]apply.Host) map[string]apply.Host
	// Confirm runs at the stages of the confirm (ConfirmRun).
	Confirm func(stage string)
}

func (h Hooks) wrap(m map[string]apply.Host) map[string]apply.Host {
	if h.WrapHosts == nil {
		return m
	}
	return h.WrapHosts(m)
}

// ApplyOptions are apply's choices.
type ApplyOptions struct {
	// Saved is the plan saved by plan --out, applied exactly, and refused
	// when the facts changed since; nil makes a plan now.
	Saved *plan.Plan
	// Approve asks the operator once the plan is shown; nil applies
	// without asking.
	Approve func() (bool, error)
	// ConfirmTimeout arms each host's revert timer (0: none).
	ConfirmTimeout time.Duration
	// Lock is the local lock's identity, taken on both hosts too.
	Lock  proto.LockInfo
	Hooks Hooks
}

// Apply makes the plan real on both hosts of p: host locks, the
// freshness check of a saved plan, the readiness and conntrack checks,
// the revert timers, the steps (NEW first; apply.Executor), the two-phase
// confirm over fresh connections and the journals' housekeeping.
func Apply[H Host](ctx context.Context, p *Prepared[H], v ApplyView, o ApplyOptions) error {
	t0 := time.Now()
	if err := LockHosts(ctx, p.Session, o.Lock); err != nil {
		return err
	}
	timing.CLI.Since("step: lock both hosts", t0)
	ex := &apply.Executor{
		Hosts:     o.Hooks.wrap(ApplyHosts(p.Session)),
		Journal:   p.Journal,
		StatePath: p.StatePath,
		Progress:  v.Progress,
		Info:      v.Info,
	}
	var pl *plan.Plan
	if o.Saved != nil {
		// prepare just collected the facts: compare, no second dump.
		reqs := map[string]state.FactsRequest{}
		for name := range p.Facts {
			reqs[name] = plan.FactsRequest(p.Config, name)
		}
		if err := apply.CheckFresh(o.Saved, p.Facts, reqs); err != nil {
			return err
		}
		pl = o.Saved
	} else {
		var err error
		t0 = time.Now()
		if pl, err = plan.Make(p.Config, p.Facts, p.Journal, time.Now()); err != nil {
			return err
		}
		timing.CLI.Since("plan.Make", t0)
	}
	t0 = time.Now()
	v.Plan(pl)
	timing.CLI.Since("step: show the plan", t0)
	if pl.Empty() {
		return nil
	}
	ex.Intent = pl.Intent
	t0 = time.Now()
	if err := plan.UnreadyError(plan.CheckReadiness(p.Config, p.Facts[plan.New])); err != nil {
		return fmt.Errorf("%w; nothing was changed", err)
	}
	if err := plan.ConntrackError(p.Config, p.Facts[plan.Old]); err != nil {
		return fmt.Errorf("%w; nothing was changed", err)
	}
	timing.CLI.Since("step: readiness and conntrack checks", t0)
	if o.Approve != nil && o.Saved == nil {
		ok, err := o.Approve()
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("apply cancelled; nothing was changed")
		}
	}
	if p.Journal.Targets == nil {
		p.Journal.Targets = map[string]state.Target{}
	}
	for name := range p.Session.Clients {
		p.Journal.Targets[name] = StateTarget(p.Session.Targets[name])
	}
	ex.Run = state.NewID()
	ex.BeforeStep = o.Hooks.BeforeStep
	if old, ok := p.Session.Clients[plan.Old]; ok {
		ex.PostCheck = ProbeServices(p.Config, old, v, plan.NewFirewall(p.Config, p.Facts))
	}
	var deadline time.Time
	if o.ConfirmTimeout > 0 {
		deadline = time.Now().Add(o.ConfirmTimeout)
		for _, name := range p.Session.Names() {
			if err := p.Session.Clients[name].Arm(ctx, ex.Run, o.ConfirmTimeout); err != nil {
				return fmt.Errorf("host %s: arm the revert timer: %w; nothing was changed", name, err)
			}
		}
		v.Info("Revert timers armed on both hosts: without confirmation they undo this apply %s from now (about %s here; each host measures the time on its own clock).", o.ConfirmTimeout, deadline.Local().Format(time.TimeOnly))
	}
	t0 = time.Now()
	err := ex.Apply(ctx, pl)
	timing.CLI.Since("apply: steps, checks, state file (all)", t0)
	if err != nil {
		// A host that stopped answering: say what each host
		// still holds and what undoes it.
		return DeadLinkApplyError(err, p.Session, p.Journal, ex.Run, deadline, o.Lock.ID)
	}
	if o.ConfirmTimeout > 0 {
		v.Info("Confirming over fresh SSH connections...")
		t0 := time.Now()
		msg, err := ConfirmRun(ctx, p.Session, ex.Run, o.ConfirmTimeout, o.Hooks.Confirm)
		timing.CLI.Since("confirm over fresh SSH connections", t0)
		if err != nil {
			return fmt.Errorf("the change is applied and verified, but not confirmed on both hosts: %w", err)
		}
		v.Info("%s", msg)
	}
	// Every run is now confirmed or undone.
	t0 = time.Now()
	notes := PruneJournals(ctx, p.Session, p.Journal, p.StatePath)
	timing.CLI.Since("prune journals", t0)
	for _, n := range notes {
		v.Note(n)
	}
	add, change, destroy := pl.Counts()
	v.ApplyComplete(add, change, destroy, p.StatePath)
	return nil
}

// maxUnreadyProbes is how many allow_unready services the post-apply
// probe tries; the others are counted in one line.
const maxUnreadyProbes = 10

// ProbeServices returns apply's last check: for each TCP service whose
// new flows go to NEW, OLD opens a real connection to it with the
// tunnel's mark, which takes migrate's policy route through the tunnel to
// NEW. A service with allow_unready only gets a warning, and only the
// first maxUnreadyProbes of them are probed.
func ProbeServices(cfg *config.Config, old Host, v Reporter, firewall string) func(ctx context.Context) error {
	if cfg.Tunnel == nil {
		return nil
	}
	return func(ctx context.Context) error {
		unready := 0 // allow_unready services probed so far
		skipped := 0
		defer func() {
			if skipped > 0 {
				v.Info("probe: %d more service(s) with allow_unready = true not probed (a failure would not stop the apply; the first %d were probed)", skipped, maxUnreadyProbes)
			}
		}()
		for _, s := range cfg.Services {
			if s.Stage == "old" || s.Protocol != state.TCP || len(s.Ports) == 0 {
				continue
			}
			if s.AllowUnready {
				// Their probes only inform, one agent call each: with
				// thousands of them that was most of an apply.
				if unready == maxUnreadyProbes {
					skipped++
					continue
				}
				unready++
			}
			port := s.Ports[0].From
			err := old.Probe(ctx, s.Address.String(), port, cfg.Tunnel.Mark)
			switch {
			case err == nil:
				v.Info("probe: service %q: a connection from OLD through the tunnel to NEW's %s reached NEW", s.Name, netip.AddrPortFrom(s.Address, port))
			case s.AllowUnready:
				v.Info("probe: service %q: NEW did not accept a connection to %s through the tunnel (%v); kept because of allow_unready", s.Name, netip.AddrPortFrom(s.Address, port), err)
			case firewall != "":
				// What plan warned about NEW's firewall: the likeliest
				// cause, with its commands.
				return fmt.Errorf("probe: service %q: a connection from OLD through the tunnel to %s on NEW failed: %w; as plan warned: %s", s.Name, netip.AddrPortFrom(s.Address, port), err, firewall)
			default:
				return fmt.Errorf("probe: service %q: a connection from OLD through the tunnel to %s on NEW failed: %w", s.Name, netip.AddrPortFrom(s.Address, port), err)
			}
		}
		return nil
	}
}

// RollbackView is what rollback shows.
type RollbackView interface {
	Reporter
	RollbackPlan(p *apply.RollbackPlan, what string)
	RollbackComplete(undone int, statePath string)
}

// RollbackOptions are rollback's choices.
type RollbackOptions struct {
	// PlanFile names the hosts when the state file does not.
	PlanFile  string
	StatePath string
	// Lost: the state file did not exist when the command started (it
	// is rebuilt from the hosts' journals).
	Lost bool
	// All undoes everything migrate applied, not only the last change.
	All bool
	// Approve asks the operator once the rollback is shown; nil rolls
	// back without asking.
	Approve func() (bool, error)
	// Timeout is --host-timeout.
	Timeout time.Duration
	Lock    proto.LockInfo
	Hooks   Hooks
}

// Rollback undoes the last change (or all) on both hosts, from the state
// file and the hosts' own journals: whatever was edited by hand since,
// both hosts end up as the previous change left them.
func Rollback[H Host](ctx context.Context, dial Dialer[H], v RollbackView, o RollbackOptions) error {
	sp := o.StatePath
	j, err := state.LoadJournal(sp)
	if err != nil {
		return err
	}
	targets, err := RecordedTargets(j, o.PlanFile, o.Timeout)
	if err != nil {
		return fmt.Errorf("state %s does not say how to reach the hosts, and the plan file cannot either: %w", sp, err)
	}
	sess := NewSession(targets, dial)
	if err := sess.Connect(ctx); err != nil {
		return err
	}
	defer sess.Close()
	if err := LockHosts(ctx, sess, o.Lock); err != nil {
		return err
	}
	notes, err := Reconcile(ctx, sess, j, sp)
	if err != nil {
		return err
	}
	if o.Lost && len(j.Active()) > 0 {
		v.Note(fmt.Sprintf("the state file %s was missing; it was rebuilt from the hosts' own journals.", sp))
	} else {
		for _, n := range notes {
			v.Note(n)
		}
	}
	if len(j.Active()) == 0 {
		v.Info("Nothing to roll back: neither %s nor the hosts' journals record applied steps.", sp)
		return nil
	}
	what := "the last change"
	if o.All {
		what = "everything migrate applied"
	}
	ex := &apply.Executor{Hosts: o.Hooks.wrap(ApplyHosts(sess)), Journal: j, StatePath: sp, Progress: v.Progress, Info: v.Info}
	rp, err := ex.PlanRollback(ctx, o.All)
	if err != nil {
		return err
	}
	for _, w := range rp.Warnings {
		v.Note(w)
	}
	v.RollbackPlan(rp, what)
	n, _ := rp.Count()
	if o.Approve != nil {
		ok, err := o.Approve()
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("rollback cancelled; nothing was changed")
		}
	}
	if err := ex.Undo(ctx, rp.Steps); err != nil {
		return DeadLinkRollbackError(err, sess, rp.Steps, o.All, o.Lock.ID)
	}
	for _, n := range PruneJournals(ctx, sess, j, sp) {
		v.Note(n)
	}
	v.RollbackComplete(n, sp)
	return nil
}

// ForceUnlock removes lock id, left by a migrate that is gone: the local
// lock file of statePath when it holds id, then the host lock on both
// hosts (the journal's targets, else the plan file's). report gets a
// line for what was removed, and one per host.
func ForceUnlock[H Host](ctx context.Context, dial Dialer[H], statePath, planFile, id string, timeout time.Duration, report Reporter) error {
	sp := statePath
	held, err := RemoveLocalLock(sp, id)
	if err != nil {
		return err
	}
	removed := held != nil
	if removed {
		report.Info("Removed the local lock %s (held by %s for %s since %s).", sp+".lock", held.Holder, held.Operation, held.Started.Format(time.RFC3339))
	}
	j, err := state.LoadJournal(sp)
	if err != nil {
		j = nil
	}
	targets, _ := RecordedTargets(j, planFile, timeout)
	if len(targets) < 2 {
		if removed {
			return nil
		}
		return fmt.Errorf("no local lock %s, and no way to reach the hosts (give -f PLANFILE)", id)
	}
	sess := NewSession(targets, dial)
	if err := sess.Connect(ctx); err != nil {
		return err
	}
	defer sess.Close()
	for _, name := range sess.Names() {
		if err := sess.Clients[name].ForceUnlock(ctx, id); err != nil {
			report.Info("host %s: %v", name, err)
			continue
		}
		report.Info("host %s: lock %s removed.", name, id)
	}
	return nil
}
