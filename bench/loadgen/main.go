// Command loadgen is the small load generator of the data-path benchmarks
// (bench/labbench). It runs inside a lab namespace (ip netns exec) and
// prints one JSON line per measurement. Every loop is bounded by -d.
//
//	loadgen serve [-tcp ADDR:PORT,...] [-udp ADDR:PORT,...] [-size 64]
//	loadgen connrate -addr IP:PORT [-c 8] [-d 5s] [-size 64] [-rst]
//	loadgen latency  -addr IP:PORT [-d 3s] [-size 64]
//	loadgen udp      -addr IP:PORT [-c 4] [-d 5s] [-size 64]
//
// serve answers each -size byte request on a TCP connection with a -size
// byte reply until EOF, and each UDP datagram with one of the same size.
//
// connrate: -c workers each loop {connect, send one request, read the
// reply, close}, as an HTTP/1.0 client does: the request asks the server
// to close after its reply, the client reads to the end and closes
// normally. The server is left holding the TIME_WAIT socket (so the client
// cannot run out of ports) and the client's ports come back while the
// server still holds their TIME_WAIT: what real clients do to a busy
// server. -rst closes abortively instead (SO_LINGER 0, an RST, right after
// the reply): no TIME_WAIT anywhere, which hides what ports coming back do
// to a path.
//
// latency: one persistent connection, one request in flight; p50 and p99
// of the round trip.
//
// udp: -c sockets (one flow each) each loop {send, wait for the reply};
// a reply missing for 200 ms counts as lost.
package main

import (
	"encoding/json"
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

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen serve|connrate|latency|udp [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	tcpL := fs.String("tcp", "", "serve: TCP listen addresses, comma separated")
	udpL := fs.String("udp", "", "serve: UDP listen addresses, comma separated")
	size := fs.Int("size", 64, "request and reply size in bytes")
	addr := fs.String("addr", "", "target IP:PORT")
	conc := fs.Int("c", 8, "concurrent workers")
	dur := fs.Duration("d", 5*time.Second, "measurement duration")
	rst := fs.Bool("rst", false, "connrate: close abortively (RST) instead of normally")
	_ = fs.Parse(os.Args[2:])
	if *size < 1 || *size > 65000 {
		fail(errors.New("-size must be 1..65000"))
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(*tcpL, *udpL, *size)
	case "connrate":
		err = connrate(*addr, *conc, *dur, *size, *rst)
	case "latency":
		err = latency(*addr, *dur, *size)
	case "udp":
		err = udpRate(*addr, *conc, *dur, *size)
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
	os.Exit(1)
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

func serve(tcpList, udpList string, size int) error {
	errc := make(chan error, 1)
	n := 0
	for _, a := range split(tcpList) {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return err
		}
		n++
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						continue
					}
					if strings.Contains(err.Error(), "too many open files") {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					errc <- err
					return
				}
				go echo(c, size)
			}
		}()
	}
	for _, a := range split(udpList) {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return err
		}
		n++
		go func() {
			buf := make([]byte, 65536)
			for {
				k, from, err := pc.ReadFrom(buf)
				if err != nil {
					errc <- err
					return
				}
				_, _ = pc.WriteTo(buf[:k], from)
			}
		}()
	}
	if n == 0 {
		return errors.New("nothing to serve: give -tcp and/or -udp")
	}
	fmt.Fprintf(os.Stderr, "loadgen serve: tcp %s udp %s\n", tcpList, udpList)
	return <-errc
}

func echo(c net.Conn, size int) {
	defer c.Close()
	buf := make([]byte, size)
	for {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
		if buf[0] == closeAfterReply {
			return
		}
	}
}

type result struct {
	Mode   string  `json:"mode"`
	Addr   string  `json:"addr"`
	Ops    int64   `json:"ops"`
	Errors int64   `json:"errors"`
	Secs   float64 `json:"secs"`
	Rate   float64 `json:"rate,omitempty"`
	P50us  float64 `json:"p50_us,omitempty"`
	P99us  float64 `json:"p99_us,omitempty"`
	Err    string  `json:"first_error,omitempty"`
	Close  string  `json:"close,omitempty"` // connrate: "normal" or "rst"
}

func emit(r result) error {
	return json.NewEncoder(os.Stdout).Encode(r)
}

type firstErr struct {
	once sync.Once
	s    string
}

func (f *firstErr) set(err error) { f.once.Do(func() { f.s = err.Error() }) }

func connrate(addr string, conc int, dur time.Duration, size int, rst bool) error {
	if addr == "" || conc < 1 {
		return errors.New("need -addr and -c >= 1")
	}
	var ops, errs atomic.Int64
	var fe firstErr
	start := time.Now()
	end := start.Add(dur)
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := make([]byte, size)
			if !rst {
				req[0] = closeAfterReply
			}
			rep := make([]byte, size)
			d := net.Dialer{Timeout: 2 * time.Second}
			for time.Now().Before(end) {
				if err := oneConn(&d, addr, req, rep, rst); err != nil {
					errs.Add(1)
					fe.set(err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	closing := "normal"
	if rst {
		closing = "rst"
	}
	return emit(result{Mode: "connrate", Addr: addr, Ops: ops.Load(), Errors: errs.Load(), Secs: secs, Rate: float64(ops.Load()) / secs, Err: fe.s, Close: closing})
}

// closeAfterReply as a request's first byte asks the server to close the
// connection after its reply (an HTTP/1.0 server's habit).
const closeAfterReply = 'C'

func oneConn(d *net.Dialer, addr string, req, rep []byte, rst bool) error {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer func() {
		if tc, ok := c.(*net.TCPConn); ok && rst {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(req); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, rep); err != nil || rst {
		return err
	}
	// The server closes first; read its FIN, then close normally.
	var b [1]byte
	if n, err := c.Read(b[:]); err != io.EOF {
		return fmt.Errorf("server did not close after its reply (read %d bytes, %v)", n, err)
	}
	return nil
}

func latency(addr string, dur time.Duration, size int) error {
	if addr == "" {
		return errors.New("need -addr")
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	req := make([]byte, size)
	rep := make([]byte, size)
	samples := make([]time.Duration, 0, 1<<16)
	start := time.Now()
	end := start.Add(dur)
	for time.Now().Before(end) && len(samples) < 5_000_000 {
		t0 := time.Now()
		_ = c.SetDeadline(t0.Add(2 * time.Second))
		if _, err := c.Write(req); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, rep); err != nil {
			return err
		}
		samples = append(samples, time.Since(t0))
	}
	secs := time.Since(start).Seconds()
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	pct := func(p float64) float64 {
		if len(samples) == 0 {
			return 0
		}
		i := int(p * float64(len(samples)-1))
		return float64(samples[i].Nanoseconds()) / 1e3
	}
	return emit(result{Mode: "latency", Addr: addr, Ops: int64(len(samples)), Secs: secs, Rate: float64(len(samples)) / secs, P50us: pct(0.50), P99us: pct(0.99)})
}

func udpRate(addr string, conc int, dur time.Duration, size int) error {
	if addr == "" || conc < 1 {
		return errors.New("need -addr and -c >= 1")
	}
	var ops, errs atomic.Int64
	var fe firstErr
	start := time.Now()
	end := start.Add(dur)
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			req := make([]byte, size)
			rep := make([]byte, 65536)
			var seq uint32
			for time.Now().Before(end) {
				seq++
				req[0], req[1], req[2], req[3] = byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq)
				if _, err := c.Write(req); err != nil {
					errs.Add(1)
					fe.set(err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				for {
					n, err := c.Read(rep)
					if err != nil {
						errs.Add(1)
						fe.set(err)
						break
					}
					// A late reply to an earlier, timed-out request is skipped.
					if n >= 4 && rep[0] == req[0] && rep[1] == req[1] && rep[2] == req[2] && rep[3] == req[3] {
						ops.Add(1)
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	return emit(result{Mode: "udp", Addr: addr, Ops: ops.Load(), Errors: errs.Load(), Secs: secs, Rate: float64(ops.Load()) / secs, Err: fe.s})
}
