package views

import (
	"io"
	"time"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/status"
)

// Messages is what every command's view can say besides its result.
type Messages interface {
	// Info is a line of prose (a hint, a host's answer).
	Info(format string, args ...any)
	// Note is a remark that changes nothing ("Note: ..." for humans).
	Note(msg string)
	// Error reports the error that ends the command, on the error stream.
	Error(err error)
}

// Plan is the view of `migrate plan`.
type Plan interface {
	Messages
	Plan(p *plan.Plan)
	// Saved: the plan was written to path (--out).
	Saved(path string)
}

// Progress reports one step of apply or rollback as it ends.
type Progress interface {
	Progress(host string, s state.Step, took time.Duration, err error)
}

// Apply is the view of `migrate apply`.
type Apply interface {
	Messages
	Progress
	Plan(p *plan.Plan)
	ApplyComplete(add, change, destroy int, statePath string)
}

// Rollback is the view of `migrate rollback`. what is "the last change"
// or "everything migrate applied".
type Rollback interface {
	Messages
	Progress
	RollbackPlan(p *apply.RollbackPlan, what string)
	RollbackComplete(undone int, statePath string)
}

// Status is the view of `migrate status`: Reading is called once per
// reading, n counting from 0; watch is true under --watch.
type Status interface {
	Messages
	Reading(r status.Report, n int, watch bool)
}

// State is the view of `migrate state list` and `migrate state show`.
type State interface {
	Messages
	StateList(statePath string, rs []state.Resource)
	StateShow(r state.Resource)
}

// Validate is the view of `migrate validate`.
type Validate interface {
	Messages
	Valid(file string, services, forwards int)
}

// Version is the view of `migrate version`.
type Version interface {
	Messages
	Version(version, goos, goarch string, agentProtocol int)
}

// Init is the view of `migrate init`: summary are the lines that say what
// was found, path the plan file written.
type Init interface {
	Messages
	Wrote(path string, summary []string)
}

// All is every command's view; View and JSON implement it.
type All interface {
	Plan
	Apply
	Rollback
	Status
	State
	Validate
	Version
	Init
}

var (
	_ All = (*View)(nil)
	_ All = (*JSON)(nil)
)

// For picks the view of a command once: JSON for --json, else the human
// view.
func For(out, errw io.Writer, asJSON bool) All {
	if asJSON {
		return NewJSON(out, errw)
	}
	return New(out, errw)
}
