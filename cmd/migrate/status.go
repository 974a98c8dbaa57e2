package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/remote"
	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/status"
)

// statusCmd reads both hosts without changing anything and without the
// lock: like `terraform show`, it may run beside an apply.
func (c *cli) statusCmd() *cobra.Command {
	var file string
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show how far each service's move has got, and whether OLD is still needed",
		Long: `Show, per service, the stage live on OLD, the new flows and bytes sent to NEW
(migrate's nft counters), the connections OLD still serves itself (its own
sockets and conntrack), the flows going through the tunnel (conntrack), and
whether the drain is over.
For the tunnel: whether both ends are up, with the round-trip time through it.

A service is drained when it is at stage "new" and OLD serves no connection of
it: no TCP socket of it that can still carry data, idle or not, and no
established flow in conntrack. UDP has no connections: only connected UDP
sockets and UDP flows conntrack saw answered can be counted. OLD may be switched off once every service is drained and no flow
goes through OLD any more, i.e. after the address or DNS points at NEW.

Nothing is changed on either host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 500*time.Millisecond {
				return fmt.Errorf("--interval %s is too short: each reading opens conntrack and nft dumps on both hosts; use 500ms or more", interval)
			}
			ctx, cancel := signalContext()
			defer cancel()
			cfg, err := c.loadConfig(file)
			if err != nil {
				return err
			}
			targets := map[string]remote.Target{}
			for name, h := range cfg.Hosts {
				targets[name] = targetOf(name, h)
			}
			bin, err := remote.SelfBinary()
			if err != nil {
				return err
			}
			sess := &statusSession{targets: targets, bin: bin, clients: map[string]*remote.Client{}}
			defer sess.close()
			v := c.view()
			var prev *status.Report
			for {
				r, err := sess.read(ctx, cfg, prev)
				if err != nil {
					if watch && ctx.Err() != nil {
						return nil // ^C ends a watch
					}
					return err
				}
				if watch && v.Color {
					fmt.Fprint(c.out, "\x1b[H\x1b[2J") // redraw in place on a terminal
				} else if prev != nil && !c.asJSON {
					fmt.Fprintln(c.out)
				}
				v.Status(r)
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
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "migration.hcl", "plan file")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until interrupted (^C)")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between readings with --watch")
	return cmd
}

// statusSession keeps one connection per host across readings. A host
// that cannot be reached or read is reported as such, with what the other
// host shows, and tried again at the next reading: during an incident the
// view of the host that answers is what the operator needs most.
type statusSession struct {
	targets map[string]remote.Target
	bin     *remote.Binary
	clients map[string]*remote.Client
}

// Bounds for one host's part of a reading, so that a host that went silent
// (no TCP reset) delays a reading, not the watch.
const (
	statusConnectTimeout = 30 * time.Second
	statusReadTimeout    = 20 * time.Second
)

func (s *statusSession) close() {
	for _, c := range s.clients {
		c.Close()
	}
}

// drop forgets a host's connection after a failure; the next reading dials
// it again.
func (s *statusSession) drop(name string) {
	if c := s.clients[name]; c != nil {
		c.Close()
		delete(s.clients, name)
	}
}

// reach connects, in parallel, to every host not connected yet, and
// returns why those it could not reach failed.
func (s *statusSession) reach(ctx context.Context) map[string]string {
	down := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range []string{plan.Old, plan.New} {
		if s.clients[name] != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, statusConnectTimeout)
			defer cancel()
			cl, err := remote.Connect(cctx, s.targets[name], s.bin)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				down[name] = strings.TrimPrefix(err.Error(), "host "+name+": ")
				return
			}
			s.clients[name] = cl
		}()
	}
	wg.Wait()
	return down
}

// read takes one reading: facts with counters and conntrack counts from
// each host it can reach, and a ping through the tunnel from each end. It
// fails only when neither host can be read (or on ^C).
func (s *statusSession) read(ctx context.Context, cfg *config.Config, prev *status.Report) (status.Report, error) {
	down := s.reach(ctx)
	// Only what the report reads: with --watch this repeats every
	// interval, so no listener or foreign-chain dumps.
	facts := map[string]state.Facts{}
	for _, name := range []string{plan.Old, plan.New} {
		cl := s.clients[name]
		if cl == nil {
			continue
		}
		req := plan.FactsRequest(cfg, name)
		req.Listeners, req.Chains, req.Sysctls, req.Tables = false, false, nil, nil
		for _, f := range cfg.Forwards {
			if f.On == name {
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
		fctx, cancel := context.WithTimeout(ctx, statusReadTimeout)
		f, err := cl.Facts(fctx, req)
		cancel()
		if err != nil {
			down[name] = "collect facts: " + err.Error()
			s.drop(name)
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
	in := status.Input{Config: cfg, Old: facts[plan.Old], New: facts[plan.New], Time: time.Now(), Previous: prev, Unreachable: down}
	if t := cfg.Tunnel; t != nil {
		var wg sync.WaitGroup
		probe := func(cl *remote.Client, target string, out *status.Probe) {
			defer wg.Done()
			out.Target = target
			pctx, cancel := context.WithTimeout(ctx, statusReadTimeout)
			defer cancel()
			rtt, err := cl.PingRTT(pctx, target, 3, time.Second)
			if err != nil {
				out.Error = err.Error()
				return
			}
			out.RTT = rtt
		}
		// From each end that could be read, to the other's inner
		// address: the ping from NEW says whether OLD's kernel still
		// answers even when OLD's sshd does not.
		toNew, toOld := t.NewInner.Addr().String(), t.OldInner.Addr().String()
		if plan.Direct(cfg) {
			// No inner addresses: the endpoints on the segment.
			toNew, toOld = t.NewEndpoint.String(), t.OldEndpoint.String()
		}
		if cl := s.clients[plan.Old]; cl != nil {
			wg.Add(1)
			go probe(cl, toNew, &in.OldToNew)
		}
		if cl := s.clients[plan.New]; cl != nil {
			wg.Add(1)
			go probe(cl, toOld, &in.NewToOld)
		}
		wg.Wait()
		if ctx.Err() != nil {
			return status.Report{}, ctx.Err()
		}
	}
	return status.Build(in), nil
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
