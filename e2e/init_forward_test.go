package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestInitThroughForwardedPorts: the admin reaches both hosts through ports
// forwarded to loopback (as with ssh -L or a VM's port forward). migrate
// asks sshd which of the host's addresses and ports the connection reached,
// so init still finds the tunnel endpoints and still recognises sshd's own
// port; --old-endpoint/--new-endpoint override the endpoints, and bad
// values are refused before any host is contacted.
func TestInitThroughForwardedPorts(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	// Forwards on the admin namespace's loopback: 2222 -> OLD:22, 2223 -> NEW:22.
	fwd := map[string]string{"2222": l.OldIP.String(), "2223": l.NewIP.String()}
	for port, host := range fwd {
		if _, err := l.Start(lab.RoleAdmin, "socat", "TCP-LISTEN:"+port+",bind=127.0.0.1,reuseaddr,fork", "TCP:"+host+":22"); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitTCP(ctx, lab.RoleAdmin, "127.0.0.1:"+port); err != nil {
			t.Fatal(err)
		}
	}
	// known_hosts names the forwards as ssh would: [127.0.0.1]:PORT.
	var kh strings.Builder
	for _, line := range strings.Split(readFile(t, l.KnownHosts), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		for port, host := range fwd {
			if f[0] == host {
				kh.WriteString("[127.0.0.1]:" + port + " " + strings.Join(f[1:], " ") + "\n")
			}
		}
	}
	khPath := filepath.Join(l.Dir, "known_hosts.forwarded")
	writeFile(t, khPath, kh.String())
	initArgs := func(out string, extra ...string) []string {
		return append([]string{"init", "--old", "root@127.0.0.1:2222", "--new", "root@127.0.0.1:2223",
			"--identity-file", l.IdentityFile, "--known-hosts", khPath, "-o", out, "--force"}, extra...)
	}

	out := filepath.Join(l.Dir, "forwarded.hcl")
	r := mustMigrate(t, ctx, s, 0, initArgs(out)...)
	t.Logf("init through forwarded ports:\n%s", r.Stdout)
	cfg, err := config.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tunnel.OldEndpoint != l.OldIP || cfg.Tunnel.NewEndpoint != l.NewIP {
		t.Errorf("endpoints %s / %s, want the hosts' own %s / %s", cfg.Tunnel.OldEndpoint, cfg.Tunnel.NewEndpoint, l.OldIP, l.NewIP)
	}
	// sshd's port 22 behind the forward is still known as migrate's own.
	if text := readFile(t, out); !strings.Contains(text, "# service \"sshd-ssh\"") {
		t.Errorf("sshd (port 22 behind the forward) is not written commented out:\n%s", text)
	}
	r = mustMigrate(t, ctx, s, 0, "plan", "-f", out)
	if !strings.Contains(r.Stdout, "type vxlan local "+l.OldIP.String()) {
		t.Errorf("plan through the forwards:\n%s", r.Stdout)
	}

	// Endpoints given: the IPv6 underlay instead.
	out6 := filepath.Join(l.Dir, "forwarded6.hcl")
	mustMigrate(t, ctx, s, 0, initArgs(out6, "--old-endpoint", l.OldIP6.String(), "--new-endpoint", l.NewIP6.String())...)
	if cfg, err := config.Load(out6); err != nil || cfg.Tunnel.OldEndpoint != l.OldIP6 || cfg.Tunnel.NewEndpoint != l.NewIP6 {
		t.Errorf("given endpoints: %v %+v", err, cfg)
	}
	// Only OLD's given: NEW's is its source address towards it.
	mustMigrate(t, ctx, s, 0, initArgs(out6, "--old-endpoint", l.OldIP6.String())...)
	if cfg, err := config.Load(out6); err != nil || cfg.Tunnel.NewEndpoint != l.NewIP6 {
		t.Errorf("NEW's endpoint towards OLD's given IPv6 one: %v %+v", err, cfg.Tunnel)
	}

	// Refused: families differ (after connecting); not an address, loopback
	// (before, with no host contacted: the output file is not written).
	r = mustMigrate(t, ctx, s, 1, initArgs(out6, "--old-endpoint", l.OldIP6.String(), "--new-endpoint", l.NewIP.String())...)
	if !strings.Contains(r.Stderr, "different IP families") {
		t.Errorf("mixed families: %s", r.Stderr)
	}
	r = mustMigrate(t, ctx, s, 1, initArgs(out6, "--old-endpoint", l.NewIP.String(), "--new-endpoint", l.NewIP.String())...)
	if !strings.Contains(r.Stderr, "both tunnel endpoints came out as "+l.NewIP.String()) {
		t.Errorf("one address for both ends: %s", r.Stderr)
	}
	for _, bad := range []string{"old-srv", "127.0.0.1"} {
		never := filepath.Join(l.Dir, "never.hcl")
		r = mustMigrate(t, ctx, s, 1, initArgs(never, "--new-endpoint", bad)...)
		if !strings.Contains(r.Stderr, `--new-endpoint "`+bad+`": want the host's own unicast IP address`) {
			t.Errorf("--new-endpoint %s: %s", bad, r.Stderr)
		}
		if _, err := os.Stat(never); err == nil {
			t.Errorf("--new-endpoint %s: a plan was written", bad)
		}
	}
}
