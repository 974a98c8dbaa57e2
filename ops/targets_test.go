package ops

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/opsmigrate/migrate/remote"
	"github.com/opsmigrate/migrate/state"
)

// A target recorded in the state file comes back as it was, jumps
// included, with the timeout of this run.
func TestStateTargetRoundTrip(t *testing.T) {
	in := remote.Target{Name: "old", User: "ops", Address: "192.0.2.1", Port: 2222, IdentityFiles: []string{"/k1"}, KnownHosts: "/kh", Sudo: true, Timeout: 9 * time.Second,
		Jumps: []remote.Target{{Name: "bastion", User: "j", Address: "198.51.100.1", Port: 22, KnownHosts: "/kh", Timeout: 9 * time.Second}}}
	if out := FromStateTarget("old", StateTarget(in), 9*time.Second); !reflect.DeepEqual(in, out) {
		t.Errorf("in  %+v\nout %+v", in, out)
	}
}

func TestRecordedTargets(t *testing.T) {
	dir := t.TempDir()
	planFile := filepath.Join(dir, "migration.hcl")
	if err := os.WriteFile(planFile, []byte(`host "old" {
  ssh = "root@192.0.2.10"
  known_hosts = "/dev/null"
}
host "new" {
  ssh = "root@192.0.2.20"
  known_hosts = "/dev/null"
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := func(hosts ...string) *state.Journal {
		j := state.NewJournal()
		j.Targets = map[string]state.Target{}
		for _, h := range hosts {
			j.Targets[h] = state.Target{User: "rec", Address: "203.0.113.1", Port: 22, KnownHosts: "/kh"}
		}
		return j
	}
	for _, c := range []struct {
		name    string
		journal *state.Journal
		plan    string
		want    map[string]string // host -> user@address
		wantErr bool
	}{
		{"the journal records both: it wins, the plan file is not read", rec("old", "new"), "/nonexistent.hcl", map[string]string{"old": "rec@203.0.113.1", "new": "rec@203.0.113.1"}, false},
		{"the journal records one: the plan file names both", rec("old"), planFile, map[string]string{"old": "root@192.0.2.10", "new": "root@192.0.2.20"}, false},
		{"no state file: the plan file", nil, planFile, map[string]string{"old": "root@192.0.2.10", "new": "root@192.0.2.20"}, false},
		{"neither: the plan file's error, with what the journal had", rec("new"), "/nonexistent.hcl", map[string]string{"new": "rec@203.0.113.1"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := RecordedTargets(c.journal, c.plan, 5*time.Second)
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v, want error %v", err, c.wantErr)
			}
			short := map[string]string{}
			for name, tg := range got {
				short[name] = tg.User + "@" + tg.Address
				if tg.Name != name || tg.Timeout != 5*time.Second {
					t.Errorf("%s: name %q timeout %s", name, tg.Name, tg.Timeout)
				}
			}
			if d := cmp.Diff(c.want, short); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// The state file is the one given, else beside the plan file; a command
// that only reads it says so when it is missing.
func TestStatePath(t *testing.T) {
	if got := StatePath("dir/sub/m.hcl", ""); got != "dir/sub/migration.state.json" {
		t.Errorf("default state path %s", got)
	}
	if got := StatePath("dir/m.hcl", "/x/s.json"); got != "/x/s.json" {
		t.Errorf("--state path %s", got)
	}
	sp := StatePath(t.TempDir()+"/m.hcl", "")
	if _, err := LoadState(sp); err == nil || !strings.Contains(err.Error(), "no state file at "+sp) || !strings.Contains(err.Error(), "nothing has been applied from here") {
		t.Errorf("missing state file: %v", err)
	}
}
