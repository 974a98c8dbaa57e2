package main

import (
	"context"
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
	"github.com/opsmigrate/migrate/remote"
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
			sess, err := connect(ctx, ops.ConfigTargets(hosts, hostTimeout))
			if err != nil {
				return err
			}
			defer sess.Close()
			text, summary, err := initPlan(ctx, sess, cfg, tunnelType, endpoints[0], endpoints[1])
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
	cmd.Flags().StringVar(&tunnelType, "tunnel", "vxlan", "tunnel type to write: vxlan or gre (vxlan crosses NAT, gre mostly does not)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite the output file")
	cmd.Flags().StringVar(&oldEndpoint, "old-endpoint", "", "OLD's tunnel endpoint address (default: OLD's source address towards NEW)")
	cmd.Flags().StringVar(&newEndpoint, "new-endpoint", "", "NEW's tunnel endpoint address (default: NEW's source address towards OLD)")
	return cmd
}

// initPlan builds the first plan text from live facts. oe and ne are the
// tunnel endpoints the operator gave (the zero Addr: find them).
func initPlan(ctx context.Context, sess *session, cfg *config.Config, tunnelType string, oe, ne netip.Addr) ([]byte, []string, error) {
	old, nw := sess.Clients[plan.Old], sess.Clients[plan.New]
	of, err := old.Facts(ctx, state.FactsRequest{Listeners: true, NftTable: plan.NftTableName})
	if err != nil {
		return nil, nil, fmt.Errorf("host old: %w", err)
	}
	// The tunnel's endpoints: each host's source address towards the
	// other, as the admin reached them.
	find := func(from *remote.Client, fromName, toName, to, flag string) (netip.Addr, error) {
		r, err := from.RouteGet(ctx, to)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("host %s: route to %s (%s): %w; give the endpoint with %s", fromName, toName, to, err, flag)
		}
		a, err := netip.ParseAddr(r.Src)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("host %s: no source address towards %s (%s); give the endpoint with %s", fromName, toName, to, flag)
		}
		if a.IsLoopback() {
			// The admin reached the hosts through a forwarded port and
			// sshd did not tell their own addresses.
			return netip.Addr{}, fmt.Errorf("host %s: its address towards %s (%s) is a loopback address; give the endpoint with %s", fromName, toName, to, flag)
		}
		return a, nil
	}
	// A host that does not hold the address the admin reached it at is
	// behind a 1:1 NAT (a cloud VM): its peer sends to that public
	// address, which is its endpoint; plan finds the private address its
	// tunnel binds. Not through a jump host or a forwarded port: the
	// address reached is then not the host's own.
	nf, err := nw.Facts(ctx, state.FactsRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("host new: %w", err)
	}
	natted := func(cl *remote.Client, f state.Facts) (netip.Addr, bool) {
		a, err := netip.ParseAddr(cl.RemoteIP)
		if err != nil || a.IsLoopback() || len(cl.Target.Jumps) > 0 || f.HasAddr(a.String()) {
			return netip.Addr{}, false
		}
		return a, true
	}
	var summary []string
	oldPublic, oldNAT := natted(old, of)
	newPublic, newNAT := natted(nw, nf)
	if !oe.IsValid() && oldNAT {
		oe = oldPublic
	}
	if !ne.IsValid() && newNAT {
		ne = newPublic
	}
	// Towards the other's given endpoint when there is one: that is the
	// path the tunnel takes.
	toNew, toOld := nw.RemoteIP, old.RemoteIP
	if ne.IsValid() {
		toNew = ne.String()
	}
	if oe.IsValid() {
		toOld = oe.String()
	}
	// What OLD's sshd sees of migrate's connection: the address it holds.
	sshIP, _ := netip.ParseAddr(old.RemoteIP)
	for _, h := range []struct {
		name, upper, peer string
		nat               bool
		cl                *remote.Client
		public            netip.Addr
		to                string
	}{{plan.Old, "OLD", "NEW", oldNAT, old, oldPublic, toNew}, {plan.New, "NEW", "OLD", newNAT, nw, newPublic, toOld}} {
		if !h.nat {
			continue
		}
		held, err := find(h.cl, h.name, map[string]string{plan.Old: plan.New, plan.New: plan.Old}[h.name], h.to, "--"+h.name+"-endpoint")
		if err != nil {
			return nil, nil, err
		}
		if tunnelType == "gre" || tunnelType == "ip6gre" {
			return nil, nil, fmt.Errorf("%s is behind NAT (it holds %s, and was reached at %s): %s tunnels carry no port and most NATs do not pass them; use --tunnel vxlan (the default) or wireguard", h.upper, held, h.public, tunnelType)
		}
		if h.name == plan.Old {
			sshIP = held
		}
		summary = append(summary, fmt.Sprintf("%s is behind NAT: it holds %s and was reached at %s. The tunnel endpoint is %s (what %s sends to); plan finds the address its tunnel binds. Open UDP port %d to it.", h.upper, held, h.public, h.public, h.peer, map[bool]int{true: config.DefaultWGPort, false: config.DefaultVXLANPort}[tunnelType == "wireguard"]))
	}
	if !oe.IsValid() {
		if oe, err = find(old, plan.Old, plan.New, toNew, "--old-endpoint"); err != nil {
			return nil, nil, err
		}
	}
	if !ne.IsValid() {
		if ne, err = find(nw, plan.New, plan.Old, toOld, "--new-endpoint"); err != nil {
			return nil, nil, err
		}
	}
	if oe == ne {
		// Both hosts behind NATs that look alike (a VM's user network):
		// the address each one has is not the one the other reaches.
		return nil, nil, fmt.Errorf("both tunnel endpoints came out as %s; give them with --old-endpoint and --new-endpoint", oe)
	}
	if oe.Is4() != ne.Is4() {
		return nil, nil, fmt.Errorf("the tunnel endpoints %s (old) and %s (new) are of different IP families; give both with --old-endpoint and --new-endpoint", oe, ne)
	}
	cfg.Tunnel = &config.Tunnel{
		Type: tunnelType, OldEndpoint: oe, NewEndpoint: ne, Name: config.DefaultTunnelName,
		OldInner: config.DefaultOldInner, NewInner: config.DefaultNewInner, Mark: config.DefaultMark, Table: config.DefaultTable,
	}
	if tunnelType == "vxlan" {
		cfg.Tunnel.VNI, cfg.Tunnel.Port = config.DefaultVNI, config.DefaultVXLANPort
	}

	// One service per process, protocol and address.
	found := ops.GroupListeners(of.Listeners, ops.PublicAddrs(of), sshIP, uint16(old.RemotePort))
	cfg.Services = found.Services
	opts := config.RenderOptions{
		Header: "migrate plan written by `migrate init` from what OLD listens on now.\n" +
			"Every service starts at stage \"old\": nothing moves until you change a stage.\n" +
			"Tunnel types: vxlan (UDP, works where IP protocol 47 is filtered) or gre (less overhead).",
		ServiceComments: found.ServiceComments,
		CommentedOut:    found.CommentedOut,
	}
	if oldNAT {
		opts.Header += "\nOLD is behind NAT: service addresses are the ones OLD holds, which its kernel sees;\nclients keep using its public address " + oldPublic.String() + "."
	}
	summary = append(summary, found.Summary...)
	// CommentedOut services are written but not part of the plan: take
	// them out of the config so overlaps are not checked against them.
	text := config.RenderWith(cfg, opts)
	return text, summary, nil
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
