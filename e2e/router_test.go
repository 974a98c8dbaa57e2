package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// neighbours are two namespaces of the test's own hung on OLD: "nb" uses
// OLD as its gateway to "far", which serves TCP on farAddr:9000.
type neighbours struct {
	s       *scenario.Scenario
	nb, far string // namespace names
}

const (
	nbOld, nbAddr   = "192.0.2.193/28", "192.0.2.194/28"
	farOld, farAddr = "192.0.2.209/28", "192.0.2.210/28"
	farPort         = 9000
)

// addNeighbours creates nb and far (unique names under the lab's, removed
// when the test ends, also on failure), each joined to OLD by a veth pair
// created inside OLD's namespace, and starts far's server.
func addNeighbours(t *testing.T, ctx context.Context, s *scenario.Scenario) *neighbours {
	t.Helper()
	n := &neighbours{s: s, nb: s.Lab.Name + "-rtnb", far: s.Lab.Name + "-rtfar"}
	var server *exec.Cmd
	t.Cleanup(func() {
		if server != nil && server.Process != nil {
			_ = syscall.Kill(-server.Process.Pid, syscall.SIGKILL)
			_ = server.Wait()
		}
		for _, ns := range []string{n.nb, n.far} {
			if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
				if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
					t.Errorf("ip netns delete %s: %v: %s", ns, err, out)
				}
			}
		}
	})
	for _, ns := range []string{n.nb, n.far} {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			t.Fatalf("namespace %s exists already", ns)
		}
		if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
	}
	oldNS := s.Lab.NS[lab.RoleOld]
	for _, c := range []struct {
		ns, dev, oldCIDR, cidr string
	}{{n.nb, "rtnb", nbOld, nbAddr}, {n.far, "rtfar", farOld, farAddr}} {
		gw := strings.Split(c.oldCIDR, "/")[0]
		for _, args := range [][]string{
			{"ip", "netns", "exec", oldNS, "ip", "link", "add", c.dev, "type", "veth", "peer", "name", "eth0", "netns", c.ns},
			{"ip", "netns", "exec", oldNS, "ip", "addr", "add", c.oldCIDR, "dev", c.dev},
			{"ip", "netns", "exec", oldNS, "ip", "link", "set", c.dev, "up"},
			{"ip", "netns", "exec", c.ns, "ip", "link", "set", "lo", "up"},
			{"ip", "netns", "exec", c.ns, "ip", "addr", "add", c.cidr, "dev", "eth0"},
			{"ip", "netns", "exec", c.ns, "ip", "link", "set", "eth0", "up"},
			{"ip", "netns", "exec", c.ns, "ip", "route", "add", "default", "via", gw},
		} {
			if out, err := n.exec(ctx, args...); err != nil {
				t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
	}
	server = exec.Command("ip", "netns", "exec", n.far, s.LabtoolBin, "serve", "-name", "far", "-listen", fmt.Sprintf("%s:%d", strings.Split(farAddr, "/")[0], farPort))
	server.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	// The server is up once far itself can reach it.
	deadline := time.Now().Add(scenario.Slow(10 * time.Second))
	for {
		out, err := n.exec(ctx, "ip", "netns", "exec", n.far, s.LabtoolBin, "dial", "-timeout", "1s", fmt.Sprintf("%s:%d", strings.Split(farAddr, "/")[0], farPort))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("far's server does not answer: %v: %s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return n
}

// exec runs a command with a bound time; a command run inside one of the
// test's namespaces is only run after checking that it exists.
func (n *neighbours) exec(ctx context.Context, args ...string) ([]byte, error) {
	if len(args) > 3 && args[0] == "ip" && args[1] == "netns" && args[2] == "exec" {
		ns := args[3]
		if ns != n.nb && ns != n.far && ns != n.s.Lab.NS[lab.RoleOld] {
			return nil, fmt.Errorf("not a namespace of this test: %q", ns)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
			return nil, fmt.Errorf("namespace %s: %w", ns, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, scenario.Slow(15*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// routed reports whether nb reaches far's server through OLD.
func (n *neighbours) routed(ctx context.Context) (bool, string) {
	out, err := n.exec(ctx, "ip", "netns", "exec", n.nb, n.s.LabtoolBin, "dial", "-timeout", "2s", fmt.Sprintf("%s:%d", strings.Split(farAddr, "/")[0], farPort))
	return err == nil && strings.Contains(string(out), "served-by=far "), strings.TrimSpace(string(out))
}

var guardCounterRE = regexp.MustCompile(`meta nfproto ipv4 counter packets (\d+) bytes \d+ drop`)

// guardDrops reads the drop counter of migrate's guard on OLD (its IPv4
// drop rule, at the end of chain forward); -1 when there is no guard.
func guardDrops(t *testing.T, ctx context.Context, s *scenario.Scenario) (int, string) {
	t.Helper()
	out, err := s.Lab.Exec(ctx, lab.RoleOld, "nft", "list", "table", "inet", "migrate")
	if err != nil {
		t.Fatalf("nft list table inet migrate on old: %v: %s", err, out)
	}
	m := guardCounterRE.FindSubmatch(out)
	if m == nil {
		return -1, string(out)
	}
	v, _ := strconv.Atoi(string(m[1]))
	return v, string(out)
}

func oldIPForward(t *testing.T, ctx context.Context, s *scenario.Scenario) string {
	t.Helper()
	out, err := s.Lab.Exec(ctx, lab.RoleOld, "sysctl", "-n", "net.ipv4.ip_forward")
	if err != nil {
		t.Fatalf("sysctl on old: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestOldNotOpenRouter: apply switches IPv4 forwarding on on OLD for the
// tunnel; a neighbour that uses OLD as its gateway to a third network must
// not get routed because of it.
//   - OLD did not forward (the lab's default): the neighbour is refused
//     before apply (the kernel), after apply (migrate's guard drops
//     and counts its packets) while the service moved to NEW, NEW's
//     outbound and a forward still work, and after rollback (the kernel
//     again); nft list ruleset and the rest are as before.
//   - OLD forwarded already: the neighbour is routed before, after apply
//     (no guard) and after rollback, and forwarding stays on.
func TestOldNotOpenRouter(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	n := addNeighbours(t, ctx, s)
	const fwdPort = 8445
	if err := s.Serve(ctx, lab.RoleNew, "new-fwd", fmt.Sprintf("%s:%d", s.Lab.NewIP, fwdPort), false); err != nil {
		t.Fatal(err)
	}
	service := fmt.Sprintf(`service "web" {
  address  = %q
  protocol = "tcp"
  ports    = [%d]
  stage    = "new"
}

forward "bounce" {
  on       = "old"
  address  = %q
  protocol = "tcp"
  ports    = [%d]
  to       = %q
}
`, s.Lab.OldIP, scenario.MigratedPort, s.Lab.OldIP, fwdPort, s.Lab.NewIP)
	writePlan(t, s, s.HCL(fmt.Sprintf("  type         = \"vxlan\"\n  old_endpoint = %q\n  new_endpoint = %q", s.Lab.OldIP, s.Lab.NewIP), service))

	t.Run("old did not forward", func(t *testing.T) {
		if v := oldIPForward(t, ctx, s); v != "0" {
			t.Fatalf("OLD's ip_forward is %s before apply; the lab should start at 0", v)
		}
		before, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok, out := n.routed(ctx); ok {
			t.Fatalf("before apply, OLD (ip_forward 0) routed the neighbour: %s", out)
		}
		r := mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
		if !strings.Contains(r.Stdout, "ip_forward: 0 -> 1") || !strings.Contains(r.Stdout, "forwards only its own ipv4") {
			t.Errorf("apply does not say it switches forwarding on and guards it:\n%s", r.Stdout)
		}
		if v := oldIPForward(t, ctx, s); v != "1" {
			t.Fatalf("ip_forward after apply: %s", v)
		}
		drops0, table := guardDrops(t, ctx, s)
		if drops0 < 0 {
			t.Errorf("no guard drop counter on OLD after apply:\n%s", table)
		}
		if ok, out := n.routed(ctx); ok {
			t.Errorf("after apply, OLD routed the neighbour's connection to far: %s", out)
		}
		drops1, table := guardDrops(t, ctx, s)
		t.Logf("guard dropped %d packet(s) of the neighbour's", drops1-drops0)
		if drops0 >= 0 && drops1 <= drops0 {
			t.Errorf("the guard's counter did not rise (%d -> %d):\n%s", drops0, drops1, table)
		}
		// migrate's own forwarding is untouched by the guard.
		expectServed(t, ctx, s, scenario.MigratedPort, "new")
		out, err := s.Dial(ctx, lab.RoleNew, "-bind", s.Lab.OldIP.String(), fmt.Sprintf("%s:%d", s.Lab.ClientIP, scenario.ClientPort))
		if err != nil || !strings.Contains(out, "served-by=client peer="+s.Lab.OldIP.String()+" ") {
			t.Errorf("NEW's outbound from OLD_IP: %v: %q", err, out)
		}
		out, err = s.Dial(ctx, lab.RoleClient, fmt.Sprintf("%s:%d", s.Lab.OldIP, fwdPort))
		if err != nil || !strings.Contains(out, "served-by=new-fwd ") {
			t.Errorf("forward on OLD to NEW: %v: %q", err, out)
		}
		if d, table := guardDrops(t, ctx, s); d != drops1 {
			t.Errorf("the guard dropped %d packet(s) of migrate's own traffic:\n%s", d-drops1, table)
		}
		// A later apply (nothing to change) keeps the guard, though
		// ip_forward is now 1: the journal says it was 0.
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
		if ok, out := n.routed(ctx); ok {
			t.Errorf("after rollback, OLD routed the neighbour: %s", out)
		}
	})

	t.Run("old forwarded already", func(t *testing.T) {
		if out, err := s.Lab.Exec(ctx, lab.RoleOld, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		before, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok, out := n.routed(ctx); !ok {
			t.Fatalf("before apply, OLD (ip_forward 1) did not route the neighbour: %s", out)
		}
		r := mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
		if strings.Contains(r.Stdout, "ip_forward") || strings.Contains(r.Stdout, "forwards only its own") {
			t.Errorf("apply changes OLD's forwarding, which was on already:\n%s", r.Stdout)
		}
		if d, table := guardDrops(t, ctx, s); d >= 0 || strings.Contains(table, "chain guard") {
			t.Errorf("a guard on OLD, which forwarded before migrate:\n%s", table)
		}
		if ok, out := n.routed(ctx); !ok {
			t.Errorf("after apply, OLD no longer routes the neighbour, as it did before: %s", out)
		}
		expectServed(t, ctx, s, scenario.MigratedPort, "new")
		mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
		after, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		diffSnap(t, "rollback", before, after)
		if ok, out := n.routed(ctx); !ok {
			t.Errorf("after rollback, OLD no longer routes the neighbour: %s", out)
		}
	})
}
