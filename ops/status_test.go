package ops

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/apply/applytest"
	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/remote"
	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/status"
)

const testHCL = `
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
  stage    = "new"
}
`

func hostFacts(cidr string) state.Facts {
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

// fakeConn is a connected fake host: applytest's kernel, a ping that
// answers in 2ms unless the host's ping fails, and a record of Close.
type fakeConn struct {
	*applytest.Fake
	name     string
	ip       string
	factsErr error
	closed   bool
	// listeners are the sockets the host listens on (applytest's
	// kernel has none).
	listeners []state.Listener
	routeSrc  string                           // RouteGet's answer; "" fails
	log       func(format string, args ...any) // the hosts' shared event log
}

func (c *fakeConn) Facts(ctx context.Context, req state.FactsRequest) (state.Facts, error) {
	if c.factsErr != nil {
		return state.Facts{}, c.factsErr
	}
	f, err := c.Fake.Facts(ctx, req)
	if req.Listeners {
		f.Listeners = c.listeners
	}
	return f, err
}

func (c *fakeConn) PingRTT(ctx context.Context, addr string, _ int, _ time.Duration) (time.Duration, error) {
	if err := c.Ping(ctx, addr); err != nil {
		return 0, err
	}
	return 2 * time.Millisecond, nil
}

func (c *fakeConn) Close() error { c.closed = true; return nil }

// The rest of ops.Host: the agent's locks, revert timer and journal as a
// log of calls; the journal is empty (nothing for Reconcile to adopt).

func (c *fakeConn) Reached() (string, int) { return c.ip, 22 }
func (c *fakeConn) Err() error             { return nil }
func (c *fakeConn) Journal(context.Context) (*state.Journal, error) {
	return state.NewJournal(), nil
}
func (c *fakeConn) Prune(_ context.Context, ids []state.EntryID) ([]state.EntryID, error) {
	return ids, nil
}
func (c *fakeConn) Lock(_ context.Context, info proto.LockInfo) error {
	c.log("%s lock %s", c.name, info.ID)
	return nil
}
func (c *fakeConn) ForceUnlock(_ context.Context, id string) error {
	c.log("%s force-unlock %s", c.name, id)
	return nil
}
func (c *fakeConn) Arm(_ context.Context, run string, timeout time.Duration) error {
	c.log("%s arm %s", c.name, timeout)
	return nil
}
func (c *fakeConn) Prepare(_ context.Context, run string, _ time.Duration) (proto.RunStatus, error) {
	c.log("%s prepare", c.name)
	return proto.RunStatus{Run: run, State: proto.RunPrepared}, nil
}
func (c *fakeConn) Confirm(_ context.Context, run string) (proto.RunStatus, error) {
	c.log("%s confirm", c.name)
	return proto.RunStatus{Run: run, State: proto.RunConfirmed}, nil
}
func (c *fakeConn) Abort(_ context.Context, run string) (proto.RunStatus, error) {
	c.log("%s abort", c.name)
	return proto.RunStatus{Run: run, State: proto.RunReverted}, nil
}
func (c *fakeConn) RunStatus(_ context.Context, run string) (proto.RunStatus, error) {
	return proto.RunStatus{Run: run, State: proto.RunConfirmed}, nil
}
func (c *fakeConn) Probe(_ context.Context, addr string, port uint16, _ uint32) error {
	c.log("%s probe %s %d", c.name, addr, port)
	return nil
}
func (c *fakeConn) RouteGetNeigh(ctx context.Context, addr string) (proto.RouteGetResult, error) {
	return c.RouteGet(ctx, addr)
}

func (c *fakeConn) RouteGet(context.Context, string) (proto.RouteGetResult, error) {
	if c.routeSrc == "" {
		return proto.RouteGetResult{}, errors.New("no route lookup in the fake")
	}
	return proto.RouteGetResult{Src: c.routeSrc, Dev: "eth0"}, nil
}
func (c *fakeConn) WGKey(context.Context, string) (string, error) { return "", nil }

var _ Host = (*fakeConn)(nil)

// fakeHosts is the dialer of two fake hosts; down makes a host refuse
// connections, dials counts them.
type fakeHosts struct {
	mu     sync.Mutex
	events []string
	// Per host: the address the connection reached, what it listens on,
	// its source address towards the peer.
	reached   map[string]string
	listeners map[string][]state.Listener
	routeSrc  map[string]string
	hosts     map[string]*applytest.Fake
	down      map[string]bool
	dials     map[string]int
	conns     map[string]*fakeConn
}

func newFakeHosts() *fakeHosts {
	return &fakeHosts{
		hosts: map[string]*applytest.Fake{plan.Old: applytest.NewFake(hostFacts("198.51.100.10/24")), plan.New: applytest.NewFake(hostFacts("203.0.113.20/24"))},
		down:  map[string]bool{}, dials: map[string]int{}, conns: map[string]*fakeConn{},
		reached: map[string]string{plan.Old: "198.51.100.10", plan.New: "203.0.113.20"},
		// NEW serves the service: apply's readiness check passes.
		listeners: map[string][]state.Listener{plan.New: {{Proto: "tcp", Addr: "0.0.0.0", Port: 8080, Process: "web"}}},
		routeSrc:  map[string]string{},
	}
}

func (f *fakeHosts) dial(_ context.Context, t remote.Target) (*fakeConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials[t.Name]++
	if f.down[t.Name] {
		return nil, errors.New("host " + t.Name + ": dial tcp: connection refused")
	}
	c := &fakeConn{Fake: f.hosts[t.Name], name: t.Name, ip: f.reached[t.Name], log: f.log,
		listeners: f.listeners[t.Name], routeSrc: f.routeSrc[t.Name]}
	f.conns[t.Name] = c
	return c, nil
}

func (f *fakeHosts) log(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, fmt.Sprintf(format, args...))
}

func loadTestConfig(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(testHCL), "m.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// applyOnFakes applies the plan to the fake hosts as apply would.
func applyOnFakes(t *testing.T, f *fakeHosts, cfg *config.Config) {
	t.Helper()
	facts := map[string]state.Facts{}
	for name, h := range f.hosts {
		facts[name], _ = h.Facts(context.Background(), plan.FactsRequest(cfg, name))
	}
	j := state.NewJournal()
	p, err := plan.Make(cfg, facts, j, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	ex := &apply.Executor{Hosts: map[string]apply.Host{plan.Old: f.hosts[plan.Old], plan.New: f.hosts[plan.New]},
		Journal: j, StatePath: filepath.Join(t.TempDir(), "state.json")}
	if err := ex.Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// The status operation, whole, against two fake hosts: what it reads
// before and after an apply, with a host down, and how it recovers.
func TestReadStatus(t *testing.T) {
	ctx := context.Background()
	cfg := loadTestConfig(t)
	f := newFakeHosts()
	s := NewSession(ConfigTargets(cfg.Hosts, time.Second), f.dial)
	defer s.Close()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return at }

	r, err := ReadStatus(ctx, s, cfg, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Unreachable) != 0 || len(r.Services) != 1 || r.Services[0].LiveStage != status.StageAbsent || r.Tunnel == nil || r.Tunnel.Up() || !r.Time.Equal(at) {
		t.Fatalf("before apply: %+v", r)
	}

	applyOnFakes(t, f, cfg)
	r, err = ReadStatus(ctx, s, cfg, &r, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.Services[0].LiveStage != "new" || !r.Tunnel.OldLinkUp || !r.Tunnel.NewLinkUp ||
		r.Tunnel.OldToNew.Target != cfg.Tunnel.NewInner.Addr().String() || r.Tunnel.NewToOld.Target != cfg.Tunnel.OldInner.Addr().String() ||
		r.Tunnel.OldToNew.RTT != 2*time.Millisecond || !r.Tunnel.Up() {
		t.Fatalf("after apply: services %+v tunnel %+v", r.Services, r.Tunnel)
	}
	if f.dials[plan.Old] != 1 || f.dials[plan.New] != 1 {
		t.Errorf("a second reading dialled again: %v", f.dials)
	}

	// NEW's reading fails: it is dropped (closed), reported, and OLD's
	// view stands, with OLD's ping through the tunnel.
	f.conns[plan.New].factsErr = errors.New("agent: broken pipe")
	newConn := f.conns[plan.New]
	r, err = ReadStatus(ctx, s, cfg, &r, now)
	if err != nil {
		t.Fatal(err)
	}
	if r.Reached(plan.New) || !r.Reached(plan.Old) || !strings.Contains(r.Unreachable[plan.New], "collect facts: agent: broken pipe") || !newConn.closed {
		t.Fatalf("NEW's facts failed: unreachable %v, closed %v", r.Unreachable, newConn.closed)
	}
	if !r.Tunnel.OldToNew.OK() || r.Tunnel.NewToOld.Target != "" || r.Services[0].LiveStage != "new" {
		t.Errorf("NEW unread: tunnel %+v, services %+v", r.Tunnel, r.Services)
	}

	// NEW refuses connections now: tried again at every reading, its
	// error without the "host new: " prefix the report adds itself.
	f.down[plan.New] = true
	r, err = ReadStatus(ctx, s, cfg, &r, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Unreachable[plan.New]; got != "dial tcp: connection refused" || f.dials[plan.New] != 2 {
		t.Errorf("NEW down: %q after %d dials", got, f.dials[plan.New])
	}

	// Both down: no report, an error naming both.
	f.down[plan.Old] = true
	s.Drop(plan.Old)
	if _, err := ReadStatus(ctx, s, cfg, &r, now); err == nil || !strings.Contains(err.Error(), "neither host could be read") {
		t.Errorf("both down: %v", err)
	}

	// Both back: a full reading again.
	f.down = map[string]bool{}
	if r, err = ReadStatus(ctx, s, cfg, &r, now); err != nil || len(r.Unreachable) != 0 || !r.Tunnel.Up() {
		t.Errorf("both back: %v %+v", err, r)
	}
}

// Connect is all or nothing: one host failing leaves nothing connected.
func TestSessionConnectAllOrNothing(t *testing.T) {
	cfg := loadTestConfig(t)
	f := newFakeHosts()
	f.down[plan.New] = true
	s := NewSession(ConfigTargets(cfg.Hosts, time.Second), f.dial)
	err := s.Connect(context.Background())
	if err == nil || !strings.Contains(err.Error(), "host new") || len(s.Clients) != 0 {
		t.Fatalf("NEW down: %v, clients %v", err, s.Names())
	}
	if c := f.conns[plan.Old]; c != nil && !c.closed {
		t.Error("OLD's connection was left open")
	}
	f.down = map[string]bool{}
	if err := s.Connect(context.Background()); err != nil || strings.Join(s.Names(), ",") != "new,old" {
		t.Fatalf("both up: %v %v", err, s.Names())
	}
}

// WatchStatus: one reading, or a stream until ^C; a single partial
// reading is shown and then an error naming the host.
func TestWatchStatus(t *testing.T) {
	cfg := loadTestConfig(t)
	f := newFakeHosts()
	f.down[plan.New] = true
	s := NewSession(ConfigTargets(cfg.Hosts, time.Second), f.dial)
	defer s.Close()
	var shown []int
	err := WatchStatus(context.Background(), s, cfg, false, time.Millisecond, func(r status.Report, n int) { shown = append(shown, n) })
	if err == nil || err.Error() != "host new could not be read: the report above is partial" || len(shown) != 1 {
		t.Fatalf("one partial reading: %v, shown %v", err, shown)
	}
	f.down = map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	shown = nil
	err = WatchStatus(ctx, s, cfg, true, time.Millisecond, func(r status.Report, n int) {
		shown = append(shown, n)
		if n == 2 {
			cancel() // ^C
		}
	})
	if err != nil || len(shown) != 3 || shown[2] != 2 {
		t.Errorf("watch until ^C: %v, shown %v", err, shown)
	}
}
