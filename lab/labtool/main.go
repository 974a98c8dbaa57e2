// Command labtool is a tiny traffic helper for the namespace lab.
//
//	labtool serve -name NAME -listen ADDR:PORT [-udp]
//	labtool dial [-bind IP] [-timeout 3s] [-udp] ADDR:PORT
//	labtool hold [-bind IP] [-timeout 3s] [-every 200ms] [-count N] ADDR:PORT
//
// serve (TCP) greets each connection with
// "served-by=NAME peer=<remote IP> local=<local addr>" and then echoes every
// line it receives as "NAME: <line>" until EOF. serve -udp answers every
// datagram with "served-by=NAME peer=<remote IP>".
//
// dial connects, reads the first line and prints
// "<line> remote=<remote addr> localaddr=<local addr>". With -udp it sends
// "hi" and prints the reply the same way.
//
// hold keeps one TCP connection open: it prints the greeting, then every
// interval sends "ping i" and prints the reply. -count 0 pings until killed.
//
// Flags may come before or after the address.
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
	case "many":
		err = many(os.Args[2:])
	case "bulk":
		err = bulk(os.Args[2:])
	case "hold":
		err = hold(os.Args[2:])
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
  labtool dial [-bind IP] [-timeout 3s] [-udp] ADDR:PORT
  labtool hold [-bind IP] [-timeout 3s] [-every 200ms] [-count N] ADDR:PORT
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
	for {
		c, err := ln.Accept()
		if err != nil {
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
	d := &net.Dialer{Timeout: timeout}
	if bind == "" {
		return d, nil
	}
	ip := net.ParseIP(bind)
	if ip == nil {
		return nil, fmt.Errorf("bad -bind IP %q", bind)
	}
	if udp {
		d.LocalAddr = &net.UDPAddr{IP: ip}
	} else {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d, nil
}

func dial(args []string) error {
	fs := flag.NewFlagSet("dial", flag.ContinueOnError)
	bind := fs.String("bind", "", "local IP to bind")
	timeout := fs.Duration("timeout", 3*time.Second, "connect+read timeout")
	udp := fs.Bool("udp", false, "UDP: send \"hi\", print the reply")
	size := fs.Int("size", 2, "UDP: datagram size in bytes")
	addr, err := oneAddr(fs, args)
	if err != nil {
		return err
	}
	d, err := dialer(*bind, *udp, *timeout)
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
		line, err = bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("no greeting from tcp %s within %s: %w", addr, *timeout, err)
		}
		line = strings.TrimRight(line, "\r\n")
	}
	fmt.Printf("%s remote=%s localaddr=%s\n", line, c.RemoteAddr(), c.LocalAddr())
	return nil
}

func hold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	bind := fs.String("bind", "", "local IP to bind")
	timeout := fs.Duration("timeout", 3*time.Second, "connect timeout and per-reply timeout")
	every := fs.Duration("every", 200*time.Millisecond, "ping interval")
	count := fs.Int("count", 10, "number of pings (0: until killed)")
	addr, err := oneAddr(fs, args)
	if err != nil {
		return err
	}
	if *every <= 0 {
		return errors.New("-every must be positive")
	}
	d, err := dialer(*bind, false, *timeout)
	if err != nil {
		return err
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
