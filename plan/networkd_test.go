package plan

import (
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/state"
)

// TestNetworkdNotes: a warning, with the drop-in and the restart, only for
// a host where networkd runs with a ManageForeign* setting yes that would
// remove something migrate makes there.
func TestNetworkdNotes(t *testing.T) {
	both := HostDesired{Objects: []state.Object{{Rule: &state.Rule{}}, {Route: &state.Route{}}}}
	rulesOnly := HostDesired{Objects: []state.Object{{Rule: &state.Rule{}}}}
	run := func(rules, routes bool) *state.Networkd {
		return &state.Networkd{Running: true, PID: 77, ForeignRules: rules, ForeignRoutes: routes}
	}
	tests := []struct {
		name  string
		want  map[string]HostDesired
		facts map[string]state.Facts
		warn  map[string]string // host: what it says networkd removes
	}{
		{name: "no report", want: map[string]HostDesired{Old: both, New: both}, facts: map[string]state.Facts{}},
		{name: "not running", want: map[string]HostDesired{Old: both, New: both},
			facts: map[string]state.Facts{Old: {Networkd: &state.Networkd{}}, New: {Networkd: &state.Networkd{}}}},
		{name: "both no", want: map[string]HostDesired{Old: both, New: both},
			facts: map[string]state.Facts{Old: {Networkd: run(false, false)}, New: {Networkd: run(false, false)}}},
		{name: "defaults on NEW only", want: map[string]HostDesired{Old: both, New: both},
			facts: map[string]state.Facts{Old: {Networkd: &state.Networkd{}}, New: {Networkd: run(true, true)}},
			warn:  map[string]string{New: "removes migrate's policy rules and routes"}},
		{name: "routes only", want: map[string]HostDesired{Old: both, New: both},
			facts: map[string]state.Facts{Old: {Networkd: run(false, true)}},
			warn:  map[string]string{Old: "with ManageForeignRoutes=yes: it removes migrate's routes"}},
		{name: "routes yes but no routes there", want: map[string]HostDesired{Old: rulesOnly},
			facts: map[string]state.Facts{Old: {Networkd: run(false, true)}}},
		{name: "nothing of migrate's there", want: map[string]HostDesired{},
			facts: map[string]state.Facts{Old: {Networkd: run(true, true)}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			notes := NetworkdNotes(tc.want, tc.facts)
			if len(notes) != len(tc.warn) {
				t.Fatalf("%d notes, want %d:\n%s", len(notes), len(tc.warn), strings.Join(notes, "\n"))
			}
			for host, what := range tc.warn {
				found := false
				for _, n := range notes {
					if strings.HasPrefix(n, "WARNING host "+host+": systemd-networkd runs there (pid 77)") {
						found = true
						for _, s := range []string{what, "`" + NetworkdFix + "`", "`systemctl restart systemd-networkd`", "before migrate apply", "the data path stops"} {
							if !strings.Contains(n, s) {
								t.Errorf("note lacks %q:\n%s", s, n)
							}
						}
					}
				}
				if !found {
					t.Errorf("no warning for %s:\n%s", host, strings.Join(notes, "\n"))
				}
			}
		})
	}
}
