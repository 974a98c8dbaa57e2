// Command labtool is the traffic helper of the namespace lab: the
// servers, clients and load generators that the e2e tests and the demo
// run inside the lab's namespaces (lab/scenario builds and starts it).
// Each prints what it saw in lines the tests parse.
//
//	labtool serve -name NAME -listen ADDR:PORT [-udp]
//	labtool dial [-bind IP] [-port P] [-timeout 3s] [-udp] [-size N] [-bye] ADDR:PORT
//	labtool hold [-bind IP] [-timeout 3s] [-every 200ms] [-count N] [-keepalive=false] [-udp] ADDR:PORT
//	labtool many [-n 100] [-timeout 3s] ADDR:PORT
//	labtool bulk [-bytes N] [-dir up|down] [-timeout 60s] ADDR:PORT
//	labtool load [-conns 1000] [-every 1s] [-rate 50] [-duration 20s] ADDR:PORT
//	labtool forge -type vxlan|gre|ip6gre -to OUTER_DST [flags]  |  labtool forge -catch ADDR:PORT
//	labtool traffic -control FILE -tcp|-udp|-dns TARGETS [flags]
//	labtool ctfill -n N [-timeout 10m]
//
// serve (TCP) greets each connection with
// "served-by=NAME peer=<remote IP> local=<local addr>" and then echoes every
// line it receives as "NAME: <line>" until EOF, except three requests:
// "BYE" (answer, then close first, as an HTTP/1.0 server does, keeping the
// TIME_WAIT), "SEND n" (send n bytes, then close) and "RECV n" (read n
// bytes, answer "NAME: got n bytes"). On SIGUSR1 a TCP serve closes its
// listener and goes on serving the connections it has (a daemon's
// graceful stop). serve -udp answers every datagram
// with "served-by=NAME peer=<remote IP> len=N", padded to the request's
// size.
//
// dial connects, reads the first line and prints
// "<line> remote=<remote addr> localaddr=<local addr>". With -udp it sends
// "hi" (padded with dots to -size bytes) and prints the reply the same
// way. -bye asks the server to close first, leaving it the TIME_WAIT
// socket; -port binds a fixed local port.
//
// hold keeps one TCP connection open: it prints the greeting, then every
// interval sends "ping i" and prints the reply. -count 0 pings until killed.
// -keepalive=false turns off TCP keep-alive probes, so an idle hold (a long
// -every) sends not one packet: an idle client as conntrack sees it.
//
// many dials ADDR -n times, one connection after another, and counts who
// served each: "served-by=new:31 served-by=old:69 errors:0".
//
// bulk moves -bytes through one TCP connection to a serve, up (to the
// server) or down, and prints "bulk up N bytes ok".
//
// load holds -conns long-lived connections that each ping every -every,
// while opening -rate new short connections per second for -duration; it
// prints what was attempted, completed and failed and who served, and fails
// if anything failed.
//
// forge sends forged tunnel packets at a tunnel endpoint (the underlay
// filter test), or with -catch prints what reaches an inner address; see
// forge for its flags.
//
// traffic drives what a real service sees, in phases named by the contents
// of -control: short connections closed normally (or with -rst), long-lived
// ones (half idle), UDP and DNS requests; one line per phase, exit 1 when
// anything failed or hung. See traffic.go for its flags.
//
// ctfill inserts -n conntrack entries (unreplied UDP flows) into the
// namespace it runs in, as a busy server's flows would fill the table,
// without the traffic; see ctfill.go.
//
// Flags may come before or after the address. -h on a subcommand lists its
// flags with their defaults.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "dial":
		err = dial(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "many":
		err = many(os.Args[2:])
	case "bulk":
		err = bulk(os.Args[2:])
	case "hold":
		err = hold(os.Args[2:])
	case "forge":
		err = forge(os.Args[2:])
	case "traffic":
		err = traffic(os.Args[2:])
	case "ctfill":
		err = ctfill(os.Args[2:])
	case "-h", "-help", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "labtool: unknown subcommand %q\n", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "labtool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  labtool serve -name NAME -listen ADDR:PORT [-udp]
  labtool dial [-bind IP] [-port P] [-timeout 3s] [-udp] [-size N] [-bye] ADDR:PORT
  labtool hold [-bind IP] [-timeout 3s] [-every 200ms] [-count N] [-keepalive=false] [-udp] ADDR:PORT
  labtool many [-n 100] [-timeout 3s] ADDR:PORT
  labtool bulk [-bytes N] [-dir up|down] [-timeout 60s] ADDR:PORT
  labtool load [-conns 1000] [-every 1s] [-rate 50] [-duration 20s] ADDR:PORT
  labtool forge -type vxlan|gre|ip6gre -to OUTER_DST [-from IP] [-count N] [-vni 4242]
                [-port 4789] [-key K] [-dst-mac MAC] [-inner-src IP] [-inner-dst IP] [-inner-port P]
  labtool forge -catch ADDR:PORT
  labtool traffic -control FILE [-tcp ADDR:PORT,...] [-udp ADDR:PORT,...] [-dns ADDR:PORT,...]
                [-workers 32] [-long 1000] [-udp-workers 4] [-timeout 3s] [-rst] [-max 10m]
                [-dns-name NAME] [-dns-servers IP=NAME,...] [-by-target] [-udp-interval 5ms]
  labtool ctfill -n N [-timeout 10m]
labtool SUBCOMMAND -h lists a subcommand's flags. The package documentation
(go doc ./lab/labtool) says what each one prints.
`)
	os.Exit(2)
}

// parse parses flags that may be interleaved with positional arguments and
// returns the positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func oneAddr(fs *flag.FlagSet, args []string) (string, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", fmt.Errorf("want exactly one ADDR:PORT argument, got %q", pos)
	}
	if _, _, err := net.SplitHostPort(pos[0]); err != nil {
		return "", fmt.Errorf("bad address %q: %v", pos[0], err)
	}
	return pos[0], nil
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	name := fs.String("name", "", "name to report as served-by")
	listen := fs.String("listen", "", "ADDR:PORT to listen on")
	udp := fs.Bool("udp", false, "serve UDP instead of TCP")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("unexpected arguments %q", pos)
	}
	if *name == "" || *listen == "" {
		return errors.New("-name and -listen are required")
	}
	if *udp {
		return serveUDP(*name, *listen)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "labtool serve: %s listening on tcp %s\n", *name, ln.Addr())
	// SIGUSR1 is a daemon's graceful stop: the listener closes, the
	// connections it accepted are served until they end.
	stopped := make(chan struct{})
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		<-usr1
		close(stopped)
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case <-stopped:
				fmt.Fprintf(os.Stderr, "labtool serve: %s stopped listening, draining\n", *name)
				for {
					time.Sleep(time.Hour)
				}
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go handle(*name, c)
	}
}

func handle(name string, c net.Conn) {
	defer c.Close()
	if _, err := fmt.Fprintf(c, "served-by=%s peer=%s local=%s\n", name, hostOf(c.RemoteAddr()), c.LocalAddr()); err != nil {
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		var n int64
		switch {
		case sscan(line, "SEND %d", &n):
			// Bulk download: n bytes to the client, then close.
			_, _ = io.CopyN(c, zeros{}, n)
			return
		case line == "BYE":
			// An HTTP/1.0-style server: answer, then close first, so
			// this side is left holding the TIME_WAIT socket.
			fmt.Fprintf(c, "%s: bye\n", name)
			return
		case sscan(line, "RECV %d", &n):
			// Bulk upload: read n bytes, report what arrived.
			got, _ := io.CopyN(io.Discard, r, n)
			fmt.Fprintf(c, "%s: got %d bytes\n", name, got)
			return
		}
		if _, err := fmt.Fprintf(c, "%s: %s\n", name, line); err != nil {
			return
		}
	}
}

func sscan(line, format string, n *int64) bool {
	_, err := fmt.Sscanf(line, format, n)
	return err == nil && *n >= 0
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 0
	}
	return len(p), nil
}

func serveUDP(name, listen string) error {
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "labtool serve: %s listening on udp %s\n", name, pc.LocalAddr())
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		reply := []byte(fmt.Sprintf("served-by=%s peer=%s len=%d\n", name, hostOf(from), n))
		// A big request gets an equally big reply: both directions carry
		// datagrams larger than the tunnel MTU.
		for len(reply) < n {
			reply = append(reply, '.')
		}
		if _, err := pc.WriteTo(reply, from); err != nil {
			fmt.Fprintf(os.Stderr, "labtool serve: reply to %s: %v\n", from, err)
		}
	}
}

func hostOf(a net.Addr) string {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case *net.UDPAddr:
		return a.IP.String()
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

func dialer(bind string, udp bool, timeout time.Duration) (*net.Dialer, error) {
	return dialerPort(bind, 0, udp, timeout)
}

// dialerPort is dialer with a fixed local port (0: the kernel's choice).
func dialerPort(bind string, port int, udp bool, timeout time.Duration) (*net.Dialer, error) {
	d := &net.Dialer{Timeout: timeout}
	if bind == "" && port == 0 {
		return d, nil
	}
	var ip net.IP
	if bind != "" {
		if ip = net.ParseIP(bind); ip == nil {
			return nil, fmt.Errorf("bad -bind IP %q", bind)
		}
	}
	if udp {
		d.LocalAddr = &net.UDPAddr{IP: ip, Port: port}
	} else {
		d.LocalAddr = &net.TCPAddr{IP: ip, Port: port}
	}
	return d, nil
}

func dial(args []string) error {
	fs := flag.NewFlagSet("dial", flag.ContinueOnError)
	bind := fs.String("bind", "", "local IP to bind")
	timeout := fs.Duration("timeout", 3*time.Second, "connect+read timeout")
	udp := fs.Bool("udp", false, "UDP: send \"hi\", print the reply")
	size := fs.Int("size", 2, "UDP: datagram size in bytes")
	port := fs.Int("port", 0, "local port to bind (0: the kernel's choice)")
	bye := fs.Bool("bye", false, "TCP: after the greeting send BYE, print the answer and wait for the server to close first (it then holds the TIME_WAIT)")
	addr, err := oneAddr(fs, args)
	if err != nil {
		return err
	}
	d, err := dialerPort(*bind, *port, *udp, *timeout)
	if err != nil {
		return err
	}
	network := "tcp"
	if *udp {
		network = "udp"
	}
	c, err := d.Dial(network, addr)
	if err != nil {
		return fmt.Errorf("connect %s %s: %w", network, addr, err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(*timeout)); err != nil {
		return err
	}
	var line string
	if *udp {
		msg := []byte("hi")
		for len(msg) < *size {
			msg = append(msg, '.')
		}
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("send to %s: %w", addr, err)
		}
		buf := make([]byte, 65536)
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("no reply from udp %s within %s: %w", addr, *timeout, err)
		}
		line = string(buf[:n])
		if i := strings.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
		}
		line += fmt.Sprintf(" replylen=%d", n)
	} else {
		r := bufio.NewReader(c)
		line, err = r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("no greeting from tcp %s within %s: %w", addr, *timeout, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if *bye {
			if _, err := fmt.Fprintf(c, "BYE\n"); err != nil {
				return fmt.Errorf("send BYE to %s: %w", addr, err)
			}
			ans, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("no answer to BYE from %s: %w", addr, err)
			}
			if _, err := r.ReadString('\n'); err != io.EOF {
				return fmt.Errorf("server %s did not close after BYE: %v", addr, err)
			}
			line += " " + strings.TrimRight(ans, "\r\n")
		}
	}
	if mss := tcpMSS(c); mss > 0 {
		line += fmt.Sprintf(" mss=%d", mss)
	}
	fmt.Printf("%s remote=%s localaddr=%s\n", line, c.RemoteAddr(), c.LocalAddr())
	return nil
}

// tcpMSS is the connection's TCP_MAXSEG (the payload of a full segment it
// sends: the peer's advertised MSS, lowered by its own route's MTU and its
// options), or 0 for a UDP socket or when it cannot be read.
func tcpMSS(c net.Conn) int {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	mss := 0
	_ = rc.Control(func(fd uintptr) {
		mss, _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG)
	})
	return mss
}

func hold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	bind := fs.String("bind", "", "local IP to bind")
	timeout := fs.Duration("timeout", 3*time.Second, "connect timeout and per-reply timeout")
	every := fs.Duration("every", 200*time.Millisecond, "ping interval")
	count := fs.Int("count", 10, "number of pings (0: until killed)")
	keepalive := fs.Bool("keepalive", true, "TCP keep-alive probes (false: not one packet while idle)")
	udp := fs.Bool("udp", false, "UDP: one socket for the whole session (a game or QUIC client), one datagram per ping; prints who answered each")
	addr, err := oneAddr(fs, args)
	if err != nil {
		return err
	}
	if *every <= 0 {
		return errors.New("-every must be positive")
	}
	if *udp {
		return holdUDP(*bind, addr, *timeout, *every, *count)
	}
	d, err := dialer(*bind, false, *timeout)
	if err != nil {
		return err
	}
	if !*keepalive {
		d.KeepAlive = -1
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return fmt.Errorf("connect tcp %s: %w", addr, err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	readLine := func(what string) (string, error) {
		if err := c.SetReadDeadline(time.Now().Add(*timeout)); err != nil {
			return "", err
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("reading %s from %s: %w", what, addr, err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	greet, err := readLine("greeting")
	if err != nil {
		return err
	}
	fmt.Printf("%s remote=%s localaddr=%s\n", greet, c.RemoteAddr(), c.LocalAddr())
	for i := 1; *count <= 0 || i <= *count; i++ {
		time.Sleep(*every)
		if err := c.SetWriteDeadline(time.Now().Add(*timeout)); err != nil {
			return err
		}
		if _, err := fmt.Fprintf(c, "ping %d\n", i); err != nil {
			return fmt.Errorf("sending ping %d to %s: %w", i, addr, err)
		}
		reply, err := readLine(fmt.Sprintf("reply to ping %d", i))
		if err != nil {
			return err
		}
		fmt.Println(reply)
	}
	return nil
}

// holdUDP keeps one connected UDP socket and sends "ping N" every
// interval, printing "N NAME" for the server NAME that answered it, or
// "N lost" when no answer came within timeout.
func holdUDP(bind, addr string, timeout, every time.Duration, count int) error {
	d, err := dialer(bind, true, timeout)
	if err != nil {
		return err
	}
	c, err := d.Dial("udp", addr)
	if err != nil {
		return fmt.Errorf("udp socket for %s: %w", addr, err)
	}
	defer c.Close()
	fmt.Printf("udp session localaddr=%s\n", c.LocalAddr())
	buf := make([]byte, 2048)
	for i := 1; count <= 0 || i <= count; i++ {
		if _, err := fmt.Fprintf(c, "ping %d\n", i); err != nil {
			return fmt.Errorf("sending ping %d to %s: %w", i, addr, err)
		}
		who := "lost"
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		if n, err := c.Read(buf); err == nil {
			f := strings.Fields(string(buf[:n]))
			if len(f) > 0 {
				who = strings.TrimPrefix(f[0], "served-by=")
			}
		}
		fmt.Printf("%d %s\n", i, who)
		time.Sleep(every)
	}
	return nil
}

// many dials ADDR n times, one connection after another, and counts who
// served each: "served-by=new:31 served-by=old:69 errors:0".
func many(args []string) error {
	fs := flag.NewFlagSet("many", flag.ContinueOnError)
	n := fs.Int("n", 100, "connections")
	timeout := fs.Duration("timeout", 3*time.Second, "per-connection timeout")
	addr, err := oneAddr(fs, args)
	if err != nil {
		return err
	}
	counts := map[string]int{}
	errs := 0
	for i := 0; i < *n; i++ {
		c, err := net.DialTimeout("tcp", addr, *timeout)
		if err != nil {
			errs++
			continue
		}
		_ = c.SetDeadline(time.Now().Add(*timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			errs++
			continue
		}
		f := strings.Fields(line)
		if len(f) > 0 {
			counts[f[0]]++
		}
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("%s:%d ", k, counts[k])
	}
	fmt.Printf("errors:%d\n", errs)
	return nil
}

// bulk moves -bytes through one TCP connection: "up" sends them to the
// server, "down" receives them. It prints "bulk up 20000000 bytes ok".
func bulk(args []string) error {
	fs := flag.NewFlagSet("bulk", flag.ContinueOnError)
	size := fs.Int64("bytes", 20<<20, "bytes to move")
	dir := fs.String("dir", "up", "up (client to server) or down")
	timeout := fs.Duration("timeout", 60*time.Second, "whole transfer timeout")
	addr, err := oneAddr(fs, args)
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("connect tcp %s: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(*timeout))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		return fmt.Errorf("no greeting from %s: %w", addr, err)
	}
	switch *dir {
	case "up":
		fmt.Fprintf(c, "RECV %d\n", *size)
		if _, err := io.CopyN(c, zeros{}, *size); err != nil {
			return fmt.Errorf("sending: %w", err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("no receipt: %w", err)
		}
		if !strings.Contains(line, fmt.Sprintf("got %d bytes", *size)) {
			return fmt.Errorf("server received less: %s", strings.TrimSpace(line))
		}
	case "down":
		fmt.Fprintf(c, "SEND %d\n", *size)
		got, err := io.Copy(io.Discard, r)
		if err != nil {
			return fmt.Errorf("receiving: %w", err)
		}
		if got != *size {
			return fmt.Errorf("received %d of %d bytes", got, *size)
		}
	default:
		return fmt.Errorf("-dir must be up or down")
	}
	fmt.Printf("bulk %s %d bytes ok\n", *dir, *size)
	return nil
}

// load holds -conns long-lived connections that each send a ping every
// -every, while opening -rate new short connections per second, for
// -duration. It prints what was attempted, completed and failed, and who
// served the connections; it fails if anything failed.
func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	conns := fs.Int("conns", 1000, "long-lived connections")
	every := fs.Duration("every", time.Second, "ping interval per long-lived connection")
	rate := fs.Int("rate", 50, "new short connections per second")
	duration := fs.Duration("duration", 20*time.Second, "how long")
	addr, err := oneAddr(fs, args)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var holdOK, holdFail, newTry, newOK, newFail int
	served := map[string]int{}
	var firstErr error
	fail := func(e error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = e
		}
		mu.Unlock()
	}
	end := time.Now().Add(*duration)
	var wg sync.WaitGroup
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Spread the opening over the first two seconds.
			time.Sleep(time.Duration(i) * 2 * time.Second / time.Duration(*conns))
			ok := func() bool {
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					fail(fmt.Errorf("long-lived %d: %w", i, err))
					return false
				}
				defer c.Close()
				r := bufio.NewReader(c)
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				greet, err := r.ReadString('\n')
				if err != nil {
					fail(fmt.Errorf("long-lived %d: greeting: %w", i, err))
					return false
				}
				mu.Lock()
				served["long-lived "+strings.Fields(greet)[0]]++
				mu.Unlock()
				for n := 1; time.Now().Before(end); n++ {
					time.Sleep(*every)
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := fmt.Fprintf(c, "ping %d\n", n); err != nil {
						fail(fmt.Errorf("long-lived %d: ping %d: %w", i, n, err))
						return false
					}
					if _, err := r.ReadString('\n'); err != nil {
						fail(fmt.Errorf("long-lived %d: reply %d: %w", i, n, err))
						return false
					}
				}
				return true
			}()
			mu.Lock()
			if ok {
				holdOK++
			} else {
				holdFail++
			}
			mu.Unlock()
		}(i)
	}
	tick := time.NewTicker(time.Second / time.Duration(max(*rate, 1)))
	for time.Now().Before(end) {
		<-tick.C
		mu.Lock()
		newTry++
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err == nil {
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				var line string
				line, err = bufio.NewReader(c).ReadString('\n')
				c.Close()
				if err == nil {
					mu.Lock()
					newOK++
					served["new "+strings.Fields(line)[0]]++
					mu.Unlock()
					return
				}
			}
			fail(fmt.Errorf("new connection: %w", err))
			mu.Lock()
			newFail++
			mu.Unlock()
		}()
	}
	tick.Stop()
	wg.Wait()
	keys := make([]string, 0, len(served))
	for k := range served {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var who []string
	for _, k := range keys {
		who = append(who, fmt.Sprintf("%s:%d", k, served[k]))
	}
	fmt.Printf("long-lived: attempted %d completed %d failed %d; new: attempted %d completed %d failed %d; %s\n",
		*conns, holdOK, holdFail, newTry, newOK, newFail, strings.Join(who, " "))
	if firstErr != nil {
		return fmt.Errorf("first failure: %w", firstErr)
	}
	return nil
}

// forge sends forged tunnel packets, for the underlay filter test, or
// catches what reaches an inner address:
//
//	labtool forge -type vxlan|gre|ip6gre -to OUTER_DST [-from OUTER_SRC] [-count N]
//	              [-vni 4242] [-port 4789] [-key K] [-dst-mac MAC]
//	              [-inner-src 169.254.42.2] [-inner-dst 169.254.42.1] [-inner-port 7999]
//	labtool forge -catch ADDR:PORT
//
// Each forged packet carries an IPv4/UDP datagram "forged i" from
// inner-src to inner-dst:inner-port: for vxlan inside an Ethernet frame to
// dst-mac (the receiving tunnel device's MAC; default broadcast) in a
// VXLAN header, over UDP to OUTER_DST:port; for gre and ip6gre behind a
// GRE header (with the key when nonzero), as IP protocol 47 from a raw
// socket. -from binds the outer source address. It prints "sent N".
//
// -catch listens on UDP ADDR:PORT and prints "caught from=IP len=N DATA"
// for every datagram, after a first "catching on ADDR:PORT" line.
func forge(args []string) error {
	fs := flag.NewFlagSet("forge", flag.ContinueOnError)
	typ := fs.String("type", "vxlan", "vxlan, gre or ip6gre")
	to := fs.String("to", "", "outer destination: the tunnel endpoint")
	from := fs.String("from", "", "outer source address to bind (default: the kernel's choice)")
	count := fs.Int("count", 1, "packets to send")
	vni := fs.Uint("vni", 4242, "VXLAN network identifier")
	port := fs.Int("port", 4789, "VXLAN UDP port")
	key := fs.Uint("key", 0, "GRE key (0: none)")
	dstMAC := fs.String("dst-mac", "ff:ff:ff:ff:ff:ff", "inner Ethernet destination (vxlan)")
	innerSrc := fs.String("inner-src", "169.254.42.2", "inner IPv4 source")
	innerDst := fs.String("inner-dst", "169.254.42.1", "inner IPv4 destination")
	innerPort := fs.Int("inner-port", 7999, "inner UDP destination port")
	catch := fs.String("catch", "", "catch UDP datagrams on ADDR:PORT instead of sending")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("unexpected arguments %q", pos)
	}
	if *catch != "" {
		pc, err := net.ListenPacket("udp", *catch)
		if err != nil {
			return err
		}
		fmt.Printf("catching on %s\n", pc.LocalAddr())
		buf := make([]byte, 65536)
		for {
			n, src, err := pc.ReadFrom(buf)
			if err != nil {
				return err
			}
			fmt.Printf("caught from=%s len=%d %q\n", hostOf(src), n, buf[:n])
		}
	}

	be16 := func(b []byte, v uint16) { b[0], b[1] = byte(v>>8), byte(v) }
	be32 := func(b []byte, v uint32) { b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v) }
	isrc, idst := net.ParseIP(*innerSrc).To4(), net.ParseIP(*innerDst).To4()
	if isrc == nil || idst == nil {
		return errors.New("-inner-src and -inner-dst must be IPv4 addresses")
	}
	outer := net.ParseIP(*to)
	if outer == nil {
		return fmt.Errorf("-to %q is not an IP address", *to)
	}
	// inner returns the inner IPv4 packet number i.
	inner := func(i int) []byte {
		data := []byte(fmt.Sprintf("forged %d", i))
		p := make([]byte, 28, 28+len(data))
		p[0], p[8], p[9] = 0x45, 64, 17 // version+IHL, TTL, UDP
		be16(p[2:], uint16(28+len(data)))
		copy(p[12:16], isrc)
		copy(p[16:20], idst)
		var sum uint32
		for j := 0; j < 20; j += 2 {
			sum += uint32(p[j])<<8 | uint32(p[j+1])
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		be16(p[10:], ^uint16(sum))
		be16(p[20:], 40000)              // source port
		be16(p[22:], uint16(*innerPort)) // destination port
		be16(p[24:], uint16(8+len(data)))
		// UDP checksum 0: none (IPv4).
		return append(p, data...)
	}
	var send func(b []byte) error
	var frame func(i int) []byte
	switch *typ {
	case "vxlan":
		mac, err := net.ParseMAC(*dstMAC)
		if err != nil {
			return fmt.Errorf("-dst-mac: %v", err)
		}
		d := &net.Dialer{}
		if *from != "" {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(*from)}
		}
		c, err := d.Dial("udp", net.JoinHostPort(outer.String(), fmt.Sprint(*port)))
		if err != nil {
			return err
		}
		defer c.Close()
		send = func(b []byte) error { _, err := c.Write(b); return err }
		frame = func(i int) []byte {
			b := make([]byte, 8+14)
			b[0] = 0x08 // VNI present
			be32(b[4:], uint32(*vni)<<8)
			copy(b[8:14], mac)
			copy(b[14:20], []byte{0x02, 0, 0, 0, 0, 0x99})
			be16(b[20:], 0x0800)
			return append(b, inner(i)...)
		}
	case "gre", "ip6gre":
		network := "ip4:47"
		if *typ == "ip6gre" {
			network = "ip6:47"
		}
		pc, err := net.ListenPacket(network, *from)
		if err != nil {
			return err
		}
		defer pc.Close()
		send = func(b []byte) error { _, err := pc.WriteTo(b, &net.IPAddr{IP: outer}); return err }
		frame = func(i int) []byte {
			b := make([]byte, 4, 8)
			be16(b[2:], 0x0800) // IPv4 inside
			if *key != 0 {
				b[0] = 0x20 // key present
				b = b[:8]
				be32(b[4:], uint32(*key))
			}
			return append(b, inner(i)...)
		}
	default:
		return fmt.Errorf("-type %q: want vxlan, gre or ip6gre", *typ)
	}
	for i := 0; i < *count; i++ {
		if err := send(frame(i)); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
	}
	fmt.Printf("sent %d\n", *count)
	return nil
}
