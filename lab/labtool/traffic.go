package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// traffic is what a real service sees, with phases the caller names:
//
//		labtool traffic -tcp ADDR:PORT[,ADDR:PORT] [-udp ADDR:PORT,...] -control FILE
//		                [-workers 32] [-long 1000] [-udp-workers 4] [-timeout 3s] [-rst]
//		                [-max 10m]
//
//	  - short connections, -workers at a time in a loop: connect with the
//	    kernel's own port choice, read the greeting, send BYE, read the
//	    answer and wait for the server to close first (an HTTP/1.0 server
//	    does; it then holds the TIME_WAIT socket), then close normally. -rst
//	    closes abortively instead (SO_LINGER 0) without waiting: no TIME_WAIT
//	    anywhere, which hides bugs. The caller narrows the client's
//	    ip_local_port_range to make ports come back under pressure.
//	  - -long long-lived connections opened at once and held to the end:
//	    every other one pings each second, the rest stay idle until the
//	    end; each must keep answering from the server that greeted it.
//	  - -udp-workers loops of one request each from a fresh socket (the
//	    kernel's port choice), as a resolver sends them.
//
// FILE holds the current phase's name; the generator polls it, and every
// attempt counts in the phase it started in. "stop" ends the run. It
// prints one line per phase and one for the long-lived connections, and
// exits 1 when anything failed or hung (no answer within -timeout).
func traffic(args []string) error {
	fs := flag.NewFlagSet("traffic", flag.ContinueOnError)
	tcpT := fs.String("tcp", "", "TCP targets, comma separated")
	udpT := fs.String("udp", "", "UDP targets, comma separated")
	control := fs.String("control", "", "file holding the current phase name")
	workers := fs.Int("workers", 32, "concurrent short-connection loops")
	long := fs.Int("long", 1000, "long-lived connections (half of them idle)")
	udpWorkers := fs.Int("udp-workers", 4, "concurrent UDP request loops")
	timeout := fs.Duration("timeout", 3*time.Second, "connect and per-answer timeout; longer counts as hung")
	rst := fs.Bool("rst", false, "close short connections abortively (RST) instead of normally")
	maxRun := fs.Duration("max", 10*time.Minute, "stop after this long whatever the control file says")
	dnsT := fs.String("dns", "", "DNS targets (UDP), comma separated: each request asks -dns-name's A record")
	dnsName := fs.String("dns-name", "test.lab", "the name DNS requests ask for")
	dnsServers := fs.String("dns-servers", "", "IP=NAME,...: which server answered, by the address it gave")
	byTarget := fs.Bool("by-target", false, "count UDP answers per target (TARGET=SERVER)")
	udpEvery := fs.Duration("udp-interval", 5*time.Millisecond, "pause of each UDP loop between requests")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) != 0 {
		return fmt.Errorf("unexpected arguments %q", pos)
	}
	tcps, udps := split(*tcpT), split(*udpT)
	var uts []udpTarget
	for _, a := range udps {
		uts = append(uts, udpTarget{addr: a})
	}
	names := map[string]string{}
	for _, kv := range split(*dnsServers) {
		ip, name, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("-dns-servers: %q is not IP=NAME", kv)
		}
		names[ip] = name
	}
	for _, a := range split(*dnsT) {
		uts = append(uts, udpTarget{addr: a, dns: *dnsName, names: names})
	}
	if len(tcps)+len(uts) == 0 || *control == "" {
		return errors.New("-control and a -tcp, -udp or -dns target are required")
	}
	if len(tcps) == 0 {
		*long, *workers = 0, 0
	}
	t := &trafficRun{phases: map[string]*phaseStats{}, timeout: *timeout, byTarget: *byTarget}
	readPhase := func() string {
		b, _ := os.ReadFile(*control)
		return strings.TrimSpace(string(b))
	}
	t.setPhase(readPhase())
	deadline := time.Now().Add(*maxRun)
	var stop atomic.Bool
	go func() {
		for !stop.Load() {
			p := readPhase()
			if p == "stop" || time.Now().After(deadline) {
				stop.Store(true)
				return
			}
			if p != "" {
				t.setPhase(p)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// Long-lived connections first: they exist before whatever the
	// caller does next.
	longs := make([]*longConn, *long)
	var lwg sync.WaitGroup
	for i := range longs {
		lwg.Add(1)
		go func(i int) {
			defer lwg.Done()
			longs[i] = t.openLong(tcps[i%len(tcps)], i%2 == 1)
		}(i)
	}
	lwg.Wait()
	fmt.Fprintf(os.Stderr, "labtool traffic: %d long-lived connections open\n", *long)
	for _, lc := range longs {
		if lc.err == nil && !lc.idle {
			go lc.pingLoop(&stop)
		}
	}

	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; !stop.Load(); i++ {
				t.short(tcps[i%len(tcps)], *rst)
			}
		}(w)
	}
	for w := 0; w < *udpWorkers && len(uts) > 0; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; !stop.Load(); i++ {
				t.udpRequest(uts[i%len(uts)])
				time.Sleep(*udpEvery)
			}
		}(w)
	}
	wg.Wait()

	// The idle half speaks once at the end: still open, same server.
	var held, heldFail, heldHung int
	servedLong := map[string]int{}
	for _, lc := range longs {
		lwg.Add(1)
		go func(lc *longConn) {
			defer lwg.Done()
			lc.finish()
		}(lc)
	}
	lwg.Wait()
	var firstLongErr error
	for _, lc := range longs {
		switch {
		case lc.err == nil:
			held++
			servedLong[lc.server]++
		case isTimeout(lc.err):
			heldHung++
		default:
			heldFail++
		}
		if lc.err != nil && firstLongErr == nil {
			firstLongErr = lc.err
		}
	}
	bad := heldFail+heldHung > 0
	for _, name := range t.order {
		p := t.phases[name]
		fmt.Printf("phase %s: tcp attempted %d completed %d failed %d hung %d %s; udp attempted %d answered %d failed %d hung %d %s; %.0f conn/s\n",
			name, p.tcpTry.Load(), p.tcpOK.Load(), p.tcpFail.Load(), p.tcpHung.Load(), p.served.String(),
			p.udpTry.Load(), p.udpOK.Load(), p.udpFail.Load(), p.udpHung.Load(), p.udpServed.String(),
			float64(p.tcpTry.Load())/p.duration().Seconds())
		if p.tcpFail.Load()+p.tcpHung.Load()+p.udpFail.Load()+p.udpHung.Load() > 0 {
			bad = true
			fmt.Printf("phase %s: first failure: %v\n", name, p.firstErr())
		}
	}
	idle := 0
	for _, lc := range longs {
		if lc.idle {
			idle++
		}
	}
	fmt.Printf("long-lived: attempted %d completed %d failed %d hung %d (idle %d) %s\n",
		len(longs), held, heldFail, heldHung, idle, counts(servedLong))
	if firstLongErr != nil {
		fmt.Printf("long-lived: first failure: %v\n", firstLongErr)
	}
	closeMode := "normal"
	if *rst {
		closeMode = "rst"
	}
	fmt.Printf("close: %s\n", closeMode)
	if bad {
		return errors.New("connections failed or hung")
	}
	return nil
}

type trafficRun struct {
	mu       sync.Mutex
	cur      *phaseStats
	phases   map[string]*phaseStats
	order    []string
	timeout  time.Duration
	byTarget bool
}

// udpTarget is one UDP destination: a labtool server ("hi"), or a DNS
// server when dns names the record to ask for.
type udpTarget struct {
	addr  string
	dns   string
	names map[string]string
}

type phaseStats struct {
	tcpTry, tcpOK, tcpFail, tcpHung atomic.Int64
	udpTry, udpOK, udpFail, udpHung atomic.Int64
	served, udpServed               servedBy
	mu                              sync.Mutex
	first                           error
	start, end                      time.Time
}

type servedBy struct {
	mu sync.Mutex
	m  map[string]int
}

func (s *servedBy) add(name string) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]int{}
	}
	s.m[name]++
	s.mu.Unlock()
}

func (s *servedBy) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return counts(s.m)
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "served-by=none"
	}
	return "served-by=" + strings.Join(parts, ",")
}

func (p *phaseStats) fail(err error) {
	p.mu.Lock()
	if p.first == nil {
		p.first = err
	}
	p.mu.Unlock()
}

func (p *phaseStats) firstErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first
}

func (p *phaseStats) duration() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	end := p.end
	if end.IsZero() {
		end = time.Now()
	}
	if d := end.Sub(p.start); d > 0 {
		return d
	}
	return time.Millisecond
}

func (t *trafficRun) setPhase(name string) {
	if name == "" {
		name = "start"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur != nil && t.phases[name] == t.cur {
		return
	}
	now := time.Now()
	if t.cur != nil {
		t.cur.mu.Lock()
		t.cur.end = now
		t.cur.mu.Unlock()
	}
	p, ok := t.phases[name]
	if !ok {
		p = &phaseStats{start: now}
		t.phases[name] = p
		t.order = append(t.order, name)
	}
	t.cur = p
}

func (t *trafficRun) phase() *phaseStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// short is one HTTP/1.0-like exchange; the server closes first.
func (t *trafficRun) short(addr string, rst bool) {
	p := t.phase()
	p.tcpTry.Add(1)
	err := func() error {
		c, err := net.DialTimeout("tcp", addr, t.timeout)
		if err != nil {
			return fmt.Errorf("connect %s: %w", addr, err)
		}
		defer c.Close()
		if rst {
			_ = c.(*net.TCPConn).SetLinger(0)
		}
		_ = c.SetDeadline(time.Now().Add(t.timeout))
		r := bufio.NewReader(c)
		greet, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("greeting from %s (local %s): %w", addr, c.LocalAddr(), err)
		}
		if _, err := io.WriteString(c, "BYE\n"); err != nil {
			return fmt.Errorf("BYE to %s: %w", addr, err)
		}
		if _, err := r.ReadString('\n'); err != nil {
			return fmt.Errorf("answer from %s (local %s): %w", addr, c.LocalAddr(), err)
		}
		if !rst {
			if _, err := r.ReadString('\n'); err != io.EOF {
				return fmt.Errorf("server %s did not close (local %s): %v", addr, c.LocalAddr(), err)
			}
		}
		p.served.add(strings.TrimPrefix(strings.Fields(greet)[0], "served-by="))
		return nil
	}()
	switch {
	case err == nil:
		p.tcpOK.Add(1)
	case isTimeout(err):
		p.tcpHung.Add(1)
		p.fail(err)
	default:
		p.tcpFail.Add(1)
		p.fail(err)
	}
}

// udpRequest sends one request from a fresh connected socket: the
// kernel drops any answer that does not come from the target's address
// and port, so an answer counted here came from there.
func (t *trafficRun) udpRequest(ut udpTarget) {
	p := t.phase()
	p.udpTry.Add(1)
	addr := ut.addr
	err := func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return fmt.Errorf("udp socket for %s: %w", addr, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(t.timeout))
		req := []byte("hi")
		var id uint16
		if ut.dns != "" {
			id = uint16(time.Now().UnixNano())
			req = dnsQuery(id, ut.dns)
		}
		if _, err := c.Write(req); err != nil {
			return fmt.Errorf("send to udp %s: %w", addr, err)
		}
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("answer from udp %s (local %s): %w", addr, c.LocalAddr(), err)
		}
		server := ""
		if ut.dns != "" {
			ip, err := dnsAnswer(buf[:n], id)
			if err != nil {
				return fmt.Errorf("dns answer from %s: %w", addr, err)
			}
			if server = ut.names[ip]; server == "" {
				server = ip
			}
		} else if f := strings.Fields(string(buf[:n])); len(f) > 0 {
			server = strings.TrimPrefix(f[0], "served-by=")
		}
		if t.byTarget {
			server = addr + "=" + server
		}
		p.udpServed.add(server)
		return nil
	}()
	switch {
	case err == nil:
		p.udpOK.Add(1)
	case isTimeout(err):
		p.udpHung.Add(1)
		p.fail(err)
	default:
		p.udpFail.Add(1)
		p.fail(err)
	}
}

type longConn struct {
	c      net.Conn
	r      *bufio.Reader
	idle   bool
	server string
	n      int
	err    error
	closed bool // finish closed it: a ping loop still asleep must not use it
	mu     sync.Mutex
}

func (t *trafficRun) openLong(addr string, idle bool) *longConn {
	lc := &longConn{idle: idle}
	c, err := net.DialTimeout("tcp", addr, 2*t.timeout)
	if err != nil {
		lc.err = fmt.Errorf("long-lived connect %s: %w", addr, err)
		return lc
	}
	lc.c, lc.r = c, bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(2 * t.timeout))
	greet, err := lc.r.ReadString('\n')
	if err != nil {
		lc.err = fmt.Errorf("long-lived greeting from %s: %w", addr, err)
		c.Close()
		return lc
	}
	lc.server = strings.TrimPrefix(strings.Fields(greet)[0], "served-by=")
	return lc
}

// ping sends one line and checks the answer comes from the same server.
func (lc *longConn) ping(timeout time.Duration) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.err != nil || lc.closed {
		return lc.err
	}
	lc.n++
	_ = lc.c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(lc.c, "ping %d\n", lc.n); err != nil {
		lc.err = fmt.Errorf("long-lived %s ping %d: %w", lc.c.LocalAddr(), lc.n, err)
		return lc.err
	}
	line, err := lc.r.ReadString('\n')
	if err != nil {
		lc.err = fmt.Errorf("long-lived %s answer %d: %w", lc.c.LocalAddr(), lc.n, err)
		return lc.err
	}
	if !strings.HasPrefix(line, lc.server+": ") {
		lc.err = fmt.Errorf("long-lived %s greeted by %s, answered by %q", lc.c.LocalAddr(), lc.server, strings.TrimSpace(line))
	}
	return lc.err
}

func (lc *longConn) pingLoop(stop *atomic.Bool) {
	for !stop.Load() {
		time.Sleep(time.Second)
		if stop.Load() || lc.ping(3*time.Second) != nil {
			return
		}
	}
}

func (lc *longConn) finish() {
	if lc.c == nil {
		return
	}
	_ = lc.ping(3 * time.Second)
	// Closed under the lock, so that a ping loop that slept through the
	// stop does not write on it and count a closed connection as a
	// failure (it did, at random, once runs got faster).
	lc.mu.Lock()
	lc.closed = true
	lc.c.Close()
	lc.mu.Unlock()
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// dnsQuery is a DNS query for name's A record, recursion desired.
func dnsQuery(id uint16, name string) []byte {
	q := []byte{byte(id >> 8), byte(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		q = append(q, byte(len(label)))
		q = append(q, label...)
	}
	return append(q, 0, 0, 1, 0, 1)
}

// dnsAnswer returns the address of the first A record of a response to
// query id.
func dnsAnswer(b []byte, id uint16) (string, error) {
	if len(b) < 12 {
		return "", errors.New("short response")
	}
	if uint16(b[0])<<8|uint16(b[1]) != id {
		return "", errors.New("response to another query")
	}
	if rcode := b[3] & 0x0f; rcode != 0 {
		return "", fmt.Errorf("rcode %d", rcode)
	}
	qd, an := int(b[4])<<8|int(b[5]), int(b[6])<<8|int(b[7])
	off := 12
	skipName := func() error {
		for off < len(b) {
			l := int(b[off])
			switch {
			case l == 0:
				off++
				return nil
			case l&0xc0 == 0xc0:
				off += 2
				return nil
			}
			off += 1 + l
		}
		return errors.New("truncated name")
	}
	for i := 0; i < qd; i++ {
		if err := skipName(); err != nil {
			return "", err
		}
		off += 4
	}
	for i := 0; i < an; i++ {
		if err := skipName(); err != nil {
			return "", err
		}
		if off+10 > len(b) {
			return "", errors.New("truncated record")
		}
		typ, rdlen := int(b[off])<<8|int(b[off+1]), int(b[off+8])<<8|int(b[off+9])
		off += 10
		if off+rdlen > len(b) {
			return "", errors.New("truncated data")
		}
		if typ == 1 && rdlen == 4 {
			return net.IP(b[off : off+4]).String(), nil
		}
		off += rdlen
	}
	return "", errors.New("no A record")
}
