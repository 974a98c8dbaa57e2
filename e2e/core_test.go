package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/internal/needroot"
	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// tunnelTypes are the tunnel types the e2e tests know, each with the plan
// endpoints it uses in the lab. Each runs when this kernel can create it
// (natively); otherwise it is reported "NOT RUN here" with the reason, and
// the VM lane (scripts/vm-lane.sh) runs it under Debian's kernel, where a
// skip is a failure. Types migrate does not implement are reported as
// such. Nothing is skipped silently: every subtest logs a "TUNNEL" line.
var tunnelTypes = []tunnelCase{
	{Name: "vxlan", Type: "vxlan"},
	{Name: "gre", Type: "gre"},
	{Name: "ip6gre", Type: "ip6gre", V6Underlay: true},
	{Name: "wireguard", Type: "wireguard"},
	{Name: "direct", Type: "direct", Segment: true},
}

// tunnelCase is one tunnel type of the e2e matrix.
type tunnelCase struct {
	Name string // subtest name
	Type string // tunnel.type
	// V6Underlay puts the tunnel endpoints on the lab's IPv6 addresses
	// (OLD 2001:db8:100::10, NEW 2001:db8:200::20); the migrated service
	// stays IPv4.
	V6Underlay bool
	// NotImplemented: migrate refuses the type; the subtest proves the
	// refusal and says so.
	NotImplemented bool
	// Segment runs the case on the lab's Segment variant: OLD and NEW
	// on one bridged segment, the endpoints their addresses there (OLD
	// 198.51.100.10, NEW 198.51.100.20). For type direct.
	Segment bool
}

// endpoints are tc's tunnel endpoints in the lab.
func (tc tunnelCase) endpoints(l *lab.Lab) (oldEP, newEP netip.Addr) {
	switch {
	case tc.Segment:
		return l.OldIP, l.NewSegIP
	case tc.V6Underlay:
		return l.OldIP6, l.NewIP6
	}
	return l.OldIP, l.NewIP
}

// newScenarioFor is newScenario on the lab tc needs.
func newScenarioFor(t *testing.T, ctx context.Context, tc tunnelCase) *scenario.Scenario {
	t.Helper()
	return newScenarioOpts(t, ctx, lab.Options{Prefix: "mge", Segment: tc.Segment})
}

// runTunnelCase starts tc's subtest: it reports where the type runs, skips
// (with the reason, in a TUNNEL line) when it cannot run here, and
// otherwise calls f.
func runTunnelCase(t *testing.T, tc tunnelCase, f func(t *testing.T, tc tunnelCase)) {
	t.Run(tc.Name, func(t *testing.T) {
		if tc.NotImplemented {
			notImplemented(t, tc)
			return
		}
		if !kernelHas(tc.Type) {
			t.Logf("TUNNEL %s: NOT RUN here: kernel %s lacks %s; runs in the VM lane (scripts/vm-lane.sh)", tc.Name, kernelRelease(), tc.Type)
			t.Skipf("kernel lacks %s; runs in the VM lane", tc.Type)
		}
		t.Logf("TUNNEL %s: running on this kernel (%s)", tc.Name, kernelRelease())
		f(t, tc)
	})
}

// notImplemented reports a tunnel type migrate does not build yet, after
// checking that migrate still refuses it: once it is accepted, this fails
// and asks for the type to join the matrix.
func notImplemented(t *testing.T, tc tunnelCase) {
	src := `host "old" {
  ssh = "root@198.51.100.10"
}
host "new" {
  ssh = "root@203.0.113.20"
}
tunnel {
  type         = "` + tc.Type + `"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
`
	_, err := config.Parse([]byte(src), "migration.hcl")
	if err == nil || !strings.Contains(err.Error(), "not supported yet") {
		t.Fatalf("migrate now accepts tunnel type %q (err %v): give it a real subtest in tunnelTypes", tc.Type, err)
	}
	has := "lacks it too"
	if kernelHas(tc.Type) {
		has = "has it"
	}
	t.Logf("TUNNEL %s: NOT IMPLEMENTED in migrate yet (the plan file is refused: %v); this kernel (%s) %s", tc.Name, err, kernelRelease(), has)
	t.Skipf("tunnel type %s: NOT IMPLEMENTED in migrate yet", tc.Type)
}

// kernelHas reports whether the kernel can create a link of typ, trying in
// a throwaway network namespace (which also loads its module).
func kernelHas(typ string) bool {
	if typ == "direct" {
		return true // no device: plain routing
	}
	args := []string{"--net", "--", "ip", "link", "add", "probe0", "type", typ}
	switch typ {
	case "vxlan":
		args = append(args, "id", "1", "dstport", "4789", "local", "192.0.2.1")
	case "gre":
		args = append(args, "local", "192.0.2.1", "remote", "192.0.2.2")
	case "ip6gre":
		args = append(args, "local", "2001:db8::1", "remote", "2001:db8::2")
	}
	return exec.Command("unshare", args...).Run() == nil
}

// writeTunnelPlan writes the lab's plan for tc: the core scenario's
// service "web" (OLD_IP:8080/tcp) at stage, over a tunnel of tc's type
// between the lab's IPv4 addresses, or its IPv6 ones for V6Underlay.
func writeTunnelPlan(s *scenario.Scenario, tc tunnelCase, stage string) error {
	oldEP, newEP := tc.endpoints(s.Lab)
	tunnel := fmt.Sprintf("  type         = %q\n  old_endpoint = %q\n  new_endpoint = %q", tc.Type, oldEP, newEP)
	return os.WriteFile(s.PlanFile, []byte(s.HCL(tunnel, webService(s, stage))), 0o644)
}

// webService is the core scenario's service "web" (OLD_IP:8080/tcp) at stage.
func webService(s *scenario.Scenario, stage string) string {
	return fmt.Sprintf(`service "web" {
  address  = %q
  protocol = "tcp"
  ports    = [%d]
  stage    = %q
}
`, s.Lab.OldIP, scenario.MigratedPort, stage)
}

func needRoot(t *testing.T) {
	t.Helper()
	needroot.Skip(t, "end-to-end tests need root (network namespaces, sshd); run the README's test command as root")
}

func newScenario(t *testing.T, ctx context.Context) *scenario.Scenario {
	t.Helper()
	return newScenarioOpts(t, ctx, lab.Options{Prefix: "mge"})
}

func newScenarioOpts(t *testing.T, ctx context.Context, opts lab.Options) *scenario.Scenario {
	t.Helper()
	l, err := lab.New(ctx, opts)
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for role, p := range l.SSHDLog {
				if b, err := os.ReadFile(p); err == nil {
					t.Logf("sshd log %s:\n%s", role, b)
				}
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	s, err := scenario.Setup(ctx, l)
	if err != nil {
		t.Fatalf("scenario: %v", err)
	}
	return s
}

func mustMigrate(t *testing.T, ctx context.Context, s *scenario.Scenario, wantCode int, args ...string) scenario.Result {
	t.Helper()
	r, err := s.Migrate(ctx, args...)
	if err != nil {
		t.Fatalf("migrate %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, r.Stdout, r.Stderr)
	}
	if r.Code != wantCode {
		t.Fatalf("migrate %v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, r.Code, wantCode, r.Stdout, r.Stderr)
	}
	return r
}

func expectServed(t *testing.T, ctx context.Context, s *scenario.Scenario, port int, by string) string {
	t.Helper()
	out, err := s.Dial(ctx, lab.RoleClient, fmt.Sprintf("%s:%d", s.Lab.OldIP, port))
	if err != nil {
		t.Fatalf("client dial %s:%d: %v: %s", s.Lab.OldIP, port, err, out)
	}
	if !strings.Contains(out, "served-by="+by+" ") {
		t.Fatalf("client to %s:%d: %q, want served-by=%s", s.Lab.OldIP, port, out, by)
	}
	return out
}

func diffSnap(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for host, b := range before {
		if a := after[host]; a != b {
			t.Errorf("%s: host %s changed:\n--- before\n%s\n--- after\n%s", what, host, b, a)
		}
	}
}

// TestCoreSlice moves one TCP service from OLD to NEW and back, for every
// tunnel type this kernel has.
func TestCoreSlice(t *testing.T) {
	needRoot(t)
	for _, tc := range tunnelTypes {
		runTunnelCase(t, tc, coreSlice)
	}
}

// Ports of connections that leave a TIME_WAIT on OLD before the move.
const (
	twClientPort = "40123"
	twOldPort    = "40124"
)

// mustExec runs a command in role's namespaces and stops the test when
// it fails; it returns the command's output.
func mustExec(t *testing.T, ctx context.Context, l *lab.Lab, role string, args ...string) string {
	t.Helper()
	out, err := l.Exec(ctx, role, args...)
	if err != nil {
		t.Fatalf("%s: %v: %v: %s", role, args, err, out)
	}
	return string(out)
}

// vxlanScenario is newScenario for a test over VXLAN (logged as its
// tunnel type), bounded by timeout (scenario.Slow).
func vxlanScenario(t *testing.T, timeout time.Duration) (context.Context, *scenario.Scenario) {
	t.Helper()
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	t.Log("TUNNEL vxlan: " + t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(timeout))
	t.Cleanup(cancel)
	return ctx, newScenario(t, ctx)
}

// movedScenario is a lab whose service web (OLD_IP:8080/tcp) is applied
// at stage new over VXLAN and served by NEW: where the tests of what
// happens to a host weeks after the apply start.
func movedScenario(t *testing.T, ctx context.Context) *scenario.Scenario {
	t.Helper()
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan")
	}
	s := newScenario(t, ctx)
	t.Log("TUNNEL vxlan: " + t.Name())
	if err := s.WritePlan(scenario.PlanOptions{Stage: "new"}); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	servedByNew(t, ctx, s, "after apply")
	return s
}

// brokenUntil checks, after what a test did to a host, that a client of
// the moved service gets no answer while the tunnel still pings and
// status calls the service BROKEN with want and the commands cmds (each
// in backticks, joined by " and "); then fix runs them, and NEW serves
// the client again (with its address) and status is clean.
func brokenUntil(t *testing.T, ctx context.Context, s *scenario.Scenario, what, want string, cmds []string, fix func()) {
	t.Helper()
	if out, err := s.Dial(ctx, lab.RoleClient, hp(s.Lab.OldIP.String(), scenario.MigratedPort)); err == nil {
		t.Errorf("client with %s: %q, want no answer", what, out)
	}
	r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, "BROKEN") || !strings.Contains(r.Stdout, "`"+strings.Join(cmds, "` and `")+"`") || strings.Contains(r.Stdout, "cannot ping") || strings.Contains(r.Stdout, "drained:") {
		t.Errorf("status with %s: want %q, the commands %q and the service BROKEN (the tunnel still pings):\n%s", what, want, cmds, r.Stdout)
	}
	fix()
	servedByNew(t, ctx, s, "after the commands for "+what)
	if r := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile); strings.Contains(r.Stdout, "BROKEN") {
		t.Errorf("status after the commands for %s:\n%s", what, r.Stdout)
	}
}

// rolledBack runs rollback --all and checks that neither host holds
// migrate's table and that OLD serves the service again.
func rolledBack(t *testing.T, ctx context.Context, s *scenario.Scenario) {
	t.Helper()
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--all", "--auto-approve")
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		if out, err := s.Lab.Exec(ctx, role, "nft", "list", "table", "inet", "migrate"); err == nil {
			t.Errorf("%s: migrate's table after rollback --all:\n%s", role, out)
		}
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}

// mustDial runs labtool dial from role and wants want in its answer.
func mustDial(t *testing.T, ctx context.Context, s *scenario.Scenario, role, want string, args ...string) string {
	t.Helper()
	out, err := s.Dial(ctx, role, args...)
	if err != nil {
		t.Fatalf("dial from %s %v: %v: %s", role, args, err, out)
	}
	if !strings.Contains(out, want) {
		t.Fatalf("dial from %s %v: %q, want %q", role, args, out, want)
	}
	return out
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func coreSlice(t *testing.T, tc tunnelCase) {
	coreSliceWith(t, tc, nil)
}

// coreSliceWith is the core scenario; prepare, when set, adjusts the
// scenario first (TestRelease swaps in another CLI binary).
func coreSliceWith(t *testing.T, tc tunnelCase, prepare func(s *scenario.Scenario)) {
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newScenarioFor(t, ctx, tc)
	if prepare != nil {
		prepare(s)
	}
	if err := writeTunnelPlan(s, tc, "new"); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	// TIME_WAIT sockets on OLD with the 4-tuples the moved flows will
	// reuse: a client whose HTTP/1.0-style server closed first, and OLD's
	// own outbound connection that it closed first.
	mustDial(t, ctx, s, lab.RoleClient, "served-by=old ", "-port", twClientPort, "-bye", fmt.Sprintf("%s:%d", s.Lab.OldIP, scenario.MigratedPort))
	mustDial(t, ctx, s, lab.RoleOld, "served-by=client ", "-bind", s.Lab.OldIP.String(), "-port", twOldPort, fmt.Sprintf("%s:%d", s.Lab.ClientIP, scenario.ClientPort))

	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "Plan: ") || !strings.Contains(r.Stdout, "host new") {
		t.Fatalf("plan output:\n%s", r.Stdout)
	}
	// The plan says what it builds: a link of this type between the
	// endpoints of the right family.
	oldEP, newEP := tc.endpoints(s.Lab)
	want := "type " + tc.Type + " local " + oldEP.String()
	if tc.Type == "wireguard" {
		// No local end; NEW's link names OLD's endpoint and port.
		want = fmt.Sprintf("type wireguard listen-port %d ", config.DefaultWGPort)
		if ep := fmt.Sprintf(" endpoint %s ", net.JoinHostPort(oldEP.String(), fmt.Sprint(config.DefaultWGPort))); !strings.Contains(r.Stdout, ep) {
			t.Errorf("plan output does not show %q:\n%s", ep, r.Stdout)
		}
	}
	if tc.Type == "direct" {
		// No device: OLD's table routes to NEW's segment address.
		want = fmt.Sprintf("route table 4242 0.0.0.0/0 via %s dev eth0", newEP)
		if strings.Contains(r.Stdout, "mig0") {
			t.Errorf("a direct plan makes a device:\n%s", r.Stdout)
		}
	}
	if !strings.Contains(r.Stdout, want) {
		t.Errorf("plan output does not show %q:\n%s", want, r.Stdout)
	}
	outputs := []string{r.Stdout, r.Stderr}
	afterPlan, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "plan must not change hosts", before, afterPlan)

	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("apply:\n%s", r.Stdout)
	outputs = append(outputs, r.Stdout, r.Stderr)
	if !strings.Contains(r.Stdout, "tunnel verified in both directions") {
		t.Errorf("apply did not report the tunnel check:\n%s", r.Stdout)
	}

	// (a) served by NEW, which sees the client's real address; the client
	// talks to OLD_IP:port.
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+s.Lab.ClientIP.String()+" ") {
		t.Errorf("NEW does not see the client's address: %q", out)
	}
	if !strings.Contains(out, fmt.Sprintf("remote=%s:%d", s.Lab.OldIP, scenario.MigratedPort)) {
		t.Errorf("client's peer is not OLD_IP:port: %q", out)
	}
	// (a2) the same client port again, while OLD still holds that
	// connection's TIME_WAIT: NEW serves it (early demux would hand the
	// SYN to the TIME_WAIT socket and the forward path drop it).
	mustDial(t, ctx, s, lab.RoleClient, "served-by=new ", "-port", twClientPort, "-bye", fmt.Sprintf("%s:%d", s.Lab.OldIP, scenario.MigratedPort))
	// (b) another port on OLD_IP stays on OLD.
	expectServed(t, ctx, s, scenario.StayPort, "old")
	// (c) NEW connects out from OLD_IP; the client's listener sees OLD_IP.
	out, err = s.Dial(ctx, lab.RoleNew, "-bind", s.Lab.OldIP.String(), fmt.Sprintf("%s:%d", s.Lab.ClientIP, scenario.ClientPort))
	if err != nil {
		t.Fatalf("NEW outbound from OLD_IP: %v: %s", err, out)
	}
	if !strings.Contains(out, "served-by=client peer="+s.Lab.OldIP.String()+" ") {
		t.Errorf("client's listener did not see OLD_IP as source: %q", out)
	}
	// (c2) from the port of OLD's own connection in TIME_WAIT: the
	// client's answers reach NEW through OLD.
	mustDial(t, ctx, s, lab.RoleNew, "served-by=client peer="+s.Lab.OldIP.String()+" ", "-bind", s.Lab.OldIP.String(), "-port", twOldPort, fmt.Sprintf("%s:%d", s.Lab.ClientIP, scenario.ClientPort))

	// (d) plan after apply: no changes; apply again changes nothing.
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "No changes") {
		t.Errorf("plan after apply:\n%s", r.Stdout)
	}
	r = mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if !strings.Contains(r.Stdout, "No changes") {
		t.Errorf("second apply:\n%s", r.Stdout)
	}
	if tc.Type == "wireguard" {
		outputs = append(outputs, r.Stdout, r.Stderr)
		wgKeysStayHome(t, s, outputs)
	}

	// (e) rollback restores both hosts byte for byte, and OLD serves again.
	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	t.Logf("rollback:\n%s", r.Stdout)
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback", before, after)
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	if tc.Type == "wireguard" {
		for _, dir := range []string{s.Lab.OldStateDir, s.Lab.NewStateDir} {
			if _, err := os.Stat(filepath.Join(dir, "wg-mig0.key")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after rollback, %s/wg-mig0.key is still there (%v): rollback must remove the keys migrate made", dir, err)
			}
		}
	}
}

// wgKeysStayHome checks each host's WireGuard private key file (0600 in its
// agent's state directory) and that the key appears in none of migrate's
// output nor in the state file.
func wgKeysStayHome(t *testing.T, s *scenario.Scenario, outputs []string) {
	t.Helper()
	stateFile, err := os.ReadFile(filepath.Join(filepath.Dir(s.PlanFile), "migration.state.json"))
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	for _, dir := range []string{s.Lab.OldStateDir, s.Lab.NewStateDir} {
		path := filepath.Join(dir, "wg-mig0.key")
		st, err := os.Stat(path)
		if err != nil {
			t.Fatalf("private key file: %v", err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", path, st.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		key := strings.TrimSpace(string(b))
		if len(key) != 44 {
			t.Fatalf("%s does not hold a base64 WireGuard key", path)
		}
		for i, out := range outputs {
			if strings.Contains(out, key) {
				t.Errorf("the private key of %s is in migrate's output (#%d)", path, i)
			}
		}
		if strings.Contains(string(stateFile), key) {
			t.Errorf("the private key of %s is in the state file", path)
		}
	}
	t.Logf("wireguard: private keys (0600, in each agent's state directory) in none of %d outputs nor the state file", len(outputs))
}
