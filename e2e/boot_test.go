package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
	"github.com/opsmigrate/migrate/state"
)

// The boot tests play a reboot in the netns lab: Lab.Reboot deletes a
// host's network namespace (every kernel object migrate made is gone) and
// makes it again with the lab's base configuration, keeping its files
// (state directory, unit directory). The test then runs exactly what the
// installed unit's ExecStart says, inside that namespace with an empty
// environment as systemd would, and only then starts the host's daemons
// again: the unit is ordered before them (docs/design.md, "Surviving a
// reboot"). Real reboots of systemd guests are the VM lane's.

// bootSnapRE mask what a reboot changes in a snapshot without migrate
// having anything to do with it: interface indexes, the veth's new MAC
// address and the IPv6 link-local address made from it.
var bootSnapRE = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`(?m)^\d+: `), "N: "},
	{regexp.MustCompile(`@if\d+`), "@ifN"},
	{regexp.MustCompile(`link/ether [0-9a-f:]{17}`), "link/ether MAC"},
	{regexp.MustCompile(`fe80::[0-9a-f:]+`), "fe80::LL"},
}

func bootNorm(snaps map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range noCounters(snaps) {
		for _, r := range bootSnapRE {
			v = r.re.ReplaceAllString(v, r.with)
		}
		out[k] = sortRoutes(v)
	}
	return out
}

// sortRoutes sorts the lines of the route sections: `ip route` lists
// routes by address, and eth0's link-local address, masked, is random.
func sortRoutes(snap string) string {
	lines := strings.Split(snap, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "### ") || !strings.Contains(lines[i], " route ") {
			continue
		}
		j := i + 1
		for j < len(lines) && !strings.HasPrefix(lines[j], "### ") {
			j++
		}
		sort.Strings(lines[i+1 : j])
		i = j - 1
	}
	return strings.Join(lines, "\n")
}

// bootLab is a scenario whose two hosts run systemd as PID 1, as far as
// their agents can tell (Lab.SetSystemd).
func bootLab(t *testing.T, ctx context.Context) *scenario.Scenario {
	t.Helper()
	s := newScenario(t, ctx)
	for _, r := range []string{lab.RoleOld, lab.RoleNew} {
		if err := s.Lab.SetSystemd(r, true); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func unitPath(s *scenario.Scenario, role string) string {
	u, _ := state.BootUnitFiles(s.Lab.SystemdDir(role))
	return u
}

// unitInstalled checks the unit and its enable link on role.
func unitInstalled(t *testing.T, s *scenario.Scenario, role string) {
	t.Helper()
	unit, link := state.BootUnitFiles(s.Lab.SystemdDir(role))
	if _, err := os.Stat(unit); err != nil {
		t.Fatalf("%s: the boot unit is not installed: %v", role, err)
	}
	if target, err := os.Readlink(link); err != nil || target != unit {
		t.Fatalf("%s: enable link %s -> %q (%v), want -> %s", role, link, target, err, unit)
	}
}

// unitDirEmpty checks that nothing of migrate is left in role's unit
// directory.
func unitDirEmpty(t *testing.T, s *scenario.Scenario, role string) {
	t.Helper()
	ents, err := os.ReadDir(s.Lab.SystemdDir(role))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("%s: the unit directory still holds %v", role, names)
	}
}

// execStart is the command of role's installed unit.
func execStart(t *testing.T, s *scenario.Scenario, role string) []string {
	t.Helper()
	b, err := os.ReadFile(unitPath(s, role))
	if err != nil {
		t.Fatalf("%s: read the unit: %v", role, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if cmd, ok := strings.CutPrefix(l, "ExecStart="); ok {
			return strings.Fields(cmd)
		}
	}
	t.Fatalf("%s: the unit has no ExecStart:\n%s", role, b)
	return nil
}

// runUnit runs the unit's command in role's namespace and returns its
// output and error.
func runUnit(ctx context.Context, s *scenario.Scenario, role string, cmd []string) (string, error) {
	out, err := s.Lab.Exec(ctx, role, append([]string{"env", "-i"}, cmd...)...)
	return string(out), err
}

// startDaemons starts role's servers again after its reboot, as the
// scenario did (scenario.Setup).
func startDaemons(t *testing.T, ctx context.Context, s *scenario.Scenario, role string) {
	t.Helper()
	var err error
	switch role {
	case lab.RoleOld:
		held := s.Lab.Held(lab.RoleOld)
		if err = s.Serve(ctx, role, "old", fmt.Sprintf("%s:%d", held, scenario.MigratedPort), false); err == nil {
			err = s.Serve(ctx, role, "old", fmt.Sprintf("%s:%d", held, scenario.StayPort), false)
		}
	case lab.RoleNew:
		err = s.Serve(ctx, role, "new", fmt.Sprintf(":%d", scenario.MigratedPort), false)
	}
	if err != nil {
		t.Fatalf("%s: start its daemons after the reboot: %v", role, err)
	}
}

func bootRecord(t *testing.T, s *scenario.Scenario, role string) state.BootRecord {
	t.Helper()
	dir := s.Lab.OldStateDir
	if role == lab.RoleNew {
		dir = s.Lab.NewStateDir
	}
	b, err := os.ReadFile(filepath.Join(dir, "boot.json"))
	if err != nil {
		t.Fatalf("%s: boot record: %v", role, err)
	}
	var r state.BootRecord
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: boot record %s: %v", role, b, err)
	}
	return r
}

// servedByNew checks the data path from the outside: the client's
// connection to OLD's address is served by NEW, which sees the client's
// own address, and NEW's outbound connection from OLD's address reaches
// the client with that source.
func servedByNew(t *testing.T, ctx context.Context, s *scenario.Scenario, when string) {
	t.Helper()
	out, err := s.Dial(ctx, lab.RoleClient, fmt.Sprintf("%s:%d", s.Lab.OldIP, scenario.MigratedPort))
	if err != nil || !strings.Contains(out, "served-by=new ") || !strings.Contains(out, "peer="+s.Lab.ClientIP.String()+" ") {
		t.Fatalf("%s: client to %s:%d: %q (%v), want served by NEW seeing peer=%s", when, s.Lab.OldIP, scenario.MigratedPort, out, err, s.Lab.ClientIP)
	}
	out, err = s.Dial(ctx, lab.RoleNew, "-bind", s.Lab.OldIP.String(), fmt.Sprintf("%s:%d", s.Lab.ClientIP, scenario.ClientPort))
	if err != nil || !strings.Contains(out, "served-by=client peer="+s.Lab.OldIP.String()+" ") {
		t.Fatalf("%s: NEW's outbound from %s: %q (%v), want the client to see peer=%s", when, s.Lab.OldIP, out, err, s.Lab.OldIP)
	}
}

// settled compares both hosts, normalized, with want, waiting up to 10 s
// for them to get there: link states reach `ip` through the kernel's
// linkwatch, which runs up to a second after a device comes up.
func settled(t *testing.T, ctx context.Context, s *scenario.Scenario, what string, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(scenario.Slow(10 * time.Second))
	for {
		got := bootNorm(snap(t, ctx, s))
		if got[lab.RoleOld] == want[lab.RoleOld] && got[lab.RoleNew] == want[lab.RoleNew] || time.Now().After(deadline) {
			diffSnap(t, what, want, got)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func snap(t *testing.T, ctx context.Context, s *scenario.Scenario) map[string]string {
	t.Helper()
	m, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestBootRestore: a confirmed apply survives a reboot of NEW, then of
// OLD, then of both. Each time the host's part comes back exactly as the
// apply left it (snapshot, and plan has nothing to do), before its
// daemons start, and the data path works from the outside. rollback
// --all then removes everything, the unit included.
func TestBootRestore(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(6*time.Minute))
	defer cancel()
	s := bootLab(t, ctx)
	if err := writeTunnelPlan(s, vxlanCase, "new"); err != nil {
		t.Fatal(err)
	}
	before := snap(t, ctx, s)
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		if want := "+ file " + unitPath(s, role); !strings.Contains(r.Stdout, want) {
			t.Errorf("plan does not show %q:\n%s", want, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "will not survive a reboot") {
		t.Errorf("plan says a host will not survive a reboot, although both run systemd:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	applied := bootNorm(snap(t, ctx, s))
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		unitInstalled(t, s, role)
	}
	servedByNew(t, ctx, s, "after apply")

	for _, reboot := range [][]string{{lab.RoleNew}, {lab.RoleOld}, {lab.RoleNew, lab.RoleOld}} {
		what := "reboot of " + strings.Join(reboot, " and ")
		cmds := map[string][]string{}
		for _, role := range reboot {
			cmds[role] = execStart(t, s, role)
			if err := s.Lab.Reboot(ctx, role); err != nil {
				t.Fatal(err)
			}
		}
		// Nothing of migrate is left in the kernel: the reboot is real
		// as far as the data path goes.
		if out, _ := s.Dial(ctx, lab.RoleClient, fmt.Sprintf("%s:%d", s.Lab.OldIP, scenario.MigratedPort)); strings.Contains(out, "served-by=new ") {
			t.Fatalf("%s: NEW still serves before the restore: %q", what, out)
		}
		for _, role := range reboot {
			start := time.Now()
			out, err := runUnit(ctx, s, role, cmds[role])
			if err != nil {
				t.Fatalf("%s: %s's boot unit failed: %v\n%s", what, role, err, out)
			}
			rec := bootRecord(t, s, role)
			if rec.Outcome != state.BootRestored || rec.Steps == 0 || rec.Error != "" {
				t.Errorf("%s: %s's boot record: %+v", what, role, rec)
			}
			t.Logf("%s: %s restored in %s (%d steps): %s", what, role, time.Since(start).Round(time.Millisecond), rec.Steps, strings.TrimSpace(out))
			startDaemons(t, ctx, s, role)
		}
		settled(t, ctx, s, what, applied)
		servedByNew(t, ctx, s, what)
		r := mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
		if !strings.Contains(r.Stdout, "No changes") {
			t.Errorf("%s: plan after the restore:\n%s", what, r.Stdout)
		}
		for _, role := range reboot {
			if want := strings.ToUpper(role) + " was restored at boot at "; !strings.Contains(r.Stdout, want) {
				t.Errorf("%s: plan does not say %q:\n%s", what, want, r.Stdout)
			}
		}
		st := readStatus(t, ctx, s)
		if st.PathBroken != "" || st.Services[0].LiveStage != "new" {
			t.Errorf("%s: status: path %q, services %+v", what, st.PathBroken, st.Services)
		}
		if !strings.Contains(strings.Join(st.Notes, "\n"), strings.ToUpper(reboot[0])+" was restored at boot at ") {
			t.Errorf("%s: status notes do not say %s was restored: %q", what, reboot[0], st.Notes)
		}
	}

	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	settled(t, ctx, s, "rollback --all", bootNorm(before))
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		unitDirEmpty(t, s, role)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
}

// TestBootUnconfirmed: an apply that was never confirmed (migrate dies
// after its steps, before any confirm) and whose hosts reboot inside the
// confirm window is never restored: the boot unit decides the run
// reverted, removes what of it outlived the reboot (the unit itself), and
// the hosts are as before migrate.
func TestBootUnconfirmed(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := bootLab(t, ctx)
	if err := writeTunnelPlan(s, vxlanCase, "new"); err != nil {
		t.Fatal(err)
	}
	before := snap(t, ctx, s)
	r := migrateWithEnv(t, ctx, s, []string{"MIGRATE_TEST_FAULT=die-before-confirm"}, 3,
		"apply", "-f", s.PlanFile, "--auto-approve", "--confirm-timeout", "10m")
	if !strings.Contains(r.Stderr, "dying before any confirm") {
		t.Fatalf("the fault did not fire:\n%s", r.Stderr)
	}
	servedByNew(t, ctx, s, "applied, not confirmed")
	cmds := map[string][]string{}
	for _, role := range []string{lab.RoleNew, lab.RoleOld} {
		unitInstalled(t, s, role)
		cmds[role] = execStart(t, s, role)
		if err := s.Lab.Reboot(ctx, role); err != nil {
			t.Fatal(err)
		}
	}
	for _, role := range []string{lab.RoleNew, lab.RoleOld} {
		out, err := runUnit(ctx, s, role, cmds[role])
		if err != nil {
			t.Fatalf("%s's boot unit: %v\n%s", role, err, out)
		}
		rec := bootRecord(t, s, role)
		if rec.Outcome != state.BootNothing || len(rec.RevertedRuns) != 1 {
			t.Errorf("%s's boot record: %+v, want nothing restored and one run reverted", role, rec)
		}
		startDaemons(t, ctx, s, role)
		unitDirEmpty(t, s, role)
	}
	settled(t, ctx, s, "unconfirmed apply after the reboot", bootNorm(before))
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "rebooted inside the confirm window") {
		t.Errorf("plan does not say the hosts rebooted inside the confirm window:\n%s", r.Stdout)
	}
	// A second boot of the same state restores nothing either.
	for _, role := range []string{lab.RoleNew, lab.RoleOld} {
		if out, err := runUnit(ctx, s, role, cmds[role]); err != nil {
			t.Fatalf("%s's boot unit again: %v\n%s", role, err, out)
		}
	}
	settled(t, ctx, s, "unconfirmed apply, restore run twice", bootNorm(before))

	// The run's record says so, and a confirm of it is refused.
	for _, dir := range []string{s.Lab.OldStateDir, s.Lab.NewStateDir} {
		runs, _ := filepath.Glob(filepath.Join(dir, "run-*.json"))
		if len(runs) != 1 {
			t.Fatalf("%s: run records %v", dir, runs)
		}
		b, _ := os.ReadFile(runs[0])
		if !strings.Contains(string(b), `"state": "reverted"`) || !strings.Contains(string(b), "host rebooted inside the confirm window") {
			t.Errorf("%s: %s", runs[0], b)
		}
	}
	r = mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	t.Logf("rollback --all after the reverted run:\n%s", r.Stdout)
	settled(t, ctx, s, "rollback --all", bootNorm(before))
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		unitDirEmpty(t, s, role)
	}
}

// TestBootRestoreFails: NEW's restore cannot finish (a route in
// migrate's table that is not migrate's, as a hand-made config might
// add at boot): the unit undoes what it did, leaves NEW exactly as the
// reboot left it, and fails. plan and status say so in words an operator
// can act on; status does not call the service on NEW. migrate apply then
// repairs it, and rollback --all ends as before migrate.
func TestBootRestoreFails(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := bootLab(t, ctx)
	if err := writeTunnelPlan(s, vxlanCase, "new"); err != nil {
		t.Fatal(err)
	}
	before := snap(t, ctx, s)
	// Where systemd is not PID 1, plan installs nothing and says so.
	if err := s.Lab.SetSystemd(lab.RoleOld, false); err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "host old: systemd is not PID 1 there, so migrate installs no boot unit: this host's part will not survive a reboot") ||
		strings.Contains(r.Stdout, "+ file "+unitPath(s, lab.RoleOld)) || !strings.Contains(r.Stdout, "+ file "+unitPath(s, lab.RoleNew)) {
		t.Errorf("plan with systemd on NEW only:\n%s", r.Stdout)
	}
	if err := s.Lab.SetSystemd(lab.RoleOld, true); err != nil {
		t.Fatal(err)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	cmd := execStart(t, s, lab.RoleNew)
	if err := s.Lab.Reboot(ctx, lab.RoleNew); err != nil {
		t.Fatal(err)
	}
	foreign := []string{"ip", "route", "add", "default", "dev", "lo", "table", "4242", "proto", "static"}
	if out, err := s.Lab.Exec(ctx, lab.RoleNew, foreign...); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	booted := snap(t, ctx, s)
	out, err := runUnit(ctx, s, lab.RoleNew, cmd)
	if err == nil {
		t.Fatalf("NEW's boot unit succeeded although a foreign route holds migrate's table:\n%s", out)
	}
	t.Logf("boot unit (fails as it must): %v\n%s", err, out)
	rec := bootRecord(t, s, lab.RoleNew)
	if rec.Outcome != state.BootFailed || !strings.Contains(rec.Error, "table 4242") || !strings.Contains(rec.Error, "were undone") {
		t.Errorf("boot record: %+v", rec)
	}
	// Not half restored: exactly as the reboot left it.
	diffSnap(t, "failed restore", booted, snap(t, ctx, s))
	startDaemons(t, ctx, s, lab.RoleNew)

	r = mustMigrate(t, ctx, s, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if want := "NEW's restore at boot failed at "; !strings.Contains(r.Stdout, want) || !strings.Contains(r.Stdout, "NEW is as before migrate: run migrate apply") {
		t.Errorf("plan does not say %q ... run migrate apply:\n%s", want, r.Stdout)
	}
	st := readStatus(t, ctx, s)
	if !strings.Contains(st.PathBroken, "NEW's restore at boot failed") || strings.Contains(st.Verdict, "switched off") ||
		st.Services[0].Drained || !strings.HasPrefix(st.Services[0].State, "BROKEN") {
		t.Errorf("status after a failed restore: path %q, verdict %q, services %+v", st.PathBroken, st.Verdict, st.Services)
	}
	human := mustMigrate(t, ctx, s, 0, "status", "-f", s.PlanFile)
	if !strings.Contains(human.Stdout, "NEW's restore at boot failed at ") {
		t.Errorf("status does not say NEW's restore failed:\n%s", human.Stdout)
	}
	t.Logf("status after the failed restore:\n%s", human.Stdout)

	// The operator removes the culprit and runs apply.
	if out, err := s.Lab.Exec(ctx, lab.RoleNew, "ip", "route", "del", "default", "table", "4242", "proto", "static"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	servedByNew(t, ctx, s, "apply after the failed restore")
	mustMigrate(t, ctx, s, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	settled(t, ctx, s, "rollback --all", bootNorm(before))
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		unitDirEmpty(t, s, role)
	}
}
