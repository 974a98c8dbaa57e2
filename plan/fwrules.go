package plan

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// fwQuery is a set of packets migrate needs a firewall chain to accept:
// each field that is set, every packet has; one not set, any value.
// notIif is a device none of them arrives through (the tunnel's outer
// packets never come in through the tunnel device).
type fwQuery struct {
	iif, oif, l4proto string
	notIif            string
	saddr, daddr      netip.Addr
	dport             uint16
	// newFlow: the packets are the first of a new connection (conntrack
	// state new): a rule only for other states does not match them.
	newFlow bool
	// strict: a rule that may accept part of the query makes the
	// result unknown, so that fwPass means every packet of it reaches
	// the chain's end (status's "certainly dropped"), not only those
	// no rule accepts.
	strict bool
}

// fwResult is what a chain does with every packet of a query, as far as
// its reported rules show.
type fwResult int

const (
	fwUnknown fwResult = iota // some may be dropped, rejected, or it cannot tell
	fwPass                    // all go on past the chain (its end, or return)
	fwAccept                  // all are accepted
	fwDrop                    // all are dropped or rejected (strict queries only)
)

// chainAccepts says whether chain ch (family, table, chain) accepts every
// packet of q, following its jumps and gotos through chains whose rules
// the facts hold (state.FwRulesRead). shadowed says, when it does not,
// that a rule accepting all of q is in ch, but after one that may stop
// part of q.
func chainAccepts(f state.Facts, ch [3]string, q fwQuery) (ok, shadowed bool) {
	r, shadowed := evalChain(f, ch, q, 0)
	ok = r == fwAccept || (r == fwPass && endAccepts(f, ch))
	return ok, shadowed && !ok
}

// evalChain walks the rules of ch for q. A rule whose known matches
// exclude all of q is skipped. One that holds for all of q (covers, not
// Opaque) decides: accept, drop or reject, return; a jump or goto, what
// the chain it names does with q; no verdict, the next rule. One that
// may match part of q (a partial match, or Opaque) is harmless if its
// verdict is accept, or none without Opaque, or a jump or goto to a chain
// that accepts all of q (or, for a jump, lets all of it pass); anything
// else makes the result unknown. A chain whose rules the facts do not
// hold is unknown; the end of a chain passes.
func evalChain(f state.Facts, ch [3]string, q fwQuery, depth int) (res fwResult, shadowed bool) {
	budget := maxEvalSteps
	return evalChainIn(f, ch, q, depth, &budget)
}

// maxEvalSteps bounds the rules one evalChain looks at, jumps included:
// chains that jump to each other many times over (kube-proxy's, or a
// hostile host's facts) give unknown, not a CPU-bound plan.
const maxEvalSteps = 1 << 20

func evalChainIn(f state.Facts, ch [3]string, q fwQuery, depth int, budget *int) (res fwResult, shadowed bool) {
	*budget -= len(f.Chains) // what FwRulesRead and hasChain look through
	if *budget < 0 || depth > 16 || !state.FwRulesRead(f.Chains, ch[0], ch[1], ch[2]) || !hasChain(f, ch[0], ch[1], ch[2]) {
		return fwUnknown, false
	}
	stopped := false
	for _, r := range f.FwRules {
		if *budget--; *budget < 0 {
			return fwUnknown, false
		}
		if r.Family != ch[0] || r.Table != ch[1] || r.Chain != ch[2] {
			continue
		}
		if r.Validate() != nil {
			r = state.FwRule{Opaque: true}
		}
		if disjoint(r, q) {
			continue
		}
		whole := !r.Opaque && covers(r, q)
		verdict, target, _ := strings.Cut(r.Verdict, " ")
		sub := fwUnknown
		if verdict == "jump" || verdict == "goto" {
			sub, _ = evalChainIn(f, [3]string{ch[0], ch[1], target}, q, depth+1, budget)
		}
		if stopped {
			// Only to say whether an accept for all of q comes later.
			if whole && verdict == "accept" {
				return fwUnknown, true
			}
			continue
		}
		switch {
		case whole && verdict == "accept":
			return fwAccept, false
		case whole && q.strict && (verdict == "drop" || verdict == "reject"):
			// No rule before it may have accepted any of q.
			return fwDrop, false
		case whole && verdict == "jump" && sub == fwDrop:
			return fwDrop, false
		case whole && verdict == "return":
			return fwPass, false
		case whole && verdict == "goto":
			return sub, false
		case whole && verdict == "jump" && sub == fwAccept:
			return fwAccept, false
		case whole && verdict == "jump" && sub == fwPass:
		case whole && verdict == "":
		case verdict == "accept" && !q.strict:
		case verdict == "" && !r.Opaque:
		case verdict == "jump" && (sub == fwPass || (sub == fwAccept && !q.strict)):
		case verdict == "goto" && sub == fwAccept && !q.strict:
		default:
			stopped = true
		}
	}
	if stopped {
		return fwUnknown, false
	}
	return fwPass, false
}

// covers says whether each match of r holds for every packet of q.
func covers(r state.FwRule, q fwQuery) bool {
	if r.NfProto != "" && !(q.family() != "" && q.family() == r.NfProto) {
		return false
	}
	if len(r.CtState) > 0 && !(q.newFlow && slices.Contains(r.CtState, "new")) {
		return false
	}
	if (len(r.L4Protos) > 0 && !slices.Contains(r.L4Protos, q.l4proto)) || (len(r.Dports) > 0 && !inSpans(r.Dports, q.dport)) {
		return false
	}
	return (r.IifName == "" || r.IifName == q.iif) &&
		(r.OifName == "" || r.OifName == q.oif) &&
		(r.L4Proto == "" || r.L4Proto == q.l4proto) &&
		srcMatch(r).covers(q.saddr) && dstMatch(r).covers(q.daddr) &&
		(r.Dport == 0 || r.Dport == q.dport)
}

// disjoint says whether a known match of r excludes every packet of q.
func disjoint(r state.FwRule, q fwQuery) bool {
	differ := func(a, b string) bool { return a != "" && b != "" && a != b }
	// A rule for invalid packets only (`ct state invalid drop`, before
	// the accepts in most hand-written chains) is not about the flows
	// migrate asks a chain to accept.
	return (q.newFlow && len(r.CtState) > 0 && !slices.Contains(r.CtState, "new")) ||
		(len(r.CtState) == 1 && r.CtState[0] == "invalid") ||
		(len(r.L4Protos) > 0 && q.l4proto != "" && !slices.Contains(r.L4Protos, q.l4proto)) ||
		(len(r.Dports) > 0 && q.dport != 0 && !inSpans(r.Dports, q.dport)) || differ(r.IifName, q.iif) || (r.IifName != "" && r.IifName == q.notIif) || differ(r.OifName, q.oif) || differ(r.L4Proto, q.l4proto) ||
		srcMatch(r).excludes(q.saddr) || dstMatch(r).excludes(q.daddr) ||
		(r.Dport != 0 && q.dport != 0 && r.Dport != q.dport) ||
		(r.NfProto != "" && q.family() != "" && q.family() != r.NfProto)
}

// family is the address family of q's packets (ipv4, ipv6), from its
// source or destination address; "" when it sets neither.
func (q fwQuery) family() string {
	switch {
	case q.saddr.IsValid():
		return familyOf(q.saddr)
	case q.daddr.IsValid():
		return familyOf(q.daddr)
	}
	return ""
}

func familyOf(a netip.Addr) string {
	if a.Is4() {
		return "ipv4"
	}
	return "ipv6"
}

// addrMatch is what a rule matches of one address of a packet (its
// source or its destination): one address, a prefix, or a set's spans;
// none of them for any address.
type addrMatch struct {
	one   netip.Addr
	net   netip.Prefix
	spans [][2]netip.Addr
}

func srcMatch(r state.FwRule) addrMatch { return addrMatch{r.Saddr, r.SaddrNet, r.Saddrs} }
func dstMatch(r state.FwRule) addrMatch { return addrMatch{r.Daddr, r.DaddrNet, r.Daddrs} }

func (m addrMatch) any() bool { return !m.one.IsValid() && !m.net.IsValid() && len(m.spans) == 0 }

// holds says whether address a matches.
func (m addrMatch) holds(a netip.Addr) bool {
	switch {
	case m.one.IsValid():
		return m.one == a
	case m.net.IsValid():
		return m.net.Contains(a)
	}
	for _, sp := range m.spans {
		if sp[0].Is4() == a.Is4() && !a.Less(sp[0]) && !sp[1].Less(a) {
			return true
		}
	}
	return len(m.spans) == 0
}

// covers says whether every packet whose address is a (unknown: any
// client's, any peer's) matches.
func (m addrMatch) covers(a netip.Addr) bool {
	return m.any() || (a.IsValid() && m.holds(a))
}

// excludes says whether no packet whose address is a matches: a is
// known and does not match, or a is left open and the rule matches only
// addresses no client or peer can have (unicastless).
func (m addrMatch) excludes(a netip.Addr) bool {
	switch {
	case m.any():
		return false
	case a.IsValid():
		return !m.holds(a)
	case m.one.IsValid():
		return unicastless(netip.PrefixFrom(m.one, m.one.BitLen()))
	case m.net.IsValid():
		return unicastless(m.net)
	}
	return spansUnicastless(m.spans)
}

// inSpans says whether port p is in one of spans (From..To).
func inSpans(spans [][2]uint16, p uint16) bool {
	for _, sp := range spans {
		if sp[0] <= p && p <= sp[1] {
			return true
		}
	}
	return false
}

// spansUnicastless says whether every span of a set (at least one) lies
// in a unicastless prefix: the smallest prefix holding both its ends is
// one (firewalld's nftables backend rejects RFC 3964's prefixes as one
// set: `ip6 daddr { ::/96, ::ffff:0.0.0.0/96, 2002::/24, ... } reject`).
func spansUnicastless(spans [][2]netip.Addr) bool {
	for _, sp := range spans {
		a, b := sp[0].AsSlice(), sp[1].AsSlice()
		if len(a) != len(b) {
			return false
		}
		bits := 0
		for i := range a {
			x := a[i] ^ b[i]
			if x != 0 {
				for x&0x80 == 0 {
					bits++
					x <<= 1
				}
				break
			}
			bits += 8
		}
		p, err := sp[0].Prefix(bits)
		if err != nil || !unicastless(p) {
			return false
		}
	}
	return len(spans) > 0
}

// unicastless says whether prefix p holds only addresses that no host
// of a flow migrate asks about can have (a client, a remote peer of
// NEW's outbound connections): what a query leaves open (any client,
// any peer) is never one of them. IPv4's 0/8, loopback and 224/3
// (multicast, reserved, broadcast); IPv6's ::/96 (unspecified,
// loopback, IPv4-compatible), IPv4-mapped addresses, link-local,
// multicast, and 6to4 addresses of IPv4 prefixes 6to4 cannot use (RFC
// 3964 5.3.1: firewalld's RFC3964_IPv4 rejects these). Private ranges
// are not among them: clients on a LAN have such addresses.
func unicastless(p netip.Prefix) bool {
	if !p.IsValid() {
		return false
	}
	in := func(blocks []netip.Prefix, p netip.Prefix) bool {
		for _, bp := range blocks {
			if bp.Bits() <= p.Bits() && bp.Contains(p.Addr()) {
				return true
			}
		}
		return false
	}
	if p.Addr().Is4() {
		return in(unicastless4, p)
	}
	if in(unicastless6, p) {
		return true
	}
	// 6to4: 2002:V4ADDR::/48, the IPv4 address in bits 16-47.
	if !sixToFour.Contains(p.Addr()) || p.Bits() < 16 {
		return false
	}
	b := p.Addr().As16()
	v := netip.PrefixFrom(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), min(p.Bits()-16, 32)).Masked()
	return in(unicastless4, v) || in(private4, v)
}

// The blocks unicastless knows, parsed once: plan asks for every rule of
// every chain it walks, per service.
var (
	unicastless4 = prefixes("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/3")
	unicastless6 = prefixes("::/96", "::ffff:0.0.0.0/96", "fe80::/10", "ff00::/8")
	private4     = prefixes("10.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16")
	sixToFour    = netip.MustParsePrefix("2002::/16")
)

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}
