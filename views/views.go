// Package views renders plans, progress and results for humans (Terraform
// style, colour when the writer is a terminal and NO_COLOR is unset) and for
// machines (--json, with a schema version). Views take values and writers;
// they never decide anything.
package views

import (
	"encoding/json"
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

// JSONSchemaVersion versions every --json document.
const JSONSchemaVersion = "1"

// View writes to Out (results) and Err (errors and hints).
type View struct {
	Out, Err io.Writer
	Color    bool
	JSON     bool
}

// New builds a view; colour only for a terminal and without NO_COLOR.
func New(out, errw io.Writer, asJSON bool) *View {
	v := &View{Out: out, Err: errw, JSON: asJSON}
	v.Color = !asJSON && os.Getenv("NO_COLOR") == "" && IsTerminal(out)
	return v
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
	if v.JSON {
		add, change, destroy := p.Counts()
		v.writeJSON(map[string]any{
			"schema_version": JSONSchemaVersion,
			"type":           "plan",
			"plan":           p,
			"summary":        map[string]int{"add": add, "change": change, "destroy": destroy},
		})
		return
	}
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
				instead := "nothing for " + r.Proto
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
	if v.JSON {
		ev := map[string]any{"schema_version": JSONSchemaVersion, "type": "progress", "host": host, "step": s, "elapsed_ms": took.Milliseconds()}
		if err != nil {
			ev["error"] = err.Error()
		}
		v.writeJSON(ev)
		return
	}
	status := fmt.Sprintf("done [%s]", Elapsed(took))
	if err != nil {
		status = v.paint("31", fmt.Sprintf("FAILED after %s: %s", Elapsed(took), err.Error()))
	}
	fmt.Fprintf(v.Out, "%s: %s %s ... %s\n", host, v.symbol(s.Action), Describe(s), status)
}

// Info prints a line of prose (not in JSON mode).
func (v *View) Info(format string, args ...any) {
	if v.JSON {
		v.writeJSON(map[string]any{"schema_version": JSONSchemaVersion, "type": "info", "message": fmt.Sprintf(format, args...)})
		return
	}
	fmt.Fprintf(v.Out, format+"\n", args...)
}

// Error prints an error to Err.
func (v *View) Error(err error) {
	if v.JSON {
		b, _ := json.Marshal(map[string]any{"schema_version": JSONSchemaVersion, "type": "error", "error": err.Error()})
		fmt.Fprintln(v.Err, string(b))
		return
	}
	label := "Error:"
	if v.Color && IsTerminal(v.Err) {
		label = v.paint("31", label)
	}
	fmt.Fprintf(v.Err, "%s %v\n", label, err)
}

func (v *View) writeJSON(x any) {
	b, _ := json.Marshal(x)
	fmt.Fprintln(v.Out, string(b))
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
	if v.JSON {
		var changes []map[string]any
		for _, c := range p.Changes {
			changes = append(changes, map[string]any{"runs": c.Runs, "time": c.Time, "intent": c.Intent, "entries": len(c.Entries)})
		}
		var list []state.Step
		for _, s := range p.Steps {
			if s.Step != nil {
				list = append(list, *s.Step)
			}
		}
		v.writeJSON(map[string]any{"schema_version": JSONSchemaVersion, "type": "rollback_plan", "what": what,
			"changes": changes, "steps": list, "entries": entries})
		return
	}
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
