package kernel

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/internal/needroot"
	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
)

const netnsEnv = "KERNEL_TEST_IN_NETNS"

// slow returns d multiplied by $MIGRATE_E2E_SLOW (lab/scenario.SlowEnv,
// 3 in the VM lane's emulated guest), d when it is unset or not above 1.
func slow(d time.Duration) time.Duration {
	f, err := strconv.ParseFloat(strings.TrimSpace(os.Getenv("MIGRATE_E2E_SLOW")), 64)
	if err != nil || f <= 1 {
		return d
	}
	return time.Duration(float64(d) * f)
}

// inNetns runs the calling test in a fresh, anonymous network namespace: it
// re-executes the test binary under `unshare --net` and reports its result.
// It returns true in the child, where the test body should run.
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == "1" {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			t.Fatalf("lo: %v", err)
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			t.Fatalf("set lo up: %v", err)
		}
		return true
	}
	needroot.Skip(t, "needs root to create network namespaces")
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), slow(2*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "--", os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	for _, line := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		t.Log("netns: " + line)
	}
	if err != nil {
		t.Fatalf("test in network namespace failed: %v", err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+t.Name()) && !strings.Contains(out.String(), "--- SKIP: "+t.Name()) {
		t.Fatalf("test did not run in the network namespace")
	}
	return false
}

func newHost(t *testing.T) *Host {
	t.Helper()
	h, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func facts(t *testing.T, h *Host, req state.FactsRequest) state.Facts {
	t.Helper()
	f, err := h.Facts(req)
	if err != nil {
		t.Fatalf("facts: %v", err)
	}
	return f
}

func apply(t *testing.T, h *Host, s state.Step) {
	t.Helper()
	if err := h.Apply(s); err != nil {
		t.Fatalf("apply %s: %v", s, err)
	}
}

func create(o state.Object) state.Step { return state.Step{Host: "t", Action: state.Create, After: &o} }
func del(o state.Object) state.Step    { return state.Step{Host: "t", Action: state.Delete, Before: &o} }
func update(a, b state.Object) state.Step {
	return state.Step{Host: "t", Action: state.Update, Before: &a, After: &b}
}

// find returns the object of facts f with the key of o.
func find(f state.Facts, o state.Object) *state.Object {
	var all []state.Object
	for i := range f.Links {
		all = append(all, state.Object{Link: &f.Links[i]})
	}
	for i := range f.Addrs {
		all = append(all, state.Object{Addr: &f.Addrs[i]})
	}
	for i := range f.Rules {
		all = append(all, state.Object{Rule: &f.Rules[i]})
	}
	for i := range f.Routes {
		all = append(all, state.Object{Route: &f.Routes[i]})
	}
	for k, v := range f.Sysctls {
		all = append(all, state.Object{Sysctl: &state.Sysctl{Name: k, Value: v}})
	}
	if f.Nft != nil {
		all = append(all, state.Object{Nft: f.Nft})
	}
	for _, x := range all {
		if x.Key() == o.Key() {
			return &x
		}
	}
	return nil
}

func addDummy(t *testing.T, name string) {
	t.Helper()
	// No dummy module here: a veth pair, both ends up.
	run(t, "ip", "link", "add", name, "type", "veth", "peer", "name", name+"p")
	run(t, "ip", "link", "set", name, "up")
	run(t, "ip", "link", "set", name+"p", "up")
}

func TestRoundTrip(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	addDummy(t, "up0")
	run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
	run(t, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "up0", "nodad")

	vx := state.Object{Link: &state.Link{Name: "mig0", Type: "vxlan", Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("192.0.2.2"), VNI: 4242, Port: 4789, MAC: "02:6d:67:fe:2a:01", MTU: 1450, Up: true}}
	objs := []state.Object{
		vx,
		{Addr: &state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix("198.51.100.10/32")}},
		{Addr: &state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix("2001:db8:5::10/128"), NoDAD: true}},
		{Addr: &state.Addr{Dev: "mig0", CIDR: netip.MustParsePrefix("169.254.77.1/30")}},
		{Addr: &state.Addr{Dev: "mig0", CIDR: netip.MustParsePrefix("fe80::42:1/64"), NoDAD: true}},
		{Rule: &state.Rule{Family: 4, Priority: 1100, Mark: 0x20000, Mask: 0x20000, Table: 4242, Protocol: 0xfa}},
		{Rule: &state.Rule{Family: 6, Priority: 1100, Mark: 0x20000, Mask: 0x20000, Table: 4242, Protocol: 0xfa}},
		{Rule: &state.Rule{Family: 4, Priority: 500, Dst: netip.MustParsePrefix("198.51.100.10/32"), IifName: "lo", Table: 254, Protocol: 0xfa}},
		{Rule: &state.Rule{Family: 4, Priority: 1200, Src: netip.MustParsePrefix("198.51.100.10/32"), Table: 4242, Protocol: 0xfa}},
		{Rule: &state.Rule{Family: 6, Priority: 1200, Src: netip.MustParsePrefix("2001:db8:5::10/128"), Table: 4242, Protocol: 0xfa}},
		{Route: &state.Route{Family: 4, Table: 4242, Type: "unicast", Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: "mig0", Gw: netip.MustParseAddr("169.254.77.2"), Protocol: 0xfa}},
		{Route: &state.Route{Family: 4, Table: 4242, Type: "throw", Dst: netip.MustParsePrefix("192.0.2.2/32"), Protocol: 0xfa}},
		{Route: &state.Route{Family: 6, Table: 4242, Type: "throw", Dst: netip.MustParsePrefix("2001:db8::2/128"), Protocol: 0xfa}},
		{Route: &state.Route{Family: 6, Table: 4242, Type: "unicast", Dst: netip.MustParsePrefix("::/0"), Dev: "up0", Gw: netip.MustParseAddr("2001:db8::2"), Protocol: 0xfa}},
		{Sysctl: &state.Sysctl{Name: "net.ipv4.conf.mig0.rp_filter", Value: "2"}},
	}
	req := state.FactsRequest{Tables: []int{4242}, Sysctls: []string{"net.ipv4.conf.mig0.rp_filter"}}
	for _, o := range objs {
		apply(t, h, create(o))
		// Creating what exists identically succeeds.
		apply(t, h, create(o))
		got := find(facts(t, h, req), o)
		if got == nil {
			t.Fatalf("after create, facts lack %s", o.Key())
		}
		if !got.Equal(o) {
			t.Fatalf("after create of %s, facts show %s", o, got)
		}
	}
	// Delete in reverse. Deleting a sysctl is a no-op (its value goes with
	// the device migrate created; existing values are restored by update).
	apply(t, h, del(objs[len(objs)-1]))
	if v := facts(t, h, req).Sysctls["net.ipv4.conf.mig0.rp_filter"]; v != "2" {
		t.Fatalf("sysctl delete changed the value to %q", v)
	}
	for i := len(objs) - 2; i >= 0; i-- {
		o := objs[i]
		apply(t, h, del(o))
		if got := find(facts(t, h, req), o); got != nil {
			t.Fatalf("after delete, facts still show %s", got)
		}
		apply(t, h, del(o))
	}
	f := facts(t, h, req)
	if len(f.Routes) != 0 {
		t.Fatalf("routes left: %v", f.Routes)
	}
	if _, ok := f.Sysctls["net.ipv4.conf.mig0.rp_filter"]; ok {
		t.Fatalf("sysctl of a deleted link reported")
	}
}

func TestFactsBasics(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	addDummy(t, "up0")
	run(t, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "up0", "nodad")
	run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
	f := facts(t, h, state.FactsRequest{Sysctls: []string{"net.ipv4.ip_forward", "net.ipv4.conf.nope0.rp_filter"}})
	if f.Hostname == "" || f.Kernel == "" {
		t.Errorf("hostname %q kernel %q", f.Hostname, f.Kernel)
	}
	if v, ok := f.Sysctls["net.ipv4.ip_forward"]; !ok || v != "0" {
		t.Errorf("ip_forward = %q, %v", v, ok)
	}
	if _, ok := f.Sysctls["net.ipv4.conf.nope0.rp_filter"]; ok {
		t.Errorf("missing sysctl reported")
	}
	var addrs []string
	for _, a := range f.Addrs {
		addrs = append(addrs, fmt.Sprintf("%s %s %v", a.Dev, a.CIDR, a.NoDAD))
		if strings.HasPrefix(a.CIDR.String(), "fe80:") {
			t.Errorf("link-local address reported: %v", a)
		}
	}
	want := "lo 127.0.0.1/8 false|lo ::1/128 false|up0 192.0.2.1/24 false|up0 2001:db8::1/64 true"
	if got := strings.Join(addrs, "|"); got != want {
		t.Errorf("addrs:\n got %s\nwant %s", got, want)
	}
	var rules []string
	for _, r := range f.Rules {
		rules = append(rules, r.String())
	}
	want = "v4 pref 0 lookup local proto 2|v4 pref 32766 lookup main proto 2|v4 pref 32767 lookup default proto 2|" +
		"v6 pref 0 lookup local proto 2|v6 pref 32766 lookup main proto 2"
	if got := strings.Join(rules, "|"); got != want {
		t.Errorf("rules:\n got %s\nwant %s", got, want)
	}
	var lo *state.Link
	for i := range f.Links {
		if f.Links[i].Name == "lo" {
			lo = &f.Links[i]
		}
	}
	if lo == nil || !lo.Up || lo.Type != "device" {
		t.Errorf("lo: %+v", lo)
	}
}

// TestLocalRuleMove moves the local rule to pref 1000 and back; `ip rule`
// must be byte-identical afterwards, for both families.
func TestLocalRuleMove(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	for _, fam := range []int{4, 6} {
		flag := "-" + fmt.Sprint(fam)
		before := run(t, "ip", flag, "rule")
		var local *state.Rule
		for _, r := range facts(t, h, state.FactsRequest{}).Rules {
			if r.Family == fam && r.Priority == 0 && r.Table == state.TableLocal {
				r := r
				local = &r
			}
		}
		if local == nil {
			t.Fatalf("no v%d pref 0 local rule", fam)
		}
		moved := state.Object{Rule: &state.Rule{Family: fam, Priority: 1000, Table: state.TableLocal}}
		orig := state.Object{Rule: local}
		apply(t, h, create(moved))
		apply(t, h, del(orig))
		during := run(t, "ip", flag, "rule")
		if strings.HasPrefix(during, "0:\t") || strings.Contains(during, "\n0:\t") || !strings.Contains(during, "1000:\tfrom all lookup local") {
			t.Fatalf("v%d after move:\n%s", fam, during)
		}
		apply(t, h, create(orig))
		apply(t, h, del(moved))
		after := run(t, "ip", flag, "rule")
		if after != before {
			t.Fatalf("v%d ip rule differs after restore:\nbefore:\n%s\nafter:\n%s", fam, before, after)
		}
		if d1, d2 := run(t, "ip", "-d", flag, "rule"), before; d1 == "" || d2 == "" {
			t.Fatal("empty ip rule")
		}
	}
}

func TestVxlanAndSysctl(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	addDummy(t, "up0")
	run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
	l := state.Link{Name: "migvx", Type: "vxlan", Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("192.0.2.2"), VNI: 7, Port: 4789, MAC: "02:6d:67:00:00:07", MTU: 1450, Up: true}
	apply(t, h, create(state.Object{Link: &l}))
	f := facts(t, h, state.FactsRequest{Sysctls: []string{"net.ipv4.conf.migvx.rp_filter"}})
	got := find(f, state.Object{Link: &l})
	if got == nil || *got.Link != l {
		t.Fatalf("facts show %v, want %v", got, l)
	}
	out := run(t, "ip", "-d", "link", "show", "migvx")
	for _, w := range []string{"mtu 1450", "vxlan id 7", "remote 192.0.2.2", "local 192.0.2.1", "dstport 4789", "UP"} {
		if !strings.Contains(out, w) {
			t.Errorf("ip -d link lacks %q:\n%s", w, out)
		}
	}
	// Update in place: MTU and up.
	l2 := l
	l2.MTU, l2.Up = 1400, false
	apply(t, h, update(state.Object{Link: &l}, state.Object{Link: &l2}))
	if got := find(facts(t, h, state.FactsRequest{}), state.Object{Link: &l2}); got == nil || *got.Link != l2 {
		t.Fatalf("after update facts show %v", got)
	}
	// Update that recreates: another VNI.
	l3 := l
	l3.VNI = 8
	apply(t, h, update(state.Object{Link: &l2}, state.Object{Link: &l3}))
	if got := find(facts(t, h, state.FactsRequest{}), state.Object{Link: &l3}); got == nil || *got.Link != l3 {
		t.Fatalf("after recreate facts show %v", got)
	}
	// Creating over a different existing link fails.
	if err := h.Apply(create(state.Object{Link: &l})); err == nil {
		t.Fatalf("create over a different link succeeded")
	}

	name := "net.ipv4.conf.migvx.rp_filter"
	old := f.Sysctls[name]
	if old == "" {
		t.Fatalf("sysctl %s not read: %v", name, f.Sysctls)
	}
	apply(t, h, update(state.Object{Sysctl: &state.Sysctl{Name: name, Value: old}}, state.Object{Sysctl: &state.Sysctl{Name: name, Value: "2"}}))
	if v := facts(t, h, state.FactsRequest{Sysctls: []string{name}}).Sysctls[name]; v != "2" {
		t.Fatalf("%s = %q after write", name, v)
	}
	b, _ := os.ReadFile("/proc/sys/net/ipv4/conf/migvx/rp_filter")
	if strings.TrimSpace(string(b)) != "2" {
		t.Fatalf("proc says %q", b)
	}
	apply(t, h, del(state.Object{Link: &l3}))
}

func TestPing(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	rtt, err := h.Ping("127.0.0.1", 2, time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rtt <= 0 || rtt >= time.Second {
		t.Fatalf("round-trip time over loopback %v: want 0 < rtt < 1s", rtt)
	}
	if _, err := h.Ping("::1", 2, time.Second, 0); err != nil {
		t.Fatal(err)
	}
	// Full-size pings: exactly size bytes, never fragmented. With lo at
	// 1400, 1400 bytes pass both families and 1401 do not.
	run(t, "ip", "link", "set", "dev", "lo", "mtu", "1400")
	defer run(t, "ip", "link", "set", "dev", "lo", "mtu", "65536")
	for _, addr := range []string{"127.0.0.1", "::1"} {
		if _, err := h.Ping(addr, 2, time.Second, 1400); err != nil {
			t.Errorf("%s, 1400 bytes over a 1400-byte lo: %v", addr, err)
		}
		if _, err := h.Ping(addr, 1, 200*time.Millisecond, 1401); err == nil {
			t.Errorf("%s, 1401 bytes over a 1400-byte lo: passed (fragmented?)", addr)
		}
	}
	addDummy(t, "up0")
	run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
	start := time.Now()
	if _, err := h.Ping("192.0.2.99", 2, 200*time.Millisecond, 0); err == nil {
		t.Fatal("ping to nobody succeeded")
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("ping did not honour its timeout")
	}
}

func TestNftStateFile(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	tbl := state.NftTable{Family: "inet", Name: "mign", Spec: state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000}}
	apply(t, h, create(state.Object{Nft: &tbl}))
	if _, err := os.Stat(filepath.Join(h.StateDir, "nft-mign.json")); err != nil {
		t.Fatal(err)
	}
	f := facts(t, h, state.FactsRequest{NftTable: "mign"})
	if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(state.Object{Nft: &tbl}) {
		t.Fatalf("facts: %v drift %q", f.Nft, f.NftDrift)
	}
	out := run(t, "nft", "list", "table", "inet", "mign")
	if !strings.Contains(out, "tcp option maxseg size set rt mtu") || strings.Contains(out, "prerouting") {
		t.Fatalf("role new:\n%s", out)
	}
	// Losing the record is drift.
	os.Remove(filepath.Join(h.StateDir, "nft-mign.json"))
	f = facts(t, h, state.FactsRequest{NftTable: "mign"})
	if f.NftDrift == "" || f.Nft == nil || f.Nft.Spec.Role != "" {
		t.Fatalf("no drift without record: %v %q", f.Nft, f.NftDrift)
	}
	t.Logf("drift: %s", f.NftDrift)
	apply(t, h, del(state.Object{Nft: &tbl}))
	apply(t, h, del(state.Object{Nft: &tbl}))
	if f := facts(t, h, state.FactsRequest{NftTable: "mign"}); f.Nft != nil {
		t.Fatalf("table still there")
	}
}

// TestRuleProtocolUpdate: the kernel treats the protocol as part of a
// rule's identity, so an update that only changes it adds the new rule and
// then deletes the old one.
func TestRuleProtocolUpdate(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	a := state.Rule{Family: 4, Priority: 1300, Src: netip.MustParsePrefix("192.0.2.0/24"), Table: 4242, Protocol: 0xfa}
	b := a
	b.Protocol = 0xfb
	apply(t, h, create(state.Object{Rule: &a}))
	apply(t, h, update(state.Object{Rule: &a}, state.Object{Rule: &b}))
	var got []string
	for _, r := range facts(t, h, state.FactsRequest{}).Rules {
		if r.Priority == 1300 {
			got = append(got, r.String())
		}
	}
	if len(got) != 1 || got[0] != b.String() {
		t.Fatalf("rules at 1300: %v", got)
	}
	apply(t, h, del(state.Object{Rule: &b}))
}

// A vxlan link keeps the address migrate gives it when it is made again,
// and a link made before migrate fixed addresses gets it in place.
func TestVxlanMACFixed(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	addDummy(t, "up0")
	run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "up0")
	random := state.Link{Name: "migvx", Type: "vxlan", Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("192.0.2.2"), VNI: 7, Port: 4789, MTU: 1450, Up: true}
	apply(t, h, create(state.Object{Link: &random}))
	fixed := random
	fixed.MAC = "02:6d:67:fe:2a:01"
	apply(t, h, update(state.Object{Link: &random}, state.Object{Link: &fixed}))
	if got := find(facts(t, h, state.FactsRequest{}), state.Object{Link: &fixed}); got == nil || *got.Link != fixed {
		t.Fatalf("after the update facts show %v, want %v", got, fixed)
	}
	apply(t, h, del(state.Object{Link: &fixed}))
	apply(t, h, create(state.Object{Link: &fixed}))
	if out := run(t, "ip", "link", "show", "migvx"); !strings.Contains(out, "link/ether 02:6d:67:fe:2a:01") {
		t.Fatalf("made again with another address:\n%s", out)
	}
}
