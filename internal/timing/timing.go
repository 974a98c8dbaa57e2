// Package timing records where the time of one migrate command goes, for
// the benchmarks (bench/labbench) and for anyone asking why a run is slow:
// with MIGRATE_TIMINGS=1 in the CLI's environment, the CLI prints the
// total time spent in each phase (parse, SSH connect, each agent call)
// and, asked for in each request, the agents' own split of that time
// (facts: nft, conntrack counts...; apply: kernel, journal) to stderr
// when it exits. Nothing is recorded otherwise.
//
// Durations of the two hosts overlap where the CLI talks to both at once:
// the lines are sums per phase, not slices of the wall time.
package timing

import (
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"
)

// Env switches recording on in the CLI.
const Env = "MIGRATE_TIMINGS"

// Rec collects named durations. A nil *Rec records nothing.
type Rec struct {
	mu    sync.Mutex
	d     map[string]time.Duration
	n     map[string]int
	order []string
}

// New returns an empty recorder.
func New() *Rec { return &Rec{d: map[string]time.Duration{}, n: map[string]int{}} }

// Add adds d to name.
func (r *Rec) Add(name string, d time.Duration) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.d[name]; !ok {
		r.order = append(r.order, name)
	}
	r.d[name] += d
	r.n[name]++
}

// Since adds the time since t0 to name.
func (r *Rec) Since(name string, t0 time.Time) { r.Add(name, time.Since(t0)) }

// Micros is the recorded totals in microseconds (for the wire).
func (r *Rec) Micros() map[string]int64 {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[string]int64{}
	for k, v := range r.d {
		m[k] = v.Microseconds()
	}
	return m
}

// Merge adds the totals of an agent's answer under prefix.
func (r *Rec) Merge(prefix string, us map[string]int64) {
	if r == nil {
		return
	}
	keys := make([]string, 0, len(us))
	for k := range us {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		r.Add(prefix+k, time.Duration(us[k])*time.Microsecond)
	}
}

// Write prints one line per phase, in the order first seen: total, count,
// share of wall.
func (r *Rec) Write(w io.Writer, wall time.Duration) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(w, "timing: %-44s %9.3f s\n", "wall", wall.Seconds())
	for _, k := range r.order {
		fmt.Fprintf(w, "timing: %-44s %9.3f s  %5d call(s)  %5.1f %%\n", k, r.d[k].Seconds(), r.n[k], 100*r.d[k].Seconds()/wall.Seconds())
	}
}

// CLI is the CLI's recorder: nil unless MIGRATE_TIMINGS is set.
var CLI *Rec

// Agent is the agent's recorder for the request being served: nil unless
// the request asked for timings.
var Agent *Rec

func init() {
	if os.Getenv(Env) != "" {
		CLI = New()
	}
}
