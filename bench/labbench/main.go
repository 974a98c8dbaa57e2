// Command labbench runs migrate's data-path and scale benchmarks on a
// throw-away namespace lab (package lab) and prints markdown tables of
// values and ratios, every ratio against a baseline measured in the same
// run. It needs root; run it through bench/run.sh (`make bench`), which
// installs iperf3, haproxy and socat first.
//
// Nothing here touches the root network namespace: every address, route,
// nft table and sysctl it changes lives in a lab namespace, and the lab is
// removed at the end (also on error or Ctrl-C).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

var (
	flagRounds  = flag.Int("rounds", 5, "rounds of the data-path measurements and of the scale connection rate; medians (and, for the data path, the spread of per-round ratios) are shown")
	flagDur     = flag.Duration("d", 3*time.Second, "duration of each throughput, connection-rate and UDP measurement")
	flagLatDur  = flag.Duration("latency-d", 2*time.Second, "duration of each latency measurement")
	flagConc    = flag.Int("c", 8, "concurrent connections of the connection-rate test")
	flagUDPConc = flag.Int("udp-c", 4, "concurrent UDP flows")
	flagSizes   = flag.String("sizes", "1,100,1000,10000", "service counts of the scale benchmark")
	flagSkipDP  = flag.Bool("skip-datapath", false, "skip the data-path table")
	flagSkipSc  = flag.Bool("skip-scale", false, "skip the scale table")
	flagOut     = flag.String("out", "", "also write the report (markdown) to this file")
	flagVerbose = flag.Bool("v", false, "log lab and migrate details to stderr")
	flagRST     = flag.Bool("rst", false, "connection-rate clients close abortively (RST) instead of normally")
	flagMetrics = flag.String("metrics", "", "only these data-path measurements, comma-separated: iperf (both throughputs), rr (connection rate and latency), udp; default all")
	flagHook    = flag.String("hook", "", "experiments: adds a column \"migrate tunnel (vxlan) + hook\" after the tunnel's: the tunnel plan applied, then this shell command run with OLD_NS and NEW_NS set to the lab's namespace names")
	flagHookUnm = flag.Bool("hook-unmoved", false, "experiments: the -hook column measures OLD's unmoved service (ports 5201/7000/7001) instead of the tunnel's")
	flagUnhook  = flag.String("unhook", "", "experiments: shell command that undoes -hook, run after its column")
	flagTunnel  = flag.String("tunnel", "vxlan", "the tunnel column's type: vxlan, gre or wireguard (the kernel must have it: the VM lane's scripts/vm-bench.sh runs gre and wireguard)")
	flagLoadgen = flag.String("loadgen", "", "a loadgen binary built already (default: go build ./bench/loadgen)")
	flagOldCT   = flag.Bool("old-conntrack", false, "give OLD a stateful firewall table (ip mbench_fw: input accepts established flows) for the whole run, as most servers have: conntrack then runs on OLD before any apply")
	flagCols    = flag.String("cols", "", "only these data-path columns, comma-separated (e.g. \"direct,routed,migrate direct (no tunnel)\"); default all")
	flagAffin   = flag.String("iperf-affinity", "", "iperf3's -A for the throughput tests, \"CLIENT,SERVER\" CPUs (e.g. 0,1): Debian 12's iperf3 3.12 runs all streams in one thread, and where the scheduler puts client and server changes the result from round to round; pinned, every column runs the same placement")
)

// The columns of issue 18 item 5: OLD's own service, not in the plan.
const (
	colUnmovedBefore = "unmoved on OLD (before apply)"
	colUnmovedAfter  = "unmoved on OLD (after apply)"
)

// colTunnel is the tunnel column's name: "migrate tunnel (TYPE)".
var colTunnel = "migrate tunnel (vxlan)"

// Ports on OLD's address per column: {iperf3, request/reply TCP, UDP}.
const (
	svcIperf = 5201
	svcRR    = 7000
	svcUDP   = 7001
)

type bench struct {
	l       *lab.Lab
	s       *scenario.Scenario
	loadgen string
	planDir string
	old     string // OLD's address
	new     string // NEW's address
	log     io.Writer
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "labbench: needs root (network namespaces); run sudo ./bench/run.sh")
		os.Exit(1)
	}
	switch *flagTunnel {
	case "vxlan", "gre", "wireguard":
		colTunnel = "migrate tunnel (" + *flagTunnel + ")"
	default:
		fmt.Fprintf(os.Stderr, "labbench: -tunnel %q: want vxlan, gre or wireguard\n", *flagTunnel)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "labbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) (err error) {
	logw := io.Discard
	if *flagVerbose {
		logw = os.Stderr
	}
	started := time.Now()
	loadStart := loadAvg()
	progress("building the namespace lab")
	// Segment: NEW also sits on OLD's segment (eth1), for the direct
	// tunnel's column; every other path is as before (NEW's own address
	// is reached through the router).
	l, err := lab.New(ctx, lab.Options{Prefix: "mbench", Log: logw, Segment: true})
	if err != nil {
		return err
	}
	defer func() {
		progress("removing the lab")
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	s, err := scenario.Setup(ctx, l)
	if err != nil {
		return err
	}
	defer scenario.CleanupBinaries()
	b := &bench{l: l, s: s, planDir: l.Dir, old: l.OldIP.String(), new: l.NewIP.String(), log: logw}
	if *flagLoadgen != "" {
		b.loadgen = *flagLoadgen
	} else if b.loadgen, err = buildLoadgen(l.Dir); err != nil {
		return err
	}
	// Client side: wide ephemeral range, for the connection-rate loops.
	for _, kv := range []string{"net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1"} {
		if _, err := l.Exec(ctx, lab.RoleClient, "sysctl", "-q", "-w", kv); err != nil {
			return err
		}
	}

	if *flagOldCT {
		fw := filepath.Join(l.Dir, "oldfw.nft")
		rules := "table ip mbench_fw {\n  chain input {\n    type filter hook input priority filter; policy accept;\n    ct state established,related accept\n  }\n}\n"
		if err := os.WriteFile(fw, []byte(rules), 0o644); err != nil {
			return err
		}
		if _, err := l.Exec(ctx, lab.RoleOld, "nft", "-f", fw); err != nil {
			return err
		}
	}

	var report strings.Builder
	fmt.Fprintf(&report, "Run of %s on %s\n\n", started.UTC().Format("2006-01-02 15:04 MST"), machine())
	if !*flagSkipDP {
		t, err := b.datapath(ctx)
		if err != nil {
			return err
		}
		report.WriteString(t)
	}
	if !*flagSkipSc {
		t, err := b.scale(ctx)
		if err != nil {
			return err
		}
		report.WriteString(t)
	}
	if !*flagSkipCP && *flagCPN > 0 {
		t, err := b.controlPlane(ctx)
		if err != nil {
			return err
		}
		report.WriteString(t)
	}
	report.WriteString(targetsTable())
	fmt.Fprintf(&report, "\nTotal run time %s. Load average (1, 5, 15 min) at the start: %s, at the end: %s.\n", time.Since(started).Round(time.Second), loadStart, loadAvg())
	fmt.Print(report.String())
	if *flagOut != "" {
		if err := os.WriteFile(*flagOut, []byte(report.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func buildLoadgen(dir string) (string, error) {
	out := filepath.Join(dir, "loadgen")
	cmd := exec.Command("go", "build", "-o", out, "./bench/loadgen")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build loadgen: %v: %s", err, b)
	}
	return out, nil
}

func machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var u syscall.Utsname
	_ = syscall.Uname(&u)
	rel := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	return fmt.Sprintf("%d CPUs (%s), Linux %s", runtime.NumCPU(), model, rel)
}

// ---------------------------------------------------------------------------
// processes and commands in the lab

// server is a background process in a lab namespace.
type server struct{ cmd *exec.Cmd }

func (b *bench) start(role string, args ...string) (*server, error) {
	cmd, err := b.l.Start(role, args...)
	if err != nil {
		return nil, err
	}
	return &server{cmd: cmd}, nil
}

// stop kills the server's process group (it was started in its own) and
// reaps it.
func (sv *server) stop() {
	if sv == nil || sv.cmd == nil || sv.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-sv.cmd.Process.Pid, syscall.SIGKILL)
	_ = sv.cmd.Wait()
}

func (b *bench) logPath(sv *server) string { return b.l.LogPath(sv.cmd) }

// output runs args in role's namespace and returns its stdout; stderr is in
// the error.
func (b *bench) output(ctx context.Context, timeout time.Duration, role string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd, err := b.l.Command(role, args...)
	if err != nil {
		return nil, err
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = <-done
		if err == nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, firstLine(errb.String()+out.String()))
	}
	return out.Bytes(), nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

func (b *bench) exec(ctx context.Context, role string, args ...string) error {
	_, err := b.l.Exec(ctx, role, args...)
	return err
}

func (b *bench) waitTCP(ctx context.Context, role, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return b.l.WaitTCP(ctx, role, addr)
}

func hp(ip string, port int) string {
	return netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port)).String()
}

// migrate runs the CLI in the admin namespace and returns the wall time.
func (b *bench) migrate(ctx context.Context, args ...string) (time.Duration, error) {
	t0 := time.Now()
	r, err := b.s.Migrate(ctx, args...)
	d := time.Since(t0)
	if *flagVerbose {
		fmt.Fprintf(os.Stderr, "$ migrate %s (exit %d, %s)\n%s%s", strings.Join(args, " "), r.Code, d.Round(time.Millisecond), r.Stdout, r.Stderr)
	}
	if err != nil {
		return d, err
	}
	if r.Code != 0 {
		msg := strings.TrimSpace(r.Stderr)
		if msg == "" {
			msg = strings.TrimSpace(r.Stdout)
		}
		return d, fmt.Errorf("migrate %s: exit %d: %s", args[0], r.Code, firstLine(msg))
	}
	return d, nil
}

// ---------------------------------------------------------------------------
// measurements

type cell struct {
	v       float64
	ok      bool
	note    string // shown instead of a value
	partial string // "[2 of 3 rounds]" when some rounds failed
}

func val(v float64) cell   { return cell{v: v, ok: true} }
func na(why string) cell   { return cell{note: why} }
func errc(err error) cell  { return cell{note: "error: " + firstLine(err.Error())} }
func (c cell) valid() bool { return c.ok && c.v > 0 }

type loadResult struct {
	Ops    int64   `json:"ops"`
	Errors int64   `json:"errors"`
	Rate   float64 `json:"rate"`
	P50us  float64 `json:"p50_us"`
	P99us  float64 `json:"p99_us"`
	Err    string  `json:"first_error"`
}

func (b *bench) load(ctx context.Context, mode, addr string, extra ...string) (loadResult, error) {
	var r loadResult
	d := *flagDur
	if mode == "latency" {
		d = *flagLatDur
	}
	args := append([]string{b.loadgen, mode, "-addr", addr, "-d", d.String()}, extra...)
	if mode == "connrate" && *flagRST {
		args = append(args, "-rst")
	}
	out, err := b.output(ctx, d+30*time.Second, lab.RoleClient, args...)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		return r, fmt.Errorf("loadgen output %q: %v", out, err)
	}
	if r.Ops == 0 {
		return r, fmt.Errorf("no successful request (%d errors; first: %s)", r.Errors, r.Err)
	}
	return r, nil
}

func (b *bench) iperf(ctx context.Context, addr string, streams int) (float64, error) {
	ap := netip.MustParseAddrPort(addr)
	secs := int(flagDur.Seconds())
	if secs < 1 {
		secs = 1
	}
	args := []string{"iperf3", "-c", ap.Addr().String(), "-p", strconv.Itoa(int(ap.Port())), "-t", strconv.Itoa(secs),
		"-P", strconv.Itoa(streams), "-J", "--connect-timeout", "3000"}
	if *flagAffin != "" {
		args = append(args, "-A", *flagAffin)
	}
	out, err := b.output(ctx, time.Duration(secs)*time.Second+30*time.Second, lab.RoleClient, args...)
	var res struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		if err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("iperf3 output: %v", jerr)
	}
	if res.Error != "" {
		return 0, errors.New("iperf3: " + res.Error)
	}
	if err != nil {
		return 0, err
	}
	return res.End.SumReceived.BitsPerSecond, nil
}

// ---------------------------------------------------------------------------
// data path

type metric struct {
	key, label, unit string
	lowerBetter      bool
	format           func(float64) string
}

var metrics = []metric{
	{"tput1", "TCP throughput, 1 stream", "Gbit/s", false, func(v float64) string { return fmt.Sprintf("%.2f Gbit/s", v/1e9) }},
	{"tput4", "TCP throughput, 4 streams", "Gbit/s", false, func(v float64) string { return fmt.Sprintf("%.2f Gbit/s", v/1e9) }},
	{"conn", "new TCP connections/s (64 B req+reply)", "conn/s", false, func(v float64) string { return fmt.Sprintf("%.0f/s", v) }},
	{"p50", "request RTT p50 (64 B, 1 conn)", "µs", true, func(v float64) string { return fmt.Sprintf("%.0f µs", v) }},
	{"p99", "request RTT p99", "µs", true, func(v float64) string { return fmt.Sprintf("%.0f µs", v) }},
	{"udp", "UDP requests/s (64 B, 4 flows)", "req/s", false, func(v float64) string { return fmt.Sprintf("%.0f/s", v) }},
}

// column is one way from the client to the service.
type column struct {
	name           string
	iperf, rr, udp string // OLD_IP:port, "" = not measured
	udpNote        string
	setup          func(ctx context.Context) error
	teardown       func(ctx context.Context)
}

func (b *bench) datapath(ctx context.Context) (string, error) {
	l := b.l
	// Services. OLD: the direct one. NEW: one set per column that reaches
	// it (routed and relays use 5201/7000/7001; the tunnel 25201/27000,
	// the forward 15201/17000/17001). Every port on OLD is below the
	// ephemeral range (32768-60999), so a relay's outgoing connections
	// cannot hold a port another column wants to listen on.
	var servers []*server
	defer func() {
		for _, sv := range servers {
			sv.stop()
		}
	}()
	startWait := func(role, waitAddr string, args ...string) error {
		sv, err := b.start(role, args...)
		if err != nil {
			return err
		}
		servers = append(servers, sv)
		if waitAddr != "" {
			if err := b.waitTCP(ctx, role, waitAddr); err != nil {
				return fmt.Errorf("%w (log %s)", err, b.logPath(sv))
			}
		}
		return nil
	}
	if err := startWait(lab.RoleOld, hp(b.old, svcRR), b.loadgen, "serve", "-tcp", hp(b.old, svcRR), "-udp", hp(b.old, svcUDP)); err != nil {
		return "", err
	}
	if err := startWait(lab.RoleOld, hp(b.old, svcIperf), "iperf3", "-s", "-B", b.old, "-p", strconv.Itoa(svcIperf)); err != nil {
		return "", err
	}
	// The UDP servers of the NATed columns bind NEW's own address: on the
	// Segment lab a wildcard socket would answer OLD (the masquerade's
	// source) from NEW's segment address, which is not the reply
	// conntrack waits for.
	if err := startWait(lab.RoleNew, "127.0.0.1:7000", b.loadgen, "serve", "-tcp", ":7000,:27000,:17000,:37000", "-udp", hp(b.new, 7001)+","+hp(b.new, 17001)); err != nil {
		return "", err
	}
	for _, p := range []int{5201, 25201, 15201, 35201} {
		if err := startWait(lab.RoleNew, fmt.Sprintf("127.0.0.1:%d", p), "iperf3", "-s", "-p", strconv.Itoa(p)); err != nil {
			return "", err
		}
	}

	planFile := filepath.Join(b.planDir, "bench.hcl")
	tunnelPlan := b.s.HCL(fmt.Sprintf("  type         = %q\n  old_endpoint = %q\n  new_endpoint = %q", *flagTunnel, b.old, b.new),
		fmt.Sprintf(`service "bench-tcp" {
  address  = %q
  protocol = "tcp"
  ports    = [25201, 27000]
  stage    = "new"
}

service "bench-udp" {
  address       = %q
  protocol      = "udp"
  ports         = [27001]
  stage         = "new"
  allow_unready = true # its server on NEW binds OLD's address, which exists there only after apply
}
`, b.old, b.old))
	forwardPlan := tunnelPlan + fmt.Sprintf(`
forward "bench-fwd-tcp" {
  on       = "old"
  address  = %q
  protocol = "tcp"
  ports    = [15201, 17000]
  to       = %q
}

forward "bench-fwd-udp" {
  on       = "old"
  address  = %q
  protocol = "udp"
  ports    = [17001]
  to       = %q
}
`, b.old, b.new, b.old, b.new)

	// The direct tunnel: OLD and NEW on one segment, no device.
	directPlan := b.s.HCL(fmt.Sprintf("  type         = \"direct\"\n  old_endpoint = %q\n  new_endpoint = %q", b.old, l.NewSegIP),
		fmt.Sprintf(`service "bench-direct-tcp" {
  address  = %q
  protocol = "tcp"
  ports    = [35201, 37000]
  stage    = "new"
}

service "bench-direct-udp" {
  address       = %q
  protocol      = "udp"
  ports         = [37001]
  stage         = "new"
  allow_unready = true # its server on NEW binds OLD's address, which exists there only after apply
}
`, b.old, b.old))

	var relay *server
	stopRelay := func(context.Context) {
		relay.stop()
		relay = nil
	}
	var oldForward string
	var tunUDP *server
	migrated := false
	defer func() {
		if migrated {
			_, _ = b.migrate(context.Background(), "rollback", "--auto-approve", "--all", "-f", planFile)
		}
	}()

	hookPort := func(p int) string {
		if *flagHookUnm {
			p -= 20000
		}
		return hp(b.old, p)
	}
	cols := []*column{
		{name: "direct", iperf: hp(b.old, svcIperf), rr: hp(b.old, svcRR), udp: hp(b.old, svcUDP)},
		{name: "routed", iperf: hp(b.old, 11201), rr: hp(b.old, 11000), udp: hp(b.old, 11001),
			setup: func(ctx context.Context) error {
				out, err := l.Exec(ctx, lab.RoleOld, "sysctl", "-n", "net.ipv4.ip_forward")
				if err != nil {
					return err
				}
				oldForward = strings.TrimSpace(string(out))
				f := filepath.Join(b.planDir, "routed.nft")
				rules := fmt.Sprintf(`table ip mbench_routed {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr %[1]s tcp dport 11201 dnat to %[2]s:5201
    ip daddr %[1]s tcp dport 11000 dnat to %[2]s:7000
    ip daddr %[1]s udp dport 11001 dnat to %[2]s:7001
  }
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    ct status dnat ip daddr %[2]s masquerade
  }
}
`, b.old, b.new)
				if err := os.WriteFile(f, []byte(rules), 0o644); err != nil {
					return err
				}
				if err := b.exec(ctx, lab.RoleOld, "nft", "-f", f); err != nil {
					return err
				}
				return b.exec(ctx, lab.RoleOld, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
			},
			teardown: func(ctx context.Context) {
				_ = b.exec(ctx, lab.RoleOld, "nft", "delete", "table", "ip", "mbench_routed")
				if oldForward != "" {
					_ = b.exec(ctx, lab.RoleOld, "sysctl", "-q", "-w", "net.ipv4.ip_forward="+oldForward)
				}
			}},
		{name: "socat", iperf: hp(b.old, 12201), rr: hp(b.old, 12000), udp: hp(b.old, 12001),
			udpNote: "",
			setup: func(ctx context.Context) error {
				// One process per port, as the seed ran it: fork per connection.
				// They share one process group through a shell.
				script := fmt.Sprintf(`socat TCP4-LISTEN:12201,bind=%[1]s,reuseaddr,fork,backlog=1024 TCP4:%[2]s:5201 &
socat TCP4-LISTEN:12000,bind=%[1]s,reuseaddr,fork,backlog=1024 TCP4:%[2]s:7000 &
socat UDP4-LISTEN:12001,bind=%[1]s,reuseaddr,fork UDP4:%[2]s:7001 &
wait`, b.old, b.new)
				var err error
				if relay, err = b.start(lab.RoleOld, "sh", "-c", script); err != nil {
					return err
				}
				if err := b.waitTCP(ctx, lab.RoleOld, hp(b.old, 12000)); err != nil {
					return err
				}
				return b.waitTCP(ctx, lab.RoleOld, hp(b.old, 12201))
			},
			teardown: stopRelay},
		{name: "HAProxy (tcp mode)", iperf: hp(b.old, 13201), rr: hp(b.old, 13000),
			udpNote: "n/a (no UDP in HAProxy)",
			setup: func(ctx context.Context) error {
				if _, err := exec.LookPath("haproxy"); err != nil {
					if _, err2 := os.Stat("/usr/sbin/haproxy"); err2 != nil {
						return errors.New("haproxy not installed")
					}
				}
				cfg := filepath.Join(b.planDir, "haproxy.cfg")
				conf := fmt.Sprintf(`global
  maxconn 5000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend iperf
  bind %[1]s:13201
  default_backend iperf
backend iperf
  server new %[2]s:5201
frontend rr
  bind %[1]s:13000
  default_backend rr
backend rr
  server new %[2]s:7000
`, b.old, b.new)
				if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
					return err
				}
				var err error
				if relay, err = b.start(lab.RoleOld, "haproxy", "-db", "-f", cfg); err != nil {
					return err
				}
				return b.waitTCP(ctx, lab.RoleOld, hp(b.old, 13000))
			},
			teardown: stopRelay},
		{name: "migrate direct (no tunnel)", iperf: hp(b.old, 35201), rr: hp(b.old, 37000), udp: hp(b.old, 37001),
			setup: func(ctx context.Context) error {
				if err := os.WriteFile(planFile, []byte(directPlan), 0o644); err != nil {
					return err
				}
				d, err := b.migrate(ctx, "apply", "--auto-approve", "-f", planFile)
				if err != nil {
					return err
				}
				migrated = true
				progress("  migrate apply (direct) took %s", d.Round(time.Millisecond))
				tunUDP, err = b.start(lab.RoleNew, b.loadgen, "serve", "-udp", hp(b.old, 37001))
				time.Sleep(200 * time.Millisecond)
				return err
			},
			teardown: func(ctx context.Context) {
				tunUDP.stop()
				tunUDP = nil
				// The tunnel columns build their own path from scratch.
				if migrated {
					if _, err := b.migrate(ctx, "rollback", "--auto-approve", "--all", "-f", planFile); err != nil {
						progress("  rollback after the direct column: %v", err)
					}
					migrated = false
				}
			}},
		// Issue 18 item 5: OLD's own service on OLD's address, on ports
		// the plan does not name, before the tunnel plan is applied and
		// after, in the same round.
		{name: colUnmovedBefore, iperf: hp(b.old, svcIperf), rr: hp(b.old, svcRR), udp: hp(b.old, svcUDP),
			setup: func(ctx context.Context) error {
				if migrated {
					if _, err := b.migrate(ctx, "rollback", "--auto-approve", "--all", "-f", planFile); err != nil {
						return err
					}
					migrated = false
				}
				return nil
			}},
		{name: colTunnel, iperf: hp(b.old, 25201), rr: hp(b.old, 27000), udp: hp(b.old, 27001),
			setup: func(ctx context.Context) error {
				if err := os.WriteFile(planFile, []byte(tunnelPlan), 0o644); err != nil {
					return err
				}
				d, err := b.migrate(ctx, "apply", "--auto-approve", "-f", planFile)
				if err != nil {
					return err
				}
				migrated = true
				progress("  migrate apply (tunnel) took %s", d.Round(time.Millisecond))
				// UDP replies must leave from OLD's address: bind it (local on
				// NEW now), not the wildcard.
				tunUDP, err = b.start(lab.RoleNew, b.loadgen, "serve", "-udp", hp(b.old, 27001))
				time.Sleep(200 * time.Millisecond)
				return err
			},
			teardown: func(context.Context) {
				tunUDP.stop()
				tunUDP = nil
			}},
		{name: colUnmovedAfter, iperf: hp(b.old, svcIperf), rr: hp(b.old, svcRR), udp: hp(b.old, svcUDP),
			setup: func(ctx context.Context) error {
				if migrated {
					return nil // the tunnel column's apply
				}
				if err := os.WriteFile(planFile, []byte(tunnelPlan), 0o644); err != nil {
					return err
				}
				if _, err := b.migrate(ctx, "apply", "--auto-approve", "-f", planFile); err != nil {
					return err
				}
				migrated = true
				return nil
			}},
		{name: hookCol(), iperf: hookPort(25201), rr: hookPort(27000), udp: hookPort(27001),
			setup: func(ctx context.Context) error {
				if !migrated {
					if err := os.WriteFile(planFile, []byte(tunnelPlan), 0o644); err != nil {
						return err
					}
					if _, err := b.migrate(ctx, "apply", "--auto-approve", "-f", planFile); err != nil {
						return err
					}
					migrated = true
				}
				if err := b.hook(ctx, *flagHook); err != nil {
					return err
				}
				var err error
				tunUDP, err = b.start(lab.RoleNew, b.loadgen, "serve", "-udp", hp(b.old, 27001))
				time.Sleep(200 * time.Millisecond)
				return err
			},
			teardown: func(ctx context.Context) {
				tunUDP.stop()
				tunUDP = nil
				if err := b.hook(ctx, *flagUnhook); err != nil {
					progress("  -unhook: %v", err)
				}
			}},
		{name: "migrate forward", iperf: hp(b.old, 15201), rr: hp(b.old, 17000), udp: hp(b.old, 17001),
			setup: func(ctx context.Context) error {
				if err := os.WriteFile(planFile, []byte(forwardPlan), 0o644); err != nil {
					return err
				}
				if _, err := b.migrate(ctx, "apply", "--auto-approve", "-f", planFile); err != nil {
					return fmt.Errorf("n/a (forward not available: %v)", err)
				}
				migrated = true
				if _, err := b.loadOnce(ctx, hp(b.old, 17000)); err != nil {
					return fmt.Errorf("n/a (forward not available: applied, but no connection passes: %v)", err)
				}
				return nil
			}},
	}

	if *flagHook == "" {
		for i, c := range cols {
			if strings.HasSuffix(c.name, "+ hook") {
				cols = append(cols[:i], cols[i+1:]...)
				break
			}
		}
	}
	if *flagCols != "" {
		want := map[string]bool{}
		for _, n := range strings.Split(*flagCols, ",") {
			want[strings.TrimSpace(n)] = true
		}
		var keep []*column
		for _, c := range cols {
			if want[c.name] {
				keep = append(keep, c)
			}
		}
		cols = keep
	}

	// Rounds: every column once per round, the median of the rounds is
	// shown. Background load on a shared machine then hits every column
	// alike instead of whichever ran at a bad moment.
	res := map[string]map[string][]cell{}
	for _, c := range cols {
		res[c.name] = map[string][]cell{}
	}
	for round := 1; round <= *flagRounds; round++ {
		// The connection-rate loops of the round before leave ~100 000
		// TIME_WAIT entries in OLD's conntrack table for two minutes;
		// apply's capacity check (over half the limit: refuse) then
		// refused the tunnel column's apply in round 5. They are the
		// benchmark's own debris: flush them, for every column alike.
		for _, role := range []string{lab.RoleOld, lab.RoleNew} {
			_ = b.exec(ctx, role, "conntrack", "-F")
		}
		for _, c := range cols {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			progress("data path, round %d/%d: %s", round, *flagRounds, c.name)
			r := map[string]cell{}
			if c.setup != nil {
				if err := c.setup(ctx); err != nil {
					progress("  %s: %v", c.name, err)
					msg := err.Error()
					if !strings.HasPrefix(msg, "n/a") {
						msg = "error: " + firstLine(msg)
					}
					for _, m := range metrics {
						r[m.key] = na(msg)
					}
				} else {
					b.measure(ctx, c, r)
				}
			} else {
				b.measure(ctx, c, r)
			}
			if c.teardown != nil {
				c.teardown(ctx)
			}
			for k, v := range r {
				res[c.name][k] = append(res[c.name][k], v)
			}
		}
		if migrated {
			if _, err := b.migrate(ctx, "rollback", "--auto-approve", "--all", "-f", planFile); err != nil {
				return "", fmt.Errorf("rollback after round %d: %w", round, err)
			}
			migrated = false
		}
	}
	med := map[string]map[string]cell{}
	for name, byKey := range res {
		med[name] = map[string]cell{}
		for k, cs := range byKey {
			med[name][k] = median(cs)
		}
	}
	return renderDatapath(cols, med) + b.renderRatios(cols, res) + profileSummary(), nil
}

// hookCol and hookPort: the -hook column measures the tunnel's service,
// or with -hook-unmoved OLD's own (the unmoved columns' ports).
func hookCol() string {
	if *flagHookUnm {
		return colUnmovedAfter + " + hook"
	}
	return colTunnel + " + hook"
}

// hook runs an experiment's shell command with the lab's namespace names.
func (b *bench) hook(ctx context.Context, script string) error {
	if script == "" {
		return nil
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Env = append(os.Environ(), "OLD_NS="+b.l.NS[lab.RoleOld], "NEW_NS="+b.l.NS[lab.RoleNew])
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", script, err, out)
	}
	return nil
}

// median of the valid samples; with none, the first failure's note. A
// median over fewer rounds than asked says so.
func median(cs []cell) cell {
	var vs []float64
	var note string
	for _, c := range cs {
		if c.ok {
			vs = append(vs, c.v)
		} else if note == "" {
			note = c.note
		}
	}
	if len(vs) == 0 {
		return na(note)
	}
	sort.Float64s(vs)
	m := vs[len(vs)/2]
	if len(vs)%2 == 0 {
		m = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	c := val(m)
	if len(vs) < len(cs) {
		c.partial = fmt.Sprintf(" [%d of %d rounds]", len(vs), len(cs))
	}
	return c
}

// loadOnce checks that one connection passes.
func (b *bench) loadOnce(ctx context.Context, addr string) (loadResult, error) {
	var r loadResult
	out, err := b.output(ctx, 20*time.Second, lab.RoleClient, b.loadgen, "connrate", "-addr", addr, "-c", "1", "-d", "300ms")
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
		return r, err
	}
	if r.Ops == 0 {
		return r, fmt.Errorf("%d errors, first: %s", r.Errors, r.Err)
	}
	return r, nil
}

func (b *bench) measure(ctx context.Context, c *column, r map[string]cell) {
	note := func(key string, err error) {
		progress("  %s %s: %v", c.name, key, err)
		r[key] = errc(err)
	}
	want := func(m string) bool {
		return *flagMetrics == "" || strings.Contains(","+*flagMetrics+",", ","+m+",")
	}
	if c.iperf != "" && want("iperf") {
		for _, st := range []struct {
			key string
			n   int
		}{{"tput1", 1}, {"tput4", 4}} {
			var pr *profRun
			if st.n == 4 {
				pr = b.profStart(ctx, c.name, st.key)
			}
			if v, err := b.iperf(ctx, c.iperf, st.n); err != nil {
				b.profStop(ctx, pr, 0)
				note(st.key, err)
			} else {
				b.profStop(ctx, pr, v*flagDur.Seconds()/8/1448)
				r[st.key] = val(v)
			}
			time.Sleep(300 * time.Millisecond) // let iperf3's server take the next test
		}
	}
	if c.rr != "" && want("rr") {
		pr := b.profStart(ctx, c.name, "conn")
		if lr, err := b.load(ctx, "connrate", c.rr, "-c", strconv.Itoa(*flagConc)); err != nil {
			b.profStop(ctx, pr, 0)
			note("conn", err)
		} else {
			b.profStop(ctx, pr, float64(lr.Ops))
			r["conn"] = val(lr.Rate)
			if lr.Errors > 0 {
				progress("  %s conn: %d errors (first: %s)", c.name, lr.Errors, lr.Err)
			}
		}
		if lr, err := b.load(ctx, "latency", c.rr); err != nil {
			note("p50", err)
			r["p99"] = r["p50"]
		} else {
			r["p50"], r["p99"] = val(lr.P50us), val(lr.P99us)
		}
	}
	if c.udp != "" && want("udp") {
		pr := b.profStart(ctx, c.name, "udp")
		if lr, err := b.load(ctx, "udp", c.udp, "-c", strconv.Itoa(*flagUDPConc)); err != nil {
			b.profStop(ctx, pr, 0)
			note("udp", err)
		} else {
			b.profStop(ctx, pr, float64(lr.Ops))
			r["udp"] = val(lr.Rate)
			if lr.Errors > 0 {
				progress("  %s udp: %d timeouts/errors", c.name, lr.Errors)
			}
		}
	} else if c.udpNote != "" {
		r["udp"] = na(c.udpNote)
	}
}

func renderDatapath(cols []*column, res map[string]map[string]cell) string {
	var out strings.Builder
	out.WriteString("### Data path\n\n")
	fmt.Fprintf(&out, "Each cell: the median of %d rounds (each %s; latency %s), then (× routed, × direct).\n", *flagRounds, *flagDur, *flagLatDur)
	out.WriteString("Ratios are value ÷ baseline: above 1 is more for rates and throughput, and slower for latency.\n")
	out.WriteString(closeNote())
	header := []string{"metric"}
	for _, c := range cols {
		header = append(header, c.name)
	}
	var rows [][]string
	for _, m := range metrics {
		row := []string{m.label}
		routed, direct := res["routed"][m.key], res["direct"][m.key]
		for _, c := range cols {
			x, ok := res[c.name][m.key]
			switch {
			case !ok:
				row = append(row, "—")
			case !x.ok:
				row = append(row, x.note)
			default:
				row = append(row, fmt.Sprintf("%s (%s, %s)%s", m.format(x.v), ratio(x, routed), ratio(x, direct), x.partial))
			}
		}
		rows = append(rows, row)
	}
	out.WriteString(mdTable(header, rows))

	// Targets.
	get := func(col, key string) cell { return res[col][key] }
	tun := colTunnel
	out.WriteString("\nTargets (issue 8):\n\n")
	check := func(what string, a, base cell, min float64) {
		if !a.valid() || !base.valid() {
			fmt.Fprintf(&out, "- %s ≥ %.1f: not measured\n", what, min)
			return
		}
		r := a.v / base.v
		verdict := "met"
		if r < min {
			verdict = "MISSED"
		}
		fmt.Fprintf(&out, "- %s ≥ %.1f: %.2f, %s\n", what, min, r, verdict)
	}
	check("tunnel throughput, 1 stream ÷ routed", get(tun, "tput1"), get("routed", "tput1"), 0.9)
	check("tunnel throughput, 4 streams ÷ routed", get(tun, "tput4"), get("routed", "tput4"), 0.9)
	check("tunnel throughput, 1 stream ÷ socat", get(tun, "tput1"), get("socat", "tput1"), 5)
	check("tunnel throughput, 4 streams ÷ socat", get(tun, "tput4"), get("socat", "tput4"), 5)
	check("tunnel connection rate ÷ routed", get(tun, "conn"), get("routed", "conn"), 0.8)
	check("tunnel connection rate ÷ socat", get(tun, "conn"), get("socat", "conn"), 5)
	// Issue 20: on one segment no encapsulation: about the routed path.
	const dir = "migrate direct (no tunnel)"
	check("direct tunnel throughput, 1 stream ÷ routed", get(dir, "tput1"), get("routed", "tput1"), 0.9)
	check("direct tunnel throughput, 4 streams ÷ routed", get(dir, "tput4"), get("routed", "tput4"), 0.9)
	check("direct tunnel connection rate ÷ routed", get(dir, "conn"), get("routed", "conn"), 0.9)
	return out.String()
}

func ratio(x, base cell) string {
	if !x.valid() || !base.valid() {
		return "–"
	}
	return fmt.Sprintf("%.2f", x.v/base.v)
}

func mdTable(header []string, rows [][]string) string {
	w := make([]int, len(header))
	for i, h := range header {
		w[i] = len([]rune(h))
	}
	for _, r := range rows {
		for i, c := range r {
			if n := len([]rune(c)); n > w[i] {
				w[i] = n
			}
		}
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i, c := range cells {
			b.WriteString(" " + c + strings.Repeat(" ", w[i]-len([]rune(c))) + " |")
		}
		b.WriteString("\n")
	}
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = strings.Repeat("-", w[i])
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// scale

// Extra addresses on OLD for the scale plans: services spread over them.
const scaleAddrs = 10

func scaleAddr(i int) string { return fmt.Sprintf("198.51.100.%d", 100+i) }

// scalePlan is the plan with n services: "probe" (OLD:27000, served on
// NEW, whose connection rate is measured) and n-1 one-port services
// spread over scaleAddrs addresses (allow_unready: nothing serves them).
func (b *bench) scalePlan(n int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "service \"probe\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [27000]\n  stage    = \"new\"\n}\n", b.old)
	for i := 0; i < n-1; i++ {
		fmt.Fprintf(&sb, "\nservice \"s%05d\" {\n  address       = %q\n  protocol      = \"tcp\"\n  ports         = [%d]\n  stage         = \"new\"\n  allow_unready = true\n}\n",
			i, scaleAddr(i%scaleAddrs), 20000+i/scaleAddrs)
	}
	return b.s.HCL(fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", b.old, b.new), sb.String())
}

type scaleRow struct {
	n                      int
	planT, applyT, rollT   time.Duration
	planE, applyE, rollE   string
	memOld, memNew         int64 // kB VmHWM of the agents during apply
	rules, elements        int
	nftE                   string
	rate                   cell
	memOldPlan, memNewPlan int64
	conntrack              int // entries on OLD before plan
}

func (b *bench) scale(ctx context.Context) (string, error) {
	var sizes []int
	for _, f := range strings.Split(*flagSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 10*1000*scaleAddrs {
			return "", fmt.Errorf("bad -sizes entry %q", f)
		}
		sizes = append(sizes, n)
	}
	for i := 0; i < scaleAddrs; i++ {
		if err := b.exec(ctx, lab.RoleOld, "ip", "addr", "add", scaleAddr(i)+"/32", "dev", "eth0"); err != nil {
			return "", err
		}
	}
	nw, err := b.start(lab.RoleNew, b.loadgen, "serve", "-tcp", ":27000")
	if err != nil {
		return "", err
	}
	defer nw.stop()
	if err := b.waitTCP(ctx, lab.RoleNew, "127.0.0.1:27000"); err != nil {
		return "", err
	}
	planFile := filepath.Join(b.planDir, "scale.hcl")
	var rows []*scaleRow
	for _, n := range sizes {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		progress("scale: %d services", n)
		row := &scaleRow{n: n}
		rows = append(rows, row)
		if err := os.WriteFile(planFile, []byte(b.scalePlan(n)), 0o644); err != nil {
			return "", err
		}
		// Leftovers of the previous measurement (tens of thousands of
		// closed flows) would make plan times depend on the order of the
		// rows: start each row with OLD's conntrack table empty (the lab's
		// namespace only).
		_ = b.exec(ctx, lab.RoleOld, "conntrack", "-F")
		if out, err := b.output(ctx, 20*time.Second, lab.RoleOld, "conntrack", "-C"); err == nil {
			row.conntrack, _ = strconv.Atoi(strings.TrimSpace(string(out)))
		}
		mp := b.pollMem()
		row.planT, err = b.migrate(ctx, "plan", "-f", planFile)
		row.memOldPlan, row.memNewPlan = mp.stop()
		if err != nil {
			row.planE = firstLine(err.Error())
			progress("  plan: %v", err)
		}
		mp = b.pollMem()
		row.applyT, err = b.migrate(ctx, "apply", "--auto-approve", "-f", planFile)
		row.memOld, row.memNew = mp.stop()
		if err != nil {
			row.applyE = firstLine(err.Error())
			progress("  apply: %v", err)
			continue
		}
		progress("  plan %s, apply %s", row.planT.Round(time.Millisecond), row.applyT.Round(time.Millisecond))
		row.rules, row.elements, err = b.nftCount(ctx)
		if err != nil {
			row.nftE = firstLine(err.Error())
		}
		var rates []cell
		for i := 0; i < *flagRounds; i++ {
			if lr, err := b.load(ctx, "connrate", hp(b.old, 27000), "-c", strconv.Itoa(*flagConc)); err != nil {
				rates = append(rates, errc(err))
			} else {
				rates = append(rates, val(lr.Rate))
			}
		}
		row.rate = median(rates)
		row.rollT, err = b.migrate(ctx, "rollback", "--auto-approve", "--all", "-f", planFile)
		if err != nil {
			row.rollE = firstLine(err.Error())
			progress("  rollback: %v", err)
			return renderScale(rows), nil // the next apply would not start clean
		}
	}
	return renderScale(rows), nil
}

// nftCount counts the rules and the set/map elements of migrate's table on
// OLD (`nft -a list table inet migrate`: every rule line carries a handle).
func (b *bench) nftCount(ctx context.Context) (rules, elements int, err error) {
	out, err := b.output(ctx, 60*time.Second, lab.RoleOld, "nft", "-a", "list", "table", "inet", "migrate")
	if err != nil {
		return 0, 0, err
	}
	inElems := false
	for _, ln := range strings.Split(string(out), "\n") {
		t := strings.TrimSpace(ln)
		if inElems || strings.HasPrefix(t, "elements = {") {
			body := strings.TrimPrefix(t, "elements = {")
			inElems = !strings.HasSuffix(body, "}")
			body = strings.TrimSuffix(body, "}")
			for _, e := range strings.Split(body, ",") {
				if strings.TrimSpace(e) != "" {
					elements++
				}
			}
			continue
		}
		if !strings.Contains(t, "# handle ") {
			continue
		}
		// An object (table, chain, set, map, named counter...) opens a
		// block; a rule does not.
		if strings.HasSuffix(strings.TrimSpace(strings.SplitN(t, "#", 2)[0]), "{") {
			continue
		}
		rules++
	}
	return rules, elements, nil
}

func renderScale(rows []*scaleRow) string {
	var out strings.Builder
	out.WriteString("\n### Scale\n\n")
	out.WriteString("Services are one port each, spread over OLD's address and 10 more; all stage \"new\".\n")
	out.WriteString("Times are wall clock of the CLI in the admin namespace, SSH included (agent binary already\n")
	out.WriteString("installed). Peak memory: VmHWM of each host's `migrate agent`, sampled every 25 ms.\n")
	fmt.Fprintf(&out, "Connection rate: to the one service served on NEW, with n services installed; median of %d runs of %s.\n", *flagRounds, *flagDur)
	out.WriteString(closeNote())
	header := []string{"services"}
	for _, r := range rows {
		header = append(header, strconv.Itoa(r.n))
	}
	var base cell
	if len(rows) > 0 {
		base = rows[0].rate
	}
	dur := func(d time.Duration, e string) string {
		if e != "" {
			return "error: " + e
		}
		if d == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	mem := func(kb int64) string {
		if kb == 0 {
			return "not seen"
		}
		return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
	}
	var tbl [][]string
	add := func(label string, f func(r *scaleRow) string) {
		row := []string{label}
		for _, r := range rows {
			row = append(row, f(r))
		}
		tbl = append(tbl, row)
	}
	add("conntrack entries on OLD before `plan` (after a flush)", func(r *scaleRow) string { return strconv.Itoa(r.conntrack) })
	add("`migrate plan`", func(r *scaleRow) string { return dur(r.planT, r.planE) })
	add("`migrate apply`", func(r *scaleRow) string { return dur(r.applyT, r.applyE) })
	add("`migrate rollback --all`", func(r *scaleRow) string {
		if r.applyE != "" {
			return "—"
		}
		return dur(r.rollT, r.rollE)
	})
	add("agent peak RSS, OLD (plan / apply)", func(r *scaleRow) string { return mem(r.memOldPlan) + " / " + mem(r.memOld) })
	add("agent peak RSS, NEW (plan / apply)", func(r *scaleRow) string { return mem(r.memNewPlan) + " / " + mem(r.memNew) })
	add("nft rules on OLD", func(r *scaleRow) string {
		if r.applyE != "" {
			return "—"
		}
		if r.nftE != "" {
			return "error: " + r.nftE
		}
		return strconv.Itoa(r.rules)
	})
	add("nft set/map elements on OLD (all sets)", func(r *scaleRow) string {
		if r.applyE != "" || r.nftE != "" {
			return "—"
		}
		return strconv.Itoa(r.elements)
	})
	add("new TCP connections/s to one service (× n=1)", func(r *scaleRow) string {
		if r.applyE != "" {
			return "—"
		}
		if !r.rate.ok {
			return r.rate.note
		}
		return fmt.Sprintf("%.0f/s (%s)", r.rate.v, ratio(r.rate, base))
	})
	out.WriteString(mdTable(header, tbl))
	if len(rows) > 1 {
		last := rows[len(rows)-1]
		out.WriteString("\nTargets (issue 8):\n\n")
		if last.applyE == "" && last.planE == "" {
			verdict := "met"
			if last.planT+last.applyT >= 5*time.Second {
				verdict = "MISSED"
			}
			fmt.Fprintf(&out, "- %d services planned and applied in under 5 s: plan %.2f s + apply %.2f s, %s\n", last.n, last.planT.Seconds(), last.applyT.Seconds(), verdict)
			verdict = "met"
			if last.rules != rows[0].rules {
				verdict = "MISSED"
			}
			fmt.Fprintf(&out, "- rule count independent of the service count: %d rules at n=%d, %d at n=%d, %s\n", rows[0].rules, rows[0].n, last.rules, last.n, verdict)
		} else {
			fmt.Fprintf(&out, "- %d services planned and applied in under 5 s: MISSED (failed)\n", last.n)
		}
		if last.rate.valid() && base.valid() {
			r := last.rate.v / base.v
			verdict := "met"
			if r < 0.95 {
				verdict = "MISSED"
			}
			fmt.Fprintf(&out, "- connection rate with %d services ≥ 0.95 × the rate with %d: %.2f, %s\n", last.n, rows[0].n, r, verdict)
		} else {
			fmt.Fprintf(&out, "- connection rate with %d services ≥ 0.95 × the rate with %d: not measured\n", last.n, rows[0].n)
		}
	}
	return out.String()
}

// memPoller samples VmHWM of the `migrate agent` processes living in
// OLD's and NEW's namespaces. The agent is started by sshd, so no wrapper
// can be put around it without changing migrate; /proc is read instead.
// VmHWM only grows, so the last sample is the peak up to that moment.
type memPoller struct {
	done     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	old, new int64
}

func nsInode(name string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		return 0
	}
	return st.Ino
}

func (b *bench) pollMem() *memPoller {
	mp := &memPoller{done: make(chan struct{})}
	inoOld, inoNew := nsInode(b.l.NS[lab.RoleOld]), nsInode(b.l.NS[lab.RoleNew])
	mp.wg.Add(1)
	go func() {
		defer mp.wg.Done()
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for {
			sampleAgents(inoOld, inoNew, mp)
			select {
			case <-mp.done:
				return
			case <-tick.C:
			}
		}
	}()
	return mp
}

func (mp *memPoller) stop() (old, new int64) {
	close(mp.done)
	mp.wg.Wait()
	return mp.old, mp.new
}

func sampleAgents(inoOld, inoNew uint64, mp *memPoller) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + name + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) < 2 || args[1] != "agent" || !strings.Contains(filepath.Base(args[0]), "migrate") {
			continue
		}
		link, err := os.Readlink("/proc/" + name + "/ns/net")
		if err != nil {
			continue
		}
		var ino uint64
		if _, err := fmt.Sscanf(link, "net:[%d]", &ino); err != nil {
			continue
		}
		status, err := os.ReadFile("/proc/" + name + "/status")
		if err != nil {
			continue
		}
		var hwm int64
		for _, ln := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(ln, "VmHWM:") {
				f := strings.Fields(ln)
				if len(f) >= 2 {
					hwm, _ = strconv.ParseInt(f[1], 10, 64)
				}
			}
		}
		mp.mu.Lock()
		switch ino {
		case inoOld:
			mp.old = max(mp.old, hwm)
		case inoNew:
			mp.new = max(mp.new, hwm)
		}
		mp.mu.Unlock()
	}
}

// closeNote says how the connection-rate clients closed.
func closeNote() string {
	if *flagRST {
		return "Connection-rate clients close abortively (-rst: SO_LINGER 0, an RST; no TIME_WAIT anywhere).\n\n"
	}
	return "Connection-rate clients close normally: the server closes first after its reply (HTTP/1.0) and keeps the TIME_WAIT, and the client's ports come back while it does.\n\n"
}

// loadAvg is the machine's load average (/proc/loadavg), to judge how
// busy the shared machine was during a run.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}
