package ops

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// Purpose is what a Prepare is for: a plan changes nothing on the hosts,
// an apply goes on to change them.
type Purpose int

const (
	ForPlan Purpose = iota
	ForApply
)

// Facts collects each connected host's facts for the plan, from both hosts
// at once. The nft counters are left out (state.FactsRequest.NoCounters):
// only status shows them.
func Facts[H Host](ctx context.Context, s *Session[H], cfg *config.Config, purpose Purpose) (map[string]state.Facts, error) {
	out := map[string]state.Facts{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for name, cl := range s.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := plan.FactsRequest(cfg, name)
			req.NoCounters = true
			req.ForUpdate = purpose == ForApply
			f, err := cl.Facts(ctx, req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("host %s: collect facts: %w", name, err))
				return
			}
			out[name] = f
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// WGKeys asks each host's agent for its WireGuard public key (made on
// first use; the private key never leaves the host) and puts it in the
// host's facts, where the desired model takes it. Not part of the facts
// digest.
func WGKeys[H Host](ctx context.Context, s *Session[H], cfg *config.Config, facts map[string]state.Facts) error {
	if cfg.Tunnel == nil || cfg.Tunnel.Type != state.WireGuard {
		return nil
	}
	for name, cl := range s.Clients {
		pub, err := cl.WGKey(ctx, cfg.Tunnel.Name)
		if err != nil {
			return fmt.Errorf("host %s: WireGuard key: %w", name, err)
		}
		f := facts[name]
		f.WGPublicKey = pub
		facts[name] = f
	}
	return nil
}

// PeerRoutes asks each host that does not hold its tunnel endpoint (a host
// behind 1:1 NAT) for its source address towards the peer's endpoint
// (`ip route get`), and puts it in the host's facts (RouteSrc), where
// plan takes the address its tunnel binds. An old_bind/new_bind in the
// plan is used as it is. A failed lookup is left out: plan then says the
// host holds neither its endpoint nor a way to the peer.
func PeerRoutes[H Host](ctx context.Context, s *Session[H], cfg *config.Config, facts map[string]state.Facts) error {
	t := cfg.Tunnel
	if t == nil {
		return nil
	}
	if t.Type == state.Direct {
		return PeerLinks(ctx, s, cfg, facts)
	}
	for _, h := range []struct {
		name     string
		ep, peer netip.Addr
		bind     netip.Addr
	}{{plan.Old, t.OldEndpoint, t.NewEndpoint, t.OldBind}, {plan.New, t.NewEndpoint, t.OldEndpoint, t.NewBind}} {
		f := facts[h.name]
		if h.bind.IsValid() || f.HasAddr(h.ep) {
			continue
		}
		cl, ok := s.Clients[h.name]
		if !ok {
			continue
		}
		r, err := cl.RouteGet(ctx, h.peer.String())
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			continue
		}
		if r.Src != "" {
			f.RouteSrc = map[string]string{h.peer.String(): r.Src}
			facts[h.name] = f
		}
	}
	return nil
}

// PeerLinks asks each host of a direct tunnel how it reaches its peer's
// endpoint (`ip route get`, then the neighbour entry after a probe), and
// puts the answer in the host's facts (PeerLink), where plan checks that
// both hosts are on one link. A failed lookup is left out: plan then
// refuses, saying it could not tell.
func PeerLinks[H Host](ctx context.Context, s *Session[H], cfg *config.Config, facts map[string]state.Facts) error {
	t := cfg.Tunnel
	for _, h := range []struct {
		name string
		peer netip.Addr
	}{{plan.Old, t.NewEndpoint}, {plan.New, t.OldEndpoint}} {
		cl, ok := s.Clients[h.name]
		if !ok {
			continue
		}
		r, err := cl.RouteGetNeigh(ctx, h.peer.String())
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			continue
		}
		f := facts[h.name]
		f.PeerLink = &state.PeerLink{Addr: h.peer.String(), Dev: r.Dev, Gw: r.Gw, Neigh: r.Neigh, LLAddr: r.LLAddr, LinkLocal: r.LinkLocal}
		facts[h.name] = f
	}
	return nil
}
