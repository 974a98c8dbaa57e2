package main

import (
	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/ops"
	"github.com/opsmigrate/migrate/views"
)

func (c *cli) initCmd() *cobra.Command {
	var oldSSH, newSSH, out, identity, knownHosts, tunnelType, oldEndpoint, newEndpoint string
	var sudo, force bool
	cmd := &cobra.Command{
		Use:   "init --old USER@HOST[:PORT]|ALIAS --new USER@HOST[:PORT]|ALIAS [-o migration.hcl]",
		Short: "Write a first plan from the services OLD runs now",
		Long: `init connects to both hosts, lists OLD's listening TCP sockets and bound UDP
sockets (sock_diag) and writes a plan: the hosts, a tunnel whose endpoints are
each host's source address towards the other, and one service block per
process and address, all at stage "old". Wildcard binds are expanded to OLD's
public addresses; loopback-only services are left out; the SSH port migrate
itself uses is written commented out. Running plan on it straight away shows
the tunnel and nothing moving.

When the hosts are reached through forwarded ports (ssh -L, a VM's port
forward) or the address they should tunnel over is not the one their route
picks, give the endpoints with --old-endpoint and --new-endpoint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			o := ops.InitOptions{Old: oldSSH, New: newSSH, Identity: identity, KnownHosts: knownHosts, Sudo: sudo,
				Out: out, Force: force, TunnelType: tunnelType, OldEndpoint: oldEndpoint, NewEndpoint: newEndpoint, Timeout: hostTimeout}
			if !cmd.Flags().Changed("tunnel") {
				o.TunnelType = "" // vxlan, or direct for hosts on one subnet
			}
			dial, err := ops.Dial()
			if err != nil {
				return err
			}
			summary, err := ops.Init(ctx, dial, o)
			if err != nil {
				return err
			}
			var v views.Init = c.view()
			v.Wrote(out, summary)
			return nil
		},
	}
	cmd.Flags().StringVar(&oldSSH, "old", "", "OLD host as USER@HOST[:PORT], or a Host alias of ~/.ssh/config")
	cmd.Flags().StringVar(&newSSH, "new", "", "NEW host as USER@HOST[:PORT], or a Host alias of ~/.ssh/config")
	cmd.Flags().StringVarP(&out, "out", "o", "migration.hcl", "plan file to write")
	cmd.Flags().StringVar(&identity, "identity-file", "", "SSH private key (else ssh-agent, then ~/.ssh/id_*)")
	cmd.Flags().StringVar(&knownHosts, "known-hosts", "", "known_hosts file (default ~/.ssh/known_hosts)")
	cmd.Flags().BoolVar(&sudo, "sudo", false, "run the agent through sudo -n (non-root user)")
	cmd.Flags().StringVar(&tunnelType, "tunnel", "vxlan", "tunnel type to write: vxlan, gre (vxlan crosses NAT, gre mostly does not), wireguard or direct (default: direct when OLD and NEW share a subnet, else vxlan)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite the output file")
	cmd.Flags().StringVar(&oldEndpoint, "old-endpoint", "", "OLD's tunnel endpoint address (default: OLD's source address towards NEW)")
	cmd.Flags().StringVar(&newEndpoint, "new-endpoint", "", "NEW's tunnel endpoint address (default: NEW's source address towards OLD)")
	return cmd
}
