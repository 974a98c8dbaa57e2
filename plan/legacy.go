package plan

import (
	"fmt"
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
	if c.Tunnel != nil && !Direct(c) && legacyUfw(l) && !ufwActive(facts[host]) {
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
	if !forwards {
		return out
	}
	direct := Direct(c)
	var seg string
	if direct {
		seg = SegmentDevs(c, facts)[host]
	}
	for _, fam := range l.Families {
		if !fam.ForwardDrop() || (fam.Ufw && c.Tunnel != nil && !direct) {
			continue // ufw's: said above, with ufw's commands
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
		case c.Tunnel != nil && host == Old:
			// Each command's rule as iptables-legacy-save prints it,
			// in DOCKER-USER or FORWARD: one that every forwarded
			// packet meets before anything else (fam.Accepts) lets
			// its flows through.
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
