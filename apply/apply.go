package apply

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// Host is one managed machine. The real one is an SSH connection to the
// agent (package remote); tests may use others.
type Host interface {
	Facts(ctx context.Context, req state.FactsRequest) (state.Facts, error)
	// Apply changes one object. The host records it in its own journal
	// under rec (a forward step as entry rec.Seq of rec.Run; an undo by
	// marking that entry rolled back).
	Apply(ctx context.Context, s state.Step, rec state.Record) error
	Ping(ctx context.Context, addr string) error
	// PingSize pings addr with unfragmented packets of size bytes, up to
	// count requests, each waiting timeout for its reply.
	PingSize(ctx context.Context, addr string, size, count int, timeout time.Duration) error
}

// Executor applies plans and rollbacks, journaling as it goes.
type Executor struct {
	Hosts     map[string]Host
	Journal   *state.Journal
	StatePath string
	// Progress is called after every step with how long it took (err nil
	// on success).
	Progress func(host string, s state.Step, took time.Duration, err error)
	// Info reports prose such as "verifying the tunnel".
	Info func(format string, args ...any)
	Now  func() time.Time
	// Run is the id of this apply; set it before Apply to arm host
	// timers for it, or Apply picks one.
	Run string
	// PostCheck, when set, runs after every step and the tunnel check;
	// its error undoes the apply like a failed step (probes through the
	// tunnel to NEW).
	PostCheck func(ctx context.Context) error
	// BeforeStep, when set, runs before each step (fault injection in
	// tests). Its error stops the apply like a failed step.
	BeforeStep func(n int, s state.Step) error
	// Intent is the digest of what the plan applies (plan.Plan.Intent),
	// recorded with the run.
	Intent string
}

func (e *Executor) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Executor) info(format string, args ...any) {
	if e.Info != nil {
		e.Info(format, args...)
	}
}

// StaleError says a saved plan no longer matches the hosts.
type StaleError struct{ Host string }

func (e *StaleError) Error() string {
	return fmt.Sprintf("the saved plan is stale: host %s changed since the plan was made; run `migrate plan` again", e.Host)
}

// CheckFresh refuses a saved plan whose facts differ from facts, the
// hosts' facts collected now with requests. A request that differs (the
// plan file changed what migrate looks at) makes the plan stale too.
func CheckFresh(p *plan.Plan, facts map[string]state.Facts, requests map[string]state.FactsRequest) error {
	for _, h := range p.Hosts {
		f, ok := facts[h.Host]
		if !ok || !reflect.DeepEqual(requests[h.Host], p.Requests[h.Host]) || f.Digest() != p.FactsDigest[h.Host] {
			return &StaleError{Host: h.Host}
		}
	}
	return nil
}

// verifyBefore reports whether OLD's step s may only run after the tunnel
// is verified: routes and the nft table are what send clients' flows into
// the tunnel. An update of the nft table that changes only its underlay
// filter sends no flow anywhere new, and the check needs it (plan orders
// it with the links: plan.UnderlayOnly).
func verifyBefore(s state.Step) bool {
	k := s.Object().Kind()
	return s.Action != state.Delete && (k == state.KindRoute || k == state.KindNft) && !plan.UnderlayOnly(s)
}

// Apply runs the plan: NEW's steps, OLD's steps up to the first one that
// sends traffic into the tunnel, a tunnel check in both directions, then
// the rest of OLD. On failure it undoes this run's steps in reverse and
// returns the cause.
func (e *Executor) Apply(ctx context.Context, p *plan.Plan) error {
	if e.Run == "" {
		e.Run = state.NewID()
	}
	run := e.Run
	// The snapshot first (what the caller set, such as Targets), then one
	// log line per step, folded into the snapshot at the end.
	if err := e.Journal.Save(e.StatePath); err != nil {
		return err
	}
	defer e.compact()
	var err error
	verified := p.Verify == nil
	for _, h := range p.Hosts {
		for _, s := range h.Steps {
			if !verified && h.Host == plan.Old && verifyBefore(s) {
				if err = e.verify(ctx, p.Verify); err != nil {
					break
				}
				verified = true
			}
			if err = e.step(ctx, run, s); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	if err == nil && !verified && tunnelTouched(p) {
		err = e.verify(ctx, p.Verify)
	}
	if err == nil && e.PostCheck != nil {
		err = e.PostCheck(ctx)
	}
	if err == nil {
		return nil
	}
	e.info("apply failed; undoing the %d step(s) it made", len(e.runEntries(run)))
	if rerr := e.rollbackEntries(ctx, e.runEntries(run)); rerr != nil {
		return fmt.Errorf("%w; and the automatic rollback failed too: %v (the state file records what is still applied; run `migrate rollback`)", err, rerr)
	}
	return fmt.Errorf("%w (every step of this apply was undone)", err)
}

// compact folds the state file's log into its snapshot (best effort: the
// log holds the same records).
func (e *Executor) compact() { _ = e.Journal.Save(e.StatePath) }

func tunnelTouched(p *plan.Plan) bool {
	for _, h := range p.Hosts {
		for _, s := range h.Steps {
			if s.Object().Kind() == state.KindLink && s.Action != state.Delete {
				return true
			}
		}
	}
	return false
}

func (e *Executor) verify(ctx context.Context, v *plan.Verify) error {
	e.info("verifying the tunnel: old -> %s, new -> %s", v.OldPings, v.NewPings)
	// What plan saw of the hosts' firewalls, when one of them lacks the
	// tunnel's rule: the likeliest cause of a failed check.
	why := "; check that the underlay between the endpoints passes the tunnel's packets"
	if v.Firewall != "" {
		why = "; as plan found the hosts: " + v.Firewall + " (the plan's warnings give the commands)"
	}
	if err := e.Hosts[plan.Old].Ping(ctx, v.OldPings); err != nil {
		return fmt.Errorf("tunnel check failed: old cannot reach new's inner address %s through the tunnel: %w%s", v.OldPings, err, why)
	}
	if err := e.Hosts[plan.New].Ping(ctx, v.NewPings); err != nil {
		return fmt.Errorf("tunnel check failed: new cannot reach old's inner address %s through the tunnel: %w%s", v.NewPings, err, why)
	}
	for _, c := range []struct {
		host, peer, addr string
		size             int
	}{{plan.Old, plan.New, v.OldPings, v.OldSize}, {plan.New, plan.Old, v.NewPings, v.NewSize}} {
		if c.size == 0 {
			continue
		}
		if err := e.fullSize(ctx, c.host, c.peer, c.addr, c.size); err != nil {
			return err
		}
	}
	e.info("tunnel verified in both directions")
	return nil
}

// Full-size check: the first try waits long (a loaded host), the search
// for the largest size that passes short (most of its tries fail).
const (
	fullSizeCount, fullSizeTimeout = 5, 2 * time.Second
	searchCount, searchTimeout     = 2, time.Second
	minSearchSize                  = 576 // IPv4's minimum reassembly size
)

// fullSize checks that host's tunnel carries packets of its MTU (size) to
// peer and back, unfragmented. When it does not, it finds the largest size
// that does, and fails with the MTU to set.
func (e *Executor) fullSize(ctx context.Context, host, peer, addr string, size int) error {
	h := e.Hosts[host]
	if err := h.PingSize(ctx, addr, size, fullSizeCount, fullSizeTimeout); err == nil {
		return nil
	}
	lo, hi := 0, size // lo passes (0: none found yet), hi fails
	if h.PingSize(ctx, addr, minSearchSize, searchCount, searchTimeout) == nil {
		lo = minSearchSize
		for hi-lo > 1 {
			mid := (lo + hi) / 2
			if h.PingSize(ctx, addr, mid, searchCount, searchTimeout) == nil {
				lo = mid
			} else {
				hi = mid
			}
		}
	}
	if lo == 0 {
		return fmt.Errorf("tunnel check failed: %s's pings of %d bytes (the tunnel's MTU) to %s's inner address %s got no answer, nor did pings of %d bytes, while small ones did: the underlay between the endpoints drops large tunnel packets (a smaller MTU on the way, with fragments or ICMP \"fragmentation needed\" dropped); set `mtu` in the tunnel block to what the path carries", host, size, peer, addr, minSearchSize)
	}
	return fmt.Errorf("tunnel check failed: %s's pings of %d bytes (the tunnel's MTU) to %s's inner address %s through the tunnel got no answer, and %d bytes is the largest size that makes the round trip: the underlay between the endpoints carries smaller packets than the tunnel's MTU needs (a smaller MTU on the way, with fragments or ICMP \"fragmentation needed\" dropped), and every transfer larger than that would stall. Set `mtu = %d` in the tunnel block", host, size, peer, addr, lo, lo)
}

// step applies one step and journals it before returning.
func (e *Executor) step(ctx context.Context, run string, s state.Step) error {
	h, ok := e.Hosts[s.Host]
	if !ok {
		return fmt.Errorf("no connection to host %s", s.Host)
	}
	seq := e.Journal.NextSeq()
	if e.BeforeStep != nil {
		if err := e.BeforeStep(len(e.runEntries(run))+1, s); err != nil {
			return err
		}
	}
	start := time.Now()
	if err := h.Apply(ctx, s, state.Record{Run: run, Seq: seq}); err != nil {
		err = fmt.Errorf("host %s: %s: %w", s.Host, s.String(), err)
		if e.Progress != nil {
			e.Progress(s.Host, s, time.Since(start), err)
		}
		return err
	}
	// One line appended to the state file's log, whatever the journal's
	// size (state/journalfile.go); Apply compacts once at the end.
	now := e.now()
	var recs []state.LogRecord
	if !e.Journal.HasRun(run) {
		recs = append(recs, state.LogRecord{Op: state.OpRun, Run: run, Intent: e.Intent, Time: now})
	}
	recs = append(recs, state.LogRecord{Op: state.OpStep, Run: run, Seq: seq, Time: now, Step: &s})
	if err := e.Journal.Commit(e.StatePath, recs...); err != nil {
		return fmt.Errorf("host %s: step applied but the state file could not be written: %w", s.Host, err)
	}
	if e.Progress != nil {
		e.Progress(s.Host, s, time.Since(start), nil)
	}
	return nil
}

func (e *Executor) runEntries(run string) []*state.Entry {
	var out []*state.Entry
	for _, en := range e.Journal.Active() {
		if en.Run == run {
			out = append(out, en)
		}
	}
	return out
}

// ErrNothingToRollBack is returned when the journal has no active entries.
var ErrNothingToRollBack = errors.New("nothing to roll back: the state file records no applied steps")

// RollbackPlan is what a rollback will do: the changes it undoes, newest
// first, and per object the step that puts it back.
type RollbackPlan struct {
	Changes []Change
	Steps   []RollbackStep
	// Warnings: what the rollback puts back that cannot work on the
	// hosts as they are now (a tunnel device whose local endpoint the
	// host no longer holds).
	Warnings []string
}

// Count is the number of entries the rollback undoes, and of steps that
// change something on a host.
func (p *RollbackPlan) Count() (entries, changes int) {
	for _, s := range p.Steps {
		entries += len(s.Entries)
		if s.Step != nil {
			changes++
		}
	}
	return entries, changes
}

// PlanRollback computes the rollback of the last change (every change
// with all), against the hosts' live state: the hosts end up as the
// previous change left them (before migrate, with all), whatever was
// edited by hand since.
func (e *Executor) PlanRollback(ctx context.Context, all bool) (*RollbackPlan, error) {
	changes := Changes(e.Journal)
	if len(changes) == 0 {
		return nil, ErrNothingToRollBack
	}
	if !all {
		changes = changes[len(changes)-1:]
	}
	var undo []*state.Entry
	for _, c := range changes {
		undo = append(undo, c.Entries...)
	}
	restores := Restores(e.Journal, undo)
	facts := map[string]state.Facts{}
	for _, r := range restores {
		if _, done := facts[r.Host]; done {
			continue
		}
		h, ok := e.Hosts[r.Host]
		if !ok {
			return nil, fmt.Errorf("no connection to host %s", r.Host)
		}
		f, err := h.Facts(ctx, FactsRequestFor(r.Host, restores))
		if err != nil {
			return nil, fmt.Errorf("host %s: read its state: %w", r.Host, err)
		}
		facts[r.Host] = f
	}
	steps, err := RollbackSteps(restores, facts)
	if err != nil {
		return nil, err
	}
	for i, j := 0, len(changes)-1; i < j; i, j = i+1, j-1 {
		changes[i], changes[j] = changes[j], changes[i]
	}
	warnings := rollbackWarnings(steps, facts)
	// What brings migrate's table back after the rollback: said before
	// the rollback asks, since this is when it bites.
	warnings = append(warnings, plan.NftConfNotes(facts)...)
	return &RollbackPlan{Changes: changes, Steps: steps, Warnings: warnings}, nil
}

// rollbackWarnings names the tunnel devices a rollback makes again with a
// local endpoint their host no longer holds: after a host changed its
// address (a cloud VM stopped and started) and the plan followed it, the
// rollback of that apply restores the device exactly as it was, towards
// an address that is gone, and the tunnel carries nothing.
func rollbackWarnings(steps []RollbackStep, facts map[string]state.Facts) []string {
	var out []string
	for _, rs := range steps {
		if rs.Step == nil || rs.Step.After == nil || rs.Step.After.Link == nil {
			continue
		}
		l := rs.Step.After.Link
		f, ok := facts[rs.Step.Host]
		if !ok || !l.Local.IsValid() || f.HasAddr(l.Local) {
			continue
		}
		out = append(out, fmt.Sprintf("WARNING host %s: this rollback makes the tunnel device %s again with local endpoint %s, which host %s no longer holds: the tunnel will carry nothing afterwards (the endpoint changed since that apply). To go on migrating, apply the plan with the current endpoints instead; to end the migration, use rollback --all",
			rs.Step.Host, l.Name, l.Local, rs.Step.Host))
	}
	return out
}

// Rollback undoes the last change (all changes with all=true): see
// PlanRollback and Undo.
func (e *Executor) Rollback(ctx context.Context, all bool) error {
	p, err := e.PlanRollback(ctx, all)
	if err != nil {
		return err
	}
	return e.Undo(ctx, p.Steps)
}

func (e *Executor) rollbackEntries(ctx context.Context, entries []*state.Entry) error {
	for i := len(entries) - 1; i >= 0; i-- {
		en := entries[i]
		inv := en.Step.Inverse()
		h, ok := e.Hosts[inv.Host]
		if !ok {
			return fmt.Errorf("no connection to host %s", inv.Host)
		}
		start := time.Now()
		if err := h.Apply(ctx, inv, state.Record{Run: en.Run, Seq: en.Seq, Undo: true}); err != nil {
			err = fmt.Errorf("host %s: undo step %d (%s): %w", inv.Host, en.Seq, inv.String(), err)
			if e.Progress != nil {
				e.Progress(inv.Host, inv, time.Since(start), err)
			}
			return err
		}
		if err := e.Journal.Commit(e.StatePath, state.LogRecord{Op: state.OpUndo, Run: en.Run, Seq: en.Seq, Time: e.now()}); err != nil {
			return fmt.Errorf("host %s: step undone but the state file could not be written: %w", inv.Host, err)
		}
		if e.Progress != nil {
			e.Progress(inv.Host, inv, time.Since(start), nil)
		}
	}
	return nil
}
