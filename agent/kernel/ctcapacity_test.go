package kernel

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
)

func readProcInt(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

const ctMaxPath = "/proc/sys/net/netfilter/nf_conntrack_max"

// TestConntrackFacts reads, in a fresh namespace, what plan needs to
// judge conntrack capacity, against what the kernel does: 100 entries
// inserted by ctnetlink are the count; 15 TIME_WAIT sockets, 12 TCP
// sockets (a listener on v4 and one on v6, 5 connections with both ends
// here) and 3 UDP sockets (one IPv6) are the sockstat counts; the limit
// is writable exactly when the kernel lets this namespace write it (on
// Linux 6.1 and 6.18 not: outside the initial namespace it is the global
// value, read-only), and then a step that raises it fails and changes
// nothing.
func TestConntrackFacts(t *testing.T) {
	if !inNetns(t) {
		return
	}
	h := newHost(t)
	if _, err := os.Stat(ctMaxPath); errors.Is(err, fs.ErrNotExist) {
		f := facts(t, h, state.FactsRequest{Conntrack: true})
		if f.Conntrack == nil || f.Conntrack.Loaded || f.Conntrack.Max != 0 {
			t.Fatalf("no conntrack in the kernel, facts say %+v", f.Conntrack)
		}
		t.Skip("conntrack not loaded (modprobe nf_conntrack): only the not-loaded case was checked")
	}
	nh, err := netlink.NewHandle(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	for i := 0; i < 100; i++ {
		src := net.IPv4(10, 99, 0, byte(i)).To4()
		dst := net.IPv4(192, 0, 2, 99).To4()
		err := nh.ConntrackCreate(netlink.ConntrackTable, netlink.FAMILY_V4, &netlink.ConntrackFlow{
			FamilyType: netlink.FAMILY_V4,
			Forward:    netlink.IPTuple{SrcIP: src, DstIP: dst, Protocol: 17, SrcPort: 1000, DstPort: 9},
			Reverse:    netlink.IPTuple{SrcIP: dst, DstIP: src, Protocol: 17, SrcPort: 9, DstPort: 1000},
			TimeOut:    600,
		})
		if err != nil {
			t.Fatalf("insert conntrack entry %d: %v", i, err)
		}
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	var keep []net.Conn
	defer func() {
		for _, c := range keep {
			c.Close()
		}
	}()
	// 15 connections the server closes first: its side ends in TIME_WAIT.
	for i := 0; i < 15; i++ {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, c, s)
	}
	for _, a := range []string{"127.0.0.1:0", "127.0.0.1:0", "[::1]:0"} {
		u, err := net.ListenPacket("udp", a)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
	}

	want := state.Conntrack{Loaded: true, Count: 100, Max: readProcInt(t, ctMaxPath),
		Buckets: readProcInt(t, "/proc/sys/net/netfilter/nf_conntrack_buckets"), TCPInUse: 12, TCPTimeWait: 15, UDPInUse: 3}
	// Writing the value the limit has changes nothing, wherever it
	// succeeds: it asks the kernel whether this namespace may write it.
	want.MaxWritable = os.WriteFile(ctMaxPath, []byte(fmt.Sprint(want.Max)), 0) == nil
	var got state.Conntrack
	deadline := time.Now().Add(5 * time.Second)
	for {
		got = *facts(t, h, state.FactsRequest{Conntrack: true}).Conntrack
		if got == want || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // closing sockets settle
	}
	if got != want {
		t.Fatalf("conntrack facts\n got %+v\nwant %+v", got, want)
	}
	t.Logf("kernel %s, non-initial namespace: %+v", kernelRelease(), got)
	if got.MaxWritable {
		t.Logf("this kernel lets a non-initial namespace write %s: the refusal path is not exercised here", state.ConntrackMax)
		return
	}
	// The agent cannot raise it here: a clear error, the value unchanged.
	cur := fmt.Sprint(want.Max)
	err = h.Apply(update(state.Object{Sysctl: &state.Sysctl{Name: state.ConntrackMax, Value: cur}},
		state.Object{Sysctl: &state.Sysctl{Name: state.ConntrackMax, Value: fmt.Sprint(want.Max + 65536)}}))
	if err == nil || !strings.Contains(err.Error(), "nf_conntrack_max") {
		t.Fatalf("raising a read-only limit: %v", err)
	}
	if v := readProcInt(t, ctMaxPath); v != want.Max {
		t.Fatalf("limit %d after a failed raise, was %d", v, want.Max)
	}
}

// vmGuestEnv is set by scripts/vm-lane.sh inside its throw-away qemu guest
// only: TestConntrackMaxInitNet changes the initial namespace's limit,
// which must never happen on a real machine.
const vmGuestEnv = "MIGRATE_VM_GUEST"

// TestConntrackMaxInitNet: in the initial namespace (a host that runs
// migrate's agent directly) the limit is writable: facts say so, a raise
// is applied as the plan's update step, and the rollback's step restores
// the exact value. VM lane only.
func TestConntrackMaxInitNet(t *testing.T) {
	if os.Getenv(vmGuestEnv) != "1" {
		t.Skipf("changes the initial namespace's %s: runs only in the VM lane's guest (%s=1)", state.ConntrackMax, vmGuestEnv)
	}
	self, err1 := os.Readlink("/proc/self/ns/net")
	init, err2 := os.Readlink("/proc/1/ns/net")
	if err1 != nil || err2 != nil || self != init {
		t.Fatalf("not in the initial network namespace (%s vs %s: %v %v)", self, init, err1, err2)
	}
	h := newHost(t)
	f := facts(t, h, state.FactsRequest{Conntrack: true, Sysctls: []string{state.ConntrackMax}})
	if f.Conntrack == nil || !f.Conntrack.Loaded || !f.Conntrack.MaxWritable {
		t.Fatalf("initial namespace: %+v, want loaded and writable", f.Conntrack)
	}
	cur := f.Sysctls[state.ConntrackMax]
	if cur != fmt.Sprint(f.Conntrack.Max) {
		t.Fatalf("sysctl %q, conntrack facts %d", cur, f.Conntrack.Max)
	}
	raised := fmt.Sprint(f.Conntrack.Max + 65536)
	before := state.Object{Sysctl: &state.Sysctl{Name: state.ConntrackMax, Value: cur}}
	after := state.Object{Sysctl: &state.Sysctl{Name: state.ConntrackMax, Value: raised}}
	apply(t, h, update(before, after))
	t.Cleanup(func() { _ = os.WriteFile(ctMaxPath, []byte(cur), 0) })
	if v := fmt.Sprint(readProcInt(t, ctMaxPath)); v != raised {
		t.Fatalf("after the raise: %s, want %s", v, raised)
	}
	apply(t, h, update(after, before)) // what rollback applies
	if v := fmt.Sprint(readProcInt(t, ctMaxPath)); v != cur {
		t.Fatalf("after the rollback step: %s, want %s", v, cur)
	}
	t.Logf("kernel %s: %s %s -> %s -> %s", kernelRelease(), state.ConntrackMax, cur, raised, cur)
}
