package views

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/status"
)

// JSON is the machine view of every command: one document of schema.go
// per line on Out (errors on Err), so apply, rollback and status --watch
// are streams.
type JSON struct {
	Out, Err io.Writer
}

// NewJSON builds a JSON view.
func NewJSON(out, errw io.Writer) *JSON { return &JSON{Out: out, Err: errw} }

// writeLine writes doc as one line; "->" stays readable (no HTML
// escaping).
func writeLine(w io.Writer, doc any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		// Only the schema's own types are written: a failure is a bug.
		panic(fmt.Sprintf("views: marshal %T: %v", doc, err))
	}
	w.Write(b.Bytes())
}

func (j *JSON) write(doc any) { writeLine(j.Out, doc) }

// Info writes an "info" document.
func (j *JSON) Info(format string, args ...any) {
	j.write(MessageDoc{Header: header("info"), Message: fmt.Sprintf(format, args...)})
}

// Note writes a "note" document.
func (j *JSON) Note(msg string) { j.write(MessageDoc{Header: header("note"), Message: msg}) }

// Error writes an "error" document to Err.
func (j *JSON) Error(err error) {
	writeLine(j.Err, ErrorDoc{Header: header("error"), Error: err.Error()})
}

// Plan writes a "plan" document.
func (j *JSON) Plan(p *plan.Plan) { j.write(NewPlanDoc(p)) }

// Saved writes a "plan_saved" document.
func (j *JSON) Saved(path string) { j.write(PlanSavedDoc{Header: header("plan_saved"), Path: path}) }

// Progress writes a "progress" document.
func (j *JSON) Progress(host string, s state.Step, took time.Duration, err error) {
	d := ProgressDoc{Header: header("progress"), Host: host, Step: stepDoc(s), ElapsedMS: took.Milliseconds()}
	if err != nil {
		d.Error = err.Error()
	}
	j.write(d)
}

// ApplyComplete writes an "apply_complete" document.
func (j *JSON) ApplyComplete(add, change, destroy int, statePath string) {
	j.write(ApplyCompleteDoc{Header: header("apply_complete"), Summary: Summary{Add: add, Change: change, Destroy: destroy}, State: statePath})
}

// RollbackPlan writes a "rollback_plan" document.
func (j *JSON) RollbackPlan(p *apply.RollbackPlan, what string) { j.write(NewRollbackPlanDoc(p, what)) }

// RollbackComplete writes a "rollback_complete" document.
func (j *JSON) RollbackComplete(undone int, statePath string) {
	j.write(RollbackCompleteDoc{Header: header("rollback_complete"), Undone: undone, State: statePath})
}

// Reading writes a "status" document, one per reading.
func (j *JSON) Reading(r status.Report, _ int, _ bool) { j.write(NewStatusDoc(r)) }

// StateList writes a "state_list" document.
func (j *JSON) StateList(statePath string, rs []state.Resource) {
	d := StateListDoc{Header: header("state_list"), State: statePath, Resources: []string{}}
	for _, r := range rs {
		d.Resources = append(d.Resources, r.Address)
	}
	j.write(d)
}

// StateShow writes a "state_show" document.
func (j *JSON) StateShow(r state.Resource) { j.write(NewStateShowDoc(r)) }

// Valid writes a "validate" document.
func (j *JSON) Valid(file string, services, forwards int) {
	j.write(ValidateDoc{Header: header("validate"), File: file, Valid: true, Services: services, Forwards: forwards})
}

// Version writes a "version" document.
func (j *JSON) Version(version, goos, goarch string, agentProtocol int) {
	j.write(VersionDoc{Header: header("version"), Version: version, OS: goos, Arch: goarch, AgentProtocol: agentProtocol})
}

// Wrote writes an "init" document.
func (j *JSON) Wrote(path string, summary []string) {
	j.write(InitDoc{Header: header("init"), Path: path, Summary: nonNil(summary)})
}
