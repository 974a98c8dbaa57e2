package plan

import (
	"fmt"
	"net/netip"

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
	if c.Tunnel == nil {
		return nil
	}
	f := facts[Old]
	dev := c.Tunnel.Name
	if Direct(c) {
		dev = SegmentDevs(c, facts)[Old]
		if dev == "" {
			return nil
		}
	}
	ufw := ufwActive(f)
	// A forward block's flows (DNAT to its target) are not queried
	// here: with one on OLD no chain is said to accept all.
	forwardsOld := false
	for _, fw := range c.Forwards {
		forwardsOld = forwardsOld || string(fw.On) == Old
	}
	var out []ForwardDrop
	for _, ch := range f.Chains {
		if !ch.ForwardDrop() || ch.Table == "firewalld" || (ufw && ch.Table == "filter") {
			continue
		}
		d := ForwardDrop{Family: ch.Family, Table: ch.Table, Chain: ch.Chain, Accepts: !forwardsOld}
		name := [3]string{ch.Family, ch.Table, ch.Chain}
		used := false
		for _, a := range ActiveAddrs(c) {
			if !familyCarries(ch.Family, a) {
				continue
			}
			used = true
			// Clients' packets come in, and the answers go out, where
			// OLD holds the address (its uplink, as a rule): Docker's
			// rules for its bridges then never match them.
			up, _ := SegmentDev(f, a)
			for _, q := range []struct {
				what string
				q    fwQuery
			}{
				{"toward NEW (out on " + dev + ")", fwQuery{iif: up, oif: dev, notIif: dev, daddr: a}},
				{"back from NEW (in on " + dev + ")", fwQuery{iif: dev, oif: up, saddr: a}},
			} {
				if res, _ := evalChain(f, name, q.q, 0); res != fwAccept {
					d.Accepts = false
				}
				strict := q.q
				strict.strict = true
				if res, _ := evalChain(f, name, strict, 0); res == fwPass && d.Drops == "" {
					d.Drops = fmt.Sprintf("the flows of %s %s", a, q.what)
				}
			}
		}
		if used {
			out = append(out, d)
		}
	}
	return out
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

// ForwardDropBroken says, for status, what of OLD's firewall certainly
// drops the moved services' flows: a forward chain with policy drop
// whose rules no longer accept them (Docker's DOCKER-USER emptied by
// hand or by configuration management, an nft rule lost with a reload
// of a file that lacks it). "" when none does, or when it cannot tell.
func ForwardDropBroken(c *config.Config, facts map[string]state.Facts) string {
	for _, d := range ForwardDrops(c, facts) {
		if d.Drops == "" {
			continue
		}
		fix := "accept them there again"
		if (d.Family == "ip" || d.Family == "ip6") && d.Table == "filter" && hasChain(facts[Old], d.Family, "filter", "DOCKER-USER") {
			cmd := "iptables"
			if d.Family == "ip6" {
				cmd = "ip6tables"
			}
			fix = fmt.Sprintf("accept them in Docker's DOCKER-USER again: `%s -I DOCKER-USER -i %s -j ACCEPT` and `%s -I DOCKER-USER -o %s -j ACCEPT`", cmd, c.Tunnel.Name, cmd, c.Tunnel.Name)
			if Direct(c) {
				fix = "accept them in Docker's DOCKER-USER again, with the commands `migrate plan` prints"
			}
		}
		return fmt.Sprintf("OLD's table %s %s, chain %s (hook forward) has policy drop and none of its rules accepts %s (removed by hand, by configuration management, or by a reload of the firewall?): new clients of the moved services get no answer; %s", d.Family, d.Table, d.Chain, d.Drops, fix)
	}
	return ""
}
