package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/kernel"
	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// These tests send hostile steps to a real agent (Serve with kernel.Host,
// and the revert timer) in a fresh network namespace holding objects that
// are not migrate's, and check that none of those objects changes:
// `nft list ruleset`, `ip rule`, `ip route show table all`, links,
// addresses and every net.ipv4/net.ipv6 sysctl are compared before and
// after.

const agentNetnsEnv = "AGENT_TEST_IN_NETNS"

// inNetns runs the calling test in a fresh network namespace (as
// agent/kernel's tests do): it re-executes the test binary under
// `unshare --net` and returns true in the child.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(agentNetnsEnv) == "1" {
		sh(t, "ip", "link", "set", "lo", "up")
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	for _, tool := range []string{"unshare", "ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip(tool + " not found")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "--", os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), agentNetnsEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	for _, line := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		t.Log("netns: " + line)
	}
	if err != nil {
		t.Fatalf("test in network namespace failed: %v", err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+t.Name()) {
		t.Fatalf("test did not pass in the network namespace")
	}
	return false
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// snapshot is the namespace's networking as text, by part.
type snapshot map[string]string

func takeSnapshot(t *testing.T) snapshot {
	t.Helper()
	s := snapshot{
		"nft":     sh(t, "nft", "list", "ruleset"),
		"rule4":   sh(t, "ip", "-4", "rule"),
		"rule6":   sh(t, "ip", "-6", "rule"),
		"route4":  sh(t, "ip", "-4", "route", "show", "table", "all"),
		"route6":  sh(t, "ip", "-6", "route", "show", "table", "all"),
		"links":   sh(t, "ip", "-d", "link", "show"),
		"addrs":   sh(t, "ip", "addr", "show"),
		"sysctls": sysctlSnapshot(t),
	}
	return s
}

// sysctlSnapshot reads every readable file under /proc/sys/net/ipv4,
// ipv6 and netfilter.
func sysctlSnapshot(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, dir := range []string{"/proc/sys/net/ipv4", "/proc/sys/net/ipv6", "/proc/sys/net/netfilter"} {
		_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o444 == 0 {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			lines = append(lines, strings.TrimPrefix(p, "/proc/sys/")+" = "+strings.TrimSpace(string(b)))
			return nil
		})
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (a snapshot) diff(t *testing.T, what string, b snapshot) {
	t.Helper()
	for _, k := range []string{"nft", "rule4", "rule6", "route4", "route6", "links", "addrs", "sysctls"} {
		if a[k] != b[k] {
			t.Errorf("%s changed %s:\nbefore:\n%s\nafter:\n%s", what, k, lineDiff(a[k], b[k]), lineDiff(b[k], a[k]))
		}
	}
}

// lineDiff lists the lines of a that b lacks.
func lineDiff(a, b string) string {
	have := map[string]bool{}
	for _, l := range strings.Split(b, "\n") {
		have[l] = true
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if !have[l] {
			out = append(out, "  "+l)
		}
	}
	return strings.Join(out, "\n")
}

// foreignSetup builds, with ip and nft, what another admin has on the
// host: an uplink, a vxlan overlay of its own, an nft filter table, rules,
// routes in its own tables, in main, and one in table 4242 (migrate's
// default table).
func foreignSetup(t *testing.T) {
	t.Helper()
	// No DAD: addresses must not change state between snapshots.
	for _, s := range []string{"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"} {
		sh(t, "sysctl", "-qw", s)
	}
	sh(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
	sh(t, "ip", "link", "set", "up0", "up")
	sh(t, "ip", "link", "set", "up0p", "up")
	sh(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
	sh(t, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "up0", "nodad")
	sh(t, "ip", "link", "add", "vxf0", "type", "vxlan", "id", "100", "local", "192.0.2.1", "remote", "192.0.2.9", "dstport", "4789")
	sh(t, "ip", "link", "set", "vxf0", "up")
	sh(t, "ip", "addr", "add", "10.9.0.1/24", "dev", "vxf0")
	sh(t, "nft", "add table inet filter; add chain inet filter input { type filter hook input priority 0; policy accept; }; add rule inet filter input tcp dport 22 accept")
	sh(t, "nft", "add table arp filter")
	sh(t, "ip", "rule", "add", "pref", "200", "fwmark", "0x1/0x1", "lookup", "100")
	sh(t, "ip", "-6", "rule", "add", "pref", "300", "from", "2001:db8:ffff::1", "lookup", "101")
	sh(t, "ip", "route", "add", "default", "via", "192.0.2.254")
	sh(t, "ip", "route", "add", "default", "via", "192.0.2.254", "table", "100")
	sh(t, "ip", "route", "add", "blackhole", "192.0.2.99", "table", "4242")
	sh(t, "ip", "-6", "route", "add", "blackhole", "2001:db8:ffff::/48", "table", "101")
	sh(t, "sysctl", "-qw", "net.ipv6.conf.up0.accept_ra=0")
	sh(t, "sysctl", "-qw", "net.ipv4.conf.up0.rp_filter=1")
}

// ownLink and friends are migrate's own objects in the namespace.
var (
	ownLink  = state.Link{Name: "mig0", Type: "vxlan", Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("192.0.2.2"), VNI: 4242, Port: 4789, MTU: 1450, Up: true}
	ownAddr  = state.Addr{Dev: "mig0", CIDR: netip.MustParsePrefix("169.254.42.1/30")}
	ownRule  = state.Rule{Family: 4, Priority: 900, Mark: 0x20000, Mask: 0x20000, Table: 4242, Protocol: 77}
	ownRoute = state.Route{Family: 4, Table: 4242, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "mig0", Gw: netip.MustParseAddr("169.254.42.2"), Protocol: 77}
)

func ownObjects() []state.Object {
	l, a, r, ro := ownLink, ownAddr, ownRule, ownRoute
	return []state.Object{
		{Link: &l},
		{Sysctl: &state.Sysctl{Name: "net.ipv4.conf.mig0.rp_filter", Value: "2"}},
		{Rule: &r},
		{Addr: &a},
		{Route: &ro},
	}
}

func newKernelHost(t *testing.T) *kernel.Host {
	t.Helper()
	h, err := kernel.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// agentApply sends each step as an apply request to one agent session
// and returns each answer's error ("" when it succeeded).
func agentApply(t *testing.T, k Kernel, hf *HostFiles, steps ...state.Step) []string {
	t.Helper()
	var frames [][]byte
	for i, s := range steps {
		frames = append(frames, request(t, uint64(i+1), proto.MethodApply, proto.ApplyParams{Step: s, Run: "own1", Seq: i + 1}))
	}
	resps, err := serve(t, k, hf, frames...)
	if err != nil || len(resps) != len(steps) {
		t.Fatalf("serve: %d responses for %d steps, %v", len(resps), len(steps), err)
	}
	out := make([]string, len(resps))
	for i, r := range resps {
		if r.Error != nil {
			out[i] = r.Error.Message
		}
	}
	return out
}

func obj(v any) *state.Object {
	switch x := v.(type) {
	case state.Link:
		return &state.Object{Link: &x}
	case state.Sysctl:
		return &state.Object{Sysctl: &x}
	case state.Rule:
		return &state.Object{Rule: &x}
	case state.Addr:
		return &state.Object{Addr: &x}
	case state.Route:
		return &state.Object{Route: &x}
	case state.NftTable:
		return &state.Object{Nft: &x}
	}
	panic(v)
}

func stCreate(v any) state.Step { return state.Step{Host: "old", Action: state.Create, After: obj(v)} }
func stDelete(v any) state.Step { return state.Step{Host: "old", Action: state.Delete, Before: obj(v)} }
func stUpdate(a, b any) state.Step {
	return state.Step{Host: "old", Action: state.Update, Before: obj(a), After: obj(b)}
}

// hostileSteps are requests that pass validation (well formed) but name
// objects that are not migrate's, or migrate's tunnel as something it is
// not. Each must be refused and change nothing.
func hostileSteps() []struct {
	name string
	step state.Step
} {
	filter := okNft()
	filter.Name = "filter"
	filter.Spec.TunnelDev, filter.Spec.Underlay = "mig0", nil
	vethAsVxlan := ownLink
	vethAsVxlan.Name = "up0"
	foreignVx := ownLink
	foreignVx.Name = "vxf0"
	foreignVxExact := state.Link{Name: "vxf0", Type: "vxlan", Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("192.0.2.8"), VNI: 100, Port: 4789, MTU: 1450, Up: true}
	wrongMig := ownLink
	wrongMig.VNI = 77
	wrongMigType := ownLink
	wrongMigType.Type, wrongMigType.VNI, wrongMigType.Port = "gre", 0, 0
	sys := func(n, v string) state.Sysctl { return state.Sysctl{Name: n, Value: v} }
	return []struct {
		name string
		step state.Step
	}{
		{"delete nft inet filter", stDelete(filter)},
		{"update nft inet filter", stUpdate(filter, filter)},
		{"delete veth described as vxlan", stDelete(vethAsVxlan)},
		{"update veth described as vxlan", stUpdate(vethAsVxlan, vethAsVxlan)},
		{"delete foreign vxlan with migrate's identity", stDelete(foreignVx)},
		{"delete foreign vxlan, another remote", stDelete(foreignVxExact)},
		{"delete mig0 recorded with another vni", stDelete(wrongMig)},
		{"delete mig0 recorded as gre", stDelete(wrongMigType)},
		{"set disable_ipv6", stCreate(sys("net.ipv6.conf.all.disable_ipv6", "1"))},
		{"update disable_ipv6 of up0", stUpdate(sys("net.ipv6.conf.up0.disable_ipv6", "0"), sys("net.ipv6.conf.up0.disable_ipv6", "1"))},
		{"rp_filter of the uplink", stUpdate(sys("net.ipv4.conf.up0.rp_filter", "1"), sys("net.ipv4.conf.up0.rp_filter", "0"))},
		{"accept_local of the uplink", stCreate(sys("net.ipv4.conf.up0.accept_local", "1"))},
		// A direct tunnel's segment sysctls on a non-tunnel device:
		// only an update to (or back from) the value it sets.
		{"arp_announce of the uplink to 1", stUpdate(sys("net.ipv4.conf.up0.arp_announce", "0"), sys("net.ipv4.conf.up0.arp_announce", "1"))},
		{"send_redirects of the uplink created", stCreate(sys("net.ipv4.conf.up0.send_redirects", "0"))},
		{"accept_ra 0 -> 1 is not migrate's", stUpdate(sys("net.ipv6.conf.up0.accept_ra", "0"), sys("net.ipv6.conf.up0.accept_ra", "1"))},
		{"tcp sysctl", stCreate(sys("net.ipv4.tcp_timestamps", "0"))},
		{"delete foreign fwmark rule", stDelete(state.Rule{Family: 4, Priority: 200, Mark: 1, Mask: 1, Table: 100})},
		{"delete foreign rule with a forged tag", stDelete(state.Rule{Family: 4, Priority: 200, Mark: 1, Mask: 1, Table: 100, Protocol: 77})},
		{"delete foreign v6 rule", stDelete(state.Rule{Family: 6, Priority: 300, Src: netip.MustParsePrefix("2001:db8:ffff::1/128"), Table: 101})},
		{"delete the kernel's local rule without a moved one", stDelete(state.Rule{Family: 4, Priority: 0, Table: 255, Protocol: 2})},
		{"delete the kernel's v6 local rule without a moved one", stDelete(state.Rule{Family: 6, Priority: 0, Table: 255, Protocol: 2})},
		{"delete main rule", stDelete(state.Rule{Family: 4, Priority: 32766, Table: 254, Protocol: 2})},
		{"delete default rule", stDelete(state.Rule{Family: 6, Priority: 32767, Table: 253, Protocol: 2})},
		{"delete main default route", stDelete(state.Route{Family: 4, Table: 254, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("192.0.2.254"), Dev: "up0", Protocol: 3})},
		{"delete main default route tagged", stDelete(state.Route{Family: 4, Table: 254, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("192.0.2.254"), Dev: "up0", Protocol: 77})},
		{"delete local route", stDelete(state.Route{Family: 4, Table: 255, Type: "unicast", Dst: netip.MustParsePrefix("192.0.2.1/32"), Dev: "up0", Protocol: 77})},
		{"delete route of table 100", stDelete(state.Route{Family: 4, Table: 100, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("192.0.2.254"), Dev: "up0", Protocol: 3})},
		{"replace route of table 100", stCreate(state.Route{Family: 4, Table: 100, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("169.254.42.2"), Dev: "mig0", Protocol: 77})},
		{"replace foreign blackhole in 4242", stCreate(state.Route{Family: 4, Table: 4242, Type: "unicast", Dst: netip.MustParsePrefix("192.0.2.99/32"), Dev: "mig0", Protocol: 77})},
		{"update foreign blackhole in 4242", stUpdate(state.Route{Family: 4, Table: 4242, Type: "blackhole", Dst: netip.MustParsePrefix("192.0.2.99/32"), Protocol: 77}, state.Route{Family: 4, Table: 4242, Type: "blackhole", Dst: netip.MustParsePrefix("192.0.2.99/32"), Protocol: 77})},
		{"delete foreign v6 blackhole", stDelete(state.Route{Family: 6, Table: 101, Type: "blackhole", Dst: netip.MustParsePrefix("2001:db8:ffff::/48"), Protocol: 77})},
		{"delete uplink address", stDelete(state.Addr{Dev: "up0", CIDR: netip.MustParsePrefix("192.0.2.1/24")})},
		{"delete uplink v6 address", stDelete(state.Addr{Dev: "up0", CIDR: netip.MustParsePrefix("2001:db8::1/64")})},
		{"add address to the uplink", stCreate(state.Addr{Dev: "up0", CIDR: netip.MustParsePrefix("192.0.2.77/32")})},
		{"delete loopback", stDelete(state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix("127.0.0.1/8")})},
		{"delete ::1", stDelete(state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix("::1/128")})},
	}
}

// TestHostileRequestsInNetns: migrate's own objects are created and
// deleted through a real agent; every hostile request in between is
// refused with "refused" and changes nothing at all.
func TestHostileRequestsInNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	foreignSetup(t)
	h := newKernelHost(t)
	hf := &HostFiles{Dir: stateDir(t)}
	clean := takeSnapshot(t)

	var up []state.Step
	for _, o := range ownObjects() {
		o := o
		up = append(up, state.Step{Host: "old", Action: state.Create, After: &o})
	}
	for i, e := range agentApply(t, h, hf, up...) {
		if e != "" {
			t.Fatalf("migrate's own %s refused: %s", up[i], e)
		}
	}
	withOwn := takeSnapshot(t)

	for _, c := range hostileSteps() {
		errs := agentApply(t, h, hf, c.step)
		switch {
		case errs[0] == "":
			t.Errorf("%s: accepted", c.name)
		case !strings.Contains(errs[0], "refused"):
			t.Errorf("%s: failed, but not refused by the ownership check: %s", c.name, errs[0])
		default:
			t.Logf("%s: %s", c.name, errs[0])
		}
		withOwn.diff(t, c.name, takeSnapshot(t))
	}
	j, err := hf.Journal()
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Entries) != len(up) {
		t.Errorf("host journal holds %d entries, want only migrate's %d: refused steps must not be journalled", len(j.Entries), len(up))
	}

	// Migrate's own objects still go, in reverse.
	var down []state.Step
	for i := len(up) - 1; i >= 0; i-- {
		down = append(down, up[i].Inverse())
	}
	for i, e := range agentApply(t, h, hf, down...) {
		if e != "" {
			t.Fatalf("undo of migrate's own %s refused: %s", down[i], e)
		}
	}
	clean.diff(t, "create and delete of migrate's own objects", takeSnapshot(t))
}

// TestWatchdogRefusesForeignJournalInNetns: the revert timer replays a
// host journal with forged entries. It undoes migrate's own entry (the
// tunnel) and refuses every other one; nothing foreign changes.
func TestWatchdogRefusesForeignJournalInNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	foreignSetup(t)
	h := newKernelHost(t)
	hf := &HostFiles{Dir: stateDir(t)}
	clean := takeSnapshot(t)

	// A real apply of the tunnel (seq 1), then forged entries written
	// straight into the host journal: each one's undo would hit a foreign
	// object.
	l := ownLink
	if e := agentApply(t, h, hf, stCreate(l)); e[0] != "" {
		t.Fatal(e[0])
	}
	sys := func(n, v string) state.Sysctl { return state.Sysctl{Name: n, Value: v} }
	filter := okNft()
	filter.Name = "filter"
	vethAsVxlan := ownLink
	vethAsVxlan.Name = "up0"
	forged := []state.Step{
		stCreate(filter),
		stCreate(vethAsVxlan),
		stUpdate(sys("net.ipv6.conf.all.disable_ipv6", "1"), sys("net.ipv6.conf.all.disable_ipv6", "0")),
		stCreate(state.Rule{Family: 4, Priority: 200, Mark: 1, Mask: 1, Table: 100}),
		stCreate(state.Rule{Family: 4, Priority: 32766, Table: 254, Protocol: 2}),
		stCreate(state.Route{Family: 4, Table: 254, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Gw: netip.MustParseAddr("192.0.2.254"), Dev: "up0", Protocol: 3}),
		stDelete(state.Route{Family: 4, Table: 4242, Type: "unicast", Dst: netip.MustParsePrefix("192.0.2.99/32"), Dev: "mig0", Protocol: 77}),
		stCreate(state.Addr{Dev: "up0", CIDR: netip.MustParsePrefix("192.0.2.1/24")}),
		stUpdate(sys("net.ipv4.conf.up0.rp_filter", "0"), sys("net.ipv4.conf.up0.rp_filter", "1")),
	}
	for i, s := range forged {
		p := proto.ApplyParams{Step: s, Run: "own1", Seq: i + 2}
		if err := hf.BeginStep(p); err != nil {
			t.Fatal(err)
		}
		if err := hf.EndStep(p, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A run whose deadline passed: the timer decides to revert at once.
	if err := hf.writeRun(&runRecord{Run: "own1", State: proto.RunArmed, BootID: bootID(), DeadlineNS: monoNow() - int64(time.Second)}); err != nil {
		t.Fatal(err)
	}
	err := RunWatchdog(hf, h, "own1")
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("revert timer returned %v, want a refusal", err)
	}
	// The tunnel is gone: migrate's own entry was undone.
	clean.diff(t, "revert timer", takeSnapshot(t))
	j, err := hf.Journal()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range j.Entries {
		if undone := e.RolledBack != nil; undone != (e.Seq == 1) {
			t.Errorf("entry %d (%s): rolled back %v", e.Seq, e.Step, undone)
		}
	}
}

// TestHostileFuzzInNetns sends random well-formed steps built from the
// namespace's foreign objects, mutated (a forged protocol, another kind,
// another table, another action), to a real agent. Some are migrate-shaped
// creates and may succeed; none may change or remove a foreign object.
// The seed is logged; MIGRATE_OWNER_FUZZ_SEED and _N replay or extend.
func TestHostileFuzzInNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	foreignSetup(t)
	h := newKernelHost(t)
	hf := &HostFiles{Dir: stateDir(t)}
	seed := time.Now().UnixNano()
	if s, err := strconv.ParseInt(os.Getenv("MIGRATE_OWNER_FUZZ_SEED"), 10, 64); err == nil {
		seed = s
	}
	n := 400
	if v, err := strconv.Atoi(os.Getenv("MIGRATE_OWNER_FUZZ_N")); err == nil {
		n = v
	}
	t.Logf("seed %d, %d steps", seed, n)
	rnd := rand.New(rand.NewSource(seed))

	f, err := h.Facts(state.FactsRequest{Tables: []int{100, 101, 253, 254, 255, 4242}, Sysctls: []string{
		"net.ipv4.ip_forward", "net.ipv6.conf.all.disable_ipv6", "net.ipv4.conf.up0.rp_filter", "net.ipv4.conf.vxf0.rp_filter",
		"net.ipv6.conf.up0.accept_ra", "net.ipv4.tcp_syncookies", "net.ipv4.conf.all.rp_filter", "net.ipv6.conf.up0.forwarding",
	}})
	if err != nil {
		t.Fatal(err)
	}
	var pool []state.Object
	for i := range f.Links {
		pool = append(pool, state.Object{Link: &f.Links[i]})
	}
	for i := range f.Addrs {
		pool = append(pool, state.Object{Addr: &f.Addrs[i]})
	}
	for i := range f.Rules {
		pool = append(pool, state.Object{Rule: &f.Rules[i]})
	}
	for i := range f.Routes {
		pool = append(pool, state.Object{Route: &f.Routes[i]})
	}
	for k, v := range f.Sysctls {
		pool = append(pool, state.Object{Sysctl: &state.Sysctl{Name: k, Value: v}})
	}
	for _, name := range []string{"filter", "migrate", "nat"} {
		nt := okNft()
		nt.Name = name
		nt.Spec.TunnelDev, nt.Spec.Underlay = "vxf0", nil
		pool = append(pool, state.Object{Nft: &nt})
	}
	before := takeSnapshot(t)

	mutate := func(o state.Object) state.Object {
		b, _ := jsonClone(o)
		switch {
		case b.Link != nil:
			l := b.Link
			switch rnd.Intn(4) {
			case 0:
				l.Type = []state.TunnelType{"vxlan", "gre", "ip6gre", "wireguard"}[rnd.Intn(4)]
			case 1:
				l.Type, l.VNI, l.Port, l.Local, l.Remote = "vxlan", uint32(rnd.Intn(200)+1), 4789, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2."+strconv.Itoa(rnd.Intn(10)))
			case 2:
				l.Name = []string{"up0", "up0p", "vxf0", "lo"}[rnd.Intn(4)]
			}
		case b.Rule != nil:
			if rnd.Intn(2) == 0 {
				b.Rule.Protocol = 77
			}
			if rnd.Intn(3) == 0 {
				b.Rule.Table = []int{100, 4242, 253, 254, 255}[rnd.Intn(5)]
			}
		case b.Route != nil:
			if rnd.Intn(2) == 0 {
				b.Route.Protocol = 77
			}
			if rnd.Intn(3) == 0 {
				b.Route.Table = []int{100, 101, 4242, 254, 255}[rnd.Intn(5)]
			}
			if rnd.Intn(4) == 0 {
				b.Route.Type = []string{"unicast", "throw", "blackhole"}[rnd.Intn(3)]
				if b.Route.Type != "unicast" {
					b.Route.Dev, b.Route.Gw = "", netip.Addr{}
				}
			}
		case b.Addr != nil:
			if rnd.Intn(3) == 0 {
				b.Addr.Dev = []string{"lo", "up0", "vxf0"}[rnd.Intn(3)]
			}
		case b.Sysctl != nil:
			b.Sysctl.Value = []string{"0", "1", "2"}[rnd.Intn(3)]
		}
		return b
	}
	accepted := 0
	for i := 0; i < n; i++ {
		a := mutate(pool[rnd.Intn(len(pool))])
		var s state.Step
		switch rnd.Intn(3) {
		case 0:
			s = state.Step{Host: "old", Action: state.Delete, Before: &a}
		case 1:
			b := mutate(a)
			s = state.Step{Host: "old", Action: state.Update, Before: &a, After: &b}
		default:
			s = state.Step{Host: "old", Action: state.Create, After: &a}
		}
		if validateStep(s) != nil {
			continue // the shape check's business, tested elsewhere
		}
		if e := agentApply(t, h, hf, s); e[0] == "" {
			accepted++
			t.Logf("accepted: %s", s)
		}
	}
	t.Logf("%d of %d steps accepted", accepted, n)
	after := takeSnapshot(t)
	foreignKept(t, before, after)
}

// withoutTable is an `nft list ruleset` text without the table that
// starts with the line head.
func withoutTable(ruleset, head string) string {
	var out []string
	in := false
	for _, l := range strings.Split(ruleset, "\n") {
		switch {
		case l == head:
			in = true
		case in && l == "}":
			in = false
		case !in:
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// foreignKept checks that every foreign object of before is still in
// after, unchanged. Additions are allowed (a migrate-shaped create may
// succeed); so are the values of sysctls migrate may set.
func foreignKept(t *testing.T, before, after snapshot) {
	t.Helper()
	if withoutTable(before["nft"], "table inet migrate {") != withoutTable(after["nft"], "table inet migrate {") {
		// Only table inet migrate may have appeared.
		t.Errorf("nft ruleset changed:\n%s\n---\n%s", before["nft"], after["nft"])
	}
	for _, k := range []string{"rule4", "rule6", "route4", "route6"} {
		miss := lineDiff(before[k], after[k])
		if strings.HasPrefix(k, "rule") && strings.Contains(after[k], "lookup local proto 77") {
			// The recorded local-rule move: the kernel's rule may go
			// once migrate's moved one is in place.
			miss = strings.ReplaceAll(miss, "  0:\tfrom all lookup local", "")
		}
		var kept []string
		for _, l := range strings.Split(miss, "\n") {
			if strings.TrimSpace(l) != "" && !strings.Contains(l, "dev vxf0 ") {
				kept = append(kept, l) // vxf0's own routes: see below
			}
		}
		if len(kept) > 0 {
			t.Errorf("%s lost or changed:\n%s", k, strings.Join(kept, "\n"))
		}
	}
	// vxf0 is of a tunnel kind: the agent cannot tell it from migrate's
	// tunnel, so its addresses and conf sysctls are not checked here (the
	// known gap, see README Safety). Its link is.
	// Nor its link: a delete that states vxf0's exact identity (copied
	// from facts) is taken as migrate's tunnel. The fuzz finds that; it is
	// the documented limit of checking identity without a tag on links.
	for _, dev := range []string{"up0", "up0p", "lo"} {
		for _, k := range []string{"links", "addrs"} {
			b, a := devBlock(before[k], dev), devBlock(after[k], dev)
			if miss := lineDiff(b, a); miss != "" {
				t.Errorf("%s of %s lost or changed:\n%s", k, dev, miss)
			}
		}
	}
	ownNames := func(line string) bool {
		name := strings.ReplaceAll(strings.SplitN(line, " = ", 2)[0], "/", ".")
		if _, err := ownSysctl(name); err == nil {
			return true
		}
		// ownSysctl names devices with "/" for "."; the tunnel-kind
		// device here is vxf0 (see the README: its conf sysctls are
		// the one gap).
		return false
	}
	bm, am := map[string]string{}, map[string]string{}
	for _, l := range strings.Split(before["sysctls"], "\n") {
		bm[strings.SplitN(l, " = ", 2)[0]] = l
	}
	for _, l := range strings.Split(after["sysctls"], "\n") {
		am[strings.SplitN(l, " = ", 2)[0]] = l
	}
	// Forwarding switches (migrate's) carry the per-device forwarding
	// and IPv4 accept_redirects with them.
	derived := func(k string) bool {
		return bm["net/ipv4/ip_forward"] != am["net/ipv4/ip_forward"] && strings.HasPrefix(k, "net/ipv4/conf/") && (strings.HasSuffix(k, "/forwarding") || strings.HasSuffix(k, "/accept_redirects")) ||
			bm["net/ipv6/conf/all/forwarding"] != am["net/ipv6/conf/all/forwarding"] && strings.HasPrefix(k, "net/ipv6/conf/") && strings.HasSuffix(k, "/forwarding")
	}
	for k, l := range bm {
		if strings.Contains(k, "/vxf0/") {
			continue // see above
		}
		if k == "net/netfilter/nf_conntrack_count" {
			// A count, not a setting: once a migrate table (it
			// uses conntrack) was created here, the namespace's
			// packets are tracked. The pool's nft tables render
			// since their fixture lost the no_arp on role old
			// that the renderer refuses.
			continue
		}
		if am[k] != l && !ownNames(l) && !derived(k) {
			t.Errorf("sysctl %s changed: %q -> %q", k, l, am[k])
		}
	}
}

// devBlock is the part of `ip link`/`ip addr` output about dev.
func devBlock(out, dev string) string {
	var b strings.Builder
	in := false
	for _, l := range strings.Split(out, "\n") {
		if len(l) > 0 && l[0] != ' ' {
			f := strings.Fields(l)
			in = len(f) > 1 && (strings.TrimSuffix(f[1], ":") == dev || strings.HasPrefix(f[1], dev+"@"))
		}
		if in {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func jsonClone(o state.Object) (state.Object, error) {
	var c state.Object
	b, err := jsonMarshal(o)
	if err != nil {
		return c, err
	}
	err = jsonUnmarshal(b, &c)
	return c, err
}

func jsonMarshal(v any) ([]byte, error)   { return json.Marshal(v) }
func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
