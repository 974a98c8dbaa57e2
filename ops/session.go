package ops

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opsmigrate/migrate/internal/timing"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/remote"
)

// Conn is one connection to a host; *remote.Client is the real one, the
// tests use fakes.
type Conn interface {
	Close() error
}

// Dialer opens a connection to a target. The real one is Dial (SSH and
// the agent); tests inject fakes, so whole operations run without hosts.
type Dialer[C Conn] func(ctx context.Context, t remote.Target) (C, error)

// Dial is the real dialer: SSH to the target and start this binary's
// agent there.
func Dial() (Dialer[*remote.Client], error) {
	bin, err := remote.SelfBinary()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, t remote.Target) (*remote.Client, error) { return remote.Connect(ctx, t, bin) }, nil
}

// Connect reaches both targets over SSH with the real dialer (all or
// nothing).
func Connect(ctx context.Context, targets map[string]remote.Target) (*Session[*remote.Client], error) {
	dial, err := Dial()
	if err != nil {
		return nil, err
	}
	s := NewSession(targets, dial)
	if err := s.Connect(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Session is one command's connections: at most one per host (old,
// new). Not safe for concurrent use.
type Session[C Conn] struct {
	Targets map[string]remote.Target
	Dial    Dialer[C]
	// Clients are the hosts connected now, by name.
	Clients map[string]C
}

// NewSession makes a session with nothing connected yet.
func NewSession[C Conn](targets map[string]remote.Target, dial Dialer[C]) *Session[C] {
	return &Session[C]{Targets: targets, Dial: dial, Clients: map[string]C{}}
}

// Connect reaches both hosts in parallel, all or nothing: the first
// failure cancels the other host's attempt, and what was connected is
// closed again.
func (s *Session[C]) Connect(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for _, name := range []string{plan.Old, plan.New} {
		t, ok := s.Targets[name]
		if !ok {
			return fmt.Errorf("no SSH target for host %s", name)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			cl, err := s.Dial(ctx, t)
			timing.CLI.Since("SSH connect, agent start ("+name+")", t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				// Once one host failed, the other's attempt is cancelled:
				// its error is only that.
				if len(errs) == 0 || ctx.Err() == nil {
					errs = append(errs, err)
				}
				cancel()
				return
			}
			s.Clients[name] = cl
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		s.Close()
		s.Clients = map[string]C{}
		return errors.Join(errs...)
	}
	return nil
}

// Reach connects, in parallel, to every host not connected yet, each
// within timeout, and returns why those it could not reach failed. A host
// that fails stays out of the session until the next Reach: during an
// incident the view of the host that answers is what the operator needs
// most.
func (s *Session[C]) Reach(ctx context.Context, timeout time.Duration) map[string]string {
	down := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	// Which hosts to dial is decided before any dial starts: the dials
	// write Clients.
	var missing []string
	for _, name := range []string{plan.Old, plan.New} {
		if _, ok := s.Clients[name]; !ok {
			missing = append(missing, name)
		}
	}
	for _, name := range missing {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			cl, err := s.Dial(cctx, s.Targets[name])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				down[name] = strings.TrimPrefix(err.Error(), "host "+name+": ")
				return
			}
			s.Clients[name] = cl
		}()
	}
	wg.Wait()
	return down
}

// Drop forgets a host's connection after a failure; the next Reach dials
// it again.
func (s *Session[C]) Drop(name string) {
	if c, ok := s.Clients[name]; ok {
		c.Close()
		delete(s.Clients, name)
	}
}

// Close closes every connection.
func (s *Session[C]) Close() {
	for _, c := range s.Clients {
		c.Close()
	}
}

// Names are the connected hosts, sorted.
func (s *Session[C]) Names() []string {
	var out []string
	for n := range s.Clients {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
