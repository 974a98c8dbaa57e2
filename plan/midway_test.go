package plan_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// journalWith is a journal in which host got link and table from an apply.
func journalWith(host string, link state.Link, table state.NftTable) *state.Journal {
	j := state.NewJournal()
	j.Entries = append(j.Entries,
		state.Entry{Seq: 1, Run: "r1", Time: time.Unix(1, 0), Step: state.Step{Host: host, Action: state.Create, After: &state.Object{Link: &link}}},
		state.Entry{Seq: 2, Run: "r1", Time: time.Unix(1, 0), Step: state.Step{Host: host, Action: state.Create, After: &state.Object{Nft: &table}}},
	)
	return j
}

// A tunnel edited during a migration: a new name or mark is refused at
// the tunnel block (moved connections' routes name the device and their
// conntrack entries carry the mark); the same name and mark pass.
func TestTunnelRenameAndMarkRefused(t *testing.T) {
	old := facts("198.51.100.10/24", 1500)
	old.Links = append(old.Links, state.Link{Name: "mig0", Type: "vxlan", MTU: 1450, Up: true})
	table := state.NftTable{Family: "inet", Name: plan.NftTableName, Spec: state.NftSpec{Role: "old", TunnelDev: "mig0", Mark: 0x20000}}
	j := journalWith(plan.Old, state.Link{Name: "mig0", Type: "vxlan"}, table)
	for _, c := range []struct{ edit, want string }{
		{"", ""},
		{"  name = \"mig7\"\n", `m.hcl:10:1: tunnel: name "mig7", but migrate's tunnel device on host old is "mig0"`},
		{"  mark = \"0x40000\"\n", `m.hcl:10:1: tunnel: mark 0x40000, but migrate's table on host old marks the moved connections with 0x20000`},
	} {
		cfg := mustParse(t, strings.Replace(src, "  new_endpoint = \"203.0.113.20\"\n", "  new_endpoint = \"203.0.113.20\"\n"+c.edit, 1))
		_, err := plan.Make(cfg, map[string]state.Facts{plan.Old: old, plan.New: facts("203.0.113.20/24", 1500)}, j, time.Now())
		switch {
		case c.want == "" && err != nil:
			t.Errorf("unchanged tunnel: %v", err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("edit %q: got %v, want %q", c.edit, err, c.want)
		}
	}
}

// A service that left the plan while connections of it go to NEW: plan
// says whether this apply cuts them or they drain; none when nothing
// goes through the tunnel.
func TestRemovedServiceNotes(t *testing.T) {
	cfg := mustParse(t, src) // web: 8080, 9000-9001
	addr := netip.MustParseAddr("198.51.100.10")
	gone := state.NftService{Addr: addr, Proto: "tcp", Port: 7000, Percent: 100}
	old := state.Facts{
		Nft:   &state.NftTable{Family: "inet", Name: plan.NftTableName, Spec: state.NftSpec{Role: "old", Services: []state.NftService{gone}, Accounted: []state.NftService{{Addr: addr, Proto: "tcp", Port: 7000}}}},
		Stats: &state.Stats{Flows: map[string]state.FlowCount{gone.Key(): {ToNew: 2}}},
	}
	fwmark := state.Rule{Family: 4, Priority: 900, Mark: 0x20000, Mask: 0x20000, Table: 4242, Protocol: plan.RouteProto}
	cut := []plan.HostPlan{{Host: plan.Old, Steps: []state.Step{{Host: plan.Old, Action: state.Delete, Before: &state.Object{Rule: &fwmark}}}}}
	notes := plan.RemovedNotes(cfg, old, cut)
	if len(notes) != 1 || !strings.Contains(notes[0], "WARNING host old: 198.51.100.10 tcp port(s) 7000 left the plan while 2 connection(s) to them go through the tunnel to NEW: this apply cuts them (it removes OLD's route into the tunnel)") {
		t.Errorf("route removed: %q", notes)
	}
	notes = plan.RemovedNotes(cfg, old, nil)
	if len(notes) != 1 || !strings.Contains(notes[0], "they keep draining there") {
		t.Errorf("route kept: %q", notes)
	}
	old.Stats.Flows[gone.Key()] = state.FlowCount{}
	if notes := plan.RemovedNotes(cfg, old, cut); len(notes) != 0 {
		t.Errorf("no connection to NEW, yet: %q", notes)
	}
}

func TestSpaceNote(t *testing.T) {
	if n := plan.SpaceNote("old", nil); n != "" {
		t.Errorf("nothing measured: %q", n)
	}
	if n := plan.SpaceNote("old", &state.StateDirSpace{Dir: "/var/lib/migrate", Free: 12 << 20, Need: 12 << 20}); n != "" {
		t.Errorf("room enough: %q", n)
	}
	n := plan.SpaceNote("old", &state.StateDirSpace{Dir: "/var/lib/migrate", Free: 8 << 20, Need: 12 << 20, Reserve: true})
	want := "WARNING host old: the file system of /var/lib/migrate has 8.0 MiB free and migrate needs 12.0 MiB there before it changes anything (a reserve, so that an undo or a rollback can always be recorded, and room to record the apply): apply refuses until there is room. Its reserve is there, so a rollback can still record every step."
	if n != want {
		t.Errorf("got  %s\nwant %s", n, want)
	}
	if n := plan.SpaceNote("new", &state.StateDirSpace{Dir: "/d", Free: 0, Need: 12 << 20}); !strings.Contains(n, "Its reserve is gone") {
		t.Errorf("no reserve: %q", n)
	}
}

func TestSysctlConfNotes(t *testing.T) {
	want := map[string]plan.HostDesired{
		plan.Old: {Objects: []state.Object{{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}}, {Sysctl: &state.Sysctl{Name: plan.EarlyDemux, Value: "0"}}}},
		plan.New: {Objects: []state.Object{{Sysctl: &state.Sysctl{Name: "net.ipv4.conf.mig0.rp_filter", Value: "2"}}}},
	}
	facts := map[string]state.Facts{
		plan.Old: {SysctlConf: map[string]state.SysctlSetting{
			"net.ipv4.ip_forward": {Value: "0", File: "/etc/sysctl.d/60-cis.conf", Line: 2},
			plan.EarlyDemux:       {Value: "0", File: "/etc/sysctl.conf", Line: 9}, // agrees
		}},
		plan.New: {SysctlConf: map[string]state.SysctlSetting{"net.ipv4.ip_forward": {Value: "0", File: "/etc/sysctl.conf", Line: 1}}}, // not migrate's there
	}
	notes := plan.SysctlConfNotes(want, facts)
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "WARNING host old: /etc/sysctl.d/60-cis.conf:2 sets net.ipv4.ip_forward = 0 and migrate sets 1.") ||
		!strings.Contains(notes[0], "OLD stops forwarding") {
		t.Errorf("notes: %q", notes)
	}
}

func TestUDPWarmupNote(t *testing.T) {
	c, err := config.Parse([]byte(`
host "old" { ssh = "root@198.51.100.10" }
host "new" { ssh = "root@203.0.113.20" }
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
service "game" {
  address  = "198.51.100.10"
  protocol = "udp"
  ports    = [27015]
  stage    = "new"
}
`), "p.hcl")
	if err != nil {
		t.Fatal(err)
	}
	fresh := state.Facts{Conntrack: &state.Conntrack{}}
	if n := plan.UDPWarmupNote(c, fresh); !strings.HasPrefix(n, "host old tracks no flows yet: apply turns tracking on 3s before it sends UDP service(s) game to NEW") {
		t.Errorf("fresh OLD: %q", n)
	}
	for what, f := range map[string]state.Facts{
		"tracking already":  {Conntrack: &state.Conntrack{Loaded: true, Count: 12}},
		"table already":     {Conntrack: &state.Conntrack{}, Nft: &state.NftTable{}},
		"conntrack unknown": {},
	} {
		if n := plan.UDPWarmupNote(c, f); n != "" {
			t.Errorf("%s: %q", what, n)
		}
	}
}
