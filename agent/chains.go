package agent

import (
	"sort"

	"github.com/google/nftables"

	"github.com/opsmigrate/migrate/state"
)

// ForeignFirewall reads, over one nft connection and one listing of the
// chains, what plan's firewall warnings need: the chains of every table
// but migrate's own (ForeignChains) and the rules of ufw's and
// firewalld's chains (FwRules).
func ForeignFirewall(own string) ([]state.BaseChain, []state.FwRule, error) {
	f, err := foreignFirewall(own)
	return f.Chains, f.FwRules, err
}

// foreignFirewall is ForeignFirewall into the facts' fields, with
// RPFilter6 (rpfilter6) too.
func foreignFirewall(own string) (state.Facts, error) {
	var f state.Facts
	c, err := nftables.New()
	if err != nil {
		return f, err
	}
	defer c.CloseLasting()
	chains, err := c.ListChains()
	if err != nil {
		return f, err
	}
	rules, followed, err := fwRules(c, chains, own)
	if err != nil {
		return f, err
	}
	if f.RPFilter6, err = rpfilter6(c, chains); err != nil {
		return f, err
	}
	f.Chains, f.FwRules = foreignChains(chains, own), rules
	for i, ch := range f.Chains {
		f.Chains[i].Read = followed[ch.Family+" "+ch.Table+" "+ch.Chain]
	}
	return f, nil
}

// ForeignChains lists the chains of every nft table but migrate's own
// (named own), for plan's warnings: base chains with their hook, type,
// priority and policy, regular chains by name only (Hook "").
func ForeignChains(own string) ([]state.BaseChain, error) {
	chains, _, err := ForeignFirewall(own)
	return chains, err
}

func foreignChains(chains []*nftables.Chain, own string) []state.BaseChain {
	var out []state.BaseChain
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name == own {
			continue
		}
		if ch.Hooknum == nil {
			out = append(out, state.BaseChain{Family: familyName(ch.Table.Family), Table: ch.Table.Name, Chain: ch.Name})
			continue
		}
		bc := state.BaseChain{Family: familyName(ch.Table.Family), Table: ch.Table.Name, Chain: ch.Name, Hook: hookName(ch.Table.Family, *ch.Hooknum), Policy: "accept", Type: string(ch.Type)}
		if ch.Priority != nil {
			bc.Priority = int(*ch.Priority)
		}
		if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
			bc.Policy = "drop"
		}
		out = append(out, bc)
	}
	sort.SliceStable(out, func(i, j int) bool {
		return chainLess(out[i].Family, out[i].Table, out[i].Chain, out[j].Family, out[j].Table, out[j].Chain)
	})
	return out
}

// chainLess orders chains by family, table and name.
func chainLess(af, at, ac, bf, bt, bc string) bool {
	if af != bf {
		return af < bf
	}
	if at != bt {
		return at < bt
	}
	return ac < bc
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return "unknown"
}

func hookName(f nftables.TableFamily, h nftables.ChainHook) string {
	switch f {
	case nftables.TableFamilyNetdev:
		return "ingress"
	case nftables.TableFamilyARP:
		return "arp"
	}
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return "other"
}
