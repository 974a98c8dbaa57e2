package status

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

const planText = `
host "old" {
  ssh = "root@198.51.100.10"
}
host "new" {
  ssh = "root@203.0.113.20"
}
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
service "web" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [80, 443]
  stage    = "new"
}
service "api" {
  address        = "198.51.100.10"
  protocol       = "tcp"
  ports          = [8080]
  stage          = "canary"
  canary_percent = 10
}
service "dns" {
  address  = "198.51.100.10"
  protocol = "udp"
  ports    = [53]
  stage    = "old"
}
`

func parse(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(planText), "status.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func oldFacts(web80OnOld int) state.Facts {
	return state.Facts{
		Links: []state.Link{{Name: "mig0", Type: "vxlan", Up: true}},
		Rules: []state.Rule{
			{Family: 4, Priority: 900, Mark: 0x20000, Mask: 0x20000, Table: 4242, Protocol: 77},
			{Family: 4, Priority: 1000, Table: state.TableLocal, Protocol: 77},
		},
		Nft: &state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{Role: "old", Services: []state.NftService{
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 80, Percent: 100},
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 443, Percent: 100},
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 8080, Percent: 10},
		}}},
		// OLD's daemons still run (sock_diag, no processes).
		Listeners: []state.Listener{
			{Proto: "tcp", Addr: "198.51.100.10", Port: 80}, {Proto: "tcp", Addr: "198.51.100.10", Port: 443},
			{Proto: "tcp", Addr: "::", Port: 8080}, {Proto: "udp", Addr: "0.0.0.0", Port: 53},
		},
		Stats: &state.Stats{
			Counters: map[string]state.Counter{
				"198.51.100.10 tcp 80":  {NewFlows: 7, Packets: 70, Bytes: 7000},
				"198.51.100.10 tcp 443": {NewFlows: 3, Packets: 30, Bytes: 3000},
			},
			Flows: map[string]state.FlowCount{
				"198.51.100.10 tcp 80":  {Total: 5, Established: 4, ToNew: 2, OnOld: web80OnOld},
				"198.51.100.10 udp 53":  {Total: 1, ToNew: 1},
				"198.51.100.10 tcp 443": {Total: 1, Established: 1, ToNew: 1},
			},
		},
	}
}

func TestBuildReadsStagesCountersAndDrain(t *testing.T) {
	c := parse(t)
	t0 := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	newFacts := healthyNew()
	r := Build(Input{Config: c, Old: oldFacts(2), New: newFacts, Time: t0,
		OldToNew: Probe{Target: "169.254.42.2", RTT: 300 * time.Microsecond},
		NewToOld: Probe{Target: "169.254.42.1", RTT: 250 * time.Microsecond}})
	if r.Tunnel == nil || !r.Tunnel.Up() {
		t.Fatalf("tunnel %+v: want up", r.Tunnel)
	}
	byName := map[string]Service{}
	for _, s := range r.Services {
		byName[s.Name] = s
	}
	web := byName["web"]
	if web.LiveStage != "new" || web.NewFlows != 10 || web.Bytes != 10000 || web.OnOld != 2 || web.ViaTunnel != 3 || web.Drained {
		t.Fatalf("web %+v", web)
	}
	if !strings.Contains(web.State, "draining: 2 established") {
		t.Fatalf("web state %q", web.State)
	}
	if api := byName["api"]; api.LiveStage != "canary" || api.CanaryPercent != 10 {
		t.Fatalf("api %+v", api)
	}
	if dns := byName["dns"]; dns.LiveStage != "old" || !strings.Contains(dns.State, "1 flow(s) still draining on NEW") {
		t.Fatalf("dns %+v", dns)
	}
	if !strings.Contains(r.Verdict, "2 service(s) are not fully on NEW") {
		t.Fatalf("verdict %q", r.Verdict)
	}

	// A second reading, a minute later: web drained, 6 more new flows.
	old2 := oldFacts(0)
	old2.Stats.Counters["198.51.100.10 tcp 80"] = state.Counter{NewFlows: 13}
	r2 := Build(Input{Config: c, Old: old2, New: newFacts, Time: t0.Add(time.Minute), Previous: &r})
	web2 := r2.Services[0]
	if !web2.Drained || !web2.DrainedSince.Equal(t0.Add(time.Minute)) || web2.NewFlowsPerSec != 0.1 {
		t.Fatalf("web after drain %+v", web2)
	}
	if r2.Tunnel.Up() {
		t.Fatal("tunnel without pings counted as up")
	}
	// The third reading keeps the time the drain was first seen.
	r3 := Build(Input{Config: c, Old: old2, New: newFacts, Time: t0.Add(2 * time.Minute), Previous: &r2})
	if !r3.Services[0].DrainedSince.Equal(t0.Add(time.Minute)) {
		t.Fatalf("drained since moved: %v", r3.Services[0].DrainedSince)
	}
}

func TestVerdictTellsWhenOldIsFree(t *testing.T) {
	c := parse(t)
	for _, s := range c.Services {
		s.Stage, s.CanaryPercent = "new", 0
	}
	old := oldFacts(0)
	for i := range old.Nft.Spec.Services {
		old.Nft.Spec.Services[i].Percent = 100
	}
	old.Nft.Spec.Services = append(old.Nft.Spec.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53, Percent: 100})
	r := Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	if !strings.Contains(r.Verdict, "OLD still relays 4 flow(s)") {
		t.Fatalf("verdict with flows through OLD: %q", r.Verdict)
	}
	old.Stats.Flows = nil
	r = Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	if !strings.Contains(r.Verdict, "OLD may be switched off") {
		t.Fatalf("verdict with nothing left: %q", r.Verdict)
	}
	// Nothing applied at all.
	r = Build(Input{Config: c, Old: state.Facts{}, New: healthyNew(), Time: time.Now()})
	if r.Services[0].LiveStage != StageAbsent || len(r.Notes) == 0 {
		t.Fatalf("nothing applied: %+v", r)
	}
}

// OLD's table changed outside migrate (a saved copy of an earlier stage
// loaded by nftables.service): the agent's record says every service
// is on NEW, the kernel does not, and OLD is not declared free.
func TestChangedTableIsNotDrained(t *testing.T) {
	c := parse(t)
	for _, s := range c.Services {
		s.Stage, s.CanaryPercent = "new", 0
	}
	old := oldFacts(0)
	for i := range old.Nft.Spec.Services {
		old.Nft.Spec.Services[i].Percent = 100
	}
	old.Nft.Spec.Services = append(old.Nft.Spec.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53, Percent: 100})
	old.Stats.Flows = nil
	old.NftDrift = "nft table migrate was changed outside migrate: set svc4 has 0 elements, migrate wrote 4"
	r := Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	for _, s := range r.Services {
		if s.LiveStage != StageChanged || s.Drained || !strings.Contains(s.State, "changed outside migrate (the plan says new: run migrate apply)") {
			t.Errorf("%s: %+v", s.Name, s)
		}
	}
	if !strings.Contains(r.Verdict, "OLD is still needed: 3 service(s) are not fully on NEW") {
		t.Errorf("verdict %q", r.Verdict)
	}
	if !strings.Contains(strings.Join(r.Notes, "\n"), "On OLD, nft table migrate was changed outside migrate: set svc4") {
		t.Errorf("notes %q", r.Notes)
	}
}

// A host that cannot be read makes what depends on it unknown, never zero,
// and OLD is never declared free while either host is unknown.
func TestUnreachableHostIsUnknownNotZero(t *testing.T) {
	c := parse(t)
	for _, s := range c.Services {
		s.Stage, s.CanaryPercent = "new", 0
	}
	old := oldFacts(0)
	for i := range old.Nft.Spec.Services {
		old.Nft.Spec.Services[i].Percent = 100
	}
	old.Nft.Spec.Services = append(old.Nft.Spec.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53, Percent: 100})
	old.Stats.Flows = nil
	t0 := time.Now()
	free := Build(Input{Config: c, Old: old, New: healthyNew(), Time: t0})
	if !strings.Contains(free.Verdict, "OLD may be switched off") {
		t.Fatalf("baseline verdict %q", free.Verdict)
	}

	// NEW unreadable: OLD's view stands, but OLD is not released.
	r := Build(Input{Config: c, Old: old, New: healthyNew(), Time: t0, Unreachable: map[string]string{"new": "dial tcp: connection refused"}})
	if r.Reached("new") || !r.Reached("old") || r.Services[0].LiveStage != "new" || !r.Services[0].Drained {
		t.Fatalf("NEW down: %+v", r)
	}
	if strings.Contains(r.Verdict, "may be switched off") || !strings.Contains(r.Verdict, "NEW could not be read") {
		t.Fatalf("NEW down, verdict %q", r.Verdict)
	}

	// OLD unreadable: every service unknown, nothing drained, no rate
	// carried over from a reading that could not be made.
	r = Build(Input{Config: c, Time: t0.Add(time.Second), Previous: &free, Unreachable: map[string]string{"old": "ssh: handshake failed"}})
	for _, s := range r.Services {
		if s.LiveStage != StageUnknown || s.Drained || s.NewFlows != 0 || s.NewFlowsPerSec != -1 || !strings.HasPrefix(s.State, "unknown") {
			t.Fatalf("OLD down, service %+v", s)
		}
	}
	if !strings.Contains(r.Verdict, "OLD could not be read") || len(r.Notes) != 0 {
		t.Fatalf("OLD down: verdict %q notes %q", r.Verdict, r.Notes)
	}
	// The reading after OLD answers again has no rate either (the last
	// one knows nothing) and no drain time it cannot know.
	back := Build(Input{Config: c, Old: old, New: healthyNew(), Time: t0.Add(2 * time.Second), Previous: &r})
	if s := back.Services[0]; s.NewFlowsPerSec != -1 || !s.Drained || !s.DrainedSince.IsZero() {
		t.Fatalf("after OLD is back: %+v", s)
	}
}

// Forwards are reported from their own host; one on OLD keeps OLD needed
// even when every service is drained.
func TestForwardsInStatus(t *testing.T) {
	src := planText + `
forward "smtp-relay" {
  on       = "old"
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [25]
  to       = "192.0.2.50"
}
forward "admin" {
  on       = "new"
  address  = "203.0.113.20"
  protocol = "tcp"
  ports    = [8443, 8444]
  to       = "192.0.2.60"
  }
`
	c, err := config.Parse([]byte(src), "status.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Services {
		s.Stage, s.CanaryPercent = "new", 0
	}
	old := oldFacts(0)
	for i := range old.Nft.Spec.Services {
		old.Nft.Spec.Services[i].Percent = 100
	}
	old.Nft.Spec.Services = append(old.Nft.Spec.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53, Percent: 100})
	old.Stats.Flows = map[string]state.FlowCount{"198.51.100.10 tcp 25": {Total: 4, Established: 3, OnOld: 1}}
	old.Nft.Spec.Forwards = []state.NftForward{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 25, To: netip.MustParseAddr("192.0.2.50"), ToPort: 25}}
	nw := healthyNew()
	nw.Nft.Spec.Forwards = []state.NftForward{{Addr: netip.MustParseAddr("203.0.113.20"), Proto: "tcp", Port: 8443, To: netip.MustParseAddr("192.0.2.60"), ToPort: 8443}}
	r := Build(Input{Config: c, Old: old, New: nw, Time: time.Now()})
	if len(r.Forwards) != 2 {
		t.Fatalf("forwards %+v", r.Forwards)
	}
	relay, admin := r.Forwards[0], r.Forwards[1]
	if !relay.Live || relay.Forwarded != 2 || relay.Local != 1 || relay.Flows != 4 || relay.On != "old" || !strings.Contains(relay.State, "forwarding on OLD: 2 established flow(s) through it, 1 served by OLD itself") {
		t.Errorf("relay %+v", relay)
	}
	if admin.Live || !strings.Contains(admin.State, "partly applied (1 of 2 ports)") {
		t.Errorf("admin %+v", admin)
	}
	if !strings.Contains(r.Verdict, "1 forward(s) on OLD") {
		t.Errorf("verdict %q", r.Verdict)
	}
	// NEW unreadable: its forward is unknown, not "not applied".
	r = Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now(), Unreachable: map[string]string{"new": "down"}})
	if a := r.Forwards[1]; a.Live || !strings.HasPrefix(a.State, "unknown") {
		t.Errorf("admin with NEW down %+v", a)
	}
}

// A connection that only OLD's sockets show (idle since before the first
// apply: conntrack never saw it) keeps its service draining and OLD
// needed; one conntrack also holds is counted once.
func TestSocketsOnlyConnectionKeepsDraining(t *testing.T) {
	c := parse(t)
	for _, s := range c.Services {
		s.Stage, s.CanaryPercent = "new", 0
	}
	old := oldFacts(0)
	for i := range old.Nft.Spec.Services {
		old.Nft.Spec.Services[i].Percent = 100
	}
	old.Nft.Spec.Services = append(old.Nft.Spec.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53, Percent: 100})
	old.Stats.Flows = map[string]state.FlowCount{
		// 443: one connection conntrack and a socket both show, one
		// idle connection only the socket shows.
		"198.51.100.10 tcp 443": {Total: 1, Established: 1, OnOld: 1, Sockets: 2, SocketsOnly: 1},
	}
	r := Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	web := r.Services[0]
	if web.Drained || web.OnOld != 2 || web.OnOldSocketsOnly != 1 || !strings.HasPrefix(web.State, "draining: 2 established flow(s) still served by OLD") {
		t.Fatalf("web with an idle connection: %+v", web)
	}
	if !strings.Contains(r.Verdict, "OLD is still needed: 1 service(s) are draining") || strings.Contains(r.Verdict, "switched off") {
		t.Fatalf("verdict with an idle connection on OLD: %q", r.Verdict)
	}
	// The idle connection alone (conntrack holds nothing) still counts.
	old.Stats.Flows = map[string]state.FlowCount{"198.51.100.10 tcp 80": {Sockets: 1, SocketsOnly: 1}}
	r = Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	if web := r.Services[0]; web.Drained || web.OnOld != 1 || strings.Contains(r.Verdict, "switched off") {
		t.Fatalf("socket-only connection: %+v, verdict %q", web, r.Verdict)
	}
	// It closes: drained, and OLD is free.
	old.Stats.Flows = nil
	r = Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	if web := r.Services[0]; !web.Drained || !strings.Contains(r.Verdict, "OLD may be switched off") {
		t.Fatalf("after the connection closed: %+v, verdict %q", web, r.Verdict)
	}
}

// A UDP service says what its drain count can see, and its drained state
// claims no more than that.
func TestUDPSaysWhatIsCounted(t *testing.T) {
	c := parse(t)
	for _, s := range c.Services {
		s.Stage, s.CanaryPercent = "new", 0
	}
	old := oldFacts(0)
	for i := range old.Nft.Spec.Services {
		old.Nft.Spec.Services[i].Percent = 100
	}
	old.Nft.Spec.Services = append(old.Nft.Spec.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53, Percent: 100})
	// A connected UDP socket on OLD.
	old.Stats.Flows = map[string]state.FlowCount{"198.51.100.10 udp 53": {Sockets: 1, SocketsOnly: 1}}
	r := Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	dns := r.Services[2]
	if dns.Name != "dns" || dns.Drained || dns.OnOld != 1 {
		t.Fatalf("dns with a connected UDP socket on OLD: %+v", dns)
	}
	if len(r.Notes) != 1 || r.Notes[0] != UDPNote {
		t.Fatalf("notes %q: want the UDP note", r.Notes)
	}
	old.Stats.Flows = nil
	r = Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	if dns := r.Services[2]; !dns.Drained || !strings.Contains(dns.State, "no UDP flow of it that conntrack or a connected socket shows") {
		t.Fatalf("dns drained: %+v", dns)
	}
	// A plan without UDP services has no UDP note.
	c.Services = c.Services[:2]
	if r := Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()}); len(r.Notes) != 0 {
		t.Fatalf("notes without UDP services: %q", r.Notes)
	}
}

// healthyNew is NEW with its part of the path: the tunnel device, the
// migrated address on lo, migrate's table.
func healthyNew() state.Facts {
	return state.Facts{
		Links: []state.Link{{Name: "lo", Up: true}, {Name: "mig0", Type: "vxlan", Up: true}},
		Addrs: []state.Addr{{Dev: "lo", CIDR: netip.MustParsePrefix("198.51.100.10/32")}},
		Rules: []state.Rule{{Family: 4, Priority: 1100, Src: netip.MustParsePrefix("198.51.100.10/32"), Table: 4242, Protocol: 77}},
		Nft:   &state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000}},
		Listeners: []state.Listener{
			{Proto: "tcp", Addr: "0.0.0.0", Port: 80, Process: "nginx"}, {Proto: "tcp", Addr: "0.0.0.0", Port: 443, Process: "nginx"},
			{Proto: "tcp", Addr: "::", Port: 8080, Process: "api"}, {Proto: "udp", Addr: "0.0.0.0", Port: 53, Process: "unbound"},
		},
	}
}

// NEW's daemon died in the third week: OLD is drained and its verdict
// used to say OLD may go, while NEW refused every client of the service.
func TestDeadDaemonOnNew(t *testing.T) {
	c := parse(t)
	newFacts := healthyNew()
	newFacts.Listeners = newFacts.Listeners[2:] // nginx gone
	r := Build(Input{Config: c, Old: oldFacts(0), New: newFacts, Time: time.Now()})
	web := r.Services[0]
	if len(web.NewUnserved) != 2 || web.State != "NOT SERVED ON NEW: its new flows go to NEW, where nothing listens on port 80, 443: those clients are refused" {
		t.Errorf("web: %+v", web)
	}
	if api := r.Services[1]; len(api.NewUnserved) != 0 {
		t.Errorf("api is served on NEW: %+v", api)
	}
	if !strings.HasPrefix(r.Verdict, "NEW does not serve 1 service(s)") {
		t.Errorf("verdict: %q", r.Verdict)
	}
	want := `WARNING: nothing on NEW listens on tcp 198.51.100.10 port 80, 443 of service "web", whose new flows OLD sends to NEW: NEW refuses those clients (NEW listens on [::]:8080 (api))`
	if len(r.Notes) == 0 || !strings.HasPrefix(r.Notes[0], want) {
		t.Errorf("notes: %q", r.Notes)
	}
	// allow_unready: said in its state, but the operator chose it.
	c.Services[0].AllowUnready = true
	r = Build(Input{Config: c, Old: oldFacts(0), New: newFacts, Time: time.Now()})
	if !strings.HasPrefix(r.Services[0].State, "NOT SERVED ON NEW (allow_unready)") || strings.HasPrefix(r.Verdict, "NEW does not serve") {
		t.Errorf("allow_unready: %q, verdict %q", r.Services[0].State, r.Verdict)
	}
}

// NEW rebooted (its runtime state gone), or the tunnel dead: no service
// is called drained or on NEW, and OLD is never released.
func TestBrokenPathNeverReleasesOld(t *testing.T) {
	c := parse(t)
	for _, s := range c.Services {
		s.Stage, s.CanaryPercent = "new", 0
	}
	old := oldFacts(0)
	for i := range old.Nft.Spec.Services {
		old.Nft.Spec.Services[i].Percent = 100
	}
	old.Nft.Spec.Services = append(old.Nft.Spec.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53, Percent: 100})
	old.Stats.Flows = nil
	if r := Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()}); !strings.Contains(r.Verdict, "OLD may be switched off") || r.PathBroken != "" {
		t.Fatalf("baseline: %q %q", r.Verdict, r.PathBroken)
	}
	rebooted := state.Facts{Links: []state.Link{{Name: "lo", Up: true}, {Name: "eth0", Up: true}}}
	deadPing := healthyNew()
	for _, tc := range []struct {
		name string
		nw   state.Facts
		ping Probe
		want string
	}{
		{"NEW rebooted", rebooted, Probe{}, "NEW lost migrate's configuration (rebooted?): its tunnel device mig0, its migrate nft table, the address 198.51.100.10 missing"},
		{"NEW lost its address", func() state.Facts { f := healthyNew(); f.Addrs = nil; return f }(), Probe{}, "NEW lacks the address 198.51.100.10"},
		{"NEW's restore at boot failed", func() state.Facts {
			f := rebooted
			f.Boot = &state.Boot{Systemd: true, BootID: "b", Last: &state.BootRecord{Time: time.Now(), BootID: "b", Outcome: state.BootFailed, Error: "boom"}}
			return f
		}(), Probe{}, "NEW's restore at boot failed and left NEW as before migrate (its tunnel device mig0, its migrate nft table, the address 198.51.100.10 missing): run migrate apply"},
		{"tunnel passes nothing", deadPing, Probe{Target: "169.254.42.2", Error: "no answer within 1s"}, "OLD cannot ping NEW through the tunnel (no answer within 1s)"},
		{"OLD's local rule put back by hand", healthyNew(), Probe{}, "OLD has a rule `pref 0 lookup local` (IPv4) again, ahead of migrate's rule for moved flows (pref 900; added by hand?)"},
		{"NEW's rule removed (networkd?)", func() state.Facts { f := healthyNew(); f.Rules = nil; return f }(), Probe{}, "NEW lacks migrate's rule `from 198.51.100.10/32 lookup 4242` (removed by hand, or by systemd-networkd at a restart?): its answers leave by its own uplink, not the tunnel"},
		{"OLD's rule removed (networkd?)", healthyNew(), Probe{}, "OLD lacks migrate's rule `fwmark 0x20000/0x20000 lookup 4242` (IPv4; removed by hand, or by systemd-networkd at a restart?): OLD's own stack takes the moved flows"},
		{"OLD's sysctls put back", healthyNew(), Probe{}, "OLD has net.ipv4.ip_forward = 0 again, not 1 (sysctl --system or configuration management?); OLD checks the reverse path strictly on mig0 (rp_filter: all 1, mig0 0; migrate sets mig0 to 2); OLD has net.ipv4.conf.mig0.accept_local = 0 again, not 1"},
	} {
		old := old
		if tc.name == "OLD's rule removed (networkd?)" {
			old.Rules = old.Rules[1:]
		}
		if tc.name == "OLD's sysctls put back" {
			old.Sysctls = map[string]string{"net.ipv4.ip_forward": "0", "net.ipv4.conf.all.rp_filter": "1", "net.ipv4.conf.mig0.rp_filter": "0", "net.ipv4.conf.mig0.accept_local": "0"}
		}
		if tc.name == "OLD's local rule put back by hand" {
			old.Rules = []state.Rule{
				{Family: 4, Priority: 0, Table: state.TableLocal},
				{Family: 4, Priority: 900, Mark: 0x20000, Mask: 0x20000, Table: 4242, Protocol: 77},
				{Family: 4, Priority: 1000, Table: state.TableLocal, Protocol: 77},
			}
		}
		r := Build(Input{Config: c, Old: old, New: tc.nw, OldToNew: tc.ping, Time: time.Now()})
		if !strings.Contains(r.PathBroken, tc.want) || !strings.Contains(r.Verdict, "The path to NEW is broken") || strings.Contains(r.Verdict, "switched off") {
			t.Errorf("%s: path %q verdict %q", tc.name, r.PathBroken, r.Verdict)
		}
		for _, s := range r.Services {
			if s.Drained || !strings.HasPrefix(s.State, "BROKEN") {
				t.Errorf("%s: service %s: drained %v, %q", tc.name, s.Name, s.Drained, s.State)
			}
		}
	}
}

// OLD's daemon stopped too early (or crashed) while OLD still takes new
// flows of its service: stage old, the share a canary leaves, a port of
// a mixed service below 100%. Those clients are refused on OLD; a
// service at stage new whose OLD daemon is gone is the normal end.
func TestStoppedDaemonOnOld(t *testing.T) {
	c := parse(t)
	old := oldFacts(0)
	old.Listeners = nil // every daemon on OLD stopped
	r := Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	web, api, dns := r.Services[0], r.Services[1], r.Services[2]
	if len(web.OldUnserved) != 0 || strings.Contains(web.State, "NOT SERVED") {
		t.Errorf("web at stage new is flagged: %+v", web)
	}
	if len(api.OldUnserved) != 1 || api.State != "NOT SERVED ON OLD: 90% of its new flows stay on OLD, where nothing listens on port 8080: those clients are refused" {
		t.Errorf("api (canary 10%%): %+v", api)
	}
	if len(dns.OldUnserved) != 1 || dns.State != "NOT SERVED ON OLD: its new flows stay on OLD, where nothing listens on port 53: those clients are refused" {
		t.Errorf("dns (stage old): %+v", dns)
	}
	if !strings.HasPrefix(r.Verdict, "OLD does not serve 2 service(s) whose new flows still go to it") || strings.Contains(r.Verdict, "still needed: 2 service(s) are not fully on NEW") {
		t.Errorf("verdict: %q", r.Verdict)
	}
	wantNotes := []string{
		`WARNING: nothing on OLD listens on tcp 198.51.100.10 port 8080 of service "api", 90% of whose new flows stay on OLD: OLD refuses those clients. Start the service on OLD again, or, once NEW serves it, set stage = "new" and apply to send its new flows to NEW.`,
		`WARNING: nothing on OLD listens on udp 198.51.100.10 port 53 of service "dns", whose new flows stay on OLD: OLD refuses those clients.`,
	}
	for _, w := range wantNotes {
		found := false
		for _, n := range r.Notes {
			found = found || strings.HasPrefix(n, w)
		}
		if !found {
			t.Errorf("notes lack %q: %q", w, r.Notes)
		}
	}

	// Started again on another address only: still refused at the
	// service address, and the note says where OLD listens.
	old.Listeners = []state.Listener{{Proto: "tcp", Addr: "127.0.0.1", Port: 8080}, {Proto: "tcp", Addr: "::1", Port: 8080}, {Proto: "udp", Addr: "0.0.0.0", Port: 53}}
	r = Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	if len(r.Services[1].OldUnserved) != 1 || len(r.Services[2].OldUnserved) != 0 {
		t.Errorf("api on loopback only, dns back: %+v", r.Services)
	}
	if len(r.Notes) == 0 || !strings.Contains(r.Notes[0], "OLD refuses those clients (OLD listens on that port only at 127.0.0.1:8080, [::1]:8080).") {
		t.Errorf("notes: %q", r.Notes)
	}

	// allow_unready is about NEW: it does not silence OLD.
	old.Listeners = nil
	c.Services[1].AllowUnready = true
	r = Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	if !strings.HasPrefix(r.Services[1].State, "NOT SERVED ON OLD") || !strings.HasPrefix(r.Verdict, "OLD does not serve 2 service(s)") {
		t.Errorf("allow_unready: %q, verdict %q", r.Services[1].State, r.Verdict)
	}
	c.Services[1].AllowUnready = false

	// Another table DNATs on OLD (keep_dest: Docker): the listener may be
	// a container's, which OLD's namespace does not show. Not claimed.
	dnat := oldFacts(0)
	dnat.Listeners = nil
	dnat.Nft.Spec.KeepDest = true
	r = Build(Input{Config: c, Old: dnat, New: healthyNew(), Time: time.Now()})
	for _, s := range r.Services {
		if len(s.OldUnserved) != 0 || strings.Contains(s.State, "NOT SERVED") {
			t.Errorf("keep_dest: %+v", s)
		}
	}
	// Neither without migrate's table (nothing applied: where new flows
	// go is not migrate's to say), nor with OLD unread.
	for name, in := range map[string]Input{
		"no table":   {Config: c, Old: state.Facts{}, New: healthyNew(), Time: time.Now()},
		"OLD unread": {Config: c, New: healthyNew(), Time: time.Now(), Unreachable: map[string]string{"old": "down"}},
	} {
		for _, s := range Build(in).Services {
			if len(s.OldUnserved) != 0 {
				t.Errorf("%s: %+v", name, s)
			}
		}
	}

	// NEW unread: OLD's side is still known.
	r = Build(Input{Config: c, Old: old, Time: time.Now(), Unreachable: map[string]string{"new": "down"}})
	if len(r.Services[2].OldUnserved) != 1 || !strings.Contains(r.Verdict, "NEW could not be read (its side of the tunnel is unknown): OLD does not serve 2 service(s)") {
		t.Errorf("NEW unread: %+v, verdict %q", r.Services[2], r.Verdict)
	}

	// Mixed: only the port whose new flows stay on OLD.
	mixed := oldFacts(0)
	mixed.Listeners = nil
	mixed.Nft.Spec.Services[1].Percent = 0 // web's 443 back at old
	r = Build(Input{Config: c, Old: mixed, New: healthyNew(), Time: time.Now()})
	if w := r.Services[0]; w.LiveStage != StageMixed || len(w.OldUnserved) != 1 || w.OldUnserved[0] != 443 ||
		!strings.HasPrefix(w.State, "NOT SERVED ON OLD: part of its new flows stay on OLD (its ports are at different stages), where nothing listens on port 443") {
		t.Errorf("mixed web: %+v", w)
	}

	// Both ends down for a canary: every new client of it is refused.
	nw := healthyNew()
	nw.Listeners = nw.Listeners[:2] // api gone on NEW too
	r = Build(Input{Config: c, Old: old, New: nw, Time: time.Now()})
	if a := r.Services[1]; a.State != "NOT SERVED ON NEW NOR ON OLD: 10% of its new flows go to NEW, where nothing listens on port 8080, and 90% of its new flows stay on OLD, where nothing listens on port 8080: those clients are refused" {
		t.Errorf("api down on both: %q", a.State)
	}
	if !strings.Contains(r.Verdict, "NEW does not serve 1 service(s)") || !strings.Contains(r.Verdict, "OLD does not serve 2 service(s)") {
		t.Errorf("verdict with both: %q", r.Verdict)
	}

	// The plan already says new: apply would send them to NEW.
	c.Services[2].Stage = "new"
	r = Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	if !strings.HasSuffix(r.Services[2].State, "those clients are refused (the plan says new: run migrate apply)") {
		t.Errorf("pending: %q", r.Services[2].State)
	}
}

// At most 5 warnings about OLD, then one line counting the others.
func TestStoppedDaemonOnOldNotesAreBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString(planText[:strings.Index(planText, `service "web"`)])
	var svcs []state.NftService
	for i := 0; i < 8; i++ {
		fmt.Fprintf(&b, "service \"s%d\" {\n  address  = \"198.51.100.10\"\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"old\"\n}\n", i, 9000+i)
		svcs = append(svcs, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: uint16(9000 + i)})
	}
	c, err := config.Parse([]byte(b.String()), "status.hcl")
	if err != nil {
		t.Fatal(err)
	}
	old := state.Facts{Links: []state.Link{{Name: "mig0", Type: "vxlan", Up: true}}, Rules: oldFacts(0).Rules,
		Nft: &state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{Role: "old", Services: svcs}}}
	r := Build(Input{Config: c, Old: old, New: healthyNew(), Time: time.Now()})
	var warnings []string
	for _, n := range r.Notes {
		if strings.HasPrefix(n, "WARNING") {
			warnings = append(warnings, n)
		}
	}
	if len(warnings) != 6 || warnings[5] != "WARNING: and 3 more service(s) whose new flows stay on OLD, where nothing listens on their port (their STATE says NOT SERVED ON OLD)." {
		t.Errorf("warnings: %q", warnings)
	}
	for _, s := range r.Services {
		if !strings.HasPrefix(s.State, "NOT SERVED ON OLD") {
			t.Errorf("%s: %q", s.Name, s.State)
		}
	}
	if !strings.HasPrefix(r.Verdict, "OLD does not serve 8 service(s)") {
		t.Errorf("verdict: %q", r.Verdict)
	}
}
