package kernel

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/state"
)

// TestSocketCounts counts the host's own connections of a service from
// sock_diag, on real sockets: idle TCP connections opened before
// conntrack ran (no conntrack entry: only the socket shows them), one
// picked up by conntrack mid-stream (counted once), one accepted by a
// dual-stack [::] listener (a v4-mapped AF_INET6 socket), one the client
// closed and the daemon did not (CLOSE-WAIT: still served), a connected
// UDP server socket, and an unconnected UDP server (not a connection).
func TestSocketCounts(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	const svc, mark = "198.51.100.10", 0x20000
	apply(t, h, create(state.Object{Addr: &state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix(svc + "/32")}}))
	tagServer(t, 0, svc+":8080", "s")
	tagServer(t, 0, "[::]:8081", "d")
	// 8082: accepts and never closes, so a client's close leaves the
	// daemon's side in CLOSE-WAIT.
	ln, err := net.Listen("tcp", svc+":8082")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	uc, err := net.ListenPacket("udp", svc+":5353") // unconnected server
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	cu, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(svc+":5354")),
		net.UDPAddrFromAddrPort(netip.MustParseAddrPort(svc+":40000"))) // connected server socket
	if err != nil {
		t.Fatal(err)
	}
	defer cu.Close()

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func(addr string) net.Conn {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		return c
	}
	// Before conntrack runs here: two to 8080, one to the dual-stack
	// listener, one to 8082, each with one exchange, then idle.
	a, b := dial(svc+":8080"), dial(svc+":8080")
	for _, c := range []net.Conn{a, b} {
		if _, err := ask(c, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ask(dial(svc+":8081"), "x"); err != nil {
		t.Fatal(err)
	}
	half := dial(svc + ":8082")
	var server net.Conn
	select {
	case server = <-accepted:
		defer server.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("8082 never accepted")
	}

	// migrate's table starts conntrack; it moves another port only, so
	// nothing of these is marked.
	tcp := state.NftService{Addr: netip.MustParseAddr(svc), Proto: "tcp", Port: 8080}
	dual := state.NftService{Addr: netip.MustParseAddr(svc), Proto: "tcp", Port: 8081}
	closing := state.NftService{Addr: netip.MustParseAddr(svc), Proto: "tcp", Port: 8082}
	udp := state.NftService{Addr: netip.MustParseAddr(svc), Proto: "udp", Port: 5353}
	cudp := state.NftService{Addr: netip.MustParseAddr(svc), Proto: "udp", Port: 5354}
	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{Role: "old", TunnelDev: "mig0", Mark: mark,
		Services: []state.NftService{{Addr: netip.MustParseAddr(svc), Proto: "tcp", Port: 9, Percent: 100}}}}
	apply(t, h, create(state.Object{Nft: &tbl}))
	if _, err := ask(a, "y"); err != nil { // picked up mid-stream: OnOld
		t.Fatal(err)
	}
	if err := half.(*net.TCPConn).CloseWrite(); err != nil { // the client is done sending
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)

	req := state.FactsRequest{Flows: []state.NftService{tcp, dual, closing, udp, cudp}, Mark: mark, Sockets: true}
	f := facts(t, h, req)
	t.Logf("flows: %+v", f.Stats.Flows)
	want := map[string]state.FlowCount{
		// a is in conntrack and has a socket: counted once. b is idle
		// since before conntrack: its socket alone shows it.
		tcp.Key():  {Total: 1, Established: 1, OnOld: 1, Sockets: 2, SocketsOnly: 1},
		dual.Key(): {Sockets: 1, SocketsOnly: 1},
		// The client's FIN went through conntrack (picked up, not
		// established); the daemon's socket is in CLOSE-WAIT.
		closing.Key(): {Total: 1, Sockets: 1, SocketsOnly: 1},
		udp.Key():     {},
		cudp.Key():    {Sockets: 1, SocketsOnly: 1},
	}
	for k, w := range want {
		got := f.Stats.Flows[k]
		if k == closing.Key() {
			w.Total = got.Total // whether conntrack picks up a lone FIN depends on the kernel
		}
		if got != w {
			t.Errorf("flows of %s: %+v, want %+v", k, got, w)
		}
	}
	if got := f.Stats.Flows[tcp.Key()].Serving(); got != 2 {
		t.Errorf("serving of %s: %d, want 2", tcp.Key(), got)
	}

	// Without Sockets: conntrack only, as before.
	req.Sockets = false
	if got := facts(t, h, req).Stats.Flows[tcp.Key()]; got.Sockets != 0 || got.Serving() != 1 {
		t.Errorf("without sockets: %+v", got)
	}

	// The connections end: nothing is served any more. The daemon's
	// side passes LAST-ACK and is gone; TIME-WAIT is on the client's
	// (ephemeral) port.
	for _, c := range conns {
		c.Close()
	}
	server.Close()
	cu.Close()
	req.Sockets = true
	deadline := time.Now().Add(5 * time.Second)
	for {
		f = facts(t, h, req)
		n := 0
		for _, fc := range f.Stats.Flows {
			n += fc.Sockets
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sockets still counted after every connection closed: %+v", f.Stats.Flows)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
