package kernel

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/opsmigrate/migrate/state"
	"golang.org/x/sys/unix"
)

// renderOld builds role old's part of table inet (the forwards, keep_dest
// and the guard are added by render):
//
//	set svc4, svc6        services at 100 %
//	map canary4, canary6  canary services : jump canary_<P>
//	set acct4, acct6      accounted services, per-element counters (packets to NEW)
//	set flows4, flows6    the same elements, counting new flows to NEW
//	chain canary_<P>      numgen random mod 100 < P ct mark set ct mark | M meta mark set meta mark | M counter
//	chain prerouting      hook prerouting priority mangle; policy accept
//	  iifname T ct state new ct mark set ct mark | M counter   NEW's outbound flows
//	  iifname T return
//	  ct mark & M == M meta mark set meta mark | M return      flows going to NEW stay there (drain)
//	  ct state != new return
//	  meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn goto pickup   only a bare SYN starts a TCP flow
//	  KEY4 @svc4 ct mark set ct mark | M meta mark set meta mark | M counter return
//	  KEY6 @svc6 ...
//	  KEY4 vmap @canary4
//	  KEY6 vmap @canary6
//	chain pickup          (layoutV4, not with keep_dest) a mid-stream TCP packet conntrack took as new
//	  socket wildcard 0 return                                 OLD holds a socket for it on its specific address
//	  KEY4 @svc4 ct mark set ct mark | M ... counter return    else a moved service's connection: to NEW
//	  KEY6 @svc6 ...
//	chain forward         hook forward priority mangle; policy accept
//	  MSS clamp
//	  oifname T ct state new KEY4 @flows4
//	  oifname T KEY4 @acct4
//	  (and v6)
//	  guard's rules, when the spec has a guard (renderGuard)
//
// The underlay filter (when Underlay is set) is the first rule of chain
// prerouting: there the destination is still OLD's endpoint, before any
// DNAT. Layout layoutV1 had it in a chain input (hook input, priority
// filter - 1) and the guard in a chain of its own; each base chain is a
// hook entry and a chain walk per packet.
//
// A "return" in a base chain ends this chain with its policy (accept);
// other tables still see the packet. A spec with forwards and no
// TunnelDev renders nothing of this. For a direct tunnel (PeerSrc),
// "iifname T" is peerMatch's.
func renderOld(r *rendered, spec state.NftSpec, input *nftRule, fw *forwardParts, layout nftLayout) error {
	it := r.inet
	t := it.table
	accept := nftables.ChainPolicyAccept
	dev := spec.TunnelDev
	// render checked the spec (state.NftSpec.Validate): a tunnel device
	// and a mark unless it only forwards, nothing of role new's, one
	// percent per service, no service that is also a forward.
	if dev == "" {
		return nil // forwards only: nothing of the tunnel's
	}
	m := spec.Mark

	// Services: each key once.
	var full, canary []state.NftService
	percentOf := map[string]int{}
	percents := map[int]bool{}
	for _, s := range spec.Services {
		key, _, err := serviceKey(s)
		if err != nil {
			return err
		}
		if _, ok := percentOf[string(key)]; ok {
			continue
		}
		percentOf[string(key)] = s.Percent
		if s.Percent == 100 {
			full = append(full, s)
		} else {
			canary = append(canary, s)
			percents[s.Percent] = true
		}
	}
	el4, el6, err := serviceElems(full, "services", nil)
	if err != nil {
		return err
	}
	cm4, cm6, err := serviceElems(canary, "services", func(s state.NftService) *expr.Verdict {
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: canaryChain(s.Percent)}
	})
	if err != nil {
		return err
	}
	ac4, ac6, err := serviceElems(spec.Accounted, "accounted", nil)
	if err != nil {
		return err
	}
	set := func(name string, v6 bool) *nftables.Set {
		kt := svc4Type
		if v6 {
			kt = svc6Type
		}
		return &nftables.Set{Table: t, Name: name, KeyType: kt, Concatenation: true}
	}
	svc4, svc6 := set(nftSet4, false), set(nftSet6, true)
	can4, can6 := set(nftCanary4, false), set(nftCanary6, true)
	for _, s := range []*nftables.Set{can4, can6} {
		s.IsMap, s.DataType = true, nftables.TypeVerdict
	}
	acct4, acct6 := set(nftAcct4, false), set(nftAcct6, true)
	flows4, flows6 := set(nftFlows4, false), set(nftFlows6, true)
	for _, s := range []*nftables.Set{acct4, acct6, flows4, flows6} {
		s.Counter = true
	}
	it.sets = []*nftables.Set{svc4, svc6, can4, can6, acct4, acct6, flows4, flows6}
	it.elems = [][]nftables.SetElement{el4, el6, cm4, cm6, ac4, ac6, ac4, ac6}
	fromPeer, err := peerMatch(it, spec)
	if err != nil {
		return err
	}

	var ps []int
	for p := range percents {
		ps = append(ps, p)
	}
	sort.Ints(ps)
	// Regular chains first: canary map elements jump to them.
	var canaryChains []*nftables.Chain
	for _, p := range ps {
		c := &nftables.Chain{Name: canaryChain(p), Table: t}
		canaryChains = append(canaryChains, c)
		it.chains = append(it.chains, c)
	}
	// From layoutV4 on, a TCP packet conntrack takes as new that is not a
	// bare SYN (a connection's entry is gone: `conntrack -F`, a full
	// table, an expiry) goes to chain pickup instead of staying on OLD.
	// Not with keep_dest: another table DNATs on OLD (Docker), and a
	// draining connection to OLD's container has no socket in OLD's
	// namespace for the socket expression to find; there pickups stay
	// on OLD as before (Docker's DNAT takes them to the container).
	var pickup *nftables.Chain
	if layout >= layoutV4 && !spec.KeepDest {
		pickup = &nftables.Chain{Name: nftPickup, Table: t}
		it.chains = append(it.chains, pickup)
	}
	prerouting := &nftables.Chain{
		Name: nftPrerouting, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept,
	}
	forward := &nftables.Chain{
		Name: nftForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle, Policy: &accept,
	}
	it.chains = append(it.chains, prerouting, forward)
	if input != nil && layout == layoutV1 {
		it.chains = append(it.chains, input.chain)
	}
	// From layoutV3 on, a flow OLD marks for NEW also gets the ct
	// timeout object (movedTimeoutObj), on its first packet, while its
	// conntrack entry is unconfirmed: the only time it can.
	var timeout []expr.Any
	timeoutText := ""
	if layout >= layoutV3 {
		it.objs = append(it.objs, movedTimeoutObj(t))
		timeout = []expr.Any{&expr.Objref{Type: int(nftables.ObjTypeCtTimeout), Name: nftMovedTimeout}}
		timeoutText = fmt.Sprintf(" ct timeout set %q", nftMovedTimeout)
	}
	markBoth := ctMarkOrText(m) + timeoutText + " " + metaMarkOrText(m)
	markExprs := func() []expr.Any { return join(ctMarkOr(m), timeout, metaMarkOr(m)) }
	oif := fmt.Sprintf("oifname %q ", dev)
	it.addRules(func() []nftRule {
		var rules []nftRule
		if input != nil && layout != layoutV1 {
			// The underlay filter, before anything else of prerouting:
			// the same match and drop as at the input hook.
			rules = append(rules, nftRule{chain: prerouting, text: input.text, exprs: input.exprs})
		}
		for i, p := range ps {
			rules = append(rules, rule(canaryChains[i], fmt.Sprintf("numgen random mod 100 < %d %s counter", p, markBoth),
				numgenBelow(p), markExprs(), exprCounter()))
		}
		for _, from := range fromPeer {
			rules = append(rules,
				// NEW's own outbound flows: their replies must go back to T.
				rule(prerouting, from.text+" ct state new "+ctMarkOrText(m)+timeoutText+" counter", from.exprs, ctStateNew(), ctMarkOr(m), timeout, exprCounter()),
				// Nothing else applies to packets from the tunnel.
				rule(prerouting, from.text+" return", from.exprs, exprReturn()),
			)
		}
		rules = append(rules,
			// Packets of flows going to NEW get the mark (other bits
			// kept), so the fwmark rule routes them into the tunnel. This
			// is what keeps draining flows on NEW when a service moves
			// back.
			rule(prerouting, ctMarkHasText(m)+" "+metaMarkOrText(m)+" return", ctMarkHas(m), metaMarkOr(m), exprReturn()),
			// Only the first packet of a flow is considered...
			rule(prerouting, "ct state != new return", ctStateNotNew(), exprReturn()),
		)
		if pickup == nil {
			// ... and for TCP only a bare SYN: conntrack also picks up
			// mid-stream flows as new, and those stay on OLD.
			rules = append(rules, rule(prerouting, notBareSYNText+" return", l4proto(unix.IPPROTO_TCP), tcpFlags(tcpFIN|tcpSYN|tcpRST|tcpACK, expr.CmpOpNeq), exprReturn()))
		} else {
			// ... and for TCP only a bare SYN starts a flow; a
			// mid-stream packet conntrack picked up as new is one of a
			// connection whose entry went: OLD's own (draining, it has
			// the socket) or a moved one (NEW has it). A listener on
			// the packet's very address is ambiguous: it stays on OLD.
			// Canary services stay on OLD too (which way a canary's
			// connection went is not known).
			rules = append(rules,
				rule(prerouting, notBareSYNText+" goto "+nftPickup, l4proto(unix.IPPROTO_TCP), tcpFlags(tcpFIN|tcpSYN|tcpRST|tcpACK, expr.CmpOpNeq), exprGoto(nftPickup)),
				rule(pickup, "socket wildcard 0 return", socketWildcard0(), exprReturn()),
				rule(pickup, keyText(false)+" @"+svc4.Name+" "+markBoth+" counter return", serviceLookup(svc4, false), markExprs(), exprCounter(), exprReturn()),
				rule(pickup, keyText(true)+" @"+svc6.Name+" "+markBoth+" counter return", serviceLookup(svc6, true), markExprs(), exprCounter(), exprReturn()),
			)
		}
		rules = append(rules,
			rule(prerouting, keyText(false)+" @"+svc4.Name+" "+markBoth+" counter return", serviceLookup(svc4, false), markExprs(), exprCounter(), exprReturn()),
			rule(prerouting, keyText(true)+" @"+svc6.Name+" "+markBoth+" counter return", serviceLookup(svc6, true), markExprs(), exprCounter(), exprReturn()),
			rule(prerouting, keyText(false)+" vmap @"+can4.Name, serviceVmap(can4, false)),
			rule(prerouting, keyText(true)+" vmap @"+can6.Name, serviceVmap(can6, true)),
			rule(forward, mssClampText, mssClamp()),
			rule(forward, oif+"ct state new "+keyText(false)+" @"+flows4.Name, oifname(dev), ctStateNew(), serviceLookup(flows4, false)),
			rule(forward, oif+keyText(false)+" @"+acct4.Name, oifname(dev), serviceLookup(acct4, false)),
			rule(forward, oif+"ct state new "+keyText(true)+" @"+flows6.Name, oifname(dev), ctStateNew(), serviceLookup(flows6, true)),
			rule(forward, oif+keyText(true)+" @"+acct6.Name, oifname(dev), serviceLookup(acct6, true)),
		)
		if input != nil && layout == layoutV1 {
			rules = append(rules, *input)
		}
		return rules
	})
	return nil
}

func canaryChain(p int) string { return nftCanaryPfx + strconv.Itoa(p) }

// match is a rule's leading match: its text and its expressions.
type match struct {
	text  string
	exprs []expr.Any
}

// peerMatch returns the matches for "a packet of NEW's" on role old: a
// tunnel device is NEW's alone (iifname T); a direct tunnel's segment
// interface also carries everyone else's traffic, so there a packet is
// NEW's when it arrives on it from one of PeerSrc (sets peer4 and peer6,
// added to it): iifname SEG ip saddr @peer4, iifname SEG ip6 saddr
// @peer6.
func peerMatch(it *renderedTable, spec state.NftSpec) ([]match, error) {
	dev := fmt.Sprintf("iifname %q", spec.TunnelDev)
	if len(spec.PeerSrc) == 0 {
		return []match{{dev, iifname(spec.TunnelDev)}}, nil
	}
	var p4, p6 *nftables.Set
	for _, st := range it.sets {
		switch st.Name {
		case nftPeer4:
			p4 = st
		case nftPeer6:
			p6 = st
		}
	}
	src := func(set *nftables.Set, v6 bool) match {
		off, n := uint32(12), uint32(4)
		if v6 {
			off, n = 8, 16
		}
		return match{fmt.Sprintf("%s %s saddr @%s", dev, ipName(v6), set.Name), join(iifname(spec.TunnelDev), nfproto(v6), []expr.Any{
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
		})}
	}
	if p4 != nil && p6 != nil { // already added (the guard follows prerouting)
		return []match{src(p4, false), src(p6, true)}, nil
	}
	p4 = &nftables.Set{Table: it.table, Name: nftPeer4, KeyType: nftables.TypeIPAddr}
	p6 = &nftables.Set{Table: it.table, Name: nftPeer6, KeyType: nftables.TypeIP6Addr}
	var el4, el6 []nftables.SetElement
	for _, ip := range spec.PeerSrc {
		if ip.Is4() {
			el4 = append(el4, nftables.SetElement{Key: ip.AsSlice()})
		} else {
			el6 = append(el6, nftables.SetElement{Key: ip.AsSlice()})
		}
	}
	it.sets = append(it.sets, p4, p6)
	it.elems = append(it.elems, el4, el6)
	return []match{src(p4, false), src(p6, true)}, nil
}

// renderKeepDest adds, on OLD with spec.KeepDest, chain keep_dest:
//
//	chain keep_dest  type nat hook prerouting priority dstnat - 1
//	  meta mark & M == M meta nfproto ipv4 dnat ip to ip daddr
//	  meta mark & M == M meta nfproto ipv6 dnat ip6 to ip6 daddr
//	chain keep_dest_out  type nat hook output priority -101
//	  the same two rules
//
// A moved flow's first packet carries M from chain prerouting (mangle).
// The kernel runs the nat chains of all tables at a hook as one list, in
// priority order, and stops at the first that gives the flow a
// destination binding: this identity DNAT, one step before Docker's nat
// PREROUTING (dstnat), keeps Docker's DNAT to a container on OLD from
// rewriting a flow that goes to NEW. (An accept would not: it only ends
// this table's chain.) The flow reaches NEW with its own destination.
// The output chain does the same for OLD's own connections with SO_MARK M
// (the readiness probe through the tunnel), which Docker's nat OUTPUT
// would send to OLD's container.
func renderKeepDest(it *renderedTable, spec state.NftSpec) {
	if !spec.KeepDest || spec.Role != state.RoleOld || spec.Mark == 0 {
		return
	}
	accept := nftables.ChainPolicyAccept
	c := &nftables.Chain{
		Name: nftKeepDest, Table: it.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(keepDestPrio), Policy: &accept,
	}
	out := &nftables.Chain{
		Name: nftKeepDestO, Table: it.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(keepDestPrio), Policy: &accept,
	}
	it.chains = append(it.chains, c, out)
	m := spec.Mark
	it.addRules(func() []nftRule {
		var rules []nftRule
		for _, ch := range []*nftables.Chain{c, out} {
			for _, v6 := range []bool{false, true} {
				text := fmt.Sprintf("meta mark & %s == %s dnat %s to %s daddr", mark(m), mark(m), ipName(v6), ipName(v6))
				rules = append(rules, rule(ch, text, metaMarkHas(m), sameDest(v6)))
			}
		}
		return rules
	})
}
