package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/ops"
	"github.com/opsmigrate/migrate/status"
	"github.com/opsmigrate/migrate/views"
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
			targets := ops.ConfigTargets(cfg.Hosts, hostTimeout)
			dial, err := ops.Dial()
			if err != nil {
				return err
			}
			sess := ops.NewSession(targets, dial)
			defer sess.Close()
			var v views.Status = c.view()
			return ops.WatchStatus(ctx, sess, cfg, watch, interval, func(r status.Report, n int) { v.Reading(r, n, watch) })
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "migration.hcl", "plan file")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until interrupted (^C)")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between readings with --watch")
	return cmd
}
