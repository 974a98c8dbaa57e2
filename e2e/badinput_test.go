package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestBadInput: each kind of bad input gives a clear error and exit status
// 1, and neither host changes. Plan-file errors are refused before any SSH
// connection is made.
func TestBadInput(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newScenario(t, ctx)
	good := s.PlanText(scenario.PlanOptions{Stage: "new"})
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A key nobody authorized, and a known_hosts that lacks the hosts.
	strangerKey := filepath.Join(s.Lab.Dir, "stranger")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", strangerKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	emptyKnown := filepath.Join(s.Lab.Dir, "empty_known_hosts")
	if err := os.WriteFile(emptyKnown, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	otherKnown := filepath.Join(s.Lab.Dir, "other_known_hosts")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(s.Lab.Dir, "impostor")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, _ := os.ReadFile(filepath.Join(s.Lab.Dir, "impostor.pub"))
	kh, _ := os.ReadFile(s.Lab.KnownHosts)
	// old's line replaced by an impostor key: a changed host key.
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(kh)), "\n") {
		if strings.HasPrefix(l, s.Lab.OldIP.String()+" ") {
			f := strings.Fields(string(pub))
			l = s.Lab.OldIP.String() + " " + f[0] + " " + f[1]
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(otherKnown, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name     string
		mutate   func(string) string
		want     []string // substrings of stderr
		position string   // regexp for file:line:col, when the error is in the file
		noSSH    bool     // refused before connecting
	}{
		{
			name:     "malformed file",
			mutate:   func(s string) string { return strings.Replace(s, `service "web" {`, `service "web" {{`, 1) },
			want:     []string{"migration.hcl:"},
			position: `migration\.hcl:\d+:\d+`,
			noSSH:    true,
		},
		{
			name: "unknown key",
			mutate: func(s string) string {
				return strings.Replace(s, "  protocol = \"tcp\"", "  protocol = \"tcp\"\n  adress = \"x\"", 1)
			},
			want:     []string{`"adress"`, "address"},
			position: `migration\.hcl:24:3:`,
			noSSH:    true,
		},
		{
			name: "bad address",
			mutate: func(s string) string {
				return strings.Replace(s, `address  = "198.51.100.10"`, `address  = "198.51.100.300"`, 1)
			},
			want:     []string{"198.51.100.300"},
			position: `migration\.hcl:22:14:`,
			noSSH:    true,
		},
		{
			name:     "port out of range",
			mutate:   func(s string) string { return strings.Replace(s, "[8080]", "[70000]", 1) },
			want:     []string{"70000", "65535"},
			position: `migration\.hcl:24:15:`,
			noSSH:    true,
		},
		{
			name: "address old does not hold",
			mutate: func(s string) string {
				return strings.Replace(s, `address  = "198.51.100.10"`, `address  = "198.51.100.99"`, 1)
			},
			want:     []string{"does not hold address 198.51.100.99"},
			position: `migration\.hcl:21:1:`,
		},
		{
			name:   "unknown host key",
			mutate: func(s string) string { return strings.ReplaceAll(s, s2(s, "known_hosts"), emptyKnown) },
			want:   []string{"unknown host key", "ssh-keyscan"},
		},
		{
			name:   "changed host key",
			mutate: func(s string) string { return strings.ReplaceAll(s, s2(s, "known_hosts"), otherKnown) },
			want:   []string{"HOST KEY CHANGED", "ssh-keygen"},
		},
		{
			name:   "failed authentication",
			mutate: func(s string) string { return strings.ReplaceAll(s, s2(s, "identity_file"), strangerKey) },
			want:   []string{"authentication", "authorized_keys"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.mutate(good)
			if bad == good {
				t.Fatal("mutation did not change the plan file")
			}
			if err := os.WriteFile(s.PlanFile, []byte(bad), 0o644); err != nil {
				t.Fatal(err)
			}
			logBefore := sshdLogSize(s)
			for _, cmd := range [][]string{{"plan", "-f", s.PlanFile}, {"apply", "-f", s.PlanFile, "--auto-approve"}} {
				r := mustMigrate(t, ctx, s, 1, cmd...)
				for _, w := range tc.want {
					if !strings.Contains(r.Stderr, w) {
						t.Errorf("%s: stderr lacks %q:\n%s", cmd[0], w, r.Stderr)
					}
				}
				if tc.position != "" && !regexp.MustCompile(tc.position).MatchString(r.Stderr) {
					t.Errorf("%s: stderr lacks a position matching %s:\n%s", cmd[0], tc.position, r.Stderr)
				}
				t.Logf("%s: %s", cmd[0], strings.TrimSpace(r.Stderr))
			}
			if tc.noSSH && sshdLogSize(s) != logBefore {
				t.Errorf("a bad plan file led to an SSH connection")
			}
			after, err := s.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			diffSnap(t, tc.name, before, after)
		})
	}
}

// s2 returns the value of the first `key = "value"` in an HCL text.
func s2(text, key string) string {
	m := regexp.MustCompile(key + `\s*=\s*"([^"]*)"`).FindStringSubmatch(text)
	if m == nil {
		return "\x00no such key"
	}
	return m[1]
}

func sshdLogSize(s *scenario.Scenario) int64 {
	var n int64
	for _, p := range s.Lab.SSHDLog {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}
