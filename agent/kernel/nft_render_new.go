package kernel

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/opsmigrate/migrate/state"
	"golang.org/x/sys/unix"
)

// renderNew builds role new's part of table inet, and table arp (the
// forwards, dnat_mark and the guard are added by render):
//
//	chain postrouting     hook postrouting priority mangle; policy accept
//	  oifname T MSS clamp   (on every interface when TunnelDev is empty
//	                        and there are no forwards; none with forwards
//	                        and no TunnelDev)
//	chain input           (underlay filter, when Underlay is set)
//	sets udpsvc4/6, maps udpans4/6, chains udp_in, udp_out
//	                      (UDP answers, when UDPServices is set: see
//	                      renderUDPAnswers)
//	table arp NAME        (when NoARP is set) set noarp, chain input:
//	  arp operation request arp daddr ip @noarp counter drop
//
// With both the underlay filter and UDP answers, chain input is udp_in's
// (hook input, priority mangle) and holds the underlay filter first, then
// udp_in's rules: one hook entry per packet instead of two (layoutV1 had
// chain input at priority filter - 1 and chain udp_in). The drop still
// comes before the packet reaches the VXLAN/GRE socket (the input hook
// runs before local delivery, at any priority), and udp_in's rules only
// record, before any filter-priority chain, as they did.
func renderNew(r *rendered, spec state.NftSpec, input *nftRule, fw *forwardParts, layout nftLayout) error {
	it := r.inet
	t := it.table
	dev := spec.TunnelDev
	accept := nftables.ChainPolicyAccept
	// The MSS clamp is the tunnel's. A host with forwards and no
	// tunnel gets none; without forwards an empty TunnelDev clamps
	// on every interface, as it always did.
	//
	// From layoutV2 on, the clamp on the tunnel device is in chain
	// forward (hook forward, priority mangle), not postrouting: only
	// forwarded packets (a container's, Docker on NEW) need it. NEW's own
	// SYN and SYN-ACK through the tunnel already carry an MSS of the
	// route's MTU (the kernel's advmss of the route via T is T's MTU
	// minus the headers, the value the clamp would set), and in
	// postrouting every packet NEW sends, inner and outer, crossed the
	// chain.
	var clamp *nftRule
	if dev != "" || fw == nil {
		post := &nftables.Chain{
			Name: nftPostrouting, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityMangle, Policy: &accept,
		}
		if dev != "" && layout != layoutV1 {
			post.Name, post.Hooknum = nftForward, nftables.ChainHookForward
		}
		c := rule(post, mssClampText, mssClamp())
		if dev != "" {
			c = rule(post, fmt.Sprintf("oifname %q %s", dev, mssClampText), oifname(dev), mssClamp())
		}
		clamp = &c
		it.chains = append(it.chains, post)
	}
	inName := nftUDPIn
	if input != nil && len(spec.UDPServices) > 0 && layout != layoutV1 {
		inName = nftInput // one chain: udp_in's, named input
	}
	udp, err := renderUDPAnswers(t, spec, inName, layout)
	if err != nil {
		return err
	}
	var shared *nftRule // the underlay filter, first in udp_in's chain
	if input != nil && udp != nil && layout != layoutV1 {
		shared = &nftRule{chain: udp.chains[0], text: input.text, exprs: input.exprs}
		input = nil
	} else if input != nil {
		it.chains = append(it.chains, input.chain)
	}
	if udp != nil {
		it.sets = append(it.sets, udp.sets...)
		it.elems = append(it.elems, udp.elems...)
		it.chains = append(it.chains, udp.chains...)
	}
	it.addRules(func() []nftRule {
		var rules []nftRule
		if clamp != nil {
			rules = append(rules, *clamp)
		}
		if shared != nil {
			rules = append(rules, *shared)
		}
		if udp != nil {
			rules = append(rules, udp.rules()...)
		}
		if input != nil {
			rules = append(rules, *input)
		}
		return rules
	})
	if len(spec.NoARP) > 0 {
		a, err := renderNoARP(t.Name, spec.NoARP, it.tag)
		if err != nil {
			return err
		}
		r.arp = a
	}
	return nil
}

// renderNoARP is table arp NAME: NEW does not answer ARP requests for the
// addresses migrate made local there.
func renderNoARP(name string, addrs []netip.Addr, tag []byte) (*renderedTable, error) {
	t := &nftables.Table{Family: nftables.TableFamilyARP, Name: name}
	s := &nftables.Set{Table: t, Name: nftNoARP, KeyType: nftables.TypeIPAddr}
	var el []nftables.SetElement
	seen := map[string]bool{}
	for _, a := range addrs {
		ip := net.IP(a.AsSlice())
		if ip == nil || ip.To4() == nil {
			return nil, fmt.Errorf("no-ARP address %q is not an IPv4 address", a)
		}
		k := string(ip.To4())
		if !seen[k] {
			seen[k] = true
			el = append(el, nftables.SetElement{Key: []byte(ip.To4())})
		}
	}
	accept := nftables.ChainPolicyAccept
	c := &nftables.Chain{
		Name: nftInput, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookRef(nfARPIn), Priority: nftables.ChainPriorityFilter, Policy: &accept,
	}
	return &renderedTable{
		table:  t,
		sets:   []*nftables.Set{s},
		elems:  [][]nftables.SetElement{el},
		chains: []*nftables.Chain{c},
		tag:    tag,
		model: func() []nftRule {
			return []nftRule{{chain: c, text: "arp operation request arp daddr ip @" + s.Name + " counter drop", exprs: []expr.Any{
				// arp operation request
				&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0, 1}},
				// arp daddr ip @noarp (Ethernet/IPv4 layout: 8 + 6 + 4 + 6)
				&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 4},
				&expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID},
				&expr.Counter{},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}}}
		},
	}, nil
}

// udpParts are the objects of NEW's UDP answers.
type udpParts struct {
	sets   []*nftables.Set
	elems  [][]nftables.SetElement
	chains []*nftables.Chain
	rules  func() []nftRule
}

// renderUDPAnswers makes NEW answer a UDP client of the tunnel from the
// service address the client sent to, whatever the daemon bound. A
// daemon on a wildcard socket without IP_PKTINFO lets the kernel pick
// the source of its answer: NEW's own address, on NEW's own uplink, and
// the client's connected socket drops it.
//
//	map udpans4 { ipv4_addr . inet_service . inet_service : ipv4_addr; flags dynamic, timeout }
//	chain udp_in   hook input priority mangle
//	  iifname T KEY4 @udpsvc4 update @udpans4 { ip saddr . udp sport . udp dport timeout 180s : ip daddr }
//	chain udp_out  type route hook output priority raw
//	  meta nfproto ipv4 meta l4proto udp ip saddr set ip daddr . udp dport . udp sport map @udpans4 counter
//	(and ipv6)
//
// The rewrite comes before conntrack (raw priority), so the answer is the
// reply of the client's conntrack entry; a route chain routes the packet
// again after the new source, and the rule "from ADDR lookup TABLE" sends
// it into the tunnel. An answer that already leaves from the service
// address (a daemon bound to it, or using IP_PKTINFO) is written with the
// same address: no change, no second route lookup.
//
// inName is the name of chain udp_in: renderNew names it input when it
// also holds the underlay filter.
//
// From layoutV2 on, the IPv6 map is keyed client port . service port .
// client address (ans6TypeV2): nft 1.0.6 cannot load back the other
// order (see ans6TypeV2).
func renderUDPAnswers(t *nftables.Table, spec state.NftSpec, inName string, layout nftLayout) (*udpParts, error) {
	if len(spec.UDPServices) == 0 {
		return nil, nil
	}
	if spec.TunnelDev == "" {
		return nil, fmt.Errorf("nft spec has UDP answer services but no tunnel device")
	}
	for _, s := range spec.UDPServices {
		if s.Proto != state.UDP {
			return nil, fmt.Errorf("UDP answer service %s is not udp", s.Key())
		}
	}
	el4, el6, err := serviceElems(spec.UDPServices, "udp services", nil)
	if err != nil {
		return nil, err
	}
	svc4 := &nftables.Set{Table: t, Name: nftUDPSvc4, KeyType: svc4Type, Concatenation: true}
	svc6 := &nftables.Set{Table: t, Name: nftUDPSvc6, KeyType: svc6Type, Concatenation: true}
	ans := func(name string, kt, dt nftables.SetDatatype) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: kt, DataType: dt, IsMap: true, Concatenation: true,
			Dynamic: true, HasTimeout: true, Size: udpClientMax}
	}
	ans4 := ans(nftUDPAns4, ans4Type, nftables.TypeIPAddr)
	portsFirst6 := layout != layoutV1
	a6 := ans6Type
	if portsFirst6 {
		a6 = ans6TypeV2
	}
	ans6 := ans(nftUDPAns6, a6, nftables.TypeIP6Addr)
	accept := nftables.ChainPolicyAccept
	in := &nftables.Chain{
		Name: inName, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityMangle, Policy: &accept,
	}
	out := &nftables.Chain{
		Name: nftUDPOut, Table: t, Type: nftables.ChainTypeRoute,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw, Policy: &accept,
	}
	dev := spec.TunnelDev
	p := &udpParts{
		sets:   []*nftables.Set{svc4, svc6, ans4, ans6},
		elems:  [][]nftables.SetElement{el4, el6, nil, nil},
		chains: []*nftables.Chain{in, out},
	}
	load := func(off, n, reg uint32) *expr.Payload {
		return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
	}
	port := func(off, reg uint32) *expr.Payload {
		return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}
	}
	p.rules = func() []nftRule {
		record := func(svc, m *nftables.Set, v6 bool) nftRule {
			saddr, daddr, n, pReg := uint32(12), uint32(16), uint32(4), []uint32{reg32_01, reg32_02}
			if v6 {
				saddr, daddr, n, pReg = 8, 24, 16, []uint32{reg32_04, reg32_05}
			}
			ip := ipName(v6)
			text := fmt.Sprintf("iifname %q %s @%s update @%s { %s saddr . th sport . th dport timeout %s : %s daddr }",
				dev, keyText(v6), svc.Name, m.Name, ip, nftDuration(udpClientTimeout), ip)
			key := []expr.Any{load(saddr, n, reg1), port(0, pReg[0]), port(2, pReg[1])}
			if v6 && portsFirst6 {
				text = fmt.Sprintf("iifname %q %s @%s update @%s { th sport . th dport . %s saddr timeout %s : %s daddr }",
					dev, keyText(v6), svc.Name, m.Name, ip, nftDuration(udpClientTimeout), ip)
				key = []expr.Any{port(0, reg1), port(2, reg32_01), load(saddr, n, reg32_02)}
			}
			return rule(in, text, iifname(dev), serviceLookup(svc, v6), key, []expr.Any{
				load(daddr, n, reg32_08),
				&expr.Dynset{SrcRegKey: reg1, SrcRegData: reg32_08, Operation: unix.NFT_DYNSET_OP_UPDATE,
					Timeout: udpClientTimeout, SetName: m.Name, SetID: m.ID},
			})
		}
		answer := func(m *nftables.Set, v6 bool) nftRule {
			saddr, daddr, n, pReg := uint32(12), uint32(16), uint32(4), []uint32{reg32_01, reg32_02}
			// IPv4: the header checksum at offset 10, and the UDP
			// checksum's pseudo-header.
			write := &expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg32_08, Base: expr.PayloadBaseNetworkHeader,
				Offset: saddr, Len: n, CsumType: expr.CsumTypeInet, CsumOffset: 10, CsumFlags: unix.NFT_PAYLOAD_L4CSUM_PSEUDOHDR}
			if v6 {
				saddr, daddr, n, pReg = 8, 24, 16, []uint32{reg32_04, reg32_05}
				// IPv6 has no header checksum, but the UDP checksum's
				// pseudo-header must follow: nft sends "csum_type none,
				// csum_flags pseudohdr", and google/nftables sends the
				// flags only with a type. The kernel updates an inet
				// checksum at csum_offset before it stores the field,
				// so an offset inside the source address being
				// written (its first two bytes) is overwritten by the
				// store: the effect is nft's.
				write = &expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg32_08, Base: expr.PayloadBaseNetworkHeader,
					Offset: saddr, Len: n, CsumType: expr.CsumTypeInet, CsumOffset: saddr, CsumFlags: unix.NFT_PAYLOAD_L4CSUM_PSEUDOHDR}
			}
			ip := ipName(v6)
			text := fmt.Sprintf("%s saddr set %s daddr . udp dport . udp sport map @%s counter", ip, ip, m.Name)
			key := []expr.Any{load(daddr, n, reg1), port(2, pReg[0]), port(0, pReg[1])}
			if v6 && portsFirst6 {
				text = fmt.Sprintf("%s saddr set udp dport . udp sport . %s daddr map @%s counter", ip, ip, m.Name)
				key = []expr.Any{port(2, reg1), port(0, reg32_01), load(daddr, n, reg32_02)}
			}
			return rule(out, text, nfproto(v6), l4proto(unix.IPPROTO_UDP), key, []expr.Any{
				&expr.Lookup{SourceRegister: reg1, DestRegister: reg32_08, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
				write,
				&expr.Counter{},
			})
		}
		return []nftRule{record(svc4, ans4, false), record(svc6, ans6, true), answer(ans4, false), answer(ans6, true)}
	}
	return p, nil
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
//
// A direct tunnel (PeerDst set): T is the segment's interface, which
// also brings other hosts' flows to NEW's own addresses (NEW's own
// published ports), whose answers must not go to OLD. There a new flow
// is OLD's when it arrives on T to one of PeerDst (sets peerdst4 and
// peerdst6), still its destination: this chain (mangle) runs before any
// DNAT (dstnat):
//
//	iifname T ip daddr @peerdst4 ct state new ct mark set ct mark | M
//	iifname T ip6 daddr @peerdst6 ct state new ct mark set ct mark | M
func renderDNATMark(it *renderedTable, spec state.NftSpec) error {
	if !spec.DNATReplies || spec.Role != state.RoleNew || spec.Mark == 0 || spec.TunnelDev == "" {
		return nil
	}
	accept := nftables.ChainPolicyAccept
	c := &nftables.Chain{
		Name: nftDNATMark, Table: it.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept,
	}
	dev := fmt.Sprintf("iifname %q", spec.TunnelDev)
	from := []match{{dev, iifname(spec.TunnelDev)}}
	if len(spec.PeerDst) > 0 {
		p4 := &nftables.Set{Table: it.table, Name: nftPeerDst4, KeyType: nftables.TypeIPAddr}
		p6 := &nftables.Set{Table: it.table, Name: nftPeerDst6, KeyType: nftables.TypeIP6Addr}
		var el4, el6 []nftables.SetElement
		for _, ip := range spec.PeerDst {
			if ip.Is4() {
				el4 = append(el4, nftables.SetElement{Key: ip.AsSlice()})
			} else {
				el6 = append(el6, nftables.SetElement{Key: ip.AsSlice()})
			}
		}
		it.sets = append(it.sets, p4, p6)
		it.elems = append(it.elems, el4, el6)
		dst := func(set *nftables.Set, v6 bool) match {
			off, n := uint32(16), uint32(4)
			if v6 {
				off, n = 24, 16
			}
			return match{fmt.Sprintf("%s %s daddr @%s", dev, ipName(v6), set.Name), join(iifname(spec.TunnelDev), nfproto(v6), []expr.Any{
				&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
				&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
			})}
		}
		from = []match{dst(p4, false), dst(p6, true)}
	}
	it.chains = append(it.chains, c)
	m := spec.Mark
	it.addRules(func() []nftRule {
		var rules []nftRule
		for _, f := range from {
			rules = append(rules, rule(c, fmt.Sprintf("%s ct state new %s", f.text, ctMarkOrText(m)), f.exprs, ctStateNew(), ctMarkOr(m)))
		}
		return append(rules, rule(c, "ct direction reply "+ctMarkHasText(m)+" "+metaMarkOrText(m), ctReply(), ctMarkHas(m), metaMarkOr(m)))
	})
	return nil
}
