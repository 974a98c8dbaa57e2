package main

import (
	"context"
	"fmt"
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
(migrate's nft counters), the established flows OLD still serves itself and the
flows going through the tunnel (conntrack), and whether the drain is over.
For the tunnel: whether both ends are up, with the round-trip time through it.

A service is drained when it is at stage "new" and OLD serves no established
flow of it. OLD may be switched off once every service is drained and no flow
goes through OLD any more, i.e. after the address or DNS points at NEW.

Nothing is changed on either host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 500*time.Millisecond {
				return fmt.Errorf("--interval %s is too short: each reading opens conntrack and nft dumps on both hosts; use 500ms or more", interval)
			}
			ctx, cancel := signalContext()
			defer cancel()
			cfg, err := config.Load(file)
			if err != nil {
				return err
			}
			targets := map[string]remote.Target{}
			for name, h := range cfg.Hosts {
				targets[name] = targetOf(name, h)
			}
			sess, err := connect(ctx, targets)
			if err != nil {
				return err
			}
			defer sess.close()
			v := c.view()
			var prev *status.Report
			for {
				r, err := sess.status(ctx, cfg, prev)
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

// status takes one reading of both hosts: facts with counters and
// conntrack counts, and a ping through the tunnel from each end.
func (s *session) status(ctx context.Context, cfg *config.Config, prev *status.Report) (status.Report, error) {
	// Only what the report reads: with --watch this repeats every
	// interval, so no listener or foreign-chain dumps.
	facts := map[string]state.Facts{}
	for name, cl := range s.clients {
		req := plan.FactsRequest(cfg, name)
		req.Listeners, req.Chains, req.Sysctls, req.Tables = false, false, nil, nil
		f, err := cl.Facts(ctx, req)
		if err != nil {
			return status.Report{}, fmt.Errorf("host %s: collect facts: %w", name, err)
		}
		facts[name] = f
	}
	in := status.Input{Config: cfg, Old: facts[plan.Old], New: facts[plan.New], Time: time.Now(), Previous: prev}
	if t := cfg.Tunnel; t != nil {
		var wg sync.WaitGroup
		probe := func(host, target string, out *status.Probe) {
			defer wg.Done()
			out.Target = target
			rtt, err := s.clients[host].PingRTT(ctx, target, 3, time.Second)
			if err != nil {
				out.Error = err.Error()
				return
			}
			out.RTT = rtt
		}
		wg.Add(2)
		go probe(plan.Old, t.NewInner.Addr().String(), &in.OldToNew)
		go probe(plan.New, t.OldInner.Addr().String(), &in.NewToOld)
		wg.Wait()
		if ctx.Err() != nil {
			return status.Report{}, ctx.Err()
		}
	}
	return status.Build(in), nil
}
