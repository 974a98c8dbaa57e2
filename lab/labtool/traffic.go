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
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) != 0 {
		return fmt.Errorf("unexpected arguments %q", pos)
	}
	tcps, udps := split(*tcpT), split(*udpT)
	if len(tcps) == 0 || *control == "" {
		return errors.New("-tcp and -control are required")
	}
	t := &trafficRun{phases: map[string]*phaseStats{}, timeout: *timeout}
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
	for w := 0; w < *udpWorkers && len(udps) > 0; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; !stop.Load(); i++ {
				t.udpRequest(udps[i%len(udps)])
				time.Sleep(5 * time.Millisecond)
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
	mu      sync.Mutex
	cur     *phaseStats
	phases  map[string]*phaseStats
	order   []string
	timeout time.Duration
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

func (t *trafficRun) udpRequest(addr string) {
	p := t.phase()
	p.udpTry.Add(1)
	err := func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return fmt.Errorf("udp socket for %s: %w", addr, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(t.timeout))
		if _, err := c.Write([]byte("hi")); err != nil {
			return fmt.Errorf("send to udp %s: %w", addr, err)
		}
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("answer from udp %s (local %s): %w", addr, c.LocalAddr(), err)
		}
		f := strings.Fields(string(buf[:n]))
		if len(f) > 0 {
			p.udpServed.add(strings.TrimPrefix(f[0], "served-by="))
		}
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
	if lc.err != nil {
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
		if lc.ping(3*time.Second) != nil {
			return
		}
	}
}

func (lc *longConn) finish() {
	if lc.c == nil {
		return
	}
	_ = lc.ping(3 * time.Second)
	lc.c.Close()
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
