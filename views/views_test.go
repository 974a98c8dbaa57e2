package views

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/status"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMain(m *testing.M) {
	// The human views print local times: pin them.
	time.Local = time.UTC
	os.Exit(m.Run())
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func link() *state.Object {
	return &state.Object{Link: &state.Link{Name: "mig0", Type: "vxlan", Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("198.51.100.2"), VNI: 4242, Port: 4789}}
}

func sysctl(v string) *state.Object {
	return &state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: v}}
}

func rule() *state.Object {
	return &state.Object{Rule: &state.Rule{Family: 4, Priority: 0, Table: state.TableLocal}}
}

func nft() *state.Object {
	return &state.Object{Nft: &state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{Role: "old", TunnelDev: "mig0", Mark: 0x100,
		Services: []state.NftService{{Addr: netip.MustParseAddr("192.0.2.1"), Proto: "tcp", Port: 443, Percent: 100}},
		Forwards: []state.NftForward{{Addr: netip.MustParseAddr("192.0.2.1"), Proto: "udp", Port: 53, To: netip.MustParseAddr("198.51.100.53"), ToPort: 53}}}}}
}

func samplePlan() *plan.Plan {
	return &plan.Plan{
		ConfigPath: "migration.hcl", CreatedAt: t0, Intent: "sha256:abc",
		Notes: []string{"OLD's conntrack table is 10% full"},
		Hosts: []plan.HostPlan{
			{Host: "new", Steps: []state.Step{{Host: "new", Action: state.Create, After: link()}}},
			{Host: "old", Steps: []state.Step{
				{Host: "old", Action: state.Update, Before: sysctl("0"), After: sysctl("1")},
				{Host: "old", Action: state.Delete, Before: rule()},
				{Host: "old", Action: state.Create, After: nft()},
			}},
		},
		Readiness: []plan.Readiness{
			{Service: "web", Proto: "tcp", Addr: "192.0.2.1"},
			{Service: "api", Proto: "tcp", Addr: "192.0.2.1", Unserved: []uint16{8443}, NewListens: []string{"127.0.0.1:8443"}},
			{Service: "dns", Proto: "udp", Addr: "192.0.2.1", UDPListeners: []plan.UDPListener{{Addr: "0.0.0.0", Port: 53, Process: "unbound", Wildcard: true}}},
		},
		Flows: []plan.ServiceFlows{{Service: "web", Total: 5, Established: 3, ToNew: 1}, {Service: "ssh", Total: 1, Established: 1}},
	}
}

func sampleRollback() *apply.RollbackPlan {
	e := &state.Entry{Seq: 1, Run: "run-1", Time: t0, Step: state.Step{Host: "new", Action: state.Create, After: link()}}
	inv := e.Step.Inverse()
	return &apply.RollbackPlan{
		Changes: []apply.Change{{Runs: []string{"run-1", "run-2"}, Time: t0, Intent: "sha256:abc", Entries: []*state.Entry{e}}},
		Steps: []apply.RollbackStep{
			{Restore: apply.Restore{Host: "new", Key: link().Key(), Entries: []*state.Entry{e}}, Step: &inv},
			{Restore: apply.Restore{Host: "old", Key: sysctl("0").Key(), Target: sysctl("0"), Entries: []*state.Entry{e}}},
		},
	}
}

func sampleStatus() status.Report {
	return status.Report{
		Time: t0,
		Tunnel: &status.Tunnel{Name: "mig0", Type: "vxlan", OldEndpoint: "192.0.2.1", NewEndpoint: "198.51.100.2", OldLinkUp: true, NewLinkUp: true,
			OldToNew: status.Probe{Target: "10.99.0.2", RTT: 1500 * time.Microsecond}, NewToOld: status.Probe{Target: "10.99.0.1", Error: "timeout"}},
		Services: []status.Service{
			{Name: "web", Address: "192.0.2.1", Protocol: "tcp", Ports: "443", PlanStage: "new", LiveStage: "new", NewFlows: 12, Packets: 300, Bytes: 123456,
				NewFlowsPerSec: 0.5, Drained: true, DrainedSince: t0, State: "drained"},
			{Name: "api", Address: "192.0.2.1", Protocol: "tcp", Ports: "8443", PlanStage: "canary", LiveStage: "canary", CanaryPercent: 10,
				NewFlowsPerSec: -1, OnOld: 2, OnOldSocketsOnly: 1, ViaTunnel: 1, OldUnserved: []uint16{8443},
				State: "NOT SERVED ON OLD: 90% of its new flows stay on OLD, where nothing listens on port 8443: those clients are refused"},
		},
		Forwards:    []status.Forward{{Name: "dns", On: "old", Address: "192.0.2.1", Protocol: "udp", Ports: "53", To: "198.51.100.53", Live: true, Forwarded: 4, Local: 1, Flows: 6, State: "live"}},
		Verdict:     "OLD is still needed.",
		Notes:       []string{"UDP has no connections"},
		Unreachable: map[string]string{"new": "dial tcp: timeout"},
		Conntrack:   &status.Conntrack{Loaded: true, Count: 10, Max: 100, Percent: 10},
	}
}

func sampleResource() state.Resource {
	return state.Resource{Address: state.ResourceAddress("old", nft().Key()), Host: "old", Key: nft().Key(), Current: nft(),
		Entries: []state.Entry{{Seq: 4, Run: "run-1", Time: t0, Step: state.Step{Host: "old", Action: state.Create, After: nft()}}}}
}

// commands drives each command's view the way the command does.
var commands = []struct {
	name string
	run  func(v All)
}{
	{"plan", func(v All) {
		var p Plan = v
		p.Note("reconciled the journals")
		p.Plan(samplePlan())
		p.Saved("saved.plan")
	}},
	{"plan_empty", func(v All) { v.Plan(&plan.Plan{ConfigPath: "migration.hcl", CreatedAt: t0}) }},
	{"apply", func(v All) {
		var a Apply = v
		a.Plan(samplePlan())
		a.Info("Revert timers armed on both hosts.")
		a.Progress("new", samplePlan().Hosts[0].Steps[0], 12*time.Millisecond, nil)
		a.Progress("old", samplePlan().Hosts[1].Steps[0], 1400*time.Millisecond, errors.New("permission denied"))
		a.ApplyComplete(2, 1, 1, "migration.state.json")
	}},
	{"rollback", func(v All) {
		var r Rollback = v
		rp := sampleRollback()
		r.RollbackPlan(rp, "the last change")
		r.Progress("new", *rp.Steps[0].Step, 3*time.Millisecond, nil)
		r.RollbackComplete(1, "migration.state.json")
	}},
	{"status", func(v All) {
		var s Status = v
		s.Reading(sampleStatus(), 0, false)
		r := sampleStatus()
		r.Unreachable, r.Tunnel, r.Conntrack, r.Forwards = nil, nil, nil, nil
		s.Reading(r, 1, true)
	}},
	{"state_list", func(v All) {
		var s State = v
		s.StateList("migration.state.json", []state.Resource{sampleResource(), {Address: "new.link.mig0"}})
	}},
	{"state_show", func(v All) {
		var s State = v
		s.StateShow(sampleResource())
		r := sampleResource()
		r.Current, r.Restore = nil, rule()
		s.StateShow(r)
	}},
	{"validate", func(v All) { var x Validate = v; x.Valid("migration.hcl", 3, 1) }},
	{"version", func(v All) { var x Version = v; x.Version("1.2.3", "linux", "amd64", 4) }},
	{"init", func(v All) {
		var x Init = v
		x.Wrote("migration.hcl", []string{"OLD listens on 2 address(es): 3 service(s).", "The SSH port 22 is left out."})
	}},
	{"error", func(v All) { v.Error(errors.New("host old: connection refused")) }},
}

// TestGolden renders every command with both views and compares with
// testdata/NAME.txt (human) and testdata/NAME.json (JSON). go test
// ./views/ -update rewrites them; review the diff.
func TestGolden(t *testing.T) {
	for _, c := range commands {
		for _, kind := range []string{"txt", "json"} {
			t.Run(c.name+"."+kind, func(t *testing.T) {
				var out, errb bytes.Buffer
				var v All = &View{Out: &out, Err: &errb}
				if kind == "json" {
					v = NewJSON(&out, &errb)
				}
				c.run(v)
				got := out.String()
				if errb.Len() > 0 {
					got += "--- stderr\n" + errb.String()
				}
				path := filepath.Join("testdata", c.name+"."+kind)
				if *update {
					if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if got != string(want) {
					t.Errorf("%s differs (go test ./views/ -update, then review):\n--- got\n%s\n--- want\n%s", path, got, want)
				}
			})
		}
	}
}

// TestJSONLines: every line the JSON view writes is one document of the
// current schema with a known type, on stdout except errors.
func TestJSONLines(t *testing.T) {
	types := map[string]bool{}
	for _, c := range commands {
		var out, errb bytes.Buffer
		c.run(NewJSON(&out, &errb))
		for _, l := range strings.Split(strings.TrimSpace(out.String()+errb.String()), "\n") {
			var h Header
			if err := json.Unmarshal([]byte(l), &h); err != nil {
				t.Fatalf("%s: not JSON: %q", c.name, l)
			}
			if h.SchemaVersion != JSONSchemaVersion || h.Type == "" {
				t.Errorf("%s: header %+v in %s", c.name, h, l)
			}
			types[h.Type] = true
		}
		if strings.Contains(errb.String(), `"type":"`) && !strings.Contains(errb.String(), `"type":"error"`) {
			t.Errorf("%s: a result went to stderr: %s", c.name, errb.String())
		}
	}
	for _, want := range docTypes {
		if !types[want] {
			t.Errorf("no command wrote a %q document", want)
		}
	}
}

var docTypes = []string{"info", "note", "error", "plan", "plan_saved", "progress", "apply_complete", "rollback_plan",
	"rollback_complete", "status", "state_list", "state_show", "validate", "version", "init"}

// TestSchemaDocumented: docs/json.md names every document type and every
// field of the schema, so a field cannot be added without its meaning.
func TestSchemaDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "json.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	if !strings.Contains(text, "`schema_version`: `\""+JSONSchemaVersion+"\"`") {
		t.Errorf("docs/json.md does not state the current schema version %q as `schema_version`: `\"%s\"`", JSONSchemaVersion, JSONSchemaVersion)
	}
	for _, typ := range docTypes {
		if !strings.Contains(text, "`\""+typ+"\"`") {
			t.Errorf("docs/json.md does not document the document type %q", typ)
		}
	}
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(rt reflect.Type) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice || rt.Kind() == reflect.Map {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || rt.PkgPath() != reflect.TypeOf(Header{}).PkgPath() || seen[rt] {
			return
		}
		seen[rt] = true
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			if f.Anonymous {
				walk(f.Type)
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !strings.Contains(text, "`"+name+"`") {
				t.Errorf("docs/json.md does not document the field %q of %s", name, rt.Name())
			}
			walk(f.Type)
		}
	}
	for _, d := range []any{MessageDoc{}, ErrorDoc{}, PlanDoc{}, PlanSavedDoc{}, ProgressDoc{}, ApplyCompleteDoc{}, RollbackPlanDoc{},
		RollbackCompleteDoc{}, StatusDoc{}, StateListDoc{}, StateShowDoc{}, ValidateDoc{}, VersionDoc{}, InitDoc{}} {
		walk(reflect.TypeOf(d))
	}
}
