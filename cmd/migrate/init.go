package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/remote"
	"github.com/opsmigrate/migrate/state"
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
			targets := map[string]remote.Target{}
			for name, h := range hosts {
				targets[name] = targetOf(name, h)
			}
			sess, err := connect(ctx, targets)
			if err != nil {
				return err
			}
			defer sess.close()
			typ := tunnelType
			if !cmd.Flags().Changed("tunnel") {
				typ = "" // vxlan, or direct for hosts on one subnet
			}
			text, summary, err := initPlan(ctx, sess, cfg, typ, endpoints[0], endpoints[1])
			if err != nil {
				return err
			}
			if _, err := config.Parse(text, out); err != nil {
				return fmt.Errorf("internal: the generated plan does not validate: %w", err)
			}
			if err := os.WriteFile(out, text, 0o644); err != nil {
				return err
			}
			for _, l := range summary {
				c.view().Info("%s", l)
			}
			c.view().Info("Wrote %s. Review it, then: migrate plan -f %s", out, out)
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

// publicAddrs are a host's addresses a client could reach: not loopback,
// not link-local.
func publicAddrs(f state.Facts) []netip.Addr {
	var out []netip.Addr
	for _, a := range f.Addrs {
		p, err := netip.ParsePrefix(a.CIDR)
		if err != nil || a.Dev == "lo" {
			continue
		}
		ip := p.Addr()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		out = append(out, ip)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// sharedSubnet finds an address of OLD and one of NEW in one subnet (each
// inside the other's prefix, on an interface other than lo), IPv4 first;
// given endpoints (valid oe, ne) must be those addresses.
func sharedSubnet(of, nf state.Facts, oe, ne netip.Addr) (netip.Addr, netip.Addr, netip.Prefix, bool) {
	prefixes := func(f state.Facts) []netip.Prefix {
		var out []netip.Prefix
		for _, a := range f.Addrs {
			p, err := netip.ParsePrefix(a.CIDR)
			if err != nil || a.Dev == "lo" || p.Bits() == p.Addr().BitLen() || p.Addr().IsLinkLocalUnicast() || p.Addr().IsLoopback() {
				continue
			}
			out = append(out, p)
		}
		sort.Slice(out, func(i, j int) bool {
			if out[i].Addr().Is4() != out[j].Addr().Is4() {
				return out[i].Addr().Is4()
			}
			return out[i].Addr().Less(out[j].Addr())
		})
		return out
	}
	for _, o := range prefixes(of) {
		for _, n := range prefixes(nf) {
			if !o.Contains(n.Addr()) || !n.Contains(o.Addr()) || (oe.IsValid() && oe != o.Addr()) || (ne.IsValid() && ne != n.Addr()) {
				continue
			}
			return o.Addr(), n.Addr(), o.Masked(), true
		}
	}
	return netip.Addr{}, netip.Addr{}, netip.Prefix{}, false
}

// initPlan builds the first plan text from live facts. oe and ne are the
// tunnel endpoints the operator gave (the zero Addr: find them).
func initPlan(ctx context.Context, sess *session, cfg *config.Config, tunnelType string, oe, ne netip.Addr) ([]byte, []string, error) {
	old, nw := sess.clients[plan.Old], sess.clients[plan.New]
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
	if tunnelType == "direct" {
		if o, n, _, ok := sharedSubnet(of, nf, oe, ne); ok {
			oe, ne = o, n
		}
	}
	if tunnelType == "" {
		// Hosts on one subnet need no tunnel: direct, between their
		// addresses there (plan checks that they share the link).
		tunnelType = "vxlan"
		if o, n, p, ok := sharedSubnet(of, nf, oe, ne); ok && !oldNAT && !newNAT {
			tunnelType, oe, ne = "direct", o, n
			summary = append(summary, fmt.Sprintf("OLD (%s) and NEW (%s) share the subnet %s: the plan uses a direct tunnel, no device and no encapsulation (plan checks that they are on one link). On a cloud network, turn the source/destination check off on both, or give --tunnel vxlan.", o, n, p))
		}
	}
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
	if tunnelType == "direct" {
		cfg.Tunnel.Name, cfg.Tunnel.OldInner, cfg.Tunnel.NewInner = "", netip.Prefix{}, netip.Prefix{}
	}
	if tunnelType == "vxlan" {
		cfg.Tunnel.VNI, cfg.Tunnel.Port = config.DefaultVNI, config.DefaultVXLANPort
	}

	public := publicAddrs(of)
	sshPort := uint16(old.RemotePort)
	type key struct {
		proc, proto string
		addr        netip.Addr
	}
	groups := map[key]map[uint16]bool{}
	wild := map[key]bool{}
	var skipped []string
	for _, l := range of.Listeners {
		a, err := netip.ParseAddr(l.Addr)
		if err != nil {
			continue
		}
		proc := l.Process
		if proc == "" {
			proc = "unknown"
		}
		var addrs []netip.Addr
		switch {
		case a.IsLoopback():
			skipped = append(skipped, fmt.Sprintf("%s %s:%d (%s): loopback only", l.Proto, l.Addr, l.Port, proc))
			continue
		case a.IsUnspecified():
			for _, p := range public {
				if p.Is4() == a.Is4() || (a.Is6() && !l.V6Only) {
					addrs = append(addrs, p)
				}
			}
		case a.IsLinkLocalUnicast():
			continue
		default:
			addrs = []netip.Addr{a}
		}
		for _, ad := range addrs {
			k := key{proc, l.Proto, ad}
			if groups[k] == nil {
				groups[k] = map[uint16]bool{}
			}
			groups[k][l.Port] = true
			if a.IsUnspecified() {
				wild[k] = true
			}
		}
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.proc != b.proc {
			return a.proc < b.proc
		}
		if a.proto != b.proto {
			return a.proto < b.proto
		}
		return a.addr.Less(b.addr)
	})
	opts := config.RenderOptions{
		Header: "migrate plan written by `migrate init` from what OLD listens on now.\n" +
			"Every service starts at stage \"old\": nothing moves until you change a stage.\n" +
			"Tunnel types: vxlan (UDP, works where IP protocol 47 is filtered) or gre (less overhead).",
		ServiceComments: map[string]string{},
		CommentedOut:    map[string]string{},
	}
	if oldNAT {
		opts.Header += "\nOLD is behind NAT: service addresses are the ones OLD holds, which its kernel sees;\nclients keep using its public address " + oldPublic.String() + "."
	}
	used := map[string]int{}
	name := func(proc, proto string) string {
		base := sanitizeName(proc) + "-" + proto
		used[base]++
		if used[base] == 1 {
			return base
		}
		return fmt.Sprintf("%s-%d", base, used[base])
	}
	for _, k := range keys {
		var ports []uint16
		for p := range groups[k] {
			ports = append(ports, p)
		}
		sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
		var keep, ssh []config.PortRange
		for _, p := range ports {
			if k.proto == "tcp" && k.addr == sshIP && p == sshPort {
				ssh = append(ssh, config.PortRange{From: p, To: p})
				continue
			}
			keep = append(keep, config.PortRange{From: p, To: p})
		}
		how := "bound to this address"
		if wild[k] {
			how = "a wildcard bind, expanded to this OLD address"
		}
		if len(keep) > 0 {
			n := name(k.proc, k.proto)
			cfg.Services = append(cfg.Services, &config.Service{Name: n, Address: k.addr, Protocol: k.proto, Ports: keep, Stage: "old"})
			opts.ServiceComments[n] = fmt.Sprintf("process %s (%s)", k.proc, how)
			summary = append(summary, fmt.Sprintf("service %q: %s %s ports %s (process %s)", n, k.proto, k.addr, portsText(keep), k.proc))
		}
		if len(ssh) > 0 {
			n := name(k.proc, "ssh")
			cfg.Services = append(cfg.Services, &config.Service{Name: n, Address: k.addr, Protocol: k.proto, Ports: ssh, Stage: "old"})
			opts.CommentedOut[n] = fmt.Sprintf("process %s: migrate reaches OLD over SSH on %s port %d; moving it would cut migrate's own connection, so it stays on OLD", k.proc, k.addr, sshPort)
			summary = append(summary, fmt.Sprintf("service %q: commented out: it is the SSH port migrate uses", n))
		}
	}
	for _, s := range skipped {
		summary = append(summary, "left out: "+s)
	}
	// CommentedOut services are written but not part of the plan: take
	// them out of the config so overlaps are not checked against them.
	text := config.RenderWith(cfg, opts)
	return text, summary, nil
}

func portsText(rs []config.PortRange) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.String())
	}
	return strings.Join(s, ", ")
}

func sanitizeName(s string) string {
	out := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, s)
	if out == "" || !(out[0] >= 'a' && out[0] <= 'z' || out[0] >= 'A' && out[0] <= 'Z') {
		out = "svc-" + out
	}
	return out
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
