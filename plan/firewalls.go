package plan

import (
	"fmt"
	"net/netip"
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
	for _, c := range cmds {
		ok, late := true, ""
		for _, ch := range c.chains {
			accepts, shadowed := chainAccepts(f, ch, c.q)
			ok = ok && accepts
			if shadowed && late == "" {
				late = ch[2]
			}
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
		drops = append(drops, fmt.Sprintf("what arrives through %s for the services passes only if ufw allows their ports", c.Tunnel.Name))
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

// firewalldCommands are the firewall-cmd commands that let migrate's
// traffic through firewalld's default zone: a rich rule for the tunnel's
// outer packets from the peer, and the tunnel device in zone trusted
// (what arrives through it: on NEW the services' flows, on OLD the
// answers and NEW's own outbound flows), and on OLD a policy that lets
// any zone forward into zone trusted (the flows OLD sends into the
// tunnel: firewalld rejects forwarding between zones unless a policy
// allows it; migrate's identity DNAT does not count as `ct status dnat`,
// since the kernel sets that bit only when an address changes). Each
// comes with the packets it lets through, from firewalld's zone dispatch
// chain on (the policy's four commands as one); `firewall-cmd --reload`
// is not among them (firewalldWarning adds it).
func firewalldCommands(c *config.Config, facts map[string]state.Facts, host string) []fwCmd {
	t := c.Tunnel
	from, to := underlayFrom(c, facts, host)
	family := "ipv4"
	if from.Is6() {
		family = "ipv6"
	}
	in := [][3]string{{"inet", "firewalld", "filter_INPUT_ZONES"}}
	fwd := [][3]string{{"inet", "firewalld", "filter_FORWARD_ZONES"}}
	var rule string
	var q fwQuery
	switch t.Type {
	case "vxlan":
		rule = fmt.Sprintf(`rule family="%s" source address="%s" destination address="%s" port port="%d" protocol="udp" accept`, family, from, to, t.Port)
		q = fwQuery{l4proto: "udp", notIif: t.Name, saddr: from, daddr: to, dport: uint16(t.Port)}
	case "wireguard":
		rule = fmt.Sprintf(`rule family="%s" source address="%s" port port="%d" protocol="udp" accept`, family, from, t.ListenPort)
		q = fwQuery{l4proto: "udp", notIif: t.Name, saddr: from, dport: uint16(t.ListenPort)}
	default:
		rule = fmt.Sprintf(`rule family="%s" source address="%s" destination address="%s" protocol value="gre" accept`, family, from, to)
		q = fwQuery{l4proto: "gre", notIif: t.Name, saddr: from, daddr: to}
	}
	out := []fwCmd{{"firewall-cmd --permanent --add-rich-rule='" + rule + "'", in, q}}
	if host == Old {
		return append(out,
			fwCmd{"firewall-cmd --permanent --zone=trusted --add-interface=" + t.Name, fwd, fwQuery{iif: t.Name}},
			fwCmd{strings.Join([]string{
				"firewall-cmd --permanent --new-policy=migrate-tunnel",
				"firewall-cmd --permanent --policy=migrate-tunnel --add-ingress-zone=ANY",
				"firewall-cmd --permanent --policy=migrate-tunnel --add-egress-zone=trusted",
				"firewall-cmd --permanent --policy=migrate-tunnel --set-target=ACCEPT"}, "` and `"), fwd, fwQuery{oif: t.Name}})
	}
	return append(out, fwCmd{"firewall-cmd --permanent --zone=trusted --add-interface=" + t.Name, in, fwQuery{iif: t.Name}})
}

// firewalldWarning is plan's warning for a host where firewalld is
// active, with the commands whose effect its live rules do not show yet
// (a note when they show them all). Its base chains accept by policy but
// end in a reject rule.
func firewalldWarning(c *config.Config, facts map[string]state.Facts, host string) string {
	cmds := missing(facts[host], firewalldCommands(c, facts, host), "nft list table inet firewalld")
	if len(cmds) == 0 {
		return fmt.Sprintf("host %s: firewalld is active (table inet firewalld); its rules allow migrate's traffic (%s)", host, allowedWhat(c, host))
	}
	what := "the tunnel's packets from the peer"
	if host == New {
		what += fmt.Sprintf(" and what arrives through %s for the services", c.Tunnel.Name)
	}
	drops := fmt.Sprintf("chain filter_INPUT (hook input) ends in `reject with icmpx admin-prohibited` for what no zone allows: %s", what)
	if host == Old {
		drops += fmt.Sprintf("; chain filter_FORWARD (hook forward) does the same to the flows OLD forwards to and from %s", c.Tunnel.Name)
	}
	return fmt.Sprintf("WARNING host %s: firewalld is active (table inet firewalld): %s. Allow migrate's traffic (before migrate apply): %s and `firewall-cmd --reload`", host, drops, strings.Join(cmds, " and "))
}
