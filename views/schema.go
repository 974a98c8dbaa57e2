package views

import (
	"time"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/status"
)

// The --json schema. Every line --json prints is one of the documents
// below, each starting with Header. These types are the public contract
// (docs/json.md describes every field); they are built from the internal
// types by the functions in this file, so a change inside plan, state,
// apply or status changes the JSON only when one of these functions is
// changed on purpose.
//
// JSONSchemaVersion is bumped when a field is removed or renamed, or its
// type or meaning changes. New fields and new document types do not bump
// it: consumers ignore what they do not know.
const JSONSchemaVersion = "2"

// Header starts every document: the schema version and the document type
// ("plan", "progress", "status", ...).
type Header struct {
	SchemaVersion string `json:"schema_version"`
	Type          string `json:"type"`
}

func header(typ string) Header { return Header{SchemaVersion: JSONSchemaVersion, Type: typ} }

// MessageDoc is a line of prose: type "info" or "note".
type MessageDoc struct {
	Header
	Message string `json:"message"`
}

// ErrorDoc is the error that ended the command (on stderr).
type ErrorDoc struct {
	Header
	Error string `json:"error"`
}

// StepDoc is one change to one kernel object on one host.
type StepDoc struct {
	Host        string  `json:"host"`        // "old" or "new"
	Action      string  `json:"action"`      // "create", "update" or "delete"
	Kind        string  `json:"kind"`        // "link", "sysctl", "rule", "addr", "route" or "nft"
	Address     string  `json:"address"`     // the object's address for `migrate state show`
	Description string  `json:"description"` // the line the human view prints after the action symbol
	Before      *string `json:"before"`      // the object before the step; null when it is created
	After       *string `json:"after"`       // the object after the step; null when it is deleted
}

func stepDoc(s state.Step) StepDoc {
	o := s.Object()
	return StepDoc{Host: s.Host, Action: string(s.Action), Kind: o.Kind().String(),
		Address: state.ResourceAddress(s.Host, o.Key()), Description: Describe(s),
		Before: objectText(s.Before), After: objectText(s.After)}
}

func objectText(o *state.Object) *string {
	if o == nil {
		return nil
	}
	s := o.String()
	return &s
}

// Summary counts a plan's steps by action.
type Summary struct {
	Add     int `json:"add"`
	Change  int `json:"change"`
	Destroy int `json:"destroy"`
}

// HostStepsDoc is one host's steps, in the order they run.
type HostStepsDoc struct {
	Host  string    `json:"host"`
	Steps []StepDoc `json:"steps"`
}

// ServiceDoc is what plan says about one service before it moves.
type ServiceDoc struct {
	Name string `json:"name"`
	// Checked: the plan sends flows of it to NEW, so NEW's readiness was
	// checked; false means the service stays on OLD and the readiness
	// fields are empty.
	Checked  bool   `json:"checked"`
	Protocol string `json:"protocol,omitempty"`
	Address  string `json:"address,omitempty"`
	// Ready: something on NEW accepts every port. Unserved are the ports
	// nothing accepts; AllowUnready: the service allows that.
	Ready        bool     `json:"ready"`
	Unserved     []uint16 `json:"unserved_ports"`
	AllowUnready bool     `json:"allow_unready"`
	// NewListens: what NEW listens on for this protocol (a hint when not
	// ready); UDPListeners: NEW's sockets that take the UDP service.
	NewListens   []string         `json:"new_listens"`
	UDPListeners []UDPListenerDoc `json:"udp_listeners"`
	// Flows: OLD's established flows of the service; null when not read.
	Flows *FlowsDoc `json:"flows"`
}

// UDPListenerDoc is one socket on NEW serving a UDP service.
type UDPListenerDoc struct {
	Address  string `json:"address"`
	Port     uint16 `json:"port"`
	Process  string `json:"process"`
	Wildcard bool   `json:"wildcard"`
}

// FlowsDoc counts a service's flows on OLD.
type FlowsDoc struct {
	Total       int `json:"total"`
	Established int `json:"established"`
	SocketsOnly int `json:"sockets_only"`
	ToNew       int `json:"to_new"`
}

// PlanDoc is `migrate plan` (and the plan `migrate apply` shows).
type PlanDoc struct {
	Header
	ConfigPath string         `json:"config_path"`
	CreatedAt  time.Time      `json:"created_at"`
	Intent     string         `json:"intent"` // digest of what the plan asks for
	Notes      []string       `json:"notes"`
	Services   []ServiceDoc   `json:"services"`
	Hosts      []HostStepsDoc `json:"hosts"` // in apply order: new, then old
	Summary    Summary        `json:"summary"`
}

// NewPlanDoc builds the plan document.
func NewPlanDoc(p *plan.Plan) PlanDoc {
	add, change, destroy := p.Counts()
	d := PlanDoc{Header: header("plan"), ConfigPath: p.ConfigPath, CreatedAt: p.CreatedAt, Intent: p.Intent,
		Notes: nonNil(p.Notes), Services: []ServiceDoc{}, Hosts: []HostStepsDoc{},
		Summary: Summary{Add: add, Change: change, Destroy: destroy}}
	flows := map[string]plan.ServiceFlows{}
	for _, f := range p.Flows {
		flows[f.Service] = f
	}
	seen := map[string]bool{}
	for _, r := range p.Readiness {
		seen[r.Service] = true
		s := ServiceDoc{Name: r.Service, Checked: true, Protocol: string(r.Proto), Address: r.Addr, Ready: r.Ready(),
			Unserved: nonNil(r.Unserved), AllowUnready: r.AllowUnready, NewListens: nonNil(r.NewListens), UDPListeners: []UDPListenerDoc{}}
		for _, l := range r.UDPListeners {
			s.UDPListeners = append(s.UDPListeners, UDPListenerDoc{Address: l.Addr, Port: l.Port, Process: l.Process, Wildcard: l.Wildcard})
		}
		if f, ok := flows[r.Service]; ok {
			s.Flows = flowsDoc(f)
		}
		d.Services = append(d.Services, s)
	}
	for _, f := range p.Flows {
		if !seen[f.Service] {
			d.Services = append(d.Services, ServiceDoc{Name: f.Service, Unserved: []uint16{}, NewListens: []string{},
				UDPListeners: []UDPListenerDoc{}, Flows: flowsDoc(f)})
		}
	}
	for _, h := range p.Hosts {
		hd := HostStepsDoc{Host: h.Host, Steps: []StepDoc{}}
		for _, s := range h.Steps {
			hd.Steps = append(hd.Steps, stepDoc(s))
		}
		d.Hosts = append(d.Hosts, hd)
	}
	return d
}

func flowsDoc(f plan.ServiceFlows) *FlowsDoc {
	return &FlowsDoc{Total: f.Total, Established: f.Established, SocketsOnly: f.SocketsOnly, ToNew: f.ToNew}
}

// PlanSavedDoc: the plan was written to Path (plan --out).
type PlanSavedDoc struct {
	Header
	Path string `json:"path"`
}

// ProgressDoc is one step of apply or rollback, as it ended.
type ProgressDoc struct {
	Header
	Host      string  `json:"host"`
	Step      StepDoc `json:"step"`
	ElapsedMS int64   `json:"elapsed_ms"`
	Error     string  `json:"error,omitempty"` // the step failed
}

// ApplyCompleteDoc ends a successful apply.
type ApplyCompleteDoc struct {
	Header
	Summary Summary `json:"summary"`
	State   string  `json:"state"` // the state file
}

// ChangeDoc is one change a rollback undoes: an apply run and the later
// runs that only repaired drift.
type ChangeDoc struct {
	Runs    []string  `json:"runs"` // oldest first
	Time    time.Time `json:"time"` // of its first step
	Intent  string    `json:"intent"`
	Entries int       `json:"entries"` // journal entries it undoes
}

// RollbackPlanDoc is what a rollback will do.
type RollbackPlanDoc struct {
	Header
	What    string      `json:"what"` // "the last change" or "everything migrate applied"
	Changes []ChangeDoc `json:"changes"`
	// Steps put the objects back, in order; objects already as they must
	// be have no step (their record only is updated).
	Steps   []StepDoc `json:"steps"`
	Entries int       `json:"entries"` // journal entries undone
}

// NewRollbackPlanDoc builds the rollback plan document.
func NewRollbackPlanDoc(p *apply.RollbackPlan, what string) RollbackPlanDoc {
	entries, _ := p.Count()
	d := RollbackPlanDoc{Header: header("rollback_plan"), What: what, Changes: []ChangeDoc{}, Steps: []StepDoc{}, Entries: entries}
	for _, c := range p.Changes {
		d.Changes = append(d.Changes, ChangeDoc{Runs: c.Runs, Time: c.Time, Intent: c.Intent, Entries: len(c.Entries)})
	}
	for _, s := range p.Steps {
		if s.Step != nil {
			d.Steps = append(d.Steps, stepDoc(*s.Step))
		}
	}
	return d
}

// RollbackCompleteDoc ends a successful rollback.
type RollbackCompleteDoc struct {
	Header
	Undone int    `json:"undone"` // journal entries undone
	State  string `json:"state"`
}

// StatusDoc is one reading of `migrate status` (one per line with
// --watch).
type StatusDoc struct {
	Header
	Time     time.Time   `json:"time"`
	Tunnel   *TunnelDoc  `json:"tunnel"` // null without a tunnel block
	Services []StatusSvc `json:"services"`
	Forwards []StatusFwd `json:"forwards"`
	Notes    []string    `json:"notes"`
	Verdict  string      `json:"verdict"`
	// Unreachable: host ("old", "new") -> why it could not be read.
	Unreachable map[string]string `json:"unreachable"`
	Conntrack   *ConntrackDoc     `json:"conntrack"` // null when OLD was not read
	// PathBroken says why flows sent to NEW would not be served ("" when
	// they would).
	PathBroken string `json:"path_broken"`
}

// Reached reports whether host was read.
func (d StatusDoc) Reached(host string) bool { _, down := d.Unreachable[host]; return !down }

// TunnelDoc is the tunnel as both ends see it.
type TunnelDoc struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	OldEndpoint string   `json:"old_endpoint"`
	NewEndpoint string   `json:"new_endpoint"`
	OldLinkUp   bool     `json:"old_link_up"`
	NewLinkUp   bool     `json:"new_link_up"`
	OldToNew    ProbeDoc `json:"old_to_new"`
	NewToOld    ProbeDoc `json:"new_to_old"`
}

// Up: both devices up, pings pass both ways.
func (t TunnelDoc) Up() bool {
	return t.OldLinkUp && t.NewLinkUp && t.OldToNew.OK() && t.NewToOld.OK()
}

// ProbeDoc is a ping through the tunnel; Target "" means not sent.
type ProbeDoc struct {
	Target string  `json:"target"`
	RTTMS  float64 `json:"rtt_ms"`
	Error  string  `json:"error"`
}

// OK: the ping was sent and answered.
func (p ProbeDoc) OK() bool { return p.Target != "" && p.Error == "" }

// ConntrackDoc is how full OLD's conntrack table is.
type ConntrackDoc struct {
	Loaded  bool    `json:"loaded"`
	Count   int64   `json:"count"`
	Max     int64   `json:"max"`
	Percent float64 `json:"percent"`
	Over    bool    `json:"over"`
}

// StatusSvc is one service's progress.
type StatusSvc struct {
	Name             string     `json:"name"`
	Address          string     `json:"address"`
	Protocol         string     `json:"protocol"`
	Ports            string     `json:"ports"`
	PlanStage        string     `json:"plan_stage"`
	LiveStage        string     `json:"live_stage"`
	CanaryPercent    int        `json:"canary_percent"`
	NewFlows         uint64     `json:"new_flows"`
	Packets          uint64     `json:"packets"`
	Bytes            uint64     `json:"bytes"`
	NewFlowsPerSec   float64    `json:"new_flows_per_sec"` // -1: no previous reading
	OnOld            int        `json:"on_old"`
	OnOldSocketsOnly int        `json:"on_old_sockets_only"`
	ViaTunnel        int        `json:"via_tunnel"`
	Drained          bool       `json:"drained"`
	DrainedSince     *time.Time `json:"drained_since"` // null when unknown
	// NewUnserved: ports of a service whose new flows go to NEW that
	// nothing on NEW listens on ([] when none).
	NewUnserved []uint16 `json:"new_unserved"`
	// OldUnserved: ports of a service whose new flows (all, or a
	// canary's rest) stay on OLD that nothing on OLD listens on ([] when
	// none).
	OldUnserved []uint16 `json:"old_unserved"`
	State       string   `json:"state"`
}

// StatusFwd is one forward block as its host runs it.
type StatusFwd struct {
	Name      string `json:"name"`
	On        string `json:"on"`
	Address   string `json:"address"`
	Protocol  string `json:"protocol"`
	Ports     string `json:"ports"`
	To        string `json:"to"`
	Live      bool   `json:"live"`
	Forwarded int    `json:"forwarded"`
	Local     int    `json:"local"`
	Flows     int    `json:"flows"`
	State     string `json:"state"`
}

// NewStatusDoc builds the status document.
func NewStatusDoc(r status.Report) StatusDoc {
	d := StatusDoc{Header: header("status"), Time: r.Time, Services: []StatusSvc{}, Forwards: []StatusFwd{},
		Notes: nonNil(r.Notes), Verdict: r.Verdict, Unreachable: map[string]string{}, PathBroken: r.PathBroken}
	for h, why := range r.Unreachable {
		d.Unreachable[h] = why
	}
	if t := r.Tunnel; t != nil {
		d.Tunnel = &TunnelDoc{Name: t.Name, Type: string(t.Type), OldEndpoint: t.OldEndpoint, NewEndpoint: t.NewEndpoint,
			OldLinkUp: t.OldLinkUp, NewLinkUp: t.NewLinkUp, OldToNew: probeDoc(t.OldToNew), NewToOld: probeDoc(t.NewToOld)}
	}
	if c := r.Conntrack; c != nil {
		d.Conntrack = &ConntrackDoc{Loaded: c.Loaded, Count: c.Count, Max: c.Max, Percent: c.Percent, Over: c.Over}
	}
	for _, s := range r.Services {
		sv := StatusSvc{Name: s.Name, Address: s.Address, Protocol: string(s.Protocol), Ports: s.Ports, PlanStage: s.PlanStage,
			LiveStage: s.LiveStage, CanaryPercent: s.CanaryPercent, NewFlows: s.NewFlows, Packets: s.Packets, Bytes: s.Bytes,
			NewFlowsPerSec: s.NewFlowsPerSec, OnOld: s.OnOld, OnOldSocketsOnly: s.OnOldSocketsOnly, ViaTunnel: s.ViaTunnel,
			Drained: s.Drained, NewUnserved: append([]uint16{}, s.NewUnserved...),
			OldUnserved: append([]uint16{}, s.OldUnserved...), State: s.State}
		if !s.DrainedSince.IsZero() {
			t := s.DrainedSince
			sv.DrainedSince = &t
		}
		d.Services = append(d.Services, sv)
	}
	for _, f := range r.Forwards {
		d.Forwards = append(d.Forwards, StatusFwd{Name: f.Name, On: string(f.On), Address: f.Address, Protocol: string(f.Protocol),
			Ports: f.Ports, To: f.To, Live: f.Live, Forwarded: f.Forwarded, Local: f.Local, Flows: f.Flows, State: f.State})
	}
	return d
}

func probeDoc(p status.Probe) ProbeDoc {
	return ProbeDoc{Target: p.Target, RTTMS: float64(p.RTT) / float64(time.Millisecond), Error: p.Error}
}

// StateListDoc is `migrate state list`.
type StateListDoc struct {
	Header
	State     string   `json:"state"`     // the state file read
	Resources []string `json:"resources"` // addresses, host then kind order
}

// StateShowDoc is `migrate state show ADDRESS`.
type StateShowDoc struct {
	Header
	Address string `json:"address"`
	Host    string `json:"host"`
	Key     string `json:"key"`
	// Now is the object as migrate last set it (null: migrate removed
	// it); Rollback what rollback puts back (null: rollback deletes it).
	Now      *string `json:"now"`
	Rollback *string `json:"rollback"`
	// Nft: what migrate's nft table does now, when the object is one
	// (null otherwise).
	Nft     *NftDoc      `json:"nft"`
	History []HistoryDoc `json:"history"` // oldest first
}

// NftDoc is what one host's migrate table does.
type NftDoc struct {
	Services []NftServiceDoc `json:"services"`
	Forwards []NftForwardDoc `json:"forwards"`
}

// NftServiceDoc: Percent of the new flows to Address Protocol Port go
// to NEW.
type NftServiceDoc struct {
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port"`
	Percent  int    `json:"percent"`
}

// NftForwardDoc: flows to Address Protocol Port are forwarded to To
// port ToPort.
type NftForwardDoc struct {
	Address  string `json:"address"`
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port"`
	To       string `json:"to"`
	ToPort   uint16 `json:"to_port"`
}

// HistoryDoc is one recorded step on a resource.
type HistoryDoc struct {
	Time time.Time `json:"time"`
	Run  string    `json:"run"` // id of the apply that made it
	Seq  int       `json:"seq"` // its number in the journal
	Step StepDoc   `json:"step"`
}

// NewStateShowDoc builds the state show document.
func NewStateShowDoc(r state.Resource) StateShowDoc {
	d := StateShowDoc{Header: header("state_show"), Address: r.Address, Host: r.Host, Key: r.Key,
		Now: objectText(r.Current), Rollback: objectText(r.Restore), History: []HistoryDoc{}}
	if r.Current != nil && r.Current.Nft != nil {
		d.Nft = &NftDoc{Services: []NftServiceDoc{}, Forwards: []NftForwardDoc{}}
		for _, s := range r.Current.Nft.Spec.Services {
			d.Nft.Services = append(d.Nft.Services, NftServiceDoc{Address: s.Addr.String(), Protocol: string(s.Proto), Port: s.Port, Percent: s.Percent})
		}
		for _, f := range r.Current.Nft.Spec.Forwards {
			d.Nft.Forwards = append(d.Nft.Forwards, NftForwardDoc{Address: f.Addr.String(), Protocol: string(f.Proto), Port: f.Port, To: f.To.String(), ToPort: f.ToPort})
		}
	}
	for _, e := range r.Entries {
		d.History = append(d.History, HistoryDoc{Time: e.Time, Run: e.Run, Seq: e.Seq, Step: stepDoc(e.Step)})
	}
	return d
}

// ValidateDoc is `migrate validate` on a valid file (an invalid one is an
// error document).
type ValidateDoc struct {
	Header
	File     string `json:"file"`
	Valid    bool   `json:"valid"`
	Services int    `json:"services"`
	Forwards int    `json:"forwards"`
}

// VersionDoc is `migrate version`.
type VersionDoc struct {
	Header
	Version       string `json:"version"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
	AgentProtocol int    `json:"agent_protocol"`
}

// InitDoc is `migrate init`: the plan file written, and what was found.
type InitDoc struct {
	Header
	Path    string   `json:"path"`
	Summary []string `json:"summary"`
}

// nonNil makes an absent list print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
