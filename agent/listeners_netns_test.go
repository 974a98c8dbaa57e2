package agent

import (
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/agent/kernel"
	"github.com/opsmigrate/migrate/state"
)

// TestListenersFromKernel reads the listeners of a fresh network namespace
// holding a TCP listener on an address and one on the dual-stack wildcard,
// a bound UDP server, an established TCP connection (both ends) and a
// connected UDP socket: exactly the three servers come back, with this
// process as their owner when asked, and the kernel's state filter keeps
// the connections out of the dump itself (status reads OLD's listeners at
// every --watch reading: a busy server's connections are not copied out).
func TestListenersFromKernel(t *testing.T) {
	if !inNetns(t) {
		return
	}
	tl, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	tw, err := net.Listen("tcp", "[::]:8443")
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Close()
	us, err := net.ListenPacket("udp4", "0.0.0.0:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer us.Close()
	c, err := net.Dial("tcp", "127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	uc, err := net.Dial("udp", "127.0.0.1:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()

	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	me := strings.TrimSpace(string(comm))
	want := []state.Listener{
		{Proto: state.TCP, Addr: "127.0.0.1", Port: 8080},
		{Proto: state.TCP, Addr: "::", Port: 8443},
		{Proto: state.UDP, Addr: "0.0.0.0", Port: 5353},
	}
	for _, withOwners := range []bool{false, true} {
		got, err := listeners(withOwners)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("owners %v: got %+v, want %+v", withOwners, got, want)
		}
		for i, w := range want {
			g := got[i]
			if g.Proto != w.Proto || g.Addr != w.Addr || g.Port != w.Port {
				t.Errorf("owners %v: listener %d: %+v, want %+v", withOwners, i, g, w)
			}
			if withOwners && g.Process != me || !withOwners && g.Process != "" {
				t.Errorf("owners %v: listener %+v: process %q (this test is %q)", withOwners, g, g.Process, me)
			}
		}
	}
	// The state filter is the kernel's: the dump itself holds no
	// connection.
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, q := range []struct {
			proto  uint8
			states uint32
		}{{unix.IPPROTO_TCP, 1 << tcpListen}, {unix.IPPROTO_UDP, 1 << tcpClose}} {
			socks, err := kernel.DumpSockets(fam, q.proto, q.states)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range socks {
				if s.Remote.Port() != 0 || 1<<s.State&q.states == 0 {
					t.Errorf("family %d proto %d: the dump holds %+v", fam, q.proto, s)
				}
			}
		}
		// All states: the connections are there.
		all, err := kernel.DumpSockets(fam, unix.IPPROTO_TCP, 0xfff)
		if err != nil {
			t.Fatal(err)
		}
		connected := 0
		for _, s := range all {
			if s.Remote.Port() != 0 {
				connected++
			}
		}
		if fam == unix.AF_INET && connected != 2 {
			t.Errorf("all TCP states: %d connected sockets, want 2 (both ends): %+v", connected, all)
		}
	}
}

// TestListenerOwnerPrintable: a process whose name (any user sets its
// own) holds a terminal escape sequence and a line break is reported
// with those bytes as '?': the name reaches the admin's terminal and the
// plan file `migrate init` writes.
func TestListenerOwnerPrintable(t *testing.T) {
	if !inNetns(t) {
		return
	}
	// /proc/self/comm is the thread group leader's: what the agent
	// reads for this process.
	if err := os.WriteFile("/proc/self/comm", []byte("\x1b[2J\nx"), 0); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:8081")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got, err := listeners(true)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Process != "?[2J?x" {
		t.Fatalf("listeners: %+v, want one owned by %q", got, "?[2J?x")
	}
}
