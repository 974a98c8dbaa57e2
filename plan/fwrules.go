package plan

import (
	"net/netip"

	"github.com/opsmigrate/migrate/state"
)

// fwQuery is a set of packets migrate needs a firewall chain to accept:
// each field that is set, every packet has; one not set, any value.
type fwQuery struct {
	iif, oif, l4proto string
	saddr, daddr      netip.Addr
	dport             uint16
}

// chainAccepts says whether the rules of chain ch (family, table, chain)
// accept every packet of q by themselves: one rule accepts all of q (it
// is not Opaque, its verdict is accept and each match it has holds for
// all of q), and no rule before it may end some of q's packets' way
// through the chain otherwise (drop, reject, return, jump or goto, or an
// Opaque rule that does not accept) unless one of its known matches
// excludes all of q (another port, protocol, address or device). A rule
// that fails Validate is taken for unknown.
// shadowed says, when chainAccepts is false, that such an accept rule is
// there, after a rule that may stop part of q.
func chainAccepts(rules []state.FwRule, ch [3]string, q fwQuery) (ok, shadowed bool) {
	stopped := false
	for _, r := range rules {
		if r.Family != ch[0] || r.Table != ch[1] || r.Chain != ch[2] {
			continue
		}
		if r.Validate() != nil {
			r = state.FwRule{Opaque: true}
		}
		if !r.Opaque && r.Verdict == "accept" && covers(r, q) {
			return !stopped, stopped
		}
		harmless := r.Verdict == "accept" || (r.Verdict == "" && !r.Opaque)
		stopped = stopped || (!harmless && !disjoint(r, q))
	}
	return false, false
}

// covers says whether each match of r holds for every packet of q.
func covers(r state.FwRule, q fwQuery) bool {
	if r.NfProto != "" && !(q.saddr.IsValid() && familyOf(q.saddr) == r.NfProto) {
		return false
	}
	return (r.IifName == "" || r.IifName == q.iif) &&
		(r.OifName == "" || r.OifName == q.oif) &&
		(r.L4Proto == "" || r.L4Proto == q.l4proto) &&
		(!r.Saddr.IsValid() || r.Saddr == q.saddr) &&
		(!r.Daddr.IsValid() || r.Daddr == q.daddr) &&
		(r.Dport == 0 || r.Dport == q.dport)
}

// disjoint says whether a known match of r excludes every packet of q.
func disjoint(r state.FwRule, q fwQuery) bool {
	differ := func(a, b string) bool { return a != "" && b != "" && a != b }
	return differ(r.IifName, q.iif) || differ(r.OifName, q.oif) || differ(r.L4Proto, q.l4proto) ||
		(r.Saddr.IsValid() && q.saddr.IsValid() && r.Saddr != q.saddr) ||
		(r.Daddr.IsValid() && q.daddr.IsValid() && r.Daddr != q.daddr) ||
		(r.Dport != 0 && q.dport != 0 && r.Dport != q.dport) ||
		(r.NfProto != "" && q.saddr.IsValid() && familyOf(q.saddr) != r.NfProto)
}

func familyOf(a netip.Addr) string {
	if a.Is4() {
		return "ipv4"
	}
	return "ipv6"
}
