// Package applytest has an in-memory host for tests of planning, applying
// and rolling back without a kernel.
package applytest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// Fake is a host whose kernel is a map of objects. Apply changes one
// object or fails as a whole. FailOn makes the step with that key fail.
type Fake struct {
	mu       sync.Mutex
	objects  map[string]state.Object
	base     state.Facts
	FailOn   string
	PingFail bool
	// PathMTU > 0: PingSize fails above it (an underlay that drops
	// larger tunnel packets). PingSizes records the sizes asked.
	PathMTU   int
	PingSizes []int
	Applied   []state.Step
}

// NewFake starts from facts.
func NewFake(f state.Facts) *Fake {
	return &Fake{objects: plan.Current(f), base: f}
}

func clone(o state.Object) state.Object {
	var c state.Object
	b, _ := json.Marshal(o)
	_ = json.Unmarshal(b, &c)
	return c
}

// Facts rebuilds facts from the objects, filtered as an agent would.
func (f *Fake) Facts(_ context.Context, req state.FactsRequest) (state.Facts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dump(req), nil
}

func (f *Fake) dump(req state.FactsRequest) state.Facts {
	out := state.Facts{Hostname: f.base.Hostname, Kernel: f.base.Kernel, Sysctls: map[string]string{}}
	tables := map[int]bool{}
	for _, t := range req.Tables {
		tables[t] = true
	}
	wantSys := map[string]bool{}
	for _, s := range req.Sysctls {
		wantSys[s] = true
	}
	keys := make([]string, 0, len(f.objects))
	for k := range f.objects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o := clone(f.objects[k])
		switch {
		case o.Link != nil:
			out.Links = append(out.Links, *o.Link)
		case o.Addr != nil:
			out.Addrs = append(out.Addrs, *o.Addr)
		case o.Rule != nil:
			out.Rules = append(out.Rules, *o.Rule)
		case o.Route != nil:
			if tables[o.Route.Table] {
				out.Routes = append(out.Routes, *o.Route)
			}
		case o.Sysctl != nil:
			if wantSys[o.Sysctl.Name] {
				out.Sysctls[o.Sysctl.Name] = o.Sysctl.Value
			}
		case o.Nft != nil:
			if o.Nft.Name == req.NftTable {
				out.Nft = o.Nft
			}
		}
	}
	out.NftConf = f.base.NftConf // files, which no step changes
	return out
}

// Dump is a canonical text form of everything on the host.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]string, 0, len(f.objects))
	for k := range f.objects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for _, k := range keys {
		b, _ := json.Marshal(f.objects[k])
		s += k + " = " + string(b) + "\n"
	}
	return s
}

// Apply changes one object, like the agent: deleting what is absent and
// creating what is there already are both fine.
func (f *Fake) Apply(_ context.Context, s state.Step, _ state.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.FailOn != "" && s.Key() == f.FailOn {
		return fmt.Errorf("injected failure on %s", s.Key())
	}
	switch s.Action {
	case state.Create, state.Update:
		if s.After == nil {
			return fmt.Errorf("%s step without After", s.Action)
		}
		f.objects[s.After.Key()] = clone(*s.After)
	case state.Delete:
		if s.Before == nil {
			return fmt.Errorf("delete step without Before")
		}
		delete(f.objects, s.Before.Key())
		if s.Before.Link != nil {
			// Objects on a device go with it.
			for k, o := range f.objects {
				if o.Addr != nil && o.Addr.Dev == s.Before.Link.Name {
					delete(f.objects, k)
				}
			}
		}
	}
	f.Applied = append(f.Applied, s)
	return nil
}

// Ping succeeds unless PingFail.
func (f *Fake) Ping(context.Context, string) error {
	if f.PingFail {
		return fmt.Errorf("injected ping failure")
	}
	return nil
}

// PingSize succeeds unless PingFail, or PathMTU is set and size is above
// it. It records each size asked.
func (f *Fake) PingSize(_ context.Context, _ string, size, _ int, _ time.Duration) error {
	f.PingSizes = append(f.PingSizes, size)
	if f.PingFail || (f.PathMTU > 0 && size > f.PathMTU) {
		return fmt.Errorf("injected ping failure at %d bytes", size)
	}
	return nil
}
