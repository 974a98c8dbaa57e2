package ops

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/remote"
	"github.com/opsmigrate/migrate/state"
)

// DeadHost is the first host of the session whose link was given up, and
// why; "" when every link is alive.
func DeadHost[H Host](s *Session[H]) (string, *remote.DeadLinkError) {
	for _, name := range s.Names() {
		var dead *remote.DeadLinkError
		if errors.As(s.Clients[name].Err(), &dead) {
			return name, dead
		}
	}
	return "", nil
}

// left counts, per host, the active journal entries of run ("" for every
// run).
func left(j *state.Journal, run string) map[string]int {
	n := map[string]int{}
	for _, e := range j.Active() {
		if run == "" || e.Run == run {
			n[e.Step.Host]++
		}
	}
	return n
}

// DeadLinkApplyError explains an apply that lost a host: what is still in
// place on each host as far as the state file knows, and what will undo
// it. The automatic undo of apply goes newest first and stops at the
// first step it cannot undo, so it may leave the reachable host's steps in
// place too (undoing them under the dead host's would break the data
// path).
func DeadLinkApplyError[H Host](cause error, s *Session[H], j *state.Journal, run string, deadline time.Time, lockID string) error {
	dead, why := DeadHost(s)
	if why == nil {
		return cause
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s during apply.", why.Error())
	n := left(j, run)
	timer := func() string {
		return "its revert timer (armed before the first change, it runs on the host and needs no connection) undoes them by itself at " + deadline.Local().Format(time.TimeOnly)
	}
	for _, name := range s.Names() {
		k := n[name]
		switch {
		case name == dead && k == 0:
			fmt.Fprintf(&b, "\n  host %s: the state file records no step of this apply on it", name)
			if !deadline.IsZero() {
				fmt.Fprintf(&b, "; if the step in flight reached it, its revert timer undoes it at %s", deadline.Local().Format(time.TimeOnly))
			}
			b.WriteString(".")
		case name == dead && !deadline.IsZero():
			fmt.Fprintf(&b, "\n  host %s: %d step(s) of this apply are still in place (one more if the step in flight reached it); %s.", name, k, timer())
		case name == dead:
			fmt.Fprintf(&b, "\n  host %s: %d step(s) of this apply are still in place (one more if the step in flight reached it); no revert timer was armed (--confirm-timeout 0), so they stay until you run `migrate rollback`.", name, k)
		case k == 0:
			fmt.Fprintf(&b, "\n  host %s: answers; no step of this apply is left on it (undone, or none made).", name)
		case !deadline.IsZero():
			fmt.Fprintf(&b, "\n  host %s: answers, but %d step(s) of this apply are still in place: the undo goes newest first and stopped at host %s's step, so as not to break the data path; %s.", name, k, dead, timer())
		default:
			fmt.Fprintf(&b, "\n  host %s: answers, but %d step(s) of this apply are still in place: the undo goes newest first and stopped at host %s's step, so as not to break the data path; no revert timer was armed (--confirm-timeout 0), so they stay until you run `migrate rollback`.", name, k, dead)
		}
	}
	fmt.Fprintf(&b, "\nThe local lock is released. Once host %s answers again, `migrate plan` shows what is left (it reads what the hosts undid by themselves) and `migrate rollback` undoes the rest.%s\n(what failed: %v)", dead, staleHostLock(dead, lockID), cause)
	return errors.New(b.String())
}

// DeadLinkRollbackError explains a rollback that lost a host: how far it
// got and that running it again continues. No revert timer covers a
// rollback. steps is the rollback's plan: the undo stops at the first
// step that fails, and marks each journal entry it undid.
func DeadLinkRollbackError[H Host](cause error, s *Session[H], steps []apply.RollbackStep, all bool, lockID string) error {
	dead, why := DeadHost(s)
	if why == nil {
		return cause
	}
	now := map[string]int{}
	total, undone := 0, 0
	for _, rs := range steps {
		for _, en := range rs.Entries {
			total++
			if en.RolledBack != nil {
				undone++
			} else {
				now[rs.Host]++
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s during rollback.\n  %d of %d step(s) were undone (by the state file; if the step in flight reached host %s it was undone there too, and its journal says so).", why.Error(), undone, total, dead)
	for _, name := range s.Names() {
		fmt.Fprintf(&b, "\n  host %s: %d step(s) still applied.", name, now[name])
	}
	again := "migrate rollback"
	if all {
		again += " --all"
	}
	fmt.Fprintf(&b, "\nNothing undoes them by itself: a rollback arms no revert timer. The local lock is released. Once host %s answers again, run `%s`: it continues where this one stopped.%s\n(what failed: %v)", dead, again, staleHostLock(dead, lockID), cause)
	return errors.New(b.String())
}

// staleHostLock is the advice about the host lock this command's agent
// still holds on a host it gave up on: that agent runs until the host's
// sshd notices the connection is gone, which a silent link may delay for
// hours (TCP keepalive) unless sshd sets ClientAliveInterval.
func staleHostLock(dead, lockID string) string {
	return fmt.Sprintf(" If host %s then says it is locked by lock ID %s, that is this command's own abandoned session: end it with `migrate force-unlock %s`.", dead, lockID, lockID)
}
