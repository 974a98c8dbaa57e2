package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// examplesDir is the module's examples directory, seen from e2e/.
const examplesDir = "../examples"

var hostBlockRE = regexp.MustCompile(`(?ms)^host "(old|new)" \{\n.*?^\}\n`)
var sshArgRE = regexp.MustCompile(`(?m)^\s*ssh\s*=\s*"root@([^"]+):22"`)

// stageNewRE is a service's `stage = "new"` line (not a commented-out one).
var stageNewRE = regexp.MustCompile(`(?m)^  stage    = "new"`)

// allStagesOld returns text with every stage "new" set to "old", after
// checking there are n of them.
func allStagesOld(t *testing.T, text string, n int) string {
	t.Helper()
	if got := len(stageNewRE.FindAllString(text, -1)); got != n {
		t.Fatalf("expected %d services at stage \"new\", found %d:\n%s", n, got, text)
	}
	return stageNewRE.ReplaceAllString(text, `  stage    = "old"`)
}

// exampleForLab returns an example plan file as the lab runs it: only the
// host blocks are replaced, by the lab's (same addresses, plus the lab's
// key and known_hosts). The lab's OLD and NEW addresses are the
// documentation addresses the examples use, which is checked here.
func exampleForLab(t *testing.T, s *scenario.Scenario, path string) string {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"old": s.Lab.OldIP.String(), "new": s.Lab.NewIP.String()}
	replaced := map[string]bool{}
	out := hostBlockRE.ReplaceAllStringFunc(string(src), func(blk string) string {
		role := hostBlockRE.FindStringSubmatch(blk)[1]
		replaced[role] = true
		m := sshArgRE.FindStringSubmatch(blk)
		if m == nil || m[1] != want[role] {
			t.Errorf("%s: host %q block does not reach root@%s:22 (the lab's address): %q", path, role, want[role], blk)
		}
		return fmt.Sprintf("host %q {\n  ssh           = \"root@%s:22\"\n  identity_file = %q\n  known_hosts   = %q\n}\n",
			role, want[role], s.Lab.IdentityFile, s.Lab.KnownHosts)
	})
	if !replaced["old"] || !replaced["new"] {
		t.Fatalf("%s: host blocks not found (replaced %v)", path, replaced)
	}
	return out
}

// writeExample writes text as dir/name in the lab's directory and returns
// its path. Each example gets its own directory, hence its own state file.
func writeExample(t *testing.T, s *scenario.Scenario, dir, name, text string) string {
	t.Helper()
	d := filepath.Join(s.Lab.Dir, dir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(d, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// linkSnapshot is `ip -d link show` on OLD and NEW.
func linkSnapshot(t *testing.T, ctx context.Context, s *scenario.Scenario) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range []string{lab.RoleOld, lab.RoleNew} {
		b, err := s.Lab.Exec(ctx, r, "ip", "-d", "link", "show")
		if err != nil {
			t.Fatal(err)
		}
		out[r] = string(b)
	}
	return out
}

// serveAll starts labtool servers named name in role's namespace.
func serveAll(t *testing.T, ctx context.Context, s *scenario.Scenario, role, name string, udp bool, listens ...string) {
	t.Helper()
	for _, a := range listens {
		if err := s.Serve(ctx, role, name, a, udp); err != nil {
			t.Fatal(err)
		}
	}
}

// dialExpect dials addr from the client (TCP, or UDP) and checks the
// answer: served by who, seeing the client's address peer.
func dialExpect(t *testing.T, ctx context.Context, s *scenario.Scenario, udp bool, addr, who, peer string) {
	t.Helper()
	args := []string{addr}
	if udp {
		args = []string{"-udp", addr}
	}
	out, err := s.Dial(ctx, lab.RoleClient, args...)
	if err != nil {
		t.Errorf("client to %s (udp %v): %v: %s", addr, udp, err, out)
		return
	}
	want := "served-by=" + who + " "
	if peer != "" {
		want += "peer=" + peer + " "
	}
	if !strings.Contains(out, want) {
		t.Errorf("client to %s (udp %v): %q, want %q", addr, udp, out, want)
		return
	}
	t.Logf("client to %s (udp %v): %s", addr, udp, out)
}

// rollbackAllRestores runs `rollback --all` with plan's state and checks
// both hosts are as they were before the first apply.
func rollbackAllRestores(t *testing.T, ctx context.Context, s *scenario.Scenario, planFile string, before, beforeLinks map[string]string) {
	t.Helper()
	r := mustMigrate(t, ctx, s, 0, "rollback", "--all", "--auto-approve", "-f", planFile)
	t.Logf("rollback --all:\n%s", r.Stdout)
	after, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffSnap(t, "rollback --all (nft ruleset, rules, routes, addresses, sysctls)", before, after)
	diffSnap(t, "rollback --all (ip -d link)", beforeLinks, linkSnapshot(t, ctx, s))
}

// TestExamples runs the example plan files against the namespace lab, as
// their comments tell an operator to: examples/staged/ step by step
// (prepare, canary, move, the DNS cut-over, rollback --all), then
// dualstack.hcl, dns.hcl and mail.hcl, each followed by rollback --all and
// a check that both hosts are exactly as before.
func TestExamples(t *testing.T) {
	needRoot(t)
	if !kernelHas("vxlan") {
		t.Fatal("this kernel lacks vxlan, which every example uses")
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(8*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	old4, old6, new4 := l.OldIP.String(), l.OldIP6.String(), l.NewIP.String()
	c4, c6 := l.ClientIP.String(), l.ClientIP6.String()

	// OLD serves every example's ports on its addresses; NEW listens on
	// wildcards (TCP answers from the address the client used).
	var oldListens, newListens []string
	for _, p := range []int{80, 443, 25, 587, 993, 53} {
		oldListens = append(oldListens, hp(old4, p))
		newListens = append(newListens, fmt.Sprintf(":%d", p))
	}
	oldListens = append(oldListens, hp(old6, 80), hp(old6, 443))
	serveAll(t, ctx, s, lab.RoleOld, "old", false, oldListens...)
	serveAll(t, ctx, s, lab.RoleOld, "old", true, hp(old4, 53))
	serveAll(t, ctx, s, lab.RoleNew, "new", false, newListens...)

	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	beforeLinks := linkSnapshot(t, ctx, s)

	t.Run("staged", func(t *testing.T) {
		dir := filepath.Join(examplesDir, "staged")
		files := map[string]string{}
		for _, f := range []string{"1-prepare.hcl", "2-canary.hcl", "3-move.hcl"} {
			files[f] = writeExample(t, s, "staged", f, exampleForLab(t, s, filepath.Join(dir, f)))
		}

		// Step 1: the path is built, nothing moves.
		mustMigrate(t, ctx, s, 2, "plan", "--detailed-exitcode", "-f", files["1-prepare.hcl"])
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", files["1-prepare.hcl"])
		for _, p := range []int{80, 443} {
			dialExpect(t, ctx, s, false, hp(old4, p), "old", c4)
		}

		// Step 2: about 10 % of new connections reach NEW. n = 200 at
		// p = 0.1: mean 20, sd 4.2; 1..40 fails a correct canary about
		// once in 10^5 runs (P(0) = 0.9^200 = 7e-10).
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", files["2-canary.hcl"])
		out, err := s.Labtool(ctx, 2*time.Minute, lab.RoleClient, "many", "-n", "200", hp(old4, 443))
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		var onNew, onOld, errs int
		for _, f := range strings.Fields(out) {
			fmt.Sscanf(f, "served-by=new:%d", &onNew)
			fmt.Sscanf(f, "served-by=old:%d", &onOld)
			fmt.Sscanf(f, "errors:%d", &errs)
		}
		t.Logf("canary 10%%, 200 connections: %s", out)
		if errs != 0 || onNew+onOld != 200 {
			t.Errorf("canary: connections failed: %s", out)
		}
		if onNew < 1 || onNew > 40 {
			t.Errorf("canary: %d of 200 new connections reached NEW; want 1..40 for canary_percent = 10", onNew)
		}
		// The README's way back from the canary: rollback of the last
		// apply is step 1 again, exactly.
		mustMigrate(t, ctx, s, 0, "rollback", "--auto-approve", "-f", files["2-canary.hcl"])
		r := mustMigrate(t, ctx, s, 0, "plan", "--detailed-exitcode", "-f", files["1-prepare.hcl"])
		if !strings.Contains(r.Stdout, "No changes") {
			t.Errorf("plan of step 1 after rolling the canary back:\n%s", r.Stdout)
		}
		dialExpect(t, ctx, s, false, hp(old4, 443), "old", c4)
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", files["2-canary.hcl"])

		// Step 3: every new connection reaches NEW, which sees the client.
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", files["3-move.hcl"])
		for _, p := range []int{80, 443} {
			dialExpect(t, ctx, s, false, hp(old4, p), "new", c4)
		}
		r = mustMigrate(t, ctx, s, 0, "plan", "--detailed-exitcode", "-f", files["3-move.hcl"])
		if !strings.Contains(r.Stdout, "No changes") {
			t.Errorf("plan after step 3:\n%s", r.Stdout)
		}

		// Step 4, the DNS variant: clients now use NEW's own address,
		// then rollback --all removes everything migrate built.
		dialExpect(t, ctx, s, false, hp(new4, 443), "new", c4)
		rollbackAllRestores(t, ctx, s, files["3-move.hcl"], before, beforeLinks)
		dialExpect(t, ctx, s, false, hp(new4, 443), "new", c4)
		dialExpect(t, ctx, s, false, hp(old4, 443), "old", c4)
	})

	// Step 4, the other variant: the provider moves the address. As the
	// README asks, OLD is reached (and the tunnel ends) on an address that
	// does not move; here the service uses a second address of OLD,
	// 198.51.100.11, and the lab's router plays the provider, routing it to
	// NEW (a routed "failover IP").
	t.Run("staged-ip-move", func(t *testing.T) {
		const moving = "198.51.100.11"
		lexec := func(role string, args ...string) {
			t.Helper()
			if out, err := l.Exec(ctx, role, args...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		lexec(lab.RoleOld, "ip", "addr", "add", moving+"/24", "dev", "eth0")
		serveAll(t, ctx, s, lab.RoleOld, "old", false, hp(moving, 443))
		beforeMove, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]string{}
		for _, f := range []string{"1-prepare.hcl", "3-move.hcl"} {
			text := exampleForLab(t, s, filepath.Join(examplesDir, "staged", f))
			svc := `address  = "` + old4 + `"`
			if strings.Count(text, svc) != 1 {
				t.Fatalf("%s: expected one service address line %q", f, svc)
			}
			files[f] = writeExample(t, s, "staged-ip-move", f, strings.Replace(text, svc, `address  = "`+moving+`"`, 1))
		}
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", files["1-prepare.hcl"])
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", files["3-move.hcl"])
		dialExpect(t, ctx, s, false, hp(moving, 443), "new", c4)

		// 1. the address on NEW's uplink, beside migrate's copy on lo;
		// 2. the provider routes it to NEW, and it leaves OLD;
		// 3. rollback --all.
		lexec(lab.RoleNew, "ip", "addr", "add", moving+"/32", "dev", "eth0")
		lexec(lab.RoleRouter, "ip", "route", "add", moving+"/32", "via", new4)
		lexec(lab.RoleOld, "ip", "addr", "del", moving+"/24", "dev", "eth0")
		dialExpect(t, ctx, s, false, hp(moving, 443), "new", c4)
		r := mustMigrate(t, ctx, s, 0, "rollback", "--all", "--auto-approve", "-f", files["3-move.hcl"])
		t.Logf("rollback --all after the IP moved:\n%s", r.Stdout)

		// NEW now serves the address by itself, clients' addresses
		// intact, and connects out from it directly.
		dialExpect(t, ctx, s, false, hp(moving, 443), "new", c4)
		out, err := s.Dial(ctx, lab.RoleNew, "-bind", moving, hp(c4, scenario.ClientPort))
		if err != nil || !strings.Contains(out, "served-by=client peer="+moving+" ") {
			t.Errorf("NEW's outbound from %s after the cut-over: %v: %q", moving, err, out)
		}
		if out, err := l.Exec(ctx, lab.RoleNew, "ip", "-o", "addr", "show", "to", moving); err != nil || !strings.Contains(string(out), " eth0 ") || strings.Contains(string(out), " lo ") {
			t.Errorf("on NEW after rollback --all, %s should be on eth0 only (the operator's copy): %v: %s", moving, err, out)
		}

		// Undo the provider's and the operator's part: then both hosts
		// must be exactly as before step 1.
		lexec(lab.RoleNew, "ip", "addr", "del", moving+"/32", "dev", "eth0")
		lexec(lab.RoleRouter, "ip", "route", "del", moving+"/32", "via", new4)
		lexec(lab.RoleOld, "ip", "addr", "add", moving+"/24", "dev", "eth0")
		after, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		diffSnap(t, "IP-move cut-over, rollback --all, provider and operator changes undone", beforeMove, after)
		diffSnap(t, "IP-move cut-over (ip -d link)", beforeLinks, linkSnapshot(t, ctx, s))
		lexec(lab.RoleOld, "ip", "addr", "del", moving+"/24", "dev", "eth0")
	})

	t.Run("dualstack", func(t *testing.T) {
		f := writeExample(t, s, "dualstack", "dualstack.hcl", exampleForLab(t, s, filepath.Join(examplesDir, "dualstack.hcl")))
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", f)
		for _, p := range []int{80, 443} {
			dialExpect(t, ctx, s, false, hp(old4, p), "new", c4)
			dialExpect(t, ctx, s, false, hp(old6, p), "new", c6)
		}
		rollbackAllRestores(t, ctx, s, f, before, beforeLinks)
		dialExpect(t, ctx, s, false, hp(old6, 443), "old", c6)
	})

	t.Run("dns", func(t *testing.T) {
		// The comments' order: build the path with both stages "old",
		// start NEW's UDP server bound to the migrated address (local on
		// NEW now), then apply the file as it is.
		text := exampleForLab(t, s, filepath.Join(examplesDir, "dns.hcl"))
		f := writeExample(t, s, "dns", "dns.hcl", allStagesOld(t, text, 2))
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", f)
		dialExpect(t, ctx, s, true, hp(old4, 53), "old", c4)
		serveAll(t, ctx, s, lab.RoleNew, "new", true, hp(old4, 53))
		f = writeExample(t, s, "dns", "dns.hcl", text)
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", f)
		dialExpect(t, ctx, s, true, hp(old4, 53), "new", c4)
		dialExpect(t, ctx, s, false, hp(old4, 53), "new", c4)
		rollbackAllRestores(t, ctx, s, f, before, beforeLinks)
		dialExpect(t, ctx, s, false, hp(old4, 53), "old", c4)
	})

	t.Run("mail", func(t *testing.T) {
		// Outbound SMTP: NEW connects out from the migrated address
		// (Postfix's smtp_bind_address); the remote end sees OLD's
		// address. Without the bind, NEW's own address is the source:
		// the comment's warning.
		outbound := func(when string) {
			t.Helper()
			out, err := s.Dial(ctx, lab.RoleNew, "-bind", old4, hp(c4, scenario.ClientPort))
			if err != nil || !strings.Contains(out, "served-by=client peer="+old4+" ") {
				t.Errorf("%s: NEW's outbound from %s: %v: %q, want the client to see %s", when, old4, err, out, old4)
			}
			out, err = s.Dial(ctx, lab.RoleNew, hp(c4, scenario.ClientPort))
			if err != nil || !strings.Contains(out, "served-by=client peer="+new4+" ") {
				t.Errorf("%s: NEW's outbound without a bind: %v: %q, want the client to see %s", when, err, out, new4)
			}
		}
		// The comments' order: every stage "old" first; outbound from
		// the address already works (step 3), nothing inbound moved.
		text := exampleForLab(t, s, filepath.Join(examplesDir, "mail.hcl"))
		f := writeExample(t, s, "mail", "mail.hcl", allStagesOld(t, text, 3))
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", f)
		outbound("every stage old")
		dialExpect(t, ctx, s, false, hp(old4, 25), "old", c4)
		f = writeExample(t, s, "mail", "mail.hcl", text)
		mustMigrate(t, ctx, s, 0, "apply", "--auto-approve", "-f", f)
		for _, p := range []int{25, 587, 993} {
			dialExpect(t, ctx, s, false, hp(old4, p), "new", c4)
		}
		outbound("moved")
		rollbackAllRestores(t, ctx, s, f, before, beforeLinks)
		dialExpect(t, ctx, s, false, hp(old4, 25), "old", c4)
	})
}
