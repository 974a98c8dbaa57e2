package apply_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/apply/applytest"
	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

const hcl = `
host "old" {
  ssh         = "root@198.51.100.10"
  known_hosts = "/dev/null"
}
host "new" {
  ssh         = "root@203.0.113.20"
  known_hosts = "/dev/null"
}
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
service "web" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [8080]
  stage    = "%s"
}
`

func baseFacts(ip, cidr string) state.Facts {
	return state.Facts{
		Hostname: "h",
		Links:    []state.Link{{Name: "lo", Type: "device", MTU: 65536, Up: true}, {Name: "eth0", Type: "veth", MTU: 1500, Up: true}},
		Addrs:    []state.Addr{{Dev: "lo", CIDR: netip.MustParsePrefix("127.0.0.1/8")}, {Dev: "eth0", CIDR: netip.MustParsePrefix(cidr)}},
		Rules: []state.Rule{
			{Family: 4, Priority: 0, Table: 255, Protocol: 2},
			{Family: 4, Priority: 32766, Table: 254, Protocol: 2},
			{Family: 4, Priority: 32767, Table: 253, Protocol: 2},
		},
		Sysctls: map[string]string{"net.ipv4.ip_forward": "0"},
	}
}

func load(t *testing.T, stage string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(strings.Replace(hcl, "%s", stage, 1)), "m.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type lab struct {
	hosts   map[string]*applytest.Fake
	journal *state.Journal
	path    string
}

func newLab(t testing.TB) *lab {
	return &lab{
		hosts: map[string]*applytest.Fake{
			plan.Old: applytest.NewFake(baseFacts("198.51.100.10", "198.51.100.10/24")),
			plan.New: applytest.NewFake(baseFacts("203.0.113.20", "203.0.113.20/24")),
		},
		journal: state.NewJournal(),
		path:    filepath.Join(t.TempDir(), "state.json"),
	}
}

func (l *lab) executor() *apply.Executor {
	return &apply.Executor{
		Hosts:   map[string]apply.Host{plan.Old: l.hosts[plan.Old], plan.New: l.hosts[plan.New]},
		Journal: l.journal, StatePath: l.path,
	}
}

func (l *lab) plan(t testing.TB, c *config.Config) *plan.Plan {
	t.Helper()
	facts := map[string]state.Facts{}
	for name, h := range l.hosts {
		f, _ := h.Facts(context.Background(), plan.FactsRequest(c, name))
		facts[name] = f
	}
	p, err := plan.Make(c, facts, l.journal, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Transition test: apply, plan again (no changes), roll back (identical).
func TestApplyThenNoChangesThenRollbackRestoresExactly(t *testing.T) {
	l := newLab(t)
	before := map[string]string{plan.Old: l.hosts[plan.Old].Dump(), plan.New: l.hosts[plan.New].Dump()}
	c := load(t, "new")
	p := l.plan(t, c)
	if p.Empty() {
		t.Fatal("first plan is empty")
	}
	if err := l.executor().Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if p2 := l.plan(t, c); !p2.Empty() {
		t.Fatalf("second plan not empty: %+v", p2.Hosts)
	}
	// The journal on disk is what rollback reads.
	j, err := state.LoadJournal(l.path)
	if err != nil {
		t.Fatal(err)
	}
	l.journal = j
	if err := l.executor().Rollback(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	for h, want := range before {
		if got := l.hosts[h].Dump(); got != want {
			t.Errorf("host %s after rollback:\n%s\nwant:\n%s", h, got, want)
		}
	}
	if err := l.executor().Rollback(context.Background(), false); err != apply.ErrNothingToRollBack {
		t.Errorf("second rollback: %v", err)
	}
}

// A failing step undoes the whole apply and leaves the hosts as they were.
func TestFailedStepUndoesApply(t *testing.T) {
	for _, failKey := range []string{
		"nft table inet migrate",                // last step on old
		"rule v4 pref 1000 lookup local",        // on new (first host)
		"route v4 table 4242 unicast 0.0.0.0/0", // on new
	} {
		t.Run(failKey, func(t *testing.T) {
			l := newLab(t)
			before := l.hosts[plan.Old].Dump() + l.hosts[plan.New].Dump()
			l.hosts[plan.Old].FailOn = failKey
			if failKey != "nft table inet migrate" {
				l.hosts[plan.Old].FailOn = ""
				l.hosts[plan.New].FailOn = failKey
			}
			err := l.executor().Apply(context.Background(), l.plan(t, load(t, "new")))
			if err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("err = %v", err)
			}
			if after := l.hosts[plan.Old].Dump() + l.hosts[plan.New].Dump(); after != before {
				t.Errorf("hosts changed:\n%s\nwant\n%s", after, before)
			}
			if n := len(l.journal.Active()); n != 0 {
				t.Errorf("%d journal entries still active", n)
			}
		})
	}
}

// A tunnel that does not pass traffic stops apply before OLD diverts flows.
func TestTunnelCheckFailureStopsBeforeDivert(t *testing.T) {
	l := newLab(t)
	l.hosts[plan.Old].PingFail = true
	before := l.hosts[plan.Old].Dump() + l.hosts[plan.New].Dump()
	err := l.executor().Apply(context.Background(), l.plan(t, load(t, "new")))
	if err == nil || !strings.Contains(err.Error(), "tunnel check failed") {
		t.Fatalf("err = %v", err)
	}
	for _, s := range l.hosts[plan.Old].Applied {
		if s.Action == state.Create && s.Object().Nft != nil {
			t.Errorf("nft table was created before the tunnel was verified")
		}
	}
	if after := l.hosts[plan.Old].Dump() + l.hosts[plan.New].Dump(); after != before {
		t.Errorf("hosts changed after failed verify")
	}
}

// An underlay that carries less than the tunnel's MTU (a smaller MTU on
// the way, fragments dropped) fails apply with the largest size that made
// the round trip, before OLD diverts anything; the hosts are as before.
func TestTunnelFullSizeCheck(t *testing.T) {
	l := newLab(t)
	l.hosts[plan.New].PathMTU = 1350
	p := l.plan(t, load(t, "new"))
	if p.Verify == nil || p.Verify.OldSize != 1450 || p.Verify.NewSize != 1450 {
		t.Fatalf("plan's full-size check: %+v, want 1450 both ways (1500 underlay less VXLAN's 50)", p.Verify)
	}
	before := l.hosts[plan.Old].Dump() + l.hosts[plan.New].Dump()
	err := l.executor().Apply(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "new's pings of 1450 bytes (the tunnel's MTU) to old's inner address 169.254.42.1 through the tunnel got no answer, and 1350 bytes is the largest size") || !strings.Contains(err.Error(), "Set `mtu = 1350` in the tunnel block") {
		t.Fatalf("err = %v", err)
	}
	if after := l.hosts[plan.Old].Dump() + l.hosts[plan.New].Dump(); after != before {
		t.Errorf("hosts changed after a failed full-size check")
	}
	// OLD's check passed at once; NEW's searched, in a dozen tries.
	if got := l.hosts[plan.Old].PingSizes; len(got) != 1 || got[0] != 1450 {
		t.Errorf("OLD's full-size pings: %v, want [1450]", got)
	}
	if n := len(l.hosts[plan.New].PingSizes); n > 13 {
		t.Errorf("NEW's search took %d pings: %v", n, l.hosts[plan.New].PingSizes)
	}
	// Nothing passes beyond the small pings: no size to suggest.
	l.hosts[plan.New].PathMTU = 500
	if err := l.executor().Apply(context.Background(), p); err == nil || !strings.Contains(err.Error(), "nor did pings of 576 bytes") {
		t.Fatalf("err = %v", err)
	}
}

// Moving the service back to old takes its ports out of the nft sets but
// keeps the plumbing: flows already going to NEW drain there.
func TestStageBackToOldKeepsDrainPath(t *testing.T) {
	l := newLab(t)
	if err := l.executor().Apply(context.Background(), l.plan(t, load(t, "new"))); err != nil {
		t.Fatal(err)
	}
	p := l.plan(t, load(t, "old"))
	var dump []string
	for _, h := range p.Hosts {
		for _, s := range h.Steps {
			dump = append(dump, h.Host+" "+s.String())
		}
	}
	got := strings.Join(dump, "\n")
	if len(dump) != 1 || !strings.HasPrefix(got, "old ~ nft") || !strings.Contains(got, "-> table inet migrate: role old, mark 0x20000, 0 port(s) to NEW, 1 counted") {
		t.Errorf("moving back should only empty OLD's service set; plan:\n%s", got)
	}
	if err := l.executor().Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if p := l.plan(t, load(t, "old")); !p.Empty() {
		t.Errorf("not converged")
	}
	// Rolling back everything removes the plumbing too.
	if err := l.executor().Rollback(context.Background(), true); err != nil {
		t.Fatal(err)
	}
}
