package status

import (
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/state"
)

// How full OLD's conntrack table is: count of max, percent, and a warning
// past the share plan warns at; nothing when OLD was not read.
func TestConntrackFullness(t *testing.T) {
	c := parse(t)
	for _, tc := range []struct {
		name string
		ct   *state.Conntrack
		down bool
		line string // "" = no report
	}{
		{"quiet", &state.Conntrack{Loaded: true, Count: 1311, Max: 262144}, false, "Conntrack on OLD: 1311 of 262144 entries (0.5% full)"},
		{"over", &state.Conntrack{Loaded: true, Count: 140000, Max: 262144}, false, "Conntrack on OLD: 140000 of 262144 entries (53.4% full), over 50%: when it is full the kernel drops new flows of every service on OLD; raise net.netfilter.nf_conntrack_max"},
		{"no limit", &state.Conntrack{Loaded: true, Count: 7}, false, "Conntrack on OLD: 7 entries, no limit"},
		{"not loaded", &state.Conntrack{}, false, "Conntrack on OLD: not loaded (nothing tracked yet)"},
		{"old down", &state.Conntrack{Loaded: true, Count: 1, Max: 2}, true, ""},
		{"not reported", nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := oldFacts(0)
			f.Conntrack = tc.ct
			in := Input{Config: c, Old: f, Time: time.Unix(0, 0)}
			if tc.down {
				in.Unreachable = map[string]string{"old": "down"}
			}
			r := Build(in)
			if tc.line == "" {
				if r.Conntrack != nil {
					t.Fatalf("report %+v", r.Conntrack)
				}
				return
			}
			if r.Conntrack == nil || r.Conntrack.Line() != tc.line {
				t.Fatalf("got %+v\nwant line %q", r.Conntrack, tc.line)
			}
			if over := strings.Contains(tc.line, "over 50%"); r.Conntrack.Over != over {
				t.Errorf("over = %v", r.Conntrack.Over)
			}
		})
	}
}
