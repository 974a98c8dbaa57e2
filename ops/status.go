package ops

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/status"
)

// StatusConn is what a status reading asks of a host.
type StatusConn interface {
	Conn
	Facts(ctx context.Context, req state.FactsRequest) (state.Facts, error)
	PingRTT(ctx context.Context, addr string, count int, timeout time.Duration) (time.Duration, error)
	PingSize(ctx context.Context, addr string, size, count int, timeout time.Duration) error
}

// Bounds for one host's part of a reading, so that a host that went silent
// (no TCP reset) delays a reading, not the watch.
const (
	StatusConnectTimeout = 30 * time.Second
	StatusReadTimeout    = 20 * time.Second
)

// ReadStatus takes one reading for `migrate status`: facts with counters
// and conntrack counts from each host it can reach, and a ping through the
// tunnel from each end. It never changes a host and takes no lock. A host
// that cannot be reached or read is reported as such (Unreachable), with
// what the other host shows, and dialled again at the next reading. It
// fails only when neither host can be read (or on ^C). prev is the
// previous reading (--watch), for rates; now gives the reading's time.
func ReadStatus[C StatusConn](ctx context.Context, s *Session[C], cfg *config.Config, prev *status.Report, now func() time.Time) (status.Report, error) {
	down := s.Reach(ctx, StatusConnectTimeout)
	// Only what the report reads: with --watch this repeats every
	// interval, so no /proc scans (networkd, listeners' processes). The
	// hosts' foreign chains are read (one nft listing, the rules of
	// Docker's, ufw's and firewalld's chains and of forward chains with
	// policy drop): on OLD a FORWARD drop that no longer accepts the
	// moved flows breaks them while the tunnel, the table and NEW are all
	// fine; where a tunnel ping fails, a ufw or firewalld without the
	// tunnel's rule is named. Both hosts' listeners come from sock_diag alone:
	// a service whose daemon died on NEW is refused its clients however
	// drained OLD is, and one whose daemon stopped on OLD while OLD still
	// takes (part of) its new flows is refused there.
	facts := map[string]state.Facts{}
	for _, name := range []string{plan.Old, plan.New} {
		cl, ok := s.Clients[name]
		if !ok {
			continue
		}
		req := plan.FactsRequest(cfg, name)
		req.Listeners, req.Chains, req.Networkd, req.Sysctls, req.Tables = true, cfg.Tunnel != nil, false, status.Sysctls(cfg, name), nil
		// The legacy tables too: status judges their chains as nft's
		// (a scan of /proc/net/ip_tables_names where there are none).
		req.NoOwners = true
		for _, f := range cfg.Forwards {
			if string(f.On) == name {
				// Forward and service keys never overlap (the plan
				// refuses it), so one mark mask serves both: for a
				// forward's keys, "marked" means "forwarded".
				req.Mark |= plan.ForwardMarkFor(cfg)
				for _, e := range plan.ForwardEntries(f) {
					req.Flows = append(req.Flows, state.NftService{Addr: e.Addr, Proto: e.Proto, Port: e.Port})
				}
			}
		}
		// OLD's own sockets too: conntrack never saw a connection idle
		// since before the first apply, and OLD still serves it.
		req.Sockets = name == plan.Old && len(req.Flows) > 0
		fctx, cancel := context.WithTimeout(ctx, StatusReadTimeout)
		f, err := cl.Facts(fctx, req)
		cancel()
		if err != nil {
			down[name] = "collect facts: " + err.Error()
			s.Drop(name)
			continue
		}
		facts[name] = f
	}
	if ctx.Err() != nil {
		return status.Report{}, ctx.Err()
	}
	if len(down) == 2 {
		return status.Report{}, fmt.Errorf("neither host could be read:\n  old: %s\n  new: %s", down[plan.Old], down[plan.New])
	}
	in := status.Input{Config: cfg, Old: facts[plan.Old], New: facts[plan.New], Time: now(), Previous: prev, Unreachable: down}
	if t := cfg.Tunnel; t != nil {
		var wg sync.WaitGroup
		probe := func(cl C, target string, mtu int, out *status.Probe) {
			defer wg.Done()
			out.Target = target
			pctx, cancel := context.WithTimeout(ctx, StatusReadTimeout)
			defer cancel()
			rtt, err := cl.PingRTT(pctx, target, 3, time.Second)
			if err != nil {
				out.Error = err.Error()
				return
			}
			out.RTT = rtt
			// The path may have shrunk since apply checked it (weeks
			// later: another provider's route, a VPN on the way).
			if mtu > 0 {
				if err := cl.PingSize(pctx, target, mtu, 3, time.Second); err != nil {
					out.Error = fmt.Sprintf("packets of %d bytes (the tunnel's MTU) get no answer while small ones do: the underlay between the endpoints carries less, and larger transfers through the tunnel stall (migrate apply's tunnel check names the mtu to set)", mtu)
				}
			}
		}
		// From each end that could be read, to the other's inner
		// address: the ping from NEW says whether OLD's kernel still
		// answers even when OLD's sshd does not.
		toNew, toOld := t.NewInner.Addr().String(), t.OldInner.Addr().String()
		oldDev, _ := facts[plan.Old].Link(t.Name)
		newDev, _ := facts[plan.New].Link(t.Name)
		oldMTU, newMTU := oldDev.MTU, newDev.MTU
		if plan.Direct(cfg) {
			// No inner addresses: the endpoints on the segment, and no
			// encapsulation to check the size of.
			toNew, toOld = t.NewEndpoint.String(), t.OldEndpoint.String()
			oldMTU, newMTU = 0, 0
		}
		if cl, ok := s.Clients[plan.Old]; ok {
			wg.Add(1)
			go probe(cl, toNew, oldMTU, &in.OldToNew)
		}
		if cl, ok := s.Clients[plan.New]; ok {
			wg.Add(1)
			go probe(cl, toOld, newMTU, &in.NewToOld)
		}
		wg.Wait()
		if ctx.Err() != nil {
			return status.Report{}, ctx.Err()
		}
	}
	return status.Build(in), nil
}

// WatchStatus takes readings (ReadStatus) and hands each to show, n
// counting from 0: one, or with watch one every interval until ctx ends
// (^C ends a watch without an error). A single reading with a host that
// could not be read is shown, then returned as an error: the report is
// partial.
func WatchStatus[C StatusConn](ctx context.Context, sess *Session[C], cfg *config.Config, watch bool, interval time.Duration, show func(r status.Report, n int)) error {
	var prev *status.Report
	n := 0
	for {
		r, err := ReadStatus(ctx, sess, cfg, prev, time.Now)
		if err != nil {
			if watch && ctx.Err() != nil {
				return nil // ^C ends a watch
			}
			return err
		}
		show(r, n)
		n++
		if !watch {
			if len(r.Unreachable) > 0 {
				return fmt.Errorf("%s could not be read: the report above is partial", hostList(r.Unreachable))
			}
			return nil
		}
		prev = &r
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// hostList names the hosts of m ("host old", "hosts old and new").
func hostList(m map[string]string) string {
	var names []string
	for _, n := range []string{plan.Old, plan.New} {
		if _, ok := m[n]; ok {
			names = append(names, n)
		}
	}
	if len(names) == 1 {
		return "host " + names[0]
	}
	return "hosts " + strings.Join(names, " and ")
}
