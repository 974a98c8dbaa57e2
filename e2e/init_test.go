package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestInitReadinessFlows: init writes the plan from what OLD runs; plan
// shows whether NEW would serve each moving service and how many flows
// OLD holds; apply refuses an unserved service unless allow_unready.
func TestInitReadinessFlows(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	// OLD already runs 198.51.100.10:8080 and :8081 (address-bound) and
	// sshd on 198.51.100.10:22. Add a wildcard TCP service, a UDP one and
	// a loopback-only one.
	for _, sv := range []struct {
		listen string
		udp    bool
	}{{":7100", false}, {hp(l.OldIP.String(), 5353), true}, {"127.0.0.1:7200", false}} {
		if err := s.Serve(ctx, lab.RoleOld, "old", sv.listen, sv.udp); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(l.Dir, "init.hcl")
	r := mustMigrate(t, ctx, s, 0, "init", "--old", "root@"+l.OldIP.String(), "--new", "root@"+l.NewIP.String(),
		"--identity-file", l.IdentityFile, "--known-hosts", l.KnownHosts, "-o", out)
	t.Logf("init:\n%s", r.Stdout)
	text, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("generated plan:\n%s", text)
	cfg, err := config.Load(out)
	if err != nil {
		t.Fatalf("the generated plan does not validate: %v", err)
	}
	r = mustMigrate(t, ctx, s, 0, "validate", "-f", out)
	if !strings.Contains(r.Stdout, "is valid") {
		t.Errorf("validate: %s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "fmt", "--check", out) // init writes canonical HCL
	got := map[string]string{}
	for _, sv := range cfg.Services {
		var ports []string
		for _, p := range sv.Ports {
			ports = append(ports, p.String())
		}
		got[fmt.Sprintf("%s %s", sv.Protocol, sv.Address)] = strings.Join(ports, ",") + " " + sv.Stage
	}
	want := map[string]string{
		"tcp " + l.OldIP.String():  "7100,8080,8081 old", // wildcard expanded + address-bound
		"tcp " + l.OldIP6.String(): "7100 old",           // the :: wildcard also covers OLD's IPv6 address
		"udp " + l.OldIP.String():  "5353 old",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("init services:\n got %v\nwant %v", got, want)
	}
	if !strings.Contains(string(text), "# service \"sshd-ssh\"") || !strings.Contains(string(text), "cut migrate's own connection") {
		t.Errorf("the SSH service is not written commented out with its reason")
	}
	if strings.Contains(string(text), "7200") {
		t.Errorf("a loopback-only service was written")
	}
	if !strings.Contains(string(text), "process labtool") {
		t.Errorf("service blocks lack the process comment")
	}
	if cfg.Tunnel == nil || cfg.Tunnel.OldEndpoint != l.OldIP || cfg.Tunnel.NewEndpoint != l.NewIP {
		t.Errorf("tunnel endpoints: %+v", cfg.Tunnel)
	}
	// plan straight away: the tunnel and the path, nothing moving.
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", out, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "+ link mig0") || !strings.Contains(r.Stdout, "role old, mark 0x20000, 0 port(s) to NEW") {
		t.Errorf("plan of the init file:\n%s", r.Stdout)
	}
	mustMigrate(t, ctx, s, 0, "apply", "-f", out, "--auto-approve")

	// Flow counts: conntrack on OLD is active now (migrate's table uses
	// it); hold two connections to a port that stays on OLD.
	h1 := startHolder(t, s, hp(l.OldIP.String(), 8081))
	h2 := startHolder(t, s, hp(l.OldIP.String(), 8081))
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", out)
	if !strings.Contains(r.Stdout, "labtool-tcp: stays on OLD; OLD holds 2 established flow(s), 0 going to NEW") {
		t.Errorf("plan does not count the 2 held connections:\n%s", r.Stdout)
	}
	h1.stop(t)
	h2.stop(t)

	// Readiness: move the TCP service; NEW only listens on :8080.
	moved := strings.Replace(string(text), "stage    = \"old\"", "stage    = \"new\"", 1)
	if err := os.WriteFile(out, []byte(moved), 0o644); err != nil {
		t.Fatal(err)
	}
	r = mustMigrate(t, ctx, s, 2, "plan", "-f", out, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "labtool-tcp: NEW NOT READY: nothing accepts tcp "+l.OldIP.String()+" port 7100, 8081") || !strings.Contains(r.Stdout, "[::]:8080 (labtool)") {
		t.Errorf("plan readiness:\n%s", r.Stdout)
	}
	before, _ := s.Snapshot(ctx)
	r = mustMigrate(t, ctx, s, 1, "apply", "-f", out, "--auto-approve")
	if !strings.Contains(r.Stderr, `service "labtool-tcp": NEW does not serve tcp `+l.OldIP.String()+" port 7100, 8081; NEW listens on ") || !strings.Contains(r.Stderr, "[::]:8080 (labtool)") {
		t.Errorf("apply of an unserved service:\n%s", r.Stderr)
	}
	after, _ := s.Snapshot(ctx)
	diffSnap(t, "refused apply", before, after)
	// The override.
	withOverride := strings.Replace(moved, "stage    = \"new\"", "stage    = \"new\"\n  allow_unready = true", 1)
	if err := os.WriteFile(out, []byte(withOverride), 0o644); err != nil {
		t.Fatal(err)
	}
	r = mustMigrate(t, ctx, s, 0, "apply", "-f", out, "--auto-approve")
	if !strings.Contains(r.Stdout, "kept because of allow_unready") {
		t.Errorf("apply with allow_unready:\n%s", r.Stdout)
	}
	expectServed(t, ctx, s, scenario.MigratedPort, "new")
	mustMigrate(t, ctx, s, 0, "rollback", "-f", out, "--auto-approve", "--all")
}
