package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// legacyWarnings are Warnings for the host's legacy x_tables firewall
// (iptables-legacy, whose rules nft does not list): a filter FORWARD
// that drops what it does not accept (Docker with the legacy backend
// sets policy DROP) on a host that forwards, with the iptables-legacy
// commands that accept migrate's flows; and legacy tables the agent could
// not read. forwards says whether host forwards (OLD with a tunnel, a
// host with forward blocks).
func legacyWarnings(c *config.Config, facts map[string]state.Facts, host string, forwards bool) []string {
	l := facts[host].Legacy
	if l == nil {
		return nil
	}
	var out []string
	if l.Error != "" {
		out = append(out, fmt.Sprintf("WARNING host %s: legacy iptables tables (%s) could not be read: %s. Their rules (iptables-legacy) are not in nft's ruleset: check with `iptables-legacy-save` that filter FORWARD accepts what migrate forwards and that no nat PREROUTING rule rewrites the services' destinations", host, strings.Join(l.Tables, ", "), l.Error))
	}
	v, readUfw := legacyUfwView(facts[host])
	switch {
	case c.Tunnel != nil && !Direct(c) && readUfw && !ufwActive(facts[host]):
		// Its rules read: only the commands they lack, as on nft.
		out = append(out, strings.Replace(ufwWarning(c, withView(facts, host, v), host), "ufw is active (table ip filter)", "ufw is active on the legacy backend (iptables-legacy, not in nft's ruleset)", 1))
	case c.Tunnel != nil && !Direct(c) && legacyUfw(l) && !ufwActive(facts[host]):
		// ufw on the legacy backend (Ubuntu 20.04's default): its
		// default policies drop the tunnel's packets and what OLD
		// forwards, and an iptables-legacy rule would go at ufw's next
		// reload. Its rules plan does not read there: all commands.
		var cmds []string
		for _, cmd := range ufwCommands(c, facts, host) {
			cmds = append(cmds, "`"+cmd.cmd+"`")
		}
		out = append(out, fmt.Sprintf("WARNING host %s: ufw is active on the legacy backend (iptables-legacy, not in nft's ruleset; plan does not read its rules there): its default policies drop migrate's traffic. Allow it (before migrate apply), unless `ufw status` shows these rules: %s", host, strings.Join(cmds, " and ")))
	}
	if c.Tunnel != nil && !Direct(c) {
		out = append(out, legacyInputWarnings(c, facts, host)...)
	}
	if !forwards {
		return out
	}
	direct := Direct(c)
	var seg string
	if direct {
		seg = SegmentDevs(c, facts)[host]
	}
	for _, fam := range l.Families {
		if !fam.ForwardDrop() || (fam.Ufw && c.Tunnel != nil && !direct) || (legacyFirewalld(fam) && c.Tunnel != nil) {
			continue // ufw's or firewalld's: said with their commands
		}
		v6 := fam.Family == "ip6"
		if !legacyFamilyUsed(c, host, v6) {
			continue
		}
		cmd, chain := "iptables-legacy", "FORWARD"
		if v6 {
			cmd = "ip6tables-legacy"
		}
		where := "a rule at the top of FORWARD"
		if fam.DockerUser {
			chain, where = "DOCKER-USER", "chain DOCKER-USER, which Docker keeps for your rules"
		}
		what := "has policy drop"
		if fam.ForwardPolicy != "DROP" {
			what = "drops or rejects what its rules do not accept"
		}
		var cmds []string
		switch {
		case c.Tunnel != nil && host == Old && direct:
			for _, a := range ActiveAddrs(c) {
				if a.Is6() == v6 {
					cmds = append(cmds, fmt.Sprintf("%s -I %s -o %s -d %s -j ACCEPT", cmd, chain, seg, a), fmt.Sprintf("%s -I %s -i %s -s %s -j ACCEPT", cmd, chain, seg, a))
				}
			}
		case c.Tunnel != nil && host == Old && len(fam.Chains) > 0:
			// The table read whole: its rules judged as nft's, the
			// commands for the ways they do not accept.
			view := state.Facts{Chains: fam.Chains, FwRules: fam.Rules, Addrs: facts[host].Addrs, Links: facts[host].Links}
			fwd := [3]string{fam.Family, "filter", "FORWARD"}
			needIn, needOut := false, false
			for _, a := range ActiveAddrs(c) {
				if a.Is6() != v6 {
					continue
				}
				toward, back := forwardQueries(view, c.Tunnel.Name, a)
				ok, _ := chainAccepts(view, fwd, toward)
				needOut = needOut || !ok
				ok, _ = chainAccepts(view, fwd, back)
				needIn = needIn || !ok
			}
			if needIn {
				cmds = append(cmds, legacyInsertCmd(fam.Family, chain, acceptRule{iif: c.Tunnel.Name}))
			}
			if needOut {
				cmds = append(cmds, legacyInsertCmd(fam.Family, chain, acceptRule{oif: c.Tunnel.Name}))
			}
			if len(cmds) == 0 {
				out = append(out, fmt.Sprintf("host %s: legacy iptables (iptables-legacy, not in nft's ruleset): table %s filter, chain FORWARD %s; its rules accept what migrate forwards (in and out on %s)", host, fam.Family, what, c.Tunnel.Name))
				continue
			}
		case c.Tunnel != nil && host == Old:
			// Facts without the table's chains (an older agent): each
			// command's rule as iptables-legacy-save prints it, in
			// DOCKER-USER or FORWARD: one that every forwarded packet
			// meets before anything else (fam.Accepts) lets its flows
			// through.
			for _, dir := range []string{"-i", "-o"} {
				rule := fmt.Sprintf(" %s %s -j ACCEPT", dir, c.Tunnel.Name)
				if !slices.Contains(fam.Accepts, "-A DOCKER-USER"+rule) && !slices.Contains(fam.Accepts, "-A FORWARD"+rule) {
					cmds = append(cmds, fmt.Sprintf("%s -I %s%s", cmd, chain, rule))
				}
			}
			if len(cmds) == 0 {
				out = append(out, fmt.Sprintf("host %s: legacy iptables (iptables-legacy, not in nft's ruleset): table %s filter, chain FORWARD %s; its first rules accept what migrate forwards (in and out on %s)", host, fam.Family, what, c.Tunnel.Name))
				continue
			}
		}
		msg := fmt.Sprintf("WARNING host %s: legacy iptables (iptables-legacy, not in nft's ruleset): table %s filter, chain FORWARD %s: it drops the traffic migrate forwards unless it accepts it", host, fam.Family, what)
		if len(cmds) > 0 {
			msg += fmt.Sprintf(". Accept migrate's flows in %s (before migrate apply): `%s`", where, strings.Join(cmds, "` and `"))
		} else {
			msg += fmt.Sprintf(". Accept the forwarded flows in %s (`%s -I %s ... -j ACCEPT`)", where, cmd, chain)
		}
		out = append(out, msg)
	}
	return out
}

// legacyFamilyUsed says whether host forwards flows of that family: the
// services' addresses on OLD with a tunnel, a forward block's on its host.
func legacyFamilyUsed(c *config.Config, host string, v6 bool) bool {
	if c.Tunnel != nil && host == Old {
		for _, a := range ActiveAddrs(c) {
			if a.Is6() == v6 {
				return true
			}
		}
	}
	for _, f := range c.Forwards {
		if string(f.On) == host && f.Address.Is6() == v6 {
			return true
		}
	}
	return false
}

// legacyUfw says whether ufw's chains are in a legacy filter table.
func legacyUfw(l *state.LegacyFirewall) bool {
	for _, f := range l.Families {
		if f.Ufw {
			return true
		}
	}
	return false
}

// legacyViews are host's legacy filter tables (iptables-legacy) that
// plan judges as it does nft's chains, each as facts of its own (its
// chains and rules, the host's addresses): those the agent read whole
// (LegacyFamily.Chains), not ufw's or firewalld's (their warnings give
// their commands).
func legacyViews(f state.Facts) []state.Facts {
	if f.Legacy == nil {
		return nil
	}
	var out []state.Facts
	for _, fam := range f.Legacy.Families {
		if len(fam.Chains) == 0 || fam.Ufw || legacyFirewalld(fam) {
			continue
		}
		out = append(out, state.Facts{Chains: fam.Chains, FwRules: fam.Rules, Addrs: f.Addrs, Links: f.Links})
	}
	return out
}

// withView is facts with host's replaced by view.
func withView(facts map[string]state.Facts, host string, view state.Facts) map[string]state.Facts {
	out := map[string]state.Facts{}
	for h, f := range facts {
		out[h] = f
	}
	out[host] = view
	return out
}

// legacyInsertCmd is the iptables-legacy command that inserts r at the
// top of chain of the legacy filter table of family.
func legacyInsertCmd(family, chain string, r acceptRule) string {
	return iptablesInsert(iptablesTool(family, "filter", "INPUT")+"-legacy", chain, r)
}

// legacyCmd turns an iptables (ip6tables) command into iptables-legacy's.
func legacyCmd(cmd string) string {
	tool, rest, _ := strings.Cut(cmd, " ")
	return tool + "-legacy " + rest
}

const legacyName = "legacy iptables (iptables-legacy, not in nft's ruleset): "

// legacyForwardBroken is ForwardDropBroken for OLD's legacy filter
// FORWARD: its rules (and DOCKER-USER's) certainly let a moved
// service's new flows reach a drop.
func legacyForwardBroken(c *config.Config, facts map[string]state.Facts) string {
	dev := forwardDev(c, facts)
	if dev == "" {
		return ""
	}
	for _, view := range legacyViews(facts[Old]) {
		for _, d := range ForwardDrops(c, withView(facts, Old, view)) {
			if d.Drops == "" {
				continue
			}
			chain := d.Chain
			if hasChain(view, d.Family, "filter", "DOCKER-USER") {
				chain = "DOCKER-USER"
			}
			fix := fmt.Sprintf("accept them in %s again: `%s` and `%s`, and save them with your other iptables rules", chain, legacyInsertCmd(d.Family, chain, acceptRule{iif: dev}), legacyInsertCmd(d.Family, chain, acceptRule{oif: dev}))
			if Direct(c) {
				fix = fmt.Sprintf("accept them in %s again, with the commands `migrate plan` prints", chain)
			}
			return fmt.Sprintf("OLD's %stable %s filter, chain %s (hook forward) %s and none of its rules accepts %s (removed by hand, by configuration management, or by a restore of saved rules?): new clients of the moved services get no answer; %s", legacyName, d.Family, d.Chain, d.How, d.Drops, fix)
		}
	}
	return ""
}

// legacyInputBroken is NewInputBroken for NEW's legacy filter INPUT.
func legacyInputBroken(c *config.Config, facts map[string]state.Facts, dev string) string {
	for _, view := range legacyViews(facts[New]) {
		for _, ch := range view.Chains {
			if !foreignInputDrop(view, ch, false) {
				continue
			}
			what := certainDropNew(c, view, [3]string{ch.Family, ch.Table, ch.Chain}, "in on "+dev, func(a netip.Addr) fwQuery { return fwQuery{iif: dev, daddr: a} })
			if what != "" {
				return fmt.Sprintf("NEW's %stable %s filter, chain %s (hook input) %s and none of its rules accepts %s (added after the apply, or its rule lost with a restore of saved rules?): new clients of the moved services get no answer; accept them there, e.g. `%s`, and save them with your other iptables rules", legacyName, ch.Family, ch.Chain, dropsHow(view, ch), what, legacyInsertCmd(ch.Family, ch.Chain, acceptRule{iif: dev}))
			}
		}
	}
	return ""
}

// legacyChains are the legacy x_tables tables' chains (iptables-legacy).
var legacyChains = chainSource{name: legacyName, cmd: legacyCmd}

// legacyInputWarnings are inputDropWarnings for host's legacy filter
// INPUT (a tunnel, not direct).
func legacyInputWarnings(c *config.Config, facts map[string]state.Facts, host string) []string {
	var out []string
	for _, view := range legacyViews(facts[host]) {
		out = append(out, inputDropWarningsIn(c, facts, host, view, false, legacyChains)...)
	}
	return out
}

// legacyTunnelHints are TunnelFirewallHint's for host's legacy filter
// INPUT.
func legacyTunnelHints(c *config.Config, facts map[string]state.Facts, host string) []string {
	var out []string
	for _, view := range legacyViews(facts[host]) {
		out = append(out, tunnelHints(c, facts, host, view, false, legacyChains)...)
	}
	return out
}

// legacyUfwView is host's legacy filter tables as facts of their own
// where ufw runs on the legacy backend (Ubuntu 20.04) and the agent read
// them: both families' chains and rules together, as ufw's checks read
// them (ufw-user-input, ufw6-user-input).
func legacyUfwView(f state.Facts) (state.Facts, bool) {
	if f.Legacy == nil || !legacyUfw(f.Legacy) {
		return state.Facts{}, false
	}
	v := state.Facts{Addrs: f.Addrs, Links: f.Links}
	for _, fam := range f.Legacy.Families {
		if fam.Ufw && len(fam.Chains) == 0 {
			return state.Facts{}, false
		}
		v.Chains = append(v.Chains, fam.Chains...)
		v.FwRules = append(v.FwRules, fam.Rules...)
	}
	return v, ufwActive(v)
}
