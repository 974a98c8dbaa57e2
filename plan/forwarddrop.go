package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// ForwardDrop is a base chain at the forward hook with policy drop on OLD
// (Docker's iptables FORWARD, a hand-written nft table) and what its
// rules, as the facts hold them, do with the flows OLD forwards to and
// from NEW. In nftables every base chain at a hook must let a packet
// through: an accept in migrate's table or any other does not overrule
// this chain's drop.
type ForwardDrop struct {
	Family, Table, Chain string
	// How it drops: "has policy drop", "ends in a drop", "ends in a
	// reject" (dropsHow).
	How string
	// Accepts: its rules accept every flow migrate forwards, both ways.
	Accepts bool
	// Drops names the flows that certainly reach the policy (no rule
	// of the chain, or of the chains it jumps to, can accept them), ""
	// when none or when the rules do not tell (a chain the facts do not
	// hold, a rule with a match the agent does not decode).
	Drops string
}

// ForwardDrops lists OLD's base chains at the forward hook with policy
// drop in the families of the plan's addresses, with what their rules do
// with the flows OLD forwards through the tunnel device (or a direct
// tunnel's segment interface) dev: toward NEW (out on dev, to a migrated
// address, and never in on it) and back (in on dev, from a migrated
// address). ufw's and firewalld's tables are left out: their warnings
// read their own chains.
func ForwardDrops(c *config.Config, facts map[string]state.Facts) []ForwardDrop {
	dev := forwardDev(c, facts)
	if dev == "" {
		return nil
	}
	f := facts[Old]
	owned := filterOwned(f) // ufw's or firewalld's: their own warnings
	// A forward block's flows (DNAT to its target) are not queried
	// here: with one on OLD no chain is said to accept all.
	forwardsOld := false
	for _, fw := range c.Forwards {
		forwardsOld = forwardsOld || string(fw.On) == Old
	}
	var out []ForwardDrop
	for _, ch := range f.Chains {
		how := dropsHow(f, ch)
		if ch.Hook != "forward" || how == "" || ch.Table == "firewalld" || (owned && ch.Table == "filter") {
			continue
		}
		d := ForwardDrop{Family: ch.Family, Table: ch.Table, Chain: ch.Chain, How: how, Accepts: !forwardsOld}
		name := [3]string{ch.Family, ch.Table, ch.Chain}
		used := false
		for _, a := range ActiveAddrs(c) {
			if !familyCarries(ch.Family, a) {
				continue
			}
			used = true
			toward, back := forwardQueries(f, dev, a)
			for _, q := range []fwQuery{toward, back} {
				if ok, _ := chainAccepts(f, name, q); !ok {
					d.Accepts = false
				}
			}
		}
		if used {
			d.Drops = certainDrop(c, f, dev, name)
			out = append(out, d)
		}
	}
	return out
}

// forwardDev is the device OLD forwards the moved flows through.
func forwardDev(c *config.Config, facts map[string]state.Facts) string {
	return tunnelDev(c, facts, Old)
}

// tunnelDev is host's device for the moved flows: the tunnel's, or a
// direct tunnel's segment interface ("" without tunnel, or when host
// does not hold a direct tunnel's endpoint).
func tunnelDev(c *config.Config, facts map[string]state.Facts, host string) string {
	switch {
	case c.Tunnel == nil:
		return ""
	case Direct(c):
		return SegmentDevs(c, facts)[host]
	}
	return c.Tunnel.Name
}

// forwardQueries are the packets OLD forwards for migrated address a
// through dev: toward NEW (out on dev, never in on it) and back from NEW
// (in on dev). Clients' packets come in, and the answers go out, where
// OLD holds the address (its uplink, as a rule): rules for other
// interfaces (Docker's bridges) never match them.
func forwardQueries(f state.Facts, dev string, a netip.Addr) (toward, back fwQuery) {
	up, _ := SegmentDev(f, a)
	toward, back = fwQuery{iif: up, oif: dev, notIif: dev, daddr: a}, fwQuery{iif: dev, oif: up, saddr: a}
	if up == dev {
		// A direct tunnel's segment interface, where OLD holds the
		// address: the clients' packets come in on it too.
		toward.notIif = ""
	}
	return toward, back
}

// certainDrop names the flows migrate forwards that chain ch of OLD
// certainly lets reach its end (no rule of it, or of a chain it jumps
// to, may accept any of them): a new connection to a service's first
// port toward NEW, or anything of an address back from NEW. "" when
// none, or when the rules do not tell.
func certainDrop(c *config.Config, f state.Facts, dev string, ch [3]string) string {
	if s := certainDropToward(c, f, dev, ch); s != "" {
		return s
	}
	return certainDropBack(c, f, dev, ch)
}

func certainDropToward(c *config.Config, f state.Facts, dev string, ch [3]string) string {
	return certainDropNew(c, f, ch, "toward NEW (out on "+dev+")", func(a netip.Addr) fwQuery {
		toward, _ := forwardQueries(f, dev, a)
		return toward
	})
}

// certainDropNew names the first service whose new flows chain ch
// certainly drops, q giving the packets of its address (a new flow's
// first packet to the service's first port is added), way saying where
// they go; "" when none.
func certainDropNew(c *config.Config, f state.Facts, ch [3]string, way string, q func(netip.Addr) fwQuery) string {
	for _, s := range c.Services {
		if !familyCarries(ch[0], s.Address) {
			continue
		}
		sq := q(s.Address)
		sq.l4proto, sq.dport, sq.strict, sq.newFlow = string(s.Protocol), s.Ports[0].From, true, true
		if res, _ := evalChain(f, ch, sq, 0); res == fwDrop || (res == fwPass && !endAccepts(f, ch)) {
			return fmt.Sprintf("the new flows of service %s (%s/%s) %s", s.Name, netip.AddrPortFrom(s.Address, s.Ports[0].From), s.Protocol, way)
		}
	}
	return ""
}

func certainDropBack(c *config.Config, f state.Facts, dev string, ch [3]string) string {
	for _, a := range ActiveAddrs(c) {
		if !familyCarries(ch[0], a) {
			continue
		}
		_, back := forwardQueries(f, dev, a)
		back.strict = true
		if res, _ := evalChain(f, ch, back, 0); res == fwDrop || (res == fwPass && !endAccepts(f, ch)) {
			return fmt.Sprintf("the flows of %s back from NEW (in on %s)", a, dev)
		}
	}
	return ""
}

// familyCarries says whether a chain of nft family fam sees packets of
// address a.
func familyCarries(fam string, a netip.Addr) bool {
	switch fam {
	case "inet":
		return true
	case "ip":
		return a.Is4()
	case "ip6":
		return a.Is6()
	}
	return false
}

// forwardDropOf finds chain ch among drops.
func forwardDropOf(drops []ForwardDrop, ch state.BaseChain) (ForwardDrop, bool) {
	for _, d := range drops {
		if d.Family == ch.Family && d.Table == ch.Table && d.Chain == ch.Chain {
			return d, true
		}
	}
	return ForwardDrop{}, false
}

// ufwForwardBroken says, for status, when ufw on OLD (enabled, reset or
// reloaded after the apply) certainly drops the moved services' new
// flows: its FORWARD policy is drop (routed deny or disabled), and ufw's
// own chains accept only established and related flows and some ICMP
// before ufw-user-forward, so a new flow no rule of ufw-user-forward
// (ufw6-user-forward) may accept reaches the policy. Answers are
// established flows: only the way toward NEW is judged.
func ufwForwardBroken(c *config.Config, facts map[string]state.Facts) string {
	f := facts[Old]
	dev := forwardDev(c, facts)
	if dev == "" || !ufwActive(f) {
		return ""
	}
	for _, fam := range []struct{ family, chain string }{{"ip", "ufw-user-forward"}, {"ip6", "ufw6-user-forward"}} {
		if policyDrop(f, fam.family, "filter", "forward") == "" || !hasChain(f, fam.family, "filter", fam.chain) {
			continue
		}
		what := certainDropToward(c, f, dev, [3]string{fam.family, "filter", fam.chain})
		if what == "" {
			continue
		}
		fix := fmt.Sprintf("`ufw route allow in on %s` and `ufw route allow out on %s`", dev, dev)
		if Direct(c) {
			fix = "the ufw commands `migrate plan` prints"
		}
		return fmt.Sprintf("ufw is active on OLD (enabled, reset or reloaded after the apply?) and drops %s: its routed policy is deny and %s has no rule for them, so new clients of the moved services get no answer; allow them: %s", what, fam.chain, fix)
	}
	return ""
}

// firewalldForwardBroken is ufwForwardBroken for firewalld on OLD: its
// forward chain accepts established, related and DNATed flows and
// loopback's, then goes to the zones (and policies), then rejects. A
// service's new flow toward NEW that no rule of the zone and policy
// chains may accept is rejected.
func firewalldForwardBroken(c *config.Config, facts map[string]state.Facts) string {
	dev := forwardDev(c, facts)
	s, ok := firewalldOn(facts[Old])
	if dev == "" || !ok {
		return ""
	}
	for _, fam := range s.families(c) {
		what := certainDropToward(c, s.view, dev, s.forward(fam))
		if what == "" {
			continue
		}
		fix := "the firewall-cmd commands `migrate plan` prints"
		if !Direct(c) {
			var cmds []string
			for _, cmd := range firewalldCommands(c, facts, Old, s)[1:] {
				if q := "`" + cmd.cmd + "`"; !slices.Contains(cmds, q) {
					cmds = append(cmds, q)
				}
			}
			fix = strings.Join(cmds, " and ") + " and `firewall-cmd --reload`"
		}
		return fmt.Sprintf("%s is active on OLD (started or reloaded after the apply?) and rejects %s: no zone or policy of it forwards them, so new clients of the moved services get no answer; allow them: %s", s.name(), what, fix)
	}
	return ""
}

// ForwardDropBroken says, for status, what of OLD's firewall certainly
// drops the moved services' flows: a forward chain with policy drop
// whose rules no longer accept them (Docker's DOCKER-USER emptied by
// hand or by configuration management, an nft rule lost with a reload
// of a file that lacks it). "" when none does, or when it cannot tell.
func ForwardDropBroken(c *config.Config, facts map[string]state.Facts) string {
	if w := ufwForwardBroken(c, facts); w != "" {
		return w
	}
	if v, ok := legacyUfwView(facts[Old]); ok && !ufwActive(facts[Old]) {
		if w := ufwForwardBroken(c, withView(facts, Old, v)); w != "" {
			return w
		}
	}
	if w := firewalldForwardBroken(c, facts); w != "" {
		return w
	}
	for _, d := range ForwardDrops(c, facts) {
		if d.Drops == "" {
			continue
		}
		dev := forwardDev(c, facts)
		keep := keepShort(d.Family, d.Table, d.Chain)
		fix := fmt.Sprintf("accept them there again: `%s` and `%s`, %s", insertCmd(d.Family, d.Table, d.Chain, acceptRule{iif: dev}), insertCmd(d.Family, d.Table, d.Chain, acceptRule{oif: dev}), keep)
		if Direct(c) {
			fix = "accept them there again, with the rules `migrate plan` prints, " + keep
		}
		if (d.Family == "ip" || d.Family == "ip6") && d.Table == "filter" && hasChain(facts[Old], d.Family, "filter", "DOCKER-USER") {
			cmds, how := dockerUserCmds(facts[Old], d.Family, []string{"-i " + c.Tunnel.Name + " -j ACCEPT", "-o " + c.Tunnel.Name + " -j ACCEPT"})
			fix = fmt.Sprintf("accept them in Docker's DOCKER-USER again%s: %s", how, cmds)
			if Direct(c) {
				fix = "accept them in Docker's DOCKER-USER again, with the commands `migrate plan` prints"
			}
		}
		return fmt.Sprintf("OLD's table %s %s, chain %s (hook forward) %s and none of its rules accepts %s (removed by hand, by configuration management, or by a reload of the firewall?): new clients of the moved services get no answer; %s", d.Family, d.Table, d.Chain, d.How, d.Drops, fix)
	}
	return legacyForwardBroken(c, facts)
}

// TunnelFirewallHint says, for status when a ping through the tunnel
// failed, which host's ufw or firewalld lacks the rule for the tunnel's
// own packets that plan gives (enabled, reset or reloaded after the
// apply), with the command; "" when none does, or neither runs.
func TunnelFirewallHint(c *config.Config, facts map[string]state.Facts) string {
	if c.Tunnel == nil || Direct(c) {
		return ""
	}
	var out []string
	for _, host := range []string{Old, New} {
		f := facts[host]
		v, legacyUfw := legacyUfwView(f)
		fwd, fwdOK := firewalldOn(f)
		switch {
		case ufwActive(f):
			if cmds := missing(f, ufwCommands(c, facts, host)[:1], "ufw status numbered"); len(cmds) > 0 {
				out = append(out, fmt.Sprintf("ufw is active on %s and lacks %s", strings.ToUpper(host), cmds[0]))
			}
		case legacyUfw:
			if cmds := missing(v, ufwCommands(c, withView(facts, host, v), host)[:1], "ufw status numbered"); len(cmds) > 0 {
				out = append(out, fmt.Sprintf("ufw is active on %s (legacy backend) and lacks %s", strings.ToUpper(host), cmds[0]))
			}
		case fwdOK:
			if cmds := missing(fwd.view, firewalldCommands(c, facts, host, fwd)[:1], fwd.show); len(cmds) > 0 {
				out = append(out, fmt.Sprintf("%s is active on %s and lacks %s (then `firewall-cmd --reload`)", fwd.name(), strings.ToUpper(host), cmds[0]))
			}
		}
		// A chain of nft's or iptables' own that drops (a saved
		// rule set restored without the tunnel's rule).
		out = append(out, tunnelHints(c, facts, host, f, filterOwned(f), nftChains)...)
		out = append(out, legacyTunnelHints(c, facts, host)...)
	}
	return strings.Join(out, "; ")
}

// tunnelHints name the input chains of view (host's nft ruleset, or a
// legacy table of it) that drop and lack the rule for the tunnel's own
// packets, with the command in src's syntax.
func tunnelHints(c *config.Config, facts map[string]state.Facts, host string, view state.Facts, ufw bool, src chainSource) []string {
	var out []string
	from, _ := underlayFrom(c, facts, host)
	for _, ch := range view.Chains {
		if !foreignInputDrop(view, ch, ufw) || !familyCarries(ch.Family, from) {
			continue
		}
		cmds, _ := inputCmds(c, facts, host, ch, src, true)
		if missed := missing(view, cmds[:1], src.cmd(showChain(ch.Family, ch.Table, ch.Chain))); len(missed) > 0 {
			out = append(out, fmt.Sprintf("%s's %stable %s %s, chain %s (hook input) %s and lacks %s", strings.ToUpper(host), src.name, ch.Family, ch.Table, ch.Chain, dropsHow(view, ch), missed[0]))
		}
	}
	return out
}

// ufwInputBroken is NewInputBroken for ufw on NEW (f: its nft ruleset,
// or its legacy tables where ufw runs on the legacy backend).
func ufwInputBroken(c *config.Config, f state.Facts, dev string) string {
	if !ufwActive(f) {
		return ""
	}
	for _, fam := range []struct{ family, chain string }{{"ip", "ufw-user-input"}, {"ip6", "ufw6-user-input"}} {
		if policyDrop(f, fam.family, "filter", "input") == "" || !hasChain(f, fam.family, "filter", fam.chain) {
			continue
		}
		what := certainDropNew(c, f, [3]string{fam.family, "filter", fam.chain}, "in on "+dev, func(a netip.Addr) fwQuery { return fwQuery{iif: dev, daddr: a} })
		if what != "" {
			return fmt.Sprintf("ufw is active on NEW (enabled, reset or reloaded after the apply?) and drops %s: its incoming policy is deny and %s has no rule for them, so new clients of the moved services get no answer; allow them: `ufw allow in on %s`", what, fam.chain, dev)
		}
	}
	return ""
}

// dockerDNAT says whether Docker's DNAT for published ports is on the
// host: chain DOCKER of table ip nat (iptables-nft, and iptables-legacy's
// nat PREROUTING jumping to it), or Docker 29's table ip docker-bridges.
// Other nat prerouting chains (firewalld's, which DNAT only for its
// forward ports) do not count: unlike ForeignDNAT, this is about where
// status may still judge NEW's input chains.
func dockerDNAT(f state.Facts) bool {
	for _, ch := range f.Chains {
		if ch.Family == "ip" && ((ch.Table == "nat" && ch.Chain == "DOCKER") || ch.Table == "docker-bridges") {
			return true
		}
	}
	if f.Legacy != nil {
		for _, fam := range f.Legacy.Families {
			for _, r := range fam.NAT {
				if strings.HasPrefix(r, "-A PREROUTING ") && strings.HasSuffix(r, " -j DOCKER") {
					return true
				}
			}
		}
	}
	return false
}

// NewInputBroken says, for status, what of NEW's firewall certainly drops
// the services' new flows arriving through the tunnel device (a direct
// tunnel's segment interface): ufw (enabled after the apply, its default
// deny incoming, no rule in ufw-user-input that may accept a service's
// first port), firewalld (no zone that accepts them: mig0 in none), or
// a base chain of another table at the input hook with policy drop whose
// rules cannot accept them (a new flow's first packet: `ct state
// established,related accept` does not). NEW then never sees the moved
// services' new clients. "" when none does, or when it cannot tell (a
// rule it cannot read through, a jump to a chain not read, Docker's
// DNAT, which may send the flows to a container instead of NEW's input).
func NewInputBroken(c *config.Config, facts map[string]state.Facts) string {
	if c.Tunnel == nil {
		return ""
	}
	f := facts[New]
	dev := tunnelDev(c, facts, New)
	if dev == "" || dockerDNAT(f) {
		// Docker may DNAT the services' flows on NEW (its published
		// ports): then they are forwarded to a container, and no
		// input chain sees them (TestDockerUfw).
		return ""
	}
	toward := func(ch [3]string) string {
		return certainDropNew(c, f, ch, "in on "+dev, func(a netip.Addr) fwQuery { return fwQuery{iif: dev, daddr: a} })
	}
	owned := filterOwned(f)
	if w := ufwInputBroken(c, f, dev); w != "" {
		return w
	}
	if v, ok := legacyUfwView(f); ok && !ufwActive(f) {
		if w := ufwInputBroken(c, v, dev); w != "" {
			return w
		}
	}
	if s, ok := firewalldOn(f); ok && !Direct(c) {
		// Its input chain accepts established, related, DNATed and
		// loopback flows, then goes to the zones, then rejects.
		for _, fam := range s.families(c) {
			if what := certainDropNew(c, s.view, s.input(fam), "in on "+dev, func(a netip.Addr) fwQuery { return fwQuery{iif: dev, daddr: a} }); what != "" {
				return fmt.Sprintf("%s is active on NEW (started or reloaded after the apply?) and rejects %s: no zone of it accepts them, so new clients of the moved services get no answer; allow them: `firewall-cmd --permanent --zone=trusted --add-interface=%s` and `firewall-cmd --reload`", s.name(), what, dev)
			}
		}
	}
	for _, ch := range f.Chains {
		if !foreignInputDrop(f, ch, owned) {
			continue
		}
		if what := toward([3]string{ch.Family, ch.Table, ch.Chain}); what != "" {
			keep := keepShort(ch.Family, ch.Table, ch.Chain)
			return fmt.Sprintf("NEW's table %s %s, chain %s (hook input) %s and none of its rules accepts %s (added after the apply, or its rule lost with a reload of the firewall?): new clients of the moved services get no answer; accept them there, e.g. `%s`, %s", ch.Family, ch.Table, ch.Chain, dropsHow(f, ch), what, insertCmd(ch.Family, ch.Table, ch.Chain, acceptRule{iif: dev}), keep)
		}
	}
	return legacyInputBroken(c, facts, dev)
}
