package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/ops"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
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
			if oldSSH == "" || newSSH == "" {
				return errors.New("init needs --old and --new, each USER@HOST[:PORT] or a Host alias of ~/.ssh/config")
			}
			if _, err := os.Stat(out); err == nil && !force {
				return fmt.Errorf("%s exists; choose another file with -o, or overwrite it with --force", out)
			} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			// Bad input is refused before any host is contacted.
			var endpoints [2]netip.Addr
			for i, e := range []struct{ flag, val string }{{"--old-endpoint", oldEndpoint}, {"--new-endpoint", newEndpoint}} {
				if e.val == "" {
					continue
				}
				a, err := netip.ParseAddr(e.val)
				if err != nil || a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() {
					return fmt.Errorf("%s %q: want the host's own unicast IP address for the tunnel", e.flag, e.val)
				}
				endpoints[i] = a
			}
			ctx, cancel := signalContext()
			defer cancel()
			hosts, err := initHosts(oldSSH, newSSH, identity, knownHosts, sudo)
			if err != nil {
				return err
			}
			cfg := &config.Config{Hosts: hosts}
			sess, err := ops.Connect(ctx, ops.ConfigTargets(hosts, hostTimeout))
			if err != nil {
				return err
			}
			defer sess.Close()
			typ := tunnelType
			if !cmd.Flags().Changed("tunnel") {
				typ = "" // vxlan, or direct for hosts on one subnet
			}
			text, summary, err := ops.InitPlan(ctx, sess, cfg, state.TunnelType(typ), endpoints[0], endpoints[1])
			if err != nil {
				return err
			}
			if _, err := config.Parse(text, out); err != nil {
				return fmt.Errorf("internal: the generated plan does not validate: %w", err)
			}
			if err := os.WriteFile(out, text, 0o644); err != nil {
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

var initPosRE = regexp.MustCompile(`--old/--new:\d+:\d+: `)

// initHosts resolves --old and --new exactly as a plan file's host blocks
// are resolved (ssh_config aliases, ProxyJump, defaults), by parsing the
// host blocks they stand for; the written plan then says the same.
func initHosts(oldSSH, newSSH, identity, knownHosts string, sudo bool) (map[string]*config.Host, error) {
	var b strings.Builder
	for _, h := range []struct{ name, ssh string }{{plan.Old, oldSSH}, {plan.New, newSSH}} {
		fmt.Fprintf(&b, "host %q {\n  ssh = %q\n", h.name, h.ssh)
		if identity != "" {
			fmt.Fprintf(&b, "  identity_file = %q\n", identity)
		}
		if knownHosts != "" {
			fmt.Fprintf(&b, "  known_hosts = %q\n", knownHosts)
		}
		if sudo {
			b.WriteString("  sudo = true\n")
		}
		b.WriteString("}\n")
	}
	cfg, err := config.Parse([]byte(b.String()), "--old/--new")
	if err != nil {
		// Positions in a text the user never wrote mean nothing.
		return nil, errors.New(initPosRE.ReplaceAllString(err.Error(), ""))
	}
	return cfg.Hosts, nil
}
