package plan_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// benchSizes are the service counts of issue 8's scale benchmarks.
var benchSizes = []int{1, 100, 1000, 10000}

// benchConfig parses a plan with n one-port services spread over ten
// addresses of OLD (the shape bench/labbench applies to the lab).
func benchConfig(b *testing.B, n int) *config.Config {
	b.Helper()
	var s strings.Builder
	s.WriteString(src[:strings.Index(src, "service ")])
	for i := 0; i < n; i++ {
		fmt.Fprintf(&s, "\nservice \"s%05d\" {\n  address       = \"198.51.100.%d\"\n  protocol      = \"tcp\"\n  ports         = [%d]\n  stage         = \"new\"\n  allow_unready = true\n}\n",
			i, 100+i%10, 20000+i/10)
	}
	c, err := config.Parse([]byte(s.String()), "bench.hcl")
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// benchFacts are fresh hosts: OLD holds its address and the ten service
// addresses, nothing of migrate's is there yet.
func benchFacts() map[string]state.Facts {
	old := facts("198.51.100.10/24", 1500)
	for i := 0; i < 10; i++ {
		old.Addrs = append(old.Addrs, state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix(fmt.Sprintf("198.51.100.%d/32", 100+i))})
	}
	return map[string]state.Facts{plan.Old: old, plan.New: facts("203.0.113.20/24", 1500)}
}

// converged returns facts in which want is already applied, so the diff
// has nothing to do: the cost of a `plan` on an applied migration.
func converged(f state.Facts, want plan.HostDesired) state.Facts {
	unwanted := map[string]bool{}
	for _, k := range want.Unwanted {
		unwanted[k] = true
	}
	out := state.Facts{Sysctls: map[string]string{}}
	for k, v := range f.Sysctls {
		out.Sysctls[k] = v
	}
	out.Links = append(out.Links, f.Links...)
	out.Addrs = append(out.Addrs, f.Addrs...)
	for _, r := range f.Rules {
		if !unwanted[(state.Object{Rule: &r}).Key()] {
			out.Rules = append(out.Rules, r)
		}
	}
	for _, o := range want.Objects {
		switch {
		case o.Link != nil:
			out.Links = append(out.Links, *o.Link)
		case o.Addr != nil:
			out.Addrs = append(out.Addrs, *o.Addr)
		case o.Rule != nil:
			out.Rules = append(out.Rules, *o.Rule)
		case o.Route != nil:
			out.Routes = append(out.Routes, *o.Route)
		case o.Sysctl != nil:
			out.Sysctls[o.Sysctl.Name] = o.Sysctl.Value
		case o.Nft != nil:
			nft := *o.Nft
			out.Nft = &nft
		}
	}
	return out
}

var noOwned = map[string]map[string]*state.Object{plan.Old: {}, plan.New: {}}

// BenchmarkDesired measures building both hosts' desired objects.
func BenchmarkDesired(b *testing.B) {
	for _, n := range benchSizes {
		c, f := benchConfig(b, n), benchFacts()
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := plan.Desired(c, f, noOwned); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDiff measures diffing both hosts: against fresh hosts (every
// object is created) and against hosts where the plan is applied (no
// step).
func BenchmarkDiff(b *testing.B) {
	for _, n := range benchSizes {
		c, f := benchConfig(b, n), benchFacts()
		want, err := plan.Desired(c, f, noOwned)
		if err != nil {
			b.Fatal(err)
		}
		applied := map[string]state.Facts{}
		for h, w := range want {
			applied[h] = converged(f[h], w)
		}
		for _, k := range []struct {
			name  string
			facts map[string]state.Facts
		}{{"fresh", f}, {"applied", applied}} {
			b.Run(fmt.Sprintf("%s/services=%d", k.name, n), func(b *testing.B) {
				b.ReportAllocs()
				steps := 0
				for b.Loop() {
					steps = 0
					for _, h := range []string{plan.New, plan.Old} {
						s, err := plan.Diff(h, want[h], k.facts[h], nil)
						if err != nil {
							b.Fatal(err)
						}
						steps += len(s)
					}
				}
				b.ReportMetric(float64(steps), "steps")
			})
		}
	}
}

// BenchmarkMake measures the whole pure planning step of `migrate plan`
// (validation against facts, readiness, desired model, diff, digests) on
// fresh hosts. The config is parsed once, outside the loop.
func BenchmarkMake(b *testing.B) {
	for _, n := range benchSizes {
		c, f := benchConfig(b, n), benchFacts()
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			now := time.Unix(0, 0)
			for b.Loop() {
				if _, err := plan.Make(c, f, state.NewJournal(), now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
