// Package views renders plans, progress and results for humans (Terraform
// style, colour when the writer is a terminal and NO_COLOR is unset) and for
// machines (--json). Each command has an interface (Plan, Apply, Rollback,
// Status, State, Validate, Version, Init, Messages) with two
// implementations: View writes text for humans, JSON writes one document
// per line in the versioned schema of schema.go (documented in
// docs/json.md), never an internal struct. Which one is chosen once, when
// the command builds its view. Views take values and writers; they never
// decide anything.
package views

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// View is the human view of every command. It writes to Out (results)
// and Err (errors and hints).
type View struct {
	Out, Err io.Writer
	Color    bool
}

// New builds a human view; colour only for a terminal and without
// NO_COLOR.
func New(out, errw io.Writer) *View {
	return &View{Out: out, Err: errw, Color: os.Getenv("NO_COLOR") == "" && IsTerminal(out)}
}

// IsTerminal is true when x is a terminal (not merely a character device:
// /dev/null is one too).
func IsTerminal(x any) bool {
	f, ok := x.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (v *View) paint(code, s string) string {
	if !v.Color {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (v *View) symbol(a state.Action) string {
	switch a {
	case state.Create:
		return v.paint("32", "+")
	case state.Update:
		return v.paint("33", "~")
	case state.Delete:
		return v.paint("31", "-")
	}
	return "?"
}

// Plan prints the plan grouped by host, ending with the summary line.
func (v *View) Plan(p *plan.Plan) {
	for _, n := range p.Notes {
		fmt.Fprintf(v.Out, "Note: %s\n", n)
	}
	v.services(p)
	if p.Empty() {
		fmt.Fprintln(v.Out, "No changes. Both hosts match the plan.")
		return
	}
	fmt.Fprintln(v.Out, "migrate will perform the following actions, in this order:")
	for _, h := range p.Hosts {
		if len(h.Steps) == 0 {
			continue
		}
		fmt.Fprintf(v.Out, "\n  host %s:\n", v.paint("1", h.Host))
		for _, s := range h.Steps {
			fmt.Fprintf(v.Out, "    %s %s\n", v.symbol(s.Action), Describe(s))
		}
	}
	add, change, destroy := p.Counts()
	fmt.Fprintf(v.Out, "\n%s %d to add, %d to change, %d to destroy.\n", v.paint("1", "Plan:"), add, change, destroy)
}

// services prints, per service, whether NEW is ready for the flows it
// would get and what OLD still holds.
func (v *View) services(p *plan.Plan) {
	if len(p.Readiness) == 0 && len(p.Flows) == 0 {
		return
	}
	flows := map[string]plan.ServiceFlows{}
	for _, f := range p.Flows {
		flows[f.Service] = f
	}
	fmt.Fprintln(v.Out, "Services:")
	ready := map[string]plan.Readiness{}
	for _, r := range p.Readiness {
		ready[r.Service] = r
	}
	names := []string{}
	seen := map[string]bool{}
	for _, r := range p.Readiness {
		names, seen[r.Service] = append(names, r.Service), true
	}
	for _, f := range p.Flows {
		if !seen[f.Service] {
			names = append(names, f.Service)
		}
	}
	for _, n := range names {
		line := "  " + n + ": "
		if r, ok := ready[n]; ok {
			switch {
			case r.Ready():
				line += v.paint("32", "NEW ready")
			case r.AllowUnready:
				line += v.paint("33", "NEW not listening on port "+plan.PortList(r.Unserved)+" (allow_unready)")
			default:
				instead := "nothing for " + string(r.Proto)
				if len(r.NewListens) > 0 {
					instead = strings.Join(r.NewListens, ", ")
				}
				line += v.paint("31", fmt.Sprintf("NEW NOT READY: nothing accepts %s %s port %s; NEW listens on %s", r.Proto, r.Addr, plan.PortList(r.Unserved), instead))
			}
		} else {
			line += "stays on OLD"
		}
		if f, ok := flows[n]; ok {
			line += fmt.Sprintf("; OLD holds %d established flow(s), %d going to NEW", f.Established, f.ToNew)
		}
		fmt.Fprintln(v.Out, line)
		if r, ok := ready[n]; ok {
			for _, l := range r.UDPListeners {
				fmt.Fprintln(v.Out, "    NEW listens on "+l.Answers(r.Addr))
			}
		}
	}
	fmt.Fprintln(v.Out)
}

// Describe is a step's one-line description.
func Describe(s state.Step) string {
	o := s.Object()
	switch s.Action {
	case state.Update:
		if s.Before != nil && s.After != nil && o.Sysctl != nil {
			return fmt.Sprintf("sysctl %s: %s -> %s", o.Sysctl.Name, s.Before.Sysctl.Value, s.After.Sysctl.Value)
		}
		return fmt.Sprintf("%s %s (was: %s)", o.Kind(), s.After, s.Before)
	default:
		return fmt.Sprintf("%s %s", o.Kind(), o)
	}
}

// Progress is one line during apply or rollback, with the step's time.
func (v *View) Progress(host string, s state.Step, took time.Duration, err error) {
	status := fmt.Sprintf("done [%s]", Elapsed(took))
	if err != nil {
		status = v.paint("31", fmt.Sprintf("FAILED after %s: %s", Elapsed(took), err.Error()))
	}
	fmt.Fprintf(v.Out, "%s: %s %s ... %s\n", host, v.symbol(s.Action), Describe(s), status)
}

// Info prints a line of prose.
func (v *View) Info(format string, args ...any) {
	fmt.Fprintf(v.Out, format+"\n", args...)
}

// Note prints a remark that changes nothing ("Note: ...").
func (v *View) Note(msg string) {
	fmt.Fprintf(v.Out, "Note: %s\n", msg)
}

// Error prints an error to Err.
func (v *View) Error(err error) {
	label := "Error:"
	if v.Color && IsTerminal(v.Err) {
		label = v.paint("31", label)
	}
	fmt.Fprintf(v.Err, "%s %v\n", label, err)
}

// Elapsed renders a duration the way an operator reads it: "12ms",
// "1.4s", "2m3s".
func Elapsed(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// RollbackPlan prints what a rollback will do: the changes it undoes
// (time, run, plan digest) and the steps that put objects back, per host
// in order. what is "the last change" or "everything migrate applied".
func (v *View) RollbackPlan(p *apply.RollbackPlan, what string) {
	entries, steps := p.Count()
	fmt.Fprintf(v.Out, "Rolling back %s: %d step(s), newest first.\n", what, entries)
	for _, c := range p.Changes {
		fmt.Fprintf(v.Out, "  %s\n", DescribeChange(c))
	}
	if steps == 0 {
		fmt.Fprintln(v.Out, "Both hosts already look as they did before; the record is updated.")
		return
	}
	host := ""
	for _, s := range p.Steps {
		if s.Step == nil {
			continue
		}
		if s.Host != host {
			host = s.Host
			fmt.Fprintf(v.Out, "\n  host %s:\n", v.paint("1", host))
		}
		fmt.Fprintf(v.Out, "    %s %s\n", v.symbol(s.Step.Action), Describe(*s.Step))
	}
	if steps < len(p.Steps) {
		fmt.Fprintf(v.Out, "\n  (%d object(s) already as they must be: only their record is updated)\n", len(p.Steps)-steps)
	}
	fmt.Fprintln(v.Out)
}

// DescribeChange names a change: when, which apply run, the plan's
// digest, and the repairs that belong to it.
func DescribeChange(c apply.Change) string {
	intent := "plan digest not recorded"
	if c.Intent != "" {
		intent = "plan digest " + c.Intent
	}
	s := fmt.Sprintf("the apply of %s (run %s, %s)", c.Time.UTC().Format(time.RFC3339), c.Runs[0], intent)
	if n := len(c.Runs) - 1; n > 0 {
		s += fmt.Sprintf(", with %d later apply(s) that only repaired drift (run %s)", n, strings.Join(c.Runs[1:], ", "))
	}
	return s
}
