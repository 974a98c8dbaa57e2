package agent

import (
	"sort"

	"github.com/google/nftables"

	"github.com/opsmigrate/migrate/state"
)

// ForeignChains lists the chains of every nft table but migrate's own
// (named own), for plan's warnings: base chains with their hook, type,
// priority and policy, regular chains by name only (Hook "").
func ForeignChains(own string) ([]state.BaseChain, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	chains, err := c.ListChains()
	if err != nil {
		return nil, err
	}
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
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Family != b.Family {
			return a.Family < b.Family
		}
		if a.Table != b.Table {
			return a.Table < b.Table
		}
		return a.Chain < b.Chain
	})
	return out, nil
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
