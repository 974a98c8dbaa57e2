package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
	"github.com/opsmigrate/migrate/views"
)

// Ports of the forward tests.
const (
	fwdTCP      = 8443 // tcp, same port on the destination
	fwdUDP      = 5353 // udp
	fwdUDPTo    = 5300 // the IPv4 udp forward's to_port
	fwdKeepPort = 8444 // a second tcp forward, kept when 8443's is removed
)

// fwdHosts is the plan's two host blocks, as s.HCL writes them.
func fwdHosts(s *scenario.Scenario) string {
	h := s.HCL("", "")
	return h[:strings.Index(h, "tunnel {")]
}

// fwdDir is one direction of the bouncer: the host that receives (on) at
// its own addresses, the host that serves at its addresses.
type fwdDir struct {
	on, serve             string // lab roles, also plan host names
	addr4, addr6          string // the forwarded addresses (on's)
	to4, to6              string // the destination (serve's)
	onName, serveName     string // labtool server names
	bouncerV4, bouncerV6  string // the address the destination sees
	clientV4, clientV6    string
	withTCP4, withoutKeep bool // plan options, see blocks
}

// blocks renders the forward blocks: tcp 8443 (v4 unless !withTCP4, and
// v6), udp 5353 (v4 to 5300, v6 to 5353) and, unless withoutKeep, tcp
// 8444 (v4).
func (d fwdDir) blocks() string {
	var b strings.Builder
	add := func(name, addr, proto string, port int, to string, toPort int) {
		fmt.Fprintf(&b, "forward %q {\n  on       = %q\n  address  = %q\n  protocol = %q\n  ports    = [%d]\n  to       = %q\n", name, d.on, addr, proto, port, to)
		if toPort != 0 {
			fmt.Fprintf(&b, "  to_port  = %d\n", toPort)
		}
		b.WriteString("}\n\n")
	}
	if d.withTCP4 {
		add("web4", d.addr4, "tcp", fwdTCP, d.to4, 0)
	}
	add("web6", d.addr6, "tcp", fwdTCP, d.to6, 0)
	add("dns4", d.addr4, "udp", fwdUDP, d.to4, fwdUDPTo)
	add("dns6", d.addr6, "udp", fwdUDP, d.to6, 0)
	if !d.withoutKeep {
		add("keep", d.addr4, "tcp", fwdKeepPort, d.to4, fwdTCP)
	}
	return b.String()
}

func writePlan(t *testing.T, s *scenario.Scenario, text string) {
	t.Helper()
	if err := os.WriteFile(s.PlanFile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestForward runs the in-kernel bouncer in both directions: old -> new
// (the socat case: clients keep using OLD's address, NEW serves) and new
// -> old (the Barefoot case: clients already use NEW's address, OLD still
// serves). Each covers TCP and UDP over IPv4 and IPv6, what the
// destination sees (the bouncer's address, by design), drain both ways,
// plan after apply, and rollback to byte-identical snapshots.
func TestForward(t *testing.T) {
	needRoot(t)
	t.Run("old-to-new", func(t *testing.T) {
		forward(t, func(l *lab.Lab) fwdDir {
			return fwdDir{
				on: lab.RoleOld, serve: lab.RoleNew, onName: "old", serveName: "new",
				addr4: l.OldIP.String(), addr6: l.OldIP6.String(), to4: l.NewIP.String(), to6: l.NewIP6.String(),
				bouncerV4: l.OldIP.String(), bouncerV6: l.OldIP6.String(),
			}
		})
	})
	t.Run("new-to-old", func(t *testing.T) {
		forward(t, func(l *lab.Lab) fwdDir {
			return fwdDir{
				on: lab.RoleNew, serve: lab.RoleOld, onName: "new", serveName: "old",
				addr4: l.NewIP.String(), addr6: l.NewIP6.String(), to4: l.OldIP.String(), to6: l.OldIP6.String(),
				bouncerV4: l.NewIP.String(), bouncerV6: l.NewIP6.String(),
			}
		})
	})
}

func forward(t *testing.T, dirOf func(*lab.Lab) fwdDir) {
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	d := dirOf(l)
	d.clientV4, d.clientV6 = l.ClientIP.String(), l.ClientIP6.String()
	d.withTCP4 = true

	// The receiving host serves its own addresses (what clients reach
	// without a forward); the destination serves its own.
	for _, sv := range []struct {
		role, name, listen string
		udp                bool
	}{
		{d.on, d.onName, hp(d.addr4, fwdTCP), false},
		{d.on, d.onName, hp(d.addr6, fwdTCP), false},
		{d.on, d.onName, hp(d.addr4, fwdKeepPort), false},
		{d.serve, d.serveName, hp(d.to4, fwdTCP), false},
		{d.serve, d.serveName, hp(d.to6, fwdTCP), false},
		{d.serve, d.serveName, hp(d.to4, fwdUDPTo), true},
		{d.serve, d.serveName, hp(d.to6, fwdUDP), true},
	} {
		if err := s.Serve(ctx, sv.role, sv.name, sv.listen, sv.udp); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Drain, one way: a connection open before the forward stays on the
	// receiving host.
	early := startHolder(t, s, hp(d.addr4, fwdTCP))
	if early.servedBy() != d.onName {
		t.Fatalf("before apply the holder is served by %q, want %q", early.servedBy(), d.onName)
	}

	// TIME_WAIT sockets on the receiving host, left by an ordinary
	// client whose server closed first, on the ports the forwarded
	// flows below reuse.
	runProbes(t, ctx, s, []probe{
		{"before: tcp v4, server closes first", lab.RoleClient, []string{"dial", "-port", twClientPort, "-bye", hp(d.addr4, fwdTCP)}, []string{"served-by=" + d.onName + " "}},
		{"before: tcp v6, server closes first", lab.RoleClient, []string{"dial", "-port", twClientPort, "-bye", hp(d.addr6, fwdTCP)}, []string{"served-by=" + d.onName + " "}},
	})

	writePlan(t, s, fwdHosts(s)+d.blocks())
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	t.Logf("plan:\n%s", r.Stdout)
	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("apply:\n%s", r.Stdout)

	forwarded := func(what string) []probe {
		by4 := fmt.Sprintf("served-by=%s peer=%s ", d.serveName, d.bouncerV4)
		by6 := fmt.Sprintf("served-by=%s peer=%s ", d.serveName, d.bouncerV6)
		return []probe{
			{what + ": tcp v4", lab.RoleClient, []string{"dial", hp(d.addr4, fwdTCP)}, []string{by4, "remote=" + hp(d.addr4, fwdTCP)}},
			{what + ": tcp v6", lab.RoleClient, []string{"dial", hp(d.addr6, fwdTCP)}, []string{by6, "remote=" + hp(d.addr6, fwdTCP)}},
			{what + ": udp v4, to_port", lab.RoleClient, []string{"dial", "-udp", hp(d.addr4, fwdUDP)}, []string{by4, "remote=" + hp(d.addr4, fwdUDP)}},
			{what + ": udp v6", lab.RoleClient, []string{"dial", "-udp", hp(d.addr6, fwdUDP)}, []string{by6, "remote=" + hp(d.addr6, fwdUDP)}},
			{what + ": tcp v4, to_port", lab.RoleClient, []string{"dial", hp(d.addr4, fwdKeepPort)}, []string{by4}},
		}
	}
	runProbes(t, ctx, s, forwarded("forwarded"))
	runProbes(t, ctx, s, []probe{
		{"forwarded from a port in TIME_WAIT on the receiving host: tcp v4", lab.RoleClient, []string{"dial", "-port", twClientPort, "-bye", hp(d.addr4, fwdTCP)}, []string{"served-by=" + d.serveName + " "}},
		{"forwarded from a port in TIME_WAIT on the receiving host: tcp v6", lab.RoleClient, []string{"dial", "-port", twClientPort, "-bye", hp(d.addr6, fwdTCP)}, []string{"served-by=" + d.serveName + " "}},
	})
	early.expectAnswering(t, d.onName)

	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "No changes") {
		t.Errorf("plan after apply:\n%s", r.Stdout)
	}

	// Drain, the other way: a connection through the forward keeps
	// working when its forward is removed, and when that is rolled back;
	// meanwhile new connections stay on the receiving host.
	through := startHolder(t, s, hp(d.addr4, fwdTCP))
	if through.servedBy() != d.serveName {
		t.Fatalf("a connection through the forward is served by %q, want %q", through.servedBy(), d.serveName)
	}
	// status counts, per forward on its own host, the established flows
	// going through it and those its host still serves itself.
	st := readStatus(t, ctx, s)
	byName := map[string]views.StatusFwd{}
	for _, f := range st.Forwards {
		byName[f.Name] = f
	}
	if w := byName["web4"]; !w.Live || w.On != d.on || w.Forwarded != 1 || w.Local != 1 {
		t.Errorf("status of web4 with one connection through it and one opened before it: %+v", w)
	}
	for _, name := range []string{"web6", "dns4", "dns6", "keep"} {
		if f := byName[name]; !f.Live || f.Forwarded != 0 || f.Local != 0 {
			t.Errorf("status of idle forward %s: %+v", name, f)
		}
	}
	if wantOld := d.on == lab.RoleOld; strings.Contains(st.Verdict, "5 forward(s) on OLD") != wantOld {
		t.Errorf("verdict with the forwards on %s: %q", d.on, st.Verdict)
	}
	human := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if !strings.Contains(human.Stdout, "FORWARD") || !strings.Contains(human.Stdout, "1 established flow(s) through it, 1 served by "+strings.ToUpper(d.on)+" itself") {
		t.Errorf("status output:\n%s", human.Stdout)
	}
	t.Logf("status:\n%s", human.Stdout)
	removed := d
	removed.withTCP4 = false
	writePlan(t, s, fwdHosts(s)+removed.blocks())
	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("forward removed:\n%s", r.Stdout)
	through.expectAnswering(t, d.serveName)
	early.expectAnswering(t, d.onName)
	runProbes(t, ctx, s, []probe{
		{"forward removed: new tcp v4 flow", lab.RoleClient, []string{"dial", hp(d.addr4, fwdTCP)},
			[]string{fmt.Sprintf("served-by=%s peer=%s ", d.onName, d.clientV4)}},
	})
	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	t.Logf("rollback of the removal:\n%s", r.Stdout)
	through.expectAnswering(t, d.serveName)
	early.expectAnswering(t, d.onName)
	runProbes(t, ctx, s, forwarded("forward rolled back in"))

	through.stop(t)
	early.stop(t)
	writePlan(t, s, fwdHosts(s)+d.blocks())
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)
	runProbes(t, ctx, s, []probe{
		{"after rollback: tcp v4 on the receiving host", lab.RoleClient, []string{"dial", hp(d.addr4, fwdTCP)},
			[]string{fmt.Sprintf("served-by=%s peer=%s ", d.onName, d.clientV4)}},
		{"after rollback: tcp v6 on the receiving host", lab.RoleClient, []string{"dial", hp(d.addr6, fwdTCP)},
			[]string{fmt.Sprintf("served-by=%s peer=%s ", d.onName, d.clientV6)}},
	})
}

// TestForwardLastRemoved: a connection through a forward when the host's
// last forward is removed. Without a nat chain the kernel stops
// translating the connection's packets, so the planner keeps migrate's nat
// chains (with empty maps) and forwarding on while the host has had
// forwards; rollback --all then removes them and restores the host byte
// for byte.
func TestForwardLastRemoved(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	for _, sv := range []struct{ role, name, listen string }{
		{lab.RoleOld, "old", hp(l.OldIP.String(), fwdTCP)},
		{lab.RoleNew, "new", hp(l.NewIP.String(), fwdTCP)},
	} {
		if err := s.Serve(ctx, sv.role, sv.name, sv.listen, false); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	one := fmt.Sprintf("forward \"web\" {\n  on       = \"old\"\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  to       = %q\n}\n",
		l.OldIP, fwdTCP, l.NewIP)
	writePlan(t, s, fwdHosts(s)+one)
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	through := startHolder(t, s, hp(l.OldIP.String(), fwdTCP))
	if through.servedBy() != "new" {
		t.Fatalf("a connection through the forward is served by %q", through.servedBy())
	}
	writePlan(t, s, fwdHosts(s))
	r := mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("last forward removed:\n%s", r.Stdout)
	if !strings.Contains(r.Stdout, "0 forwarded port(s)") && strings.Contains(r.Stdout, "- nft table") {
		t.Errorf("removing the last forward deleted the nat chains the open connection needs:\n%s", r.Stdout)
	}
	expectServedAt(t, ctx, s, hp(l.OldIP.String(), fwdTCP), "old") // new connections: no longer forwarded
	through.expectAnswering(t, "new")                              // the open one: still forwarded
	through.stop(t)
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all", before, after)
}

func expectServedAt(t *testing.T, ctx context.Context, s *scenario.Scenario, addr, by string) {
	t.Helper()
	out, err := s.Dial(ctx, lab.RoleClient, addr)
	if err != nil || !strings.Contains(out, "served-by="+by+" ") {
		t.Errorf("client to %s: %v %q, want served-by=%s", addr, err, out, by)
	}
}

// TestForwardWithService mixes a tunnelled service (stage new) and a
// forward in one plan, and checks that an address:port that is both is
// refused before any host is touched.
func TestForwardWithService(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := s.Serve(ctx, lab.RoleNew, "new", hp(l.NewIP.String(), fwdTCP), false); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tunnel := fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", l.OldIP, l.NewIP)
	service := fmt.Sprintf("service \"web\" {\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  stage    = \"new\"\n}\n\n", l.OldIP, scenario.MigratedPort)
	fwd := func(port int) string {
		return fmt.Sprintf("forward \"bounce\" {\n  on       = \"old\"\n  address  = %q\n  protocol = \"tcp\"\n  ports    = [%d]\n  to       = %q\n  to_port  = %d\n}\n",
			l.OldIP, port, l.NewIP, fwdTCP)
	}

	// Both on one address:port: a config error, file:line:col, exit 1.
	writePlan(t, s, s.HCL(tunnel, service+fwd(scenario.MigratedPort)))
	for _, cmd := range []string{"plan", "apply"} {
		args := []string{cmd, "-f", s.PlanFile}
		if cmd == "apply" {
			args = append(args, "--auto-approve")
		}
		r := mustMigrate(t, ctx, s, 1, args...)
		if !regexp.MustCompile(regexp.QuoteMeta(s.PlanFile) + `:\d+:\d+`).MatchString(r.Stderr) {
			t.Errorf("%s: error does not name file:line:col:\n%s", cmd, r.Stderr)
		}
		if !strings.Contains(r.Stderr, "either a service or a forward") {
			t.Errorf("%s: error does not say why:\n%s", cmd, r.Stderr)
		}
		t.Logf("%s refused: %s", cmd, firstLine(r.Stderr))
	}
	same, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "refused plan", before, same)

	// One service through the tunnel, one forward, one plan.
	writePlan(t, s, s.HCL(tunnel, service+fwd(fwdTCP)))
	r := mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("apply:\n%s", r.Stdout)
	c4 := l.ClientIP.String()
	runProbes(t, ctx, s, []probe{
		{"service through the tunnel", lab.RoleClient, []string{"dial", hp(l.OldIP.String(), scenario.MigratedPort)},
			[]string{"served-by=new peer=" + c4 + " ", "remote=" + hp(l.OldIP.String(), scenario.MigratedPort)}},
		{"forward", lab.RoleClient, []string{"dial", hp(l.OldIP.String(), fwdTCP)},
			[]string{"served-by=new peer=" + l.OldIP.String() + " ", "remote=" + hp(l.OldIP.String(), fwdTCP)}},
		{"unmigrated port", lab.RoleClient, []string{"dial", hp(l.OldIP.String(), scenario.StayPort)},
			[]string{"served-by=old peer=" + c4 + " "}},
	})
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "No changes") {
		t.Errorf("plan after apply:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback", before, after)
}
