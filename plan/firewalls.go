package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// ufwActive says whether ufw's rules are loaded on the host: its chains
// in table ip filter (ufw drives iptables; with iptables-nft they are nft
// chains like any other).
func ufwActive(f state.Facts) bool {
	for _, ch := range f.Chains {
		if ch.Family == "ip" && ch.Table == "filter" && ch.Chain == "ufw-user-input" {
			return true
		}
	}
	return false
}

// policyDrop names the base chain of table family/table at hook with
// policy drop ("" when there is none).
func policyDrop(f state.Facts, family, table, hook string) string {
	for _, ch := range f.Chains {
		if ch.Family == family && ch.Table == table && ch.Hook == hook && ch.Policy == "drop" {
			return ch.Chain
		}
	}
	return ""
}

// underlayFrom is what host receives from its peer through the underlay:
// the peer's endpoint (its 1:1 NAT, if any, rewrote the source to it) to
// the address host's tunnel binds, or, for WireGuard, to any address.
func underlayFrom(c *config.Config, facts map[string]state.Facts, host string) (from, to netip.Addr) {
	t := c.Tunnel
	from, to = t.NewEndpoint, t.OldEndpoint
	if host == New {
		from, to = t.OldEndpoint, t.NewEndpoint
	}
	if b, err := Bindings(c, facts); err == nil && b[host].Addr.IsValid() {
		to = b[host].Addr
	}
	return from, to
}

// fwCmd is a firewall command plan prints, with what shows it is in
// effect: each chain (family, table, chain) accepts every packet of q.
type fwCmd struct {
	cmd    string
	chains [][3]string
	q      fwQuery
}

// ufwCommands are the ufw commands that let migrate's traffic through
// ufw's default policies on host (deny incoming, deny routed): the
// tunnel's outer packets from the peer; on OLD the flows it forwards
// between clients and the tunnel, both ways; on NEW what arrives through
// the tunnel for the services. Each comes with the ufw user chains and
// the packets its rule accepts; an interface command writes a rule in
// each family's chain ufw has (ufw6-... only when ufw handles IPv6).
func ufwCommands(c *config.Config, facts map[string]state.Facts, host string) []fwCmd {
	t := c.Tunnel
	from, to := underlayFrom(c, facts, host)
	input := [3]string{"ip", "filter", "ufw-user-input"}
	if from.Is6() {
		input = [3]string{"ip6", "filter", "ufw6-user-input"}
	}
	var out []fwCmd
	switch t.Type {
	case "vxlan":
		out = append(out, fwCmd{fmt.Sprintf("ufw allow proto udp from %s to %s port %d", from, to, t.Port), [][3]string{input}, fwQuery{l4proto: "udp", notIif: t.Name, saddr: from, daddr: to, dport: uint16(t.Port)}})
	case "wireguard":
		out = append(out, fwCmd{fmt.Sprintf("ufw allow proto udp from %s to any port %d", from, t.ListenPort), [][3]string{input}, fwQuery{l4proto: "udp", notIif: t.Name, saddr: from, dport: uint16(t.ListenPort)}})
	default: // gre, ip6gre
		out = append(out, fwCmd{fmt.Sprintf("ufw allow proto gre from %s to %s", from, to), [][3]string{input}, fwQuery{l4proto: "gre", notIif: t.Name, saddr: from, daddr: to}})
	}
	both := func(v4, v6 string) [][3]string {
		l := [][3]string{{"ip", "filter", v4}}
		if hasChain(facts[host], "ip6", "filter", v6) {
			l = append(l, [3]string{"ip6", "filter", v6})
		}
		return l
	}
	if host == Old {
		fwd := both("ufw-user-forward", "ufw6-user-forward")
		return append(out,
			fwCmd{"ufw route allow in on " + t.Name, fwd, fwQuery{iif: t.Name}},
			fwCmd{"ufw route allow out on " + t.Name, fwd, fwQuery{oif: t.Name}})
	}
	return append(out, fwCmd{"ufw allow in on " + t.Name, both("ufw-user-input", "ufw6-user-input"), fwQuery{iif: t.Name}})
}

// hasChain says whether the host has chain family table chain.
func hasChain(f state.Facts, family, table, chain string) bool {
	for _, ch := range f.Chains {
		if ch.Family == family && ch.Table == table && ch.Chain == chain {
			return true
		}
	}
	return false
}

// missing are the commands of cmds whose rules host's live rules do not
// show: each chain of a command must exist and accept its packets. A
// command whose rule is there but comes after one that may stop some of
// its packets says so, and how to see the order (show). Each comes
// quoted in backticks.
func missing(f state.Facts, cmds []fwCmd, show string) []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range cmds {
		if seen[c.cmd] {
			// One command, more than one way it shows (zone
			// trusted's FORWARD_IN and FORWARD_OUT before 0.9).
			continue
		}
		ok, late := true, ""
		for _, ch := range c.chains {
			accepts, shadowed := chainAccepts(f, ch, c.q)
			ok = ok && accepts
			if shadowed && late == "" {
				late = ch[2]
			}
		}
		if !ok {
			seen[c.cmd] = true
		}
		switch {
		case ok:
		case late != "":
			out = append(out, fmt.Sprintf("`%s` (its rule is there, but after a rule in %s that may drop, reject or divert part of that traffic; `%s` shows the order)", c.cmd, late, show))
		default:
			out = append(out, "`"+c.cmd+"`")
		}
	}
	return out
}

// ufwWarning is plan's warning for a host where ufw is active, naming the
// base chains whose policy drops migrate's traffic and the commands that
// allow it, those whose rules ufw's user chains do not hold yet (a note
// when they hold them all). ufw's rules themselves migrate never changes.
func ufwWarning(c *config.Config, facts map[string]state.Facts, host string) string {
	f := facts[host]
	cmds := missing(f, ufwCommands(c, facts, host), "ufw status numbered")
	if len(cmds) == 0 {
		return fmt.Sprintf("host %s: ufw is active (table ip filter); its rules allow migrate's traffic (%s)", host, allowedWhat(c, host))
	}
	var drops []string
	if ch := policyDrop(f, "ip", "filter", "input"); ch != "" {
		drops = append(drops, fmt.Sprintf("chain %s (hook input) has policy drop: it drops the tunnel's packets from the peer", ch))
	}
	if ch := policyDrop(f, "ip", "filter", "forward"); ch != "" && host == Old {
		drops = append(drops, fmt.Sprintf("chain %s (hook forward) has policy drop: it drops the flows OLD forwards to and from %s", ch, c.Tunnel.Name))
	}
	if host == New {
		what := fmt.Sprintf("what arrives through %s for the services passes only if ufw allows their ports", c.Tunnel.Name)
		if dockerDNAT(f) {
			// Docker's published ports: forwarded to a container,
			// where Docker's own chains accept them before ufw's.
			what += " (not Docker's published ports: what Docker DNATs is forwarded to its containers, and ufw's input rules do not see it)"
		}
		drops = append(drops, what)
	}
	return fmt.Sprintf("WARNING host %s: ufw is active (table ip filter): %s. Allow migrate's traffic (before migrate apply): %s", host, strings.Join(drops, "; "), strings.Join(cmds, " and "))
}

// allowedWhat names the traffic a host's firewall lets through once it
// holds all the commands plan gives.
func allowedWhat(c *config.Config, host string) string {
	if host == Old {
		return fmt.Sprintf("the tunnel's packets from the peer, the flows forwarded to and from %s", c.Tunnel.Name)
	}
	return fmt.Sprintf("the tunnel's packets from the peer, what arrives through %s", c.Tunnel.Name)
}

// firewalldActive says whether firewalld's nftables rules are loaded on
// the host (table inet firewalld, as firewalld 1.x writes it).
func firewalldActive(f state.Facts) bool {
	for _, ch := range f.Chains {
		if ch.Family == "inet" && ch.Table == "firewalld" && ch.Chain == "filter_INPUT" && ch.Hook == "input" {
			return true
		}
	}
	return false
}

// firewalldSite is where a host's firewalld keeps its rules, as the
// facts hold them: its nftables backend (table inet firewalld, the
// default since firewalld 0.6 on RHEL 8 and Debian), or its iptables
// backend (FirewallBackend=iptables; CentOS 7's only one), whose chains
// are iptables' own filter tables: in nft's ruleset through
// iptables-nft, or in the legacy x_tables (CentOS 7).
type firewalldSite struct {
	view  state.Facts // the facts holding firewalld's chains and rules
	where string      // how plan and status name it
	show  string      // the command that lists its rules
	nft   bool        // its nftables backend
	// policies: firewalld 0.9 or later, which forwards between zones
	// only where a policy allows it (--new-policy). Before (CentOS 7's
	// 0.6, RHEL 8.0-8.3's 0.6-0.8 on nftables), a zone's target applies
	// to forwarding in and out of its interfaces (FORWARD_IN_ZONES,
	// FORWARD_OUT_ZONES), and there are no policies.
	policies bool
}

// firewalldOn finds host f's firewalld, on either backend.
func firewalldOn(f state.Facts) (firewalldSite, bool) {
	if firewalldActive(f) {
		return firewalldSite{view: f, where: "table inet firewalld", show: "nft list table inet firewalld", nft: true, policies: !hasChain(f, "inet", "firewalld", "filter_FORWARD_IN_ZONES")}, true
	}
	if firewalldChains(f) {
		return firewalldSite{view: f, where: "its iptables backend: table ip filter", show: "iptables-save", policies: !hasChain(f, "ip", "filter", "FORWARD_IN_ZONES")}, true
	}
	if f.Legacy == nil {
		return firewalldSite{}, false
	}
	v := state.Facts{Addrs: f.Addrs, Links: f.Links}
	for _, fam := range f.Legacy.Families {
		v.Chains = append(v.Chains, fam.Chains...)
		v.FwRules = append(v.FwRules, fam.Rules...)
	}
	if !firewalldChains(v) {
		return firewalldSite{}, false
	}
	return firewalldSite{view: v, where: "its iptables backend on iptables-legacy, not in nft's ruleset", show: "iptables-legacy-save", policies: !hasChain(v, "ip", "filter", "FORWARD_IN_ZONES")}, true
}

// name is how status names the firewalld of s: with its backend unless
// it is the nftables one.
func (s firewalldSite) name() string {
	if s.nft {
		return "firewalld"
	}
	return "firewalld (" + s.where + ")"
}

// firewalldChains says whether f's filter table ip holds the chains
// firewalld's iptables backend makes: its zone dispatch and direct
// chains, called from INPUT.
func firewalldChains(f state.Facts) bool {
	return hasChain(f, "ip", "filter", "INPUT_ZONES") && hasChain(f, "ip", "filter", "INPUT_direct")
}

// legacyFirewalld says whether a legacy filter table is firewalld's
// (its iptables backend on iptables-legacy, CentOS 7): firewalld's
// warning judges it.
func legacyFirewalld(fam state.LegacyFamily) bool {
	v := state.Facts{Chains: fam.Chains}
	return hasChain(v, fam.Family, "filter", "INPUT_ZONES") && hasChain(v, fam.Family, "filter", "INPUT_direct")
}

// filterOwned says whether a frontend owns f's nft tables ip filter and
// ip6 filter (ufw, or firewalld's iptables backend through iptables-nft):
// their chains are judged by its warning, with its commands, not as
// iptables' own (the frontend rewrites them at every reload, and a rule
// added there with iptables goes with it).
func filterOwned(f state.Facts) bool {
	return ufwActive(f) || firewalldChains(f)
}

// input is the chain where firewalld judges what arrives for the host in
// family fam (ip, ip6): the nft backend's zone dispatch chain (its input
// chain accepts established, related, DNATed and loopback flows before
// it, and rejects after it), or the iptables backend's INPUT itself,
// whose fixed rules around the zones the agent reads.
func (s firewalldSite) input(fam string) [3]string {
	if s.nft {
		return [3]string{"inet", "firewalld", "filter_INPUT_ZONES"}
	}
	return [3]string{fam, "filter", "INPUT"}
}

// forward is input's chain for what the host forwards. Before 0.9 the
// nft backend's forward chain goes to two dispatch chains in turn (the
// zone of the interface a flow comes in on, then the one it goes out
// on): the base chain itself, whose `ct status dnat accept` plan reads
// as a rule that may accept part of a query (status then says nothing).
func (s firewalldSite) forward(fam string) [3]string {
	switch {
	case s.nft && s.policies:
		return [3]string{"inet", "firewalld", "filter_FORWARD_ZONES"}
	case s.nft:
		return [3]string{"inet", "firewalld", "filter_FORWARD"}
	}
	return [3]string{fam, "filter", "FORWARD"}
}

// families are the families (ip, ip6) of the chains s judges the
// services' flows in: the services' own, one inet chain for nft.
func (s firewalldSite) families(c *config.Config) []string {
	if s.nft {
		return []string{"inet"}
	}
	var out []string
	for _, a := range ActiveAddrs(c) {
		fam := "ip"
		if a.Is6() {
			fam = "ip6"
		}
		if !slices.Contains(out, fam) && hasChain(s.view, fam, "filter", "INPUT") {
			out = append(out, fam)
		}
	}
	return out
}

// firewalldCommands are the firewall-cmd commands that let migrate's
// traffic through firewalld's default zone: a rich rule for the tunnel's
// outer packets from the peer, and the tunnel device in zone trusted
// (what arrives through it: on NEW the services' flows, on OLD the
// answers and NEW's own outbound flows), and on OLD a policy that lets
// any zone forward into zone trusted (the flows OLD sends into the
// tunnel: firewalld 0.9 and later reject forwarding between zones unless
// a policy allows it; migrate's identity DNAT does not count as `ct
// status dnat`, since the kernel sets that bit only when an address
// changes). Before 0.9, zone trusted's target accepts what is forwarded
// out through its interfaces too, and there are no policies. Each comes
// with the packets it lets through (new flows: firewalld accepts
// established and related ones before its zones), in the chains of s;
// `firewall-cmd --reload` is not among them (firewalldWarning adds it).
func firewalldCommands(c *config.Config, facts map[string]state.Facts, host string, s firewalldSite) []fwCmd {
	t := c.Tunnel
	from, to := underlayFrom(c, facts, host)
	family, fam := "ipv4", "ip"
	if from.Is6() {
		family, fam = "ipv6", "ip6"
	}
	in := [][3]string{s.input(fam)}
	var fwd, svcIn [][3]string
	for _, fam := range s.families(c) {
		fwd = append(fwd, s.forward(fam))
		svcIn = append(svcIn, s.input(fam))
	}
	var rule string
	var q fwQuery
	switch t.Type {
	case "vxlan":
		rule = fmt.Sprintf(`rule family="%s" source address="%s" destination address="%s" port port="%d" protocol="udp" accept`, family, from, to, t.Port)
		q = fwQuery{l4proto: "udp", notIif: t.Name, saddr: from, daddr: to, dport: uint16(t.Port), newFlow: true}
	case "wireguard":
		rule = fmt.Sprintf(`rule family="%s" source address="%s" port port="%d" protocol="udp" accept`, family, from, t.ListenPort)
		q = fwQuery{l4proto: "udp", notIif: t.Name, saddr: from, dport: uint16(t.ListenPort), newFlow: true}
	default:
		rule = fmt.Sprintf(`rule family="%s" source address="%s" destination address="%s" protocol value="gre" accept`, family, from, to)
		q = fwQuery{l4proto: "gre", notIif: t.Name, saddr: from, daddr: to, newFlow: true}
	}
	out := []fwCmd{{"firewall-cmd --permanent --add-rich-rule='" + rule + "'", in, q}}
	trusted := "firewall-cmd --permanent --zone=trusted --add-interface=" + t.Name
	if host != Old {
		return append(out, fwCmd{trusted, svcIn, fwQuery{iif: t.Name, newFlow: true}})
	}
	policy := strings.Join([]string{
		"firewall-cmd --permanent --new-policy=migrate-tunnel",
		"firewall-cmd --permanent --policy=migrate-tunnel --add-ingress-zone=ANY",
		"firewall-cmd --permanent --policy=migrate-tunnel --add-egress-zone=trusted",
		"firewall-cmd --permanent --policy=migrate-tunnel --set-target=ACCEPT"}, "` and `")
	if !s.policies {
		// Zone trusted's target accepts what goes out through mig0
		// too (its FORWARD_OUT chain): the same command.
		policy = trusted
	}
	// The flows of each migrated address, both ways, as they cross OLD:
	// the clients' come in where OLD holds the address (a rule for
	// another interface, such as a zone's dispatch for eth0, does not
	// hide what a later one does with them).
	var back, toward []fwCmd
	for _, a := range ActiveAddrs(c) {
		tq, bq := forwardQueries(s.view, t.Name, a)
		tq.newFlow, bq.newFlow = true, true
		for _, ch := range fwd {
			if familyCarries(ch[0], a) {
				back = append(back, fwCmd{trusted, [][3]string{ch}, bq})
				toward = append(toward, fwCmd{policy, [][3]string{ch}, tq})
			}
		}
	}
	return append(append(out, back...), toward...)
}

// firewalldWarning is plan's warning for a host where firewalld is
// active, with the commands whose effect its live rules do not show yet
// (a note when they show them all). Its input and forward chains end in
// a reject for what no zone (or policy) allows.
func firewalldWarning(c *config.Config, facts map[string]state.Facts, host string, s firewalldSite) string {
	cmds := missing(s.view, firewalldCommands(c, facts, host, s), s.show)
	if len(cmds) == 0 {
		return fmt.Sprintf("host %s: firewalld is active (%s); its rules allow migrate's traffic (%s)", host, s.where, allowedWhat(c, host))
	}
	what := "the tunnel's packets from the peer"
	if host == New {
		what += fmt.Sprintf(" and what arrives through %s for the services", c.Tunnel.Name)
	}
	inChain, fwdChain, reject := "filter_INPUT", "filter_FORWARD", "`reject with icmpx admin-prohibited`"
	if !s.nft {
		inChain, fwdChain, reject = "INPUT", "FORWARD", "`-j REJECT`"
	}
	drops := fmt.Sprintf("chain %s (hook input) ends in %s for what no zone allows: %s", inChain, reject, what)
	if host == Old {
		drops += fmt.Sprintf("; chain %s (hook forward) does the same to the flows OLD forwards to and from %s", fwdChain, c.Tunnel.Name)
	}
	if !s.nft {
		drops += "; a rule added there with iptables goes at firewalld's next reload, so let firewalld allow it"
	}
	return fmt.Sprintf("WARNING host %s: firewalld is active (%s): %s. Allow migrate's traffic (before migrate apply): %s and `firewall-cmd --reload`", host, s.where, drops, strings.Join(cmds, " and "))
}
