package plan

import (
	"fmt"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// Warnings names what migrate sees on the hosts that would break the data
// path it builds, with what to do about it. They do not stop a plan: the
// operator may have made room already (an accept rule in that chain).
func Warnings(c *config.Config, facts map[string]state.Facts) []string {
	var out []string
	forwards := map[string]bool{}
	if c.Tunnel != nil {
		forwards[Old] = true // OLD forwards between clients and the tunnel
	}
	for _, f := range c.Forwards {
		forwards[f.On] = true
	}
	dev := "the tunnel device"
	if c.Tunnel != nil {
		dev = fmt.Sprintf("%q", c.Tunnel.Name)
	}
	for _, host := range []string{Old, New} {
		regular := map[string]bool{} // "family table chain" of regular chains
		for _, ch := range facts[host].Chains {
			if ch.Hook == "" {
				regular[ch.Family+" "+ch.Table+" "+ch.Chain] = true
			}
		}
		rpWarned := false
		ufw := c.Tunnel != nil && ufwActive(facts[host])
		if ufw {
			out = append(out, ufwWarning(c, facts, host))
		}
		if c.Tunnel != nil && firewalldActive(facts[host]) {
			out = append(out, firewalldWarning(c, facts, host))
		}
		for _, ch := range facts[host].Chains {
			switch {
			case ufw && (ch.Family == "ip" || ch.Family == "ip6") && ch.Table == "filter":
				// Said above, with ufw's own commands.
			case forwards[host] && ch.Hook == "forward" && ch.Policy == "drop" && c.Tunnel != nil &&
				(ch.Family == "ip" || ch.Family == "ip6") && ch.Table == "filter" && regular[ch.Family+" filter DOCKER-USER"]:
				// Docker's iptables: it keeps DOCKER-USER, first in
				// FORWARD, for the operator's rules.
				cmd := "iptables"
				if ch.Family == "ip6" {
					cmd = "ip6tables"
				}
				out = append(out, fmt.Sprintf("WARNING host %s: table %s %s, chain %s (hook forward) has policy drop: it drops the traffic migrate forwards unless it accepts it. Docker keeps chain DOCKER-USER for your rules; allow the tunnel there (before migrate apply): `%s -I DOCKER-USER -i %s -j ACCEPT` and `%s -I DOCKER-USER -o %s -j ACCEPT`", host, ch.Family, ch.Table, ch.Chain, cmd, c.Tunnel.Name, cmd, c.Tunnel.Name))
			case forwards[host] && ch.Hook == "forward" && ch.Policy == "drop":
				out = append(out, fmt.Sprintf("WARNING host %s: table %s %s, chain %s (hook forward) has policy drop: it drops the traffic migrate forwards unless it accepts it (Docker and firewalld do this). Add rules there, e.g. `iifname %s accept` and `oifname %s accept`, or for Docker in DOCKER-USER", host, ch.Family, ch.Table, ch.Chain, dev, dev))
			case ch.Table == "firewalld" && strings.Contains(strings.ToLower(ch.Chain), "prerouting") && ch.Hook == "prerouting" && !rpWarned:
				// Once: firewalld 1.x has three prerouting base chains.
				rpWarned = true
				out = append(out, fmt.Sprintf("WARNING host %s: firewalld is active (table %s firewalld, chain %s); its IPv6 rpfilter drops packets arriving from %s whose source is routed elsewhere. Set IPv6_rpfilter=no in /etc/firewalld/firewalld.conf, or add %s to a trusted zone", host, ch.Family, ch.Chain, dev, dev))
			}
		}
	}
	return out
}
