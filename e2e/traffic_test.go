package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// realTrafficServices: TCP and UDP, IPv4 and IPv6, one stage for all.
func realTrafficServices(l *lab.Lab, stage string) string {
	extra := ""
	if stage == "canary" {
		extra = "\n  canary_percent = 50"
	}
	var b strings.Builder
	for _, sv := range []struct{ name, addr, proto string }{
		{"web", l.OldIP.String(), "tcp"},
		{"web6", l.OldIP6.String(), "tcp"},
		{"dns", l.OldIP.String(), "udp"},
		{"dns6", l.OldIP6.String(), "udp"},
	} {
		port := 8080
		if sv.proto == "udp" {
			port = udpPort
		}
		fmt.Fprintf(&b, "service %q {\n  address  = %q\n  protocol = %q\n  ports    = [%d]\n  stage    = %q%s\n}\n\n",
			sv.name, sv.addr, sv.proto, port, stage, extra)
	}
	return b.String()
}

// TestRealTraffic runs what a busy real service sees through every stage
// of a migration: ordinary clients that close normally after the server
// closes first (an HTTP/1.0 server: OLD and NEW are left holding
// thousands of TIME_WAIT sockets), the kernel's own port choice in a
// narrow port range so ports come back under pressure, 1 000 long-lived
// connections opened before the first apply (half of them idle until the
// end), and a stream of UDP requests from fresh sockets; IPv4 and IPv6.
// Phases: before migrate, apply (path built, all on OLD), canary, new,
// back to old, new again, old, rollback. In each, no connection may fail
// or hang; new connections go where the stage says; long-lived ones stay
// on OLD. Then both hosts are back to their snapshots.
func TestRealTraffic(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	t.Logf("TUNNEL vxlan: running on this kernel (%s)", kernelRelease())
	s := newScenario(t, ctx)
	l := s.Lab
	for _, sv := range []struct {
		role, name, listen string
		udp                bool
	}{
		{lab.RoleOld, "old", hp(l.OldIP6.String(), 8080), false},
		{lab.RoleOld, "old", hp(l.OldIP.String(), udpPort), true},
		{lab.RoleOld, "old", hp(l.OldIP6.String(), udpPort), true},
	} {
		if err := s.Serve(ctx, sv.role, sv.name, sv.listen, sv.udp); err != nil {
			t.Fatal(err)
		}
	}
	// 2 000 ports for the client: at this rate each comes back within
	// seconds, while the servers still hold its TIME_WAIT for 60 s.
	if out, err := l.Exec(ctx, lab.RoleClient, "sysctl", "-w", "net.ipv4.ip_local_port_range=40000 41999"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", l.OldIP, l.NewIP)
	write := func(stage string) {
		t.Helper()
		if err := os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, realTrafficServices(l, stage))), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	gen := startTraffic(t, s, "before",
		"-tcp", hp(l.OldIP.String(), 8080)+","+hp(l.OldIP6.String(), 8080),
		"-udp", hp(l.OldIP.String(), udpPort)+","+hp(l.OldIP6.String(), udpPort),
		"-workers", "16", "-long", "1000", "-udp-workers", "4", "-timeout", "5s", "-max", "5m")
	phase := gen.phase
	// Wait for the long-lived connections, then let short ones fill
	// OLD with TIME_WAIT sockets.
	waitLog(t, ctx, s, gen.cmd, "long-lived connections open", time.Minute)
	time.Sleep(5 * time.Second)
	tw := timeWaits(t, ctx, l, lab.RoleOld)
	t.Logf("OLD holds %d TIME_WAIT sockets before the first apply", tw)
	if tw < 500 {
		t.Errorf("only %d TIME_WAIT sockets on OLD: the test would not exercise port reuse against them", tw)
	}

	hold := 6 * time.Second
	step := func(name, stage string, args ...string) {
		t.Helper()
		// What starts while migrate runs may go either way; once it
		// returned, every new connection must go where the stage says.
		phase(name + "-switch")
		if stage != "" {
			write(stage)
		}
		start := time.Now()
		mustMigrate(t, ctx, s, 0, args...)
		phase(name)
		t.Logf("phase %s: migrate %s took %s", name, args[0], time.Since(start).Round(time.Millisecond))
		time.Sleep(hold)
	}
	step("apply", "old", "apply", "-f", s.PlanFile, "--auto-approve")
	// NEW's UDP daemons bind the migrated addresses, now local there.
	for _, a := range []string{l.OldIP.String(), l.OldIP6.String()} {
		if err := s.Serve(ctx, lab.RoleNew, "new", hp(a, udpPort), true); err != nil {
			t.Fatal(err)
		}
	}
	step("canary", "canary", "apply", "-f", s.PlanFile, "--auto-approve")
	step("new", "new", "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("NEW holds %d TIME_WAIT sockets", timeWaits(t, ctx, l, lab.RoleNew))
	step("back-to-old", "old", "apply", "-f", s.PlanFile, "--auto-approve")
	step("new-again", "new", "apply", "-f", s.PlanFile, "--auto-approve")
	step("old-again", "old", "apply", "-f", s.PlanFile, "--auto-approve")
	step("rollback", "", "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	out, lines := gen.finish(ctx)
	counts := regexp.MustCompile(`tcp attempted (\d+) completed (\d+) failed 0 hung 0 (served-by=\S+); udp attempted (\d+) answered (\d+) failed 0 hung 0 (served-by=\S+); (\d+) conn/s`)
	either := "^served-by=(new:\\d+,)?(old:\\d+)?$"
	for _, p := range []struct{ name, tcp, udp string }{
		{"before", "^served-by=old:\\d+$", "^served-by=old:\\d+$"},
		{"apply-switch", "^served-by=old:\\d+$", "^served-by=old:\\d+$"},
		{"canary-switch", either, either},
		{"new-switch", either, either},
		{"back-to-old-switch", either, either},
		{"new-again-switch", either, either},
		{"old-again-switch", either, either},
		{"rollback-switch", either, either},
		{"apply", "^served-by=old:\\d+$", "^served-by=old:\\d+$"},
		// A UDP request from a client port that served a request
		// within conntrack's UDP timeout is the same flow, and stays
		// where it went: both hosts answer for a while after a move.
		{"canary", "^served-by=new:\\d+,old:\\d+$", "new:"},
		{"new", "^served-by=new:\\d+$", "new:"},
		{"back-to-old", "^served-by=old:\\d+$", "old:"},
		{"new-again", "^served-by=new:\\d+$", "new:"},
		{"old-again", "^served-by=old:\\d+$", "old:"},
		{"rollback", "^served-by=old:\\d+$", "old:"},
	} {
		line := lines[p.name]
		m := counts.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("phase %s: want every connection and request answered, none failed or hung: %q", p.name, line)
			continue
		}
		if m[1] != m[2] || m[4] != m[5] || m[1] == "0" {
			t.Errorf("phase %s: not everything completed: %q", p.name, line)
		}
		if !regexp.MustCompile(p.tcp).MatchString(m[3]) || !regexp.MustCompile(p.udp).MatchString(m[6]) {
			t.Errorf("phase %s: served by the wrong host: %q", p.name, line)
		}
		if rate, _ := strconv.Atoi(m[7]); rate < 300 && !strings.HasSuffix(p.name, "-switch") {
			t.Errorf("phase %s: only %d new connections a second: not the load this test is about", p.name, rate)
		}
	}
	if !strings.Contains(out, "long-lived: attempted 1000 completed 1000 failed 0 hung 0 (idle 500) served-by=old:1000") {
		t.Errorf("long-lived connections did not all stay open on OLD")
	}
	if !strings.Contains(out, "close: normal") {
		t.Errorf("the generator did not close normally")
	}
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback", before, after)
}

// trafficGen is a `labtool traffic` run in the client namespace, told its
// phase through a file.
type trafficGen struct {
	t       *testing.T
	s       *scenario.Scenario
	cmd     *exec.Cmd
	done    chan error
	control string
}

// startTraffic starts the generator in phase first; it is stopped when
// the test ends if finish was not reached.
func startTraffic(t *testing.T, s *scenario.Scenario, first string, args ...string) *trafficGen {
	t.Helper()
	g := &trafficGen{t: t, s: s, done: make(chan error, 1), control: filepath.Join(s.Lab.Dir, "traffic-phase")}
	g.phase(first)
	cmd, err := s.Lab.Start(lab.RoleClient, append([]string{s.LabtoolBin, "traffic", "-control", g.control}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	g.cmd = cmd
	go func() { g.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			g.phase("stop")
			select {
			case <-g.done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
			}
		}
	})
	return g
}

func (g *trafficGen) phase(name string) {
	g.t.Helper()
	if err := os.WriteFile(g.control, []byte(name+"\n"), 0o644); err != nil {
		g.t.Fatal(err)
	}
}

// finish stops the generator and returns its output and its count line
// per phase ("phase NAME: tcp ..."). A non-zero exit is an error.
func (g *trafficGen) finish(ctx context.Context) (string, map[string]string) {
	g.t.Helper()
	g.phase("stop")
	var waitErr error
	select {
	case waitErr = <-g.done:
	case <-ctx.Done():
		g.t.Fatal("traffic generator did not finish")
	}
	out := g.s.LogText(g.cmd)
	g.t.Logf("traffic:\n%s", out)
	if waitErr != nil {
		g.t.Errorf("traffic generator: %v", waitErr)
	}
	lines := map[string]string{}
	re := regexp.MustCompile(`^phase ([a-z-]+): tcp`)
	for _, line := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			lines[m[1]] = line
		}
	}
	return out, lines
}

// waitLog waits until a background command's log holds want.
func waitLog(t *testing.T, ctx context.Context, s *scenario.Scenario, cmd *exec.Cmd, want string, limit time.Duration) {
	t.Helper()
	end := time.Now().Add(scenario.Slow(limit))
	for time.Now().Before(end) && ctx.Err() == nil {
		if strings.Contains(s.LogText(cmd), want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%q not seen within %s: %s", want, limit, s.LogText(cmd))
}

// timeWaits counts role's TCP sockets in TIME_WAIT.
func timeWaits(t *testing.T, ctx context.Context, l *lab.Lab, role string) int {
	t.Helper()
	out, err := l.Exec(ctx, role, "ss", "-Htan", "state", "time-wait")
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	return strings.Count(string(out), "\n")
}
