package ops

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/plan"
)

// maxConfirmGrace bounds how long a prepared host waits for its confirm
// (on its own monotonic clock) before it reverts by itself; the grace is
// never longer than the --confirm-timeout the admin chose.
const maxConfirmGrace = 30 * time.Second

// confirmOrder puts NEW first: NEW is confirmed before OLD, so the only
// split a migrate dying between the two confirms can leave is NEW kept
// and OLD reverted, the state every apply passes through (NEW's steps
// done, OLD's not yet) and every rollback too. OLD kept with NEW reverted
// (OLD diverting into a tunnel NEW no longer has) cannot happen: OLD is
// confirmed only after NEW confirmed.
func confirmOrder(names []string) []string {
	out := append([]string(nil), names...)
	sort.SliceStable(out, func(a, b int) bool {
		rank := func(n string) int {
			switch n {
			case plan.New:
				return 0
			case plan.Old:
				return 1
			}
			return 2
		}
		return rank(out[a]) < rank(out[b])
	})
	return out
}

// ConfirmRun confirms run on both hosts over fresh SSH connections (proof
// that the admin can still reach both after the change), in two phases:
//
//  1. prepare each host, NEW then OLD: the run stays armed to revert, its
//     deadline becomes the grace from now on the host's clock. A host
//     that already decided to revert (too late, rebooted, its timer gone)
//     refuses; migrate then aborts the other one: both revert.
//  2. confirm NEW, then OLD. Each confirm is the host's own decision,
//     taken under its run lock against its revert timer. If OLD then
//     reverts instead (too late, refused), migrate aborts NEW, which was
//     confirmed: both revert.
//
// It returns what each host decided, as a sentence, and an error unless
// both kept the change. The fresh connections are dialled like s's;
// fault, when set, is called at "between" (the two confirms) and
// "before-old" (a test-only hook).
func ConfirmRun[H Host](ctx context.Context, s *Session[H], run string, timeout time.Duration, fault func(stage string)) (string, error) {
	if fault == nil {
		fault = func(string) {}
	}
	fault("before")
	confirmGrace := min(timeout, maxConfirmGrace)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	fresh := NewSession(s.Targets, s.Dial)
	if err := fresh.Connect(ctx); err != nil {
		return "", fmt.Errorf("could not open fresh SSH connections: %w; no host was confirmed: each reverts by itself at its deadline", err)
	}
	defer fresh.Close()
	order := confirmOrder(fresh.Names())
	for i, name := range order {
		if _, err := fresh.Clients[name].Prepare(ctx, run, confirmGrace); err != nil {
			return "", fmt.Errorf("host %s: %w; %s", name, err, abortAll(ctx, fresh, order[:i+1], order, run))
		}
	}
	for i, name := range order {
		if i > 0 {
			fault("between")
		}
		if name == plan.Old {
			fault("before-old")
		}
		_, err := fresh.Clients[name].Confirm(ctx, run)
		if err == nil {
			continue
		}
		// What did this host decide? Its confirm may have landed and
		// the answer been lost.
		st, serr := fresh.Clients[name].RunStatus(ctx, run)
		if serr != nil {
			st, serr = runStatusFresh(ctx, s, name, run)
		}
		if serr == nil && st.State == proto.RunConfirmed {
			continue
		}
		cause := fmt.Errorf("host %s: %w", name, err)
		if serr != nil {
			// Unknown: it may have confirmed. Undoing the hosts
			// confirmed before it could leave it kept alone; leave
			// them, and say exactly that.
			return "", fmt.Errorf("%w; its decision is unknown (%v): unless the confirm reached it, it reverts by itself within %s. %s keep the change; a kept NEW with a reverted OLD is the state every apply and rollback passes through. Run `migrate plan` to see what each host did, `migrate rollback` to undo the rest",
				cause, serr, confirmGrace, hostNames(order[:i]))
		}
		return "", fmt.Errorf("%w (host %s is %s); %s", cause, name, st.State, abortAll(ctx, fresh, order, order, run))
	}
	return "Confirmed: " + hostNames(order) + " decided to keep the change.", nil
}

func hostNames(names []string) string {
	if len(names) == 0 {
		return "no host"
	}
	return "host " + strings.Join(names, " and host ")
}

// abortAll asks each of abort to revert run now, then reports what every
// host of all decided.
func abortAll[H Host](ctx context.Context, s *Session[H], abort, all []string, run string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	for _, name := range abort {
		_, _ = s.Clients[name].Abort(ctx, run)
	}
	var parts []string
	for _, name := range all {
		st, err := s.Clients[name].RunStatus(ctx, run)
		switch {
		case err != nil:
			parts = append(parts, fmt.Sprintf("host %s: unknown (%v); unless confirmed it reverts by itself at its deadline", name, err))
		case st.State == proto.RunReverting || st.State == proto.RunReverted:
			parts = append(parts, fmt.Sprintf("host %s is %s (%s)", name, st.State, st.Reason))
		default:
			parts = append(parts, fmt.Sprintf("host %s is %s", name, st.State))
		}
	}
	return "migrate aborted the run: " + strings.Join(parts, "; ")
}

// runStatusFresh asks a host for its decision over new connections (the
// old one may be what failed; connect wants every target).
func runStatusFresh[H Host](ctx context.Context, like *Session[H], name, run string) (proto.RunStatus, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	s := NewSession(like.Targets, like.Dial)
	if err := s.Connect(ctx); err != nil {
		return proto.RunStatus{}, err
	}
	defer s.Close()
	return s.Clients[name].RunStatus(ctx, run)
}
