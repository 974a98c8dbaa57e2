package kernel

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/state"
)

// Chains for hosts where another table DNATs (Docker's published ports).
const (
	nftKeepDest   = "keep_dest"     // OLD: moved flows keep their destination
	nftKeepDestO  = "keep_dest_out" // OLD: so do its own probes through the tunnel
	nftDNATMark   = "dnat_mark"     // NEW: flows from the tunnel, and their answers
	keepDestPrio  = -101            // just before dstnat (-100): Docker's nat PREROUTING
	ctDirReply    = 1               // IP_CT_DIR_REPLY
	metaMarkBytes = 4
)

// metaMarkHas is `meta mark & m == m`.
func metaMarkHas(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: metaMarkBytes, Mask: native32(m), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: native32(m)},
	}
}

// ctReply is `ct direction reply`.
func ctReply() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{ctDirReply}},
	}
}

// sameDest is `dnat ipX to ipX daddr`: a DNAT to the address the packet
// already has, so the flow's destination binding is made (and unchanged).
func sameDest(v6 bool) []expr.Any {
	family, off, n := uint32(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if v6 {
		family, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	return join(nfproto(v6), []expr.Any{
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: family, RegAddrMin: reg1, RegAddrMax: reg1},
	})
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
func renderKeepDest(it *renderedTable, spec state.NftSpec, tag []byte) {
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
	prev := it.rules
	m := spec.Mark
	it.rules = func() []*nftables.Rule {
		var rules []*nftables.Rule
		if prev != nil {
			rules = prev()
		}
		for _, ch := range []*nftables.Chain{c, out} {
			for _, v6 := range []bool{false, true} {
				rules = append(rules, &nftables.Rule{Table: it.table, Chain: ch, Exprs: join(metaMarkHas(m), sameDest(v6)), UserData: tag})
			}
		}
		return rules
	}
}

// renderDNATMark adds, on NEW with spec.DNATReplies, chain dnat_mark:
//
//	chain dnat_mark  type filter hook prerouting priority mangle
//	  iifname T ct state new ct mark set ct mark | M
//	  ct direction reply ct mark & M == M meta mark set meta mark | M
//
// A flow from the tunnel that another table DNATs on NEW (Docker: to a
// container) is answered by a forwarded packet whose source is the
// container's until postrouting undoes the DNAT, so the rule "from ADDR
// lookup TABLE" never sees it and the answer would leave by NEW's uplink
// with OLD's address as its source. Marked here, the fwmark rule sends it
// back into the tunnel.
func renderDNATMark(it *renderedTable, spec state.NftSpec, tag []byte) {
	if !spec.DNATReplies || spec.Role != state.RoleNew || spec.Mark == 0 || spec.TunnelDev == "" {
		return
	}
	accept := nftables.ChainPolicyAccept
	c := &nftables.Chain{
		Name: nftDNATMark, Table: it.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept,
	}
	it.chains = append(it.chains, c)
	prev := it.rules
	m := spec.Mark
	it.rules = func() []*nftables.Rule {
		var rules []*nftables.Rule
		if prev != nil {
			rules = prev()
		}
		for _, e := range [][]expr.Any{
			join(iifname(spec.TunnelDev), ctStateNew(), ctMarkOr(m)),
			join(ctReply(), ctMarkHas(m), metaMarkOr(m)),
		} {
			rules = append(rules, &nftables.Rule{Table: it.table, Chain: c, Exprs: e, UserData: tag})
		}
		return rules
	}
}
