package ops

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
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// SharedSubnet finds an address of OLD and one of NEW in one subnet (each
// inside the other's prefix, on an interface other than lo), IPv4 first;
// given endpoints (valid oe, ne) must be those addresses.
func SharedSubnet(of, nf state.Facts, oe, ne netip.Addr) (netip.Addr, netip.Addr, netip.Prefix, bool) {
	prefixes := func(f state.Facts) []netip.Prefix {
		var out []netip.Prefix
		for _, a := range f.Addrs {
			p := a.CIDR
			if !p.IsValid() || a.Dev == "lo" || p.Bits() == p.Addr().BitLen() || p.Addr().IsLinkLocalUnicast() || p.Addr().IsLoopback() {
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

// InitPlan builds the first plan text (`migrate init`) from the live
// facts of both hosts of sess, and says what it found: OLD's listeners
// grouped into services at stage "old" (GroupListeners), and a tunnel
// whose endpoints are each host's source address towards the other, or,
// for a host behind 1:1 NAT, the address it was reached at. oe and ne are
// the tunnel endpoints the operator gave (the zero Addr: find them). It
// changes nothing on the hosts.
func InitPlan[H Host](ctx context.Context, sess *Session[H], cfg *config.Config, tunnelType state.TunnelType, oe, ne netip.Addr) ([]byte, []string, error) {
	old, nw := sess.Clients[plan.Old], sess.Clients[plan.New]
	oldIP, oldPort := old.Reached()
	newIP, _ := nw.Reached()
	of, err := old.Facts(ctx, state.FactsRequest{Listeners: true, NftTable: plan.NftTableName})
	if err != nil {
		return nil, nil, fmt.Errorf("host old: %w", err)
	}
	// The tunnel's endpoints: each host's source address towards the
	// other, as the admin reached them.
	find := func(from H, fromName, toName, to, flag string) (netip.Addr, error) {
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
	natted := func(name, ip string, f state.Facts) (netip.Addr, bool) {
		a, err := netip.ParseAddr(ip)
		if err != nil || a.IsLoopback() || len(sess.Targets[name].Jumps) > 0 || f.HasAddr(a) {
			return netip.Addr{}, false
		}
		return a, true
	}
	var summary []string
	oldPublic, oldNAT := natted(plan.Old, oldIP, of)
	newPublic, newNAT := natted(plan.New, newIP, nf)
	if tunnelType == state.Direct {
		if o, n, _, ok := SharedSubnet(of, nf, oe, ne); ok {
			oe, ne = o, n
		}
	}
	if tunnelType == "" {
		// Hosts on one subnet need no tunnel: direct, between their
		// addresses there (plan checks that they share the link).
		tunnelType = state.VXLAN
		if o, n, p, ok := SharedSubnet(of, nf, oe, ne); ok && !oldNAT && !newNAT {
			tunnelType, oe, ne = state.Direct, o, n
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
	toNew, toOld := newIP, oldIP
	if ne.IsValid() {
		toNew = ne.String()
	}
	if oe.IsValid() {
		toOld = oe.String()
	}
	// What OLD's sshd sees of migrate's connection: the address it holds.
	sshIP, _ := netip.ParseAddr(oldIP)
	for _, h := range []struct {
		name, upper, peer string
		nat               bool
		cl                H
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
		if tunnelType == state.GRE || tunnelType == state.IP6GRE {
			return nil, nil, fmt.Errorf("%s is behind NAT (it holds %s, and was reached at %s): %s tunnels carry no port and most NATs do not pass them; use --tunnel vxlan (the default) or wireguard", h.upper, held, h.public, tunnelType)
		}
		if h.name == plan.Old {
			sshIP = held
		}
		summary = append(summary, fmt.Sprintf("%s is behind NAT: it holds %s and was reached at %s. The tunnel endpoint is %s (what %s sends to); plan finds the address its tunnel binds. Open UDP port %d to it.", h.upper, held, h.public, h.public, h.peer, map[bool]int{true: config.DefaultWGPort, false: config.DefaultVXLANPort}[tunnelType == state.WireGuard]))
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
	if tunnelType == state.Direct {
		cfg.Tunnel.Name, cfg.Tunnel.OldInner, cfg.Tunnel.NewInner = "", netip.Prefix{}, netip.Prefix{}
	}
	if tunnelType == state.VXLAN {
		cfg.Tunnel.VNI, cfg.Tunnel.Port = config.DefaultVNI, config.DefaultVXLANPort
	}

	// One service per process, protocol and address.
	found := GroupListeners(of.Listeners, PublicAddrs(of), sshIP, uint16(oldPort))
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

// InitOptions are what `migrate init` is told.
type InitOptions struct {
	// Old and New are USER@HOST[:PORT] or Host aliases of ~/.ssh/config.
	Old, New             string
	Identity, KnownHosts string // "": ssh-agent and ~/.ssh/id_*, ~/.ssh/known_hosts
	Sudo                 bool
	// Out is the plan file to write; it is not overwritten unless Force.
	Out   string
	Force bool
	// TunnelType "" picks vxlan, or direct for hosts on one subnet.
	TunnelType string
	// OldEndpoint and NewEndpoint are the tunnel endpoints given ("":
	// find them).
	OldEndpoint, NewEndpoint string
	Timeout                  time.Duration
}

// Init writes the first plan (InitPlan) to o.Out and returns what it
// found. Bad input is refused before any host is contacted; the text is
// checked to parse before it is written.
func Init[H Host](ctx context.Context, dial Dialer[H], o InitOptions) ([]string, error) {
	if o.Old == "" || o.New == "" {
		return nil, errors.New("init needs --old and --new, each USER@HOST[:PORT] or a Host alias of ~/.ssh/config")
	}
	if _, err := os.Stat(o.Out); err == nil && !o.Force {
		return nil, fmt.Errorf("%s exists; choose another file with -o, or overwrite it with --force", o.Out)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var endpoints [2]netip.Addr
	for i, e := range []struct{ flag, val string }{{"--old-endpoint", o.OldEndpoint}, {"--new-endpoint", o.NewEndpoint}} {
		if e.val == "" {
			continue
		}
		a, err := netip.ParseAddr(e.val)
		if err != nil || a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() {
			return nil, fmt.Errorf("%s %q: want the host's own unicast IP address for the tunnel", e.flag, e.val)
		}
		endpoints[i] = a
	}
	hosts, err := InitHosts(o.Old, o.New, o.Identity, o.KnownHosts, o.Sudo)
	if err != nil {
		return nil, err
	}
	sess := NewSession(ConfigTargets(hosts, o.Timeout), dial)
	if err := sess.Connect(ctx); err != nil {
		return nil, err
	}
	defer sess.Close()
	text, summary, err := InitPlan(ctx, sess, &config.Config{Hosts: hosts}, state.TunnelType(o.TunnelType), endpoints[0], endpoints[1])
	if err != nil {
		return nil, err
	}
	if _, err := config.Parse(text, o.Out); err != nil {
		return nil, fmt.Errorf("internal: the generated plan does not validate: %w", err)
	}
	if err := os.WriteFile(o.Out, text, 0o644); err != nil {
		return nil, err
	}
	return summary, nil
}

var initPosRE = regexp.MustCompile(`--old/--new:\d+:\d+: `)

// InitHosts resolves --old and --new exactly as a plan file's host blocks
// are resolved (ssh_config aliases, ProxyJump, defaults), by parsing the
// host blocks they stand for; the written plan then says the same.
func InitHosts(oldSSH, newSSH, identity, knownHosts string, sudo bool) (map[string]*config.Host, error) {
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
