package plan

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// Warnings names what migrate sees on the hosts that would break the data
// path it builds, with what to do about it. They do not stop a plan: the
// operator may have made room already (an accept rule in that chain).
func Warnings(c *config.Config, facts map[string]state.Facts) []string {
	return append(hostWarnings(c, facts, Old), hostWarnings(c, facts, New)...)
}

// NewFirewall is what Warnings says of NEW's firewall (its WARNING lines,
// without the prefix), joined: what apply's probe of a service through
// the tunnel most likely failed on.
func NewFirewall(c *config.Config, facts map[string]state.Facts) string {
	var out []string
	for _, w := range hostWarnings(c, facts, New) {
		if w, ok := strings.CutPrefix(w, "WARNING host new: "); ok {
			out = append(out, w)
		}
	}
	return strings.Join(out, "; ")
}

// hostWarnings are Warnings (and notes) for host's firewalls.
func hostWarnings(c *config.Config, facts map[string]state.Facts, host string) []string {
	var out []string
	// OLD forwards between clients and the tunnel; a host with forward
	// blocks, their flows.
	forwards := c.Tunnel != nil && host == Old
	for _, f := range c.Forwards {
		forwards = forwards || string(f.On) == host
	}
	dev := "the tunnel device"
	if c.Tunnel != nil {
		dev = fmt.Sprintf("%q", c.Tunnel.Name)
	}
	regular := map[string]bool{} // "family table chain" of regular chains
	for _, ch := range facts[host].Chains {
		if ch.Hook == "" {
			regular[ch.Family+" "+ch.Table+" "+ch.Chain] = true
		}
	}
	ufw := c.Tunnel != nil && ufwActive(facts[host])
	// ufw, or firewalld's iptables backend, owns the tables ip filter
	// and ip6 filter: its own warning judges them.
	owned := c.Tunnel != nil && filterOwned(facts[host])
	out = append(out, legacyWarnings(c, facts, host, forwards)...)
	if Direct(c) {
		// No tunnel device to trust: the segment's interface
		// carries everyone's traffic, so the advice names the
		// migrated addresses on it.
		out = append(out, directFirewallWarnings(c, facts, host, forwards)...)
		return out
	}
	if ufw {
		out = append(out, ufwWarning(c, facts, host))
	}
	if s, ok := firewalldOn(facts[host]); c.Tunnel != nil && ok {
		out = append(out, firewalldWarning(c, facts, host, s))
		// Its reverse-path filter is IPv6's only (nft: `meta nfproto
		// ipv6 fib saddr . mark . iif oif missing drop` in
		// filter_PREROUTING; iptables: `-m rpfilter --invert -j DROP`
		// in ip6 raw (0.6) or mangle (1.x) PREROUTING), with no
		// exception for a zone.
		switch rp := iptablesRPFilter(facts[host]); {
		case !tunnelsIPv6(c):
		case s.nft && firewalldRpfilter(facts[host]):
			out = append(out, fmt.Sprintf("WARNING host %s: firewalld is active (table inet firewalld, chain filter_PREROUTING); its IPv6 rpfilter drops packets arriving from %s whose source is routed elsewhere. Set IPv6_rpfilter=no in /etc/firewalld/firewalld.conf", host, dev))
		case !s.nft && rp != "":
			out = append(out, fmt.Sprintf("WARNING host %s: firewalld is active (%s); its IPv6 rpfilter (%s: `-m rpfilter --invert -j DROP`) drops packets arriving from %s whose source is routed elsewhere. Set IPv6_rpfilter=no in /etc/firewalld/firewalld.conf", host, s.where, rp, dev))
		}
	}
	if c.Tunnel != nil {
		out = append(out, inputDropWarnings(c, facts, host, owned)...)
	}
	var drops []ForwardDrop
	if host == Old {
		drops = ForwardDrops(c, facts)
	}
	for _, ch := range facts[host].Chains {
		d, read := forwardDropOf(drops, ch)
		switch {
		case owned && (ch.Family == "ip" || ch.Family == "ip6") && ch.Table == "filter":
			// Said above, with ufw's or firewalld's own commands.
		case read && d.Accepts:
			out = append(out, fmt.Sprintf("host %s: table %s %s, chain %s (hook forward) %s; its rules accept what migrate forwards (in and out on %s)", host, ch.Family, ch.Table, ch.Chain, d.How, c.Tunnel.Name))
		case forwards && ch.Hook == "forward" && ch.Policy == "drop" && c.Tunnel != nil &&
			(ch.Family == "ip" || ch.Family == "ip6") && ch.Table == "filter" && regular[ch.Family+" filter DOCKER-USER"]:
			// Docker's iptables: it keeps DOCKER-USER, first in
			// FORWARD, for the operator's rules.
			cmds, how := dockerUserCmds(facts[host], ch.Family, []string{"-i " + c.Tunnel.Name + " -j ACCEPT", "-o " + c.Tunnel.Name + " -j ACCEPT"})
			out = append(out, fmt.Sprintf("WARNING host %s: table %s %s, chain %s (hook forward) has policy drop: it drops the traffic migrate forwards unless it accepts it. Docker keeps chain DOCKER-USER for your rules; allow the tunnel there%s (before migrate apply): %s", host, ch.Family, ch.Table, ch.Chain, how, cmds))
		case forwards && ch.Hook == "forward" && dropsHow(facts[host], ch) != "" && ch.Table != "firewalld":
			// An accept in another table (migrate's included) does
			// not overrule this chain's drop: the rules go in it,
			// and in the file that loads it, or its next reload
			// (systemctl reload nftables) drops them.
			tun := "the tunnel device"
			if c.Tunnel != nil {
				tun = c.Tunnel.Name
			}
			in := insertCmd(ch.Family, ch.Table, ch.Chain, acceptRule{iif: tun})
			both := insertCmd(ch.Family, ch.Table, ch.Chain, acceptRule{oif: tun})
			if iptablesTool(ch.Family, ch.Table, ch.Chain) != "" {
				// iptables-nft's own chain (`iptables -P FORWARD
				// DROP`): its rules are kept with iptables-save.
				out = append(out, fmt.Sprintf("WARNING host %s: table %s %s, chain %s (hook forward) %s (iptables): it drops the traffic migrate forwards unless its own rules accept it. Add rules there (before migrate apply): `%s` and `%s`, and %s", host, ch.Family, ch.Table, ch.Chain, dropsHow(facts[host], ch), in, both, keepRules(ch.Family, ch.Table, ch.Chain)))
				continue
			}
			out = append(out, fmt.Sprintf("WARNING host %s: table %s %s, chain %s (hook forward) %s: it drops the traffic migrate forwards unless its own rules accept it (Docker and firewalld do this). Add rules there, e.g. `%s` and `%s`, and to the file that loads the table (/etc/nftables.conf, for nftables.service), or its next reload drops them again; for Docker's iptables, in DOCKER-USER", host, ch.Family, ch.Table, ch.Chain, dropsHow(facts[host], ch), in, both))
		}
	}
	return out
}

// directFirewallWarnings are Warnings for a direct tunnel's host: the
// firewalls it finds there, each with what lets migrate's flows through
// on the segment's interface SEG, for the migrated addresses only: on OLD
// the flows it forwards to NEW (destination ADDR, out on SEG) and NEW's
// packets (source ADDR, in on SEG), on NEW what arrives for the services
// (destination ADDR, in on SEG).
func directFirewallWarnings(c *config.Config, facts map[string]state.Facts, host string, forwards bool) []string {
	f := facts[host]
	seg := SegmentDevs(c, facts)[host]
	addrs := ActiveAddrs(c)
	var out []string
	cmds := func(each func(a string, v6 bool) []string) string {
		var l []string
		for _, a := range addrs {
			l = append(l, each(a.String(), a.Is6())...)
		}
		return "`" + strings.Join(l, "` and `") + "`"
	}
	family := func(v6 bool) string {
		if v6 {
			return "ipv6"
		}
		return "ipv4"
	}
	if ufwActive(f) {
		allow := cmds(func(a string, _ bool) []string {
			if host == Old {
				return []string{"ufw route allow out on " + seg + " to " + a, "ufw route allow in on " + seg + " from " + a}
			}
			return []string{"ufw allow in on " + seg + " to " + a}
		})
		out = append(out, fmt.Sprintf("WARNING host %s: ufw is active (table ip filter): its default policies drop migrate's flows on %s (direct tunnel). Allow them (before migrate apply): %s", host, seg, allow))
	}
	if fwd, ok := firewalldOn(f); ok {
		var allow string
		switch {
		case host == Old && !fwd.policies:
			// Before 0.9 rich rules are for what arrives for the
			// host only, and OLD's flows go back out through the
			// zone they came in by: firewalld's direct rules.
			allow = cmds(func(a string, v6 bool) []string {
				return []string{
					fmt.Sprintf("firewall-cmd --permanent --direct --add-rule %s filter FORWARD 0 -o %s -d %s -j ACCEPT", family(v6), seg, a),
					fmt.Sprintf("firewall-cmd --permanent --direct --add-rule %s filter FORWARD 0 -i %s -s %s -j ACCEPT", family(v6), seg, a),
				}
			})
		case host == Old:
			allow = "`firewall-cmd --permanent --new-policy=migrate-direct` and `firewall-cmd --permanent --policy=migrate-direct --add-ingress-zone=ANY` and `firewall-cmd --permanent --policy=migrate-direct --add-egress-zone=ANY` and " +
				cmds(func(a string, v6 bool) []string {
					return []string{
						fmt.Sprintf(`firewall-cmd --permanent --policy=migrate-direct --add-rich-rule='rule family="%s" destination address="%s" accept'`, family(v6), a),
						fmt.Sprintf(`firewall-cmd --permanent --policy=migrate-direct --add-rich-rule='rule family="%s" source address="%s" accept'`, family(v6), a),
					}
				})
		default:
			allow = cmds(func(a string, v6 bool) []string {
				return []string{fmt.Sprintf(`firewall-cmd --permanent --add-rich-rule='rule family="%s" destination address="%s" accept'`, family(v6), a)}
			})
		}
		out = append(out, fmt.Sprintf("WARNING host %s: firewalld is active (%s): it rejects migrate's flows on %s (direct tunnel) unless a zone or policy allows them; and its IPv6 rpfilter drops NEW's packets from a migrated address (set IPv6_rpfilter=no in /etc/firewalld/firewalld.conf). Allow them (before migrate apply): %s and `firewall-cmd --reload`", host, fwd.where, seg, allow))
	}
	if host == New && seg != "" {
		out = append(out, directInputWarnings(c, f, seg)...)
	}
	regular := map[string]bool{}
	for _, ch := range f.Chains {
		if ch.Hook == "" {
			regular[ch.Family+" "+ch.Table+" "+ch.Chain] = true
		}
	}
	var drops []ForwardDrop
	if host == Old {
		drops = ForwardDrops(c, facts)
	}
	for _, ch := range f.Chains {
		how := dropsHow(f, ch)
		if !forwards || ch.Hook != "forward" || how == "" || ch.Table == "firewalld" || (ch.Table == "filter" && filterOwned(f)) {
			continue
		}
		if d, read := forwardDropOf(drops, ch); read && d.Accepts {
			out = append(out, fmt.Sprintf("host %s: table %s %s, chain %s (hook forward) %s; its rules accept migrate's flows on %s (to and from the migrated addresses)", host, ch.Family, ch.Table, ch.Chain, how, seg))
			continue
		}
		if (ch.Family == "ip" || ch.Family == "ip6") && ch.Table == "filter" && regular[ch.Family+" filter DOCKER-USER"] {
			// Docker's iptables chains: nft syntax cannot go there, and
			// DOCKER-USER, first in FORWARD, is kept for the operator.
			var rules []string
			for _, a := range addrs {
				if a.Is6() == (ch.Family == "ip6") {
					rules = append(rules, fmt.Sprintf("-o %s -d %s -j ACCEPT", seg, a), fmt.Sprintf("-i %s -s %s -j ACCEPT", seg, a))
				}
			}
			allow, how := dockerUserCmds(f, ch.Family, rules)
			out = append(out, fmt.Sprintf("WARNING host %s: table %s %s, chain %s (hook forward) has policy drop: it drops the traffic migrate forwards unless it accepts it. Docker keeps chain DOCKER-USER for your rules; accept migrate's flows on %s there%s (before migrate apply): %s", host, ch.Family, ch.Table, ch.Chain, seg, how, allow))
			continue
		}
		out = append(out, fmt.Sprintf("WARNING host %s: table %s %s, chain %s (hook forward) %s: it drops the traffic migrate forwards unless it accepts it (Docker does this: use its chain DOCKER-USER). Accept migrate's flows on %s there (before migrate apply): %s, and %s", host, ch.Family, ch.Table, ch.Chain, how, seg,
			cmds(func(a string, v6 bool) []string {
				addr := netip.MustParseAddr(a)
				if !familyCarries(ch.Family, addr) {
					return nil
				}
				return []string{insertCmd(ch.Family, ch.Table, ch.Chain, acceptRule{oif: seg, daddr: addr}), insertCmd(ch.Family, ch.Table, ch.Chain, acceptRule{iif: seg, saddr: addr})}
			}), keepRules(ch.Family, ch.Table, ch.Chain)))
	}
	return out
}

// inputDropWarnings are plan's warnings for host's base chains at the
// input hook with policy drop in tables other than ufw's and firewalld's
// (a hand-written nftables.conf): they drop the tunnel's packets from
// the peer and, on NEW, what arrives through the tunnel for the services,
// unless their own rules accept them. Each gives the `nft insert rule`
// commands its live rules do not show yet (a note when they show all),
// and says they belong in the file that loads the table too.
func inputDropWarnings(c *config.Config, facts map[string]state.Facts, host string, ufw bool) []string {
	return inputDropWarningsIn(c, facts, host, facts[host], ufw, nftChains)
}

// inputDropWarningsIn are inputDropWarnings for the chains of view (the
// host's nft ruleset, or a legacy table of it), named and with commands
// as src says.
func inputDropWarningsIn(c *config.Config, facts map[string]state.Facts, host string, view state.Facts, ufw bool, src chainSource) []string {
	from, _ := underlayFrom(c, facts, host)
	var out []string
	for _, ch := range view.Chains {
		// A chain of the underlay's family sees the tunnel's packets;
		// on NEW one of a service's family (IPv6 services over an IPv4
		// underlay) what arrives through the tunnel for them.
		tunnel := familyCarries(ch.Family, from)
		if !foreignInputDrop(view, ch, ufw) || (!tunnel && (host != New || !carriesService(c, ch.Family))) {
			continue
		}
		cmds, what := inputCmds(c, facts, host, ch, src, tunnel)
		missed := missing(view, cmds, src.cmd(showChain(ch.Family, ch.Table, ch.Chain)))
		if len(missed) == 0 {
			out = append(out, fmt.Sprintf("host %s: %stable %s %s, chain %s (hook input) %s; its rules accept %s", host, src.name, ch.Family, ch.Table, ch.Chain, dropsHow(view, ch), what))
			continue
		}
		out = append(out, fmt.Sprintf("WARNING host %s: %stable %s %s, chain %s (hook input) %s: it drops %s unless its own rules accept them. Accept them (before migrate apply): %s, and %s", host, src.name, ch.Family, ch.Table, ch.Chain, dropsHow(view, ch), what, strings.Join(missed, " and "), keepRules(ch.Family, ch.Table, ch.Chain)))
	}
	return out
}

// inputCmds are the commands that accept, in host's input chain ch, the
// tunnel's packets from the peer and, on NEW, what arrives through the
// tunnel device, in src's syntax, and what they stand for.
func inputCmds(c *config.Config, facts map[string]state.Facts, host string, ch state.BaseChain, src chainSource, tunnel bool) ([]fwCmd, string) {
	var cmds []fwCmd
	var what []string
	if tunnel {
		cmd := tunnelInputCmd(c, facts, host, ch)
		cmd.cmd = src.cmd(cmd.cmd)
		cmds, what = append(cmds, cmd), append(what, "the tunnel's packets from the peer")
	}
	if host == New {
		cmds = append(cmds, fwCmd{src.cmd(insertCmd(ch.Family, ch.Table, ch.Chain, acceptRule{iif: c.Tunnel.Name})), [][3]string{{ch.Family, ch.Table, ch.Chain}}, fwQuery{iif: c.Tunnel.Name}})
		what = append(what, fmt.Sprintf("what arrives through %s for the services", c.Tunnel.Name))
	}
	return cmds, strings.Join(what, " and ")
}

// carriesService says whether a chain of nft family fam sees the packets
// of one of the plan's migrated addresses.
func carriesService(c *config.Config, fam string) bool {
	for _, a := range ActiveAddrs(c) {
		if familyCarries(fam, a) {
			return true
		}
	}
	return false
}

// chainSource is where the chains plan judges are: nft's ruleset, or a
// legacy x_tables table (iptables-legacy), which the messages name first
// and whose commands are iptables-legacy's.
type chainSource struct {
	name string              // "" for nft's ruleset
	cmd  func(string) string // turns an nft or iptables command into its own
}

var nftChains = chainSource{cmd: func(s string) string { return s }}

// foreignInputDrop says whether ch is a base chain at the input hook that
// drops what its rules do not accept (dropsHow) and whose advice is nft's
// or iptables' own: not firewalld's table, nor the filter tables a
// frontend owns (owned: ufw, or firewalld's iptables backend, whose
// warnings say it).
func foreignInputDrop(f state.Facts, ch state.BaseChain, owned bool) bool {
	return ch.Hook == "input" && dropsHow(f, ch) != "" && ch.Table != "firewalld" && !(owned && ch.Table == "filter")
}

// tunnelInputCmd is the command that accepts, in host's input chain ch,
// the tunnel's own packets from the peer, with the query that says
// whether its rules hold it already.
func tunnelInputCmd(c *config.Config, facts map[string]state.Facts, host string, ch state.BaseChain) fwCmd {
	t := c.Tunnel
	from, to := underlayFrom(c, facts, host)
	name := [][3]string{{ch.Family, ch.Table, ch.Chain}}
	cmd := func(r acceptRule) string { return insertCmd(ch.Family, ch.Table, ch.Chain, r) }
	switch t.Type {
	case "vxlan":
		return fwCmd{cmd(acceptRule{saddr: from, daddr: to, proto: "udp", dport: t.Port}), name, fwQuery{l4proto: "udp", notIif: t.Name, saddr: from, daddr: to, dport: uint16(t.Port)}}
	case "wireguard":
		return fwCmd{cmd(acceptRule{saddr: from, proto: "udp", dport: t.ListenPort}), name, fwQuery{l4proto: "udp", notIif: t.Name, saddr: from, dport: uint16(t.ListenPort)}}
	default: // gre, ip6gre
		return fwCmd{cmd(acceptRule{saddr: from, daddr: to, proto: "gre"}), name, fwQuery{l4proto: "gre", notIif: t.Name, saddr: from, daddr: to}}
	}
}

// directInputWarnings are inputDropWarnings for NEW of a direct tunnel:
// its base chains at the input hook with policy drop (not ufw's or
// firewalld's, whose warnings say it) drop what arrives on the segment's
// interface seg for the migrated addresses unless their own rules accept
// it. Each gives the `nft insert rule` commands its rules do not show
// yet, one per address of the chain's families (a note when they show
// them all).
func directInputWarnings(c *config.Config, f state.Facts, seg string) []string {
	owned := filterOwned(f)
	var out []string
	for _, ch := range f.Chains {
		if !foreignInputDrop(f, ch, owned) {
			continue
		}
		name := [3]string{ch.Family, ch.Table, ch.Chain}
		var cmds []fwCmd
		for _, a := range ActiveAddrs(c) {
			if !familyCarries(ch.Family, a) {
				continue
			}
			cmds = append(cmds, fwCmd{insertCmd(ch.Family, ch.Table, ch.Chain, acceptRule{iif: seg, daddr: a}), [][3]string{name}, fwQuery{iif: seg, daddr: a}})
		}
		if len(cmds) == 0 {
			continue
		}
		missed := missing(f, cmds, showChain(ch.Family, ch.Table, ch.Chain))
		if len(missed) == 0 {
			out = append(out, fmt.Sprintf("host new: table %s %s, chain %s (hook input) %s; its rules accept what arrives on %s for the migrated addresses", ch.Family, ch.Table, ch.Chain, dropsHow(f, ch), seg))
			continue
		}
		out = append(out, fmt.Sprintf("WARNING host new: table %s %s, chain %s (hook input) %s: it drops what arrives on %s for the migrated addresses (direct tunnel) unless its own rules accept it. Accept it (before migrate apply): %s, and %s", ch.Family, ch.Table, ch.Chain, dropsHow(f, ch), seg, strings.Join(missed, " and "), keepRules(ch.Family, ch.Table, ch.Chain)))
	}
	return out
}

// dockerUserCmds are the commands that add rules (each as iptables
// writes it after the chain, "-i mig0 -j ACCEPT") at the top of Docker's
// DOCKER-USER in family's table filter, quoted and joined, and how they
// are said (" with firewalld's direct rules: ..." or ""): iptables
// inserts, or, where firewalld runs too, firewalld's direct rules, the
// chain with them. firewalld flushes iptables' tables when it starts and
// at every reload; Docker then puts its own chains back, not what was
// inserted in DOCKER-USER, and firewalld puts back only its own direct
// rules (TestDockerFirewalld).
func dockerUserCmds(f state.Facts, family string, rules []string) (cmds, how string) {
	tool, ipv := "iptables", "ipv4"
	if family == "ip6" {
		tool, ipv = "ip6tables", "ipv6"
	}
	var out []string
	if !firewalldActive(f) {
		for _, r := range rules {
			out = append(out, tool+" -I DOCKER-USER "+r)
		}
		return "`" + strings.Join(out, "` and `") + "`", ""
	}
	out = append(out, "firewall-cmd --permanent --direct --add-chain "+ipv+" filter DOCKER-USER")
	for _, r := range rules {
		out = append(out, "firewall-cmd --permanent --direct --add-rule "+ipv+" filter DOCKER-USER 0 "+r)
	}
	out = append(out, "firewall-cmd --reload")
	return "`" + strings.Join(out, "` and `") + "`", " with firewalld's direct rules (firewalld, active here, flushes iptables' tables when it starts and at every reload, and puts back only its own direct rules: a rule inserted with iptables would go)"
}

// tunnelsIPv6 says whether the plan moves IPv6 services through a tunnel.
func tunnelsIPv6(c *config.Config) bool {
	if c.Tunnel == nil {
		return false
	}
	for _, a := range ActiveAddrs(c) {
		if a.Is6() {
			return true
		}
	}
	return false
}

// iptablesRPFilter names where f's iptables drop IPv6 packets that
// fail the reverse-path match (firewalld's IPv6_rpfilter on its
// iptables backend), "" where none does: "table ip6 mangle, chain
// PREROUTING", with iptables-legacy named for a legacy table.
func iptablesRPFilter(f state.Facts) string {
	if len(f.RPFilter6) > 0 {
		return "table ip6 " + f.RPFilter6[0] + ", chain PREROUTING"
	}
	if f.Legacy != nil {
		for _, fam := range f.Legacy.Families {
			if fam.Family == "ip6" && fam.RPFilter != "" {
				return "table ip6 " + fam.RPFilter + ", chain PREROUTING, iptables-legacy"
			}
		}
	}
	return ""
}

// firewalldRpfilter says whether firewalld's nftables backend runs its
// IPv6 reverse-path filter (IPv6_rpfilter=yes, the default): chain
// filter_PREROUTING holds a drop (`meta nfproto ipv6 fib saddr . mark .
// iif oif missing drop`); with IPv6_rpfilter=no firewalld leaves it
// empty (the agent reads that chain's rules: state.FwRuleChain).
func firewalldRpfilter(f state.Facts) bool {
	ch := [3]string{"inet", "firewalld", "filter_PREROUTING"}
	for _, r := range f.FwRules {
		if r.Family == ch[0] && r.Table == ch[1] && r.Chain == ch[2] && r.Verdict == "drop" {
			return true
		}
	}
	return false
}
