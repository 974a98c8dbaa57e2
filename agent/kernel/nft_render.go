package kernel

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/opsmigrate/migrate/state"
	"golang.org/x/sys/unix"
)

// Set, map and chain names.
const (
	nftSet4        = "svc4"    // services at 100 %
	nftSet6        = "svc6"    //
	nftCanary4     = "canary4" // canary services -> jump canary_<P>
	nftCanary6     = "canary6" //
	nftAcct4       = "acct4"   // accounted services, per-element packet/byte counters
	nftAcct6       = "acct6"   //
	nftFlows4      = "flows4"  // same elements, counting new flows
	nftFlows6      = "flows6"  //
	nftNoARP       = "noarp"   // table arp: addresses NEW must not answer ARP for
	nftPeer4       = "peer4"   // direct tunnel: sources of NEW's packets on the segment
	nftPeer6       = "peer6"   //
	nftPrerouting  = "prerouting"
	nftForward     = "forward"
	nftPostrouting = "postrouting"
	nftInput       = "input"
	nftCanaryPfx   = "canary_"
	nftFwd4        = "fwd4" // forwards: address . proto . port : to . to_port
	nftFwd6        = "fwd6" //
	// The forwards' keys again, as plain sets, for the membership test:
	// Linux 6.1 (Debian 12) refuses a lookup without a destination
	// register on a map (EINVAL); newer kernels accept it.
	nftFwdKeys4 = "fwdkeys4"
	nftFwdKeys6 = "fwdkeys6"
	nftFwdPre   = "fwd_prerouting"
	nftFwdPost  = "fwd_postrouting"
	nftGuard    = "guard" // forwarded packets that are none of migrate's: counted and dropped
	// NEW's UDP answers: the services (udpsvc), and per client seen
	// through the tunnel the service address to answer from (udpans:
	// client . client port . service port : service address), filled
	// from the packet path.
	nftUDPSvc4 = "udpsvc4"
	nftUDPSvc6 = "udpsvc6"
	nftUDPAns4 = "udpans4"
	nftUDPAns6 = "udpans6"
	nftUDPIn   = "udp_in"
	nftUDPOut  = "udp_out"
)

// How long NEW remembers a UDP client seen through the tunnel after its
// last datagram, and how many it remembers per family. Conntrack forgets
// a UDP flow on OLD after 30 s (120 s once it has seen traffic both ways
// more than once): answers later than that would not be routed back to
// the client anyway.
const (
	udpClientTimeout = 180 * time.Second
	udpClientMax     = 262144
)

// nfARPIn is the arp family's input hook. The arp family numbers its hooks
// NF_ARP_IN=0, NF_ARP_OUT=1, NF_ARP_FORWARD=2, so "input" there is 0, not
// NF_INET_LOCAL_IN (1, which would be NF_ARP_OUT). x/sys/unix lacks it.
const nfARPIn = 0

// Registers. NFT_REG_1 and NFT_REG32_00 (8) name the same 4 bytes; a
// concatenation puts each field in the next 4-byte-aligned 32-bit register.
// An IPv4 address takes one slot (8), an IPv6 address four (8..11).
const (
	regVerdict = unix.NFT_REG_VERDICT
	reg1       = unix.NFT_REG_1
	reg32_01   = unix.NFT_REG32_00 + 1
	reg32_02   = unix.NFT_REG32_00 + 2
	reg32_04   = unix.NFT_REG32_00 + 4
	reg32_05   = unix.NFT_REG32_00 + 5
	reg32_08   = unix.NFT_REG32_00 + 8
)

var (
	svc4Type = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	svc6Type = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	dst4Type = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	dst6Type = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
	ans4Type = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService, nftables.TypeInetService)
	ans6Type = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService, nftables.TypeInetService)
)

// renderedTable is one nftables table with its sets, chains and rules.
type renderedTable struct {
	table  *nftables.Table
	sets   []*nftables.Set
	elems  [][]nftables.SetElement // parallel to sets
	chains []*nftables.Chain
	// rules builds the rules; it runs after the sets were added to the
	// batch, so lookups carry the sets' transaction IDs.
	rules func() []*nftables.Rule
}

// rendered is an NftSpec turned into nftables objects: table inet NAME
// and, when the spec has NoARP addresses, table arp NAME. Both are written
// and removed in the same transaction.
type rendered struct {
	inet *renderedTable
	arp  *renderedTable // nil: no arp table
}

func (r *rendered) tables() []*renderedTable {
	if r.arp == nil {
		return []*renderedTable{r.inet}
	}
	return []*renderedTable{r.inet, r.arp}
}

// serviceKey encodes one service as a set key: each field is padded to 4
// bytes (address, then proto + 3 zero bytes, then port in network order + 2
// zero bytes).
func serviceKey(s state.NftService) (key []byte, v6 bool, err error) {
	ip := net.IP(s.Addr.AsSlice())
	if ip == nil {
		return nil, false, fmt.Errorf("service address %q is not an IP address", s.Addr)
	}
	var proto byte
	switch s.Proto {
	case state.TCP:
		proto = unix.IPPROTO_TCP
	case state.UDP:
		proto = unix.IPPROTO_UDP
	default:
		return nil, false, fmt.Errorf("service %s: protocol %q is not tcp or udp", s.Addr, s.Proto)
	}
	if s.Port == 0 {
		return nil, false, fmt.Errorf("service %s/%s: port 0", s.Addr, s.Proto)
	}
	if v4 := ip.To4(); v4 != nil {
		key = append(key, v4...)
	} else {
		key = append(key, ip.To16()...)
		v6 = true
	}
	key = append(key, proto, 0, 0, 0, byte(s.Port>>8), byte(s.Port), 0, 0)
	return key, v6, nil
}

// serviceOfKey decodes a set key made by serviceKey.
func serviceOfKey(key []byte) (state.NftService, bool) {
	var ip net.IP
	switch len(key) {
	case 12:
		ip = net.IP(key[:4])
	case 24:
		ip = net.IP(key[:16])
	default:
		return state.NftService{}, false
	}
	rest := key[len(ip):]
	proto := map[byte]state.Proto{unix.IPPROTO_TCP: state.TCP, unix.IPPROTO_UDP: state.UDP}[rest[0]]
	if proto == "" {
		return state.NftService{}, false
	}
	a, _ := netip.AddrFromSlice(ip)
	return state.NftService{Addr: a.Unmap(), Proto: proto, Port: uint16(rest[4])<<8 | uint16(rest[5])}, true
}

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

func exprReturn() []expr.Any  { return []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}} }
func exprCounter() []expr.Any { return []expr.Any{&expr.Counter{}} }

// ctStateNew is `ct state new`.
func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(expr.CtStateBitNEW), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: native32(0)},
	}
}

// ctStateNotNew is `ct state != new`. nft compiles it to an exact
// comparison, not a bit test: the state is one bit at a time.
func ctStateNotNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: native32(expr.CtStateBitNEW)},
	}
}

// ctMarkOr is `ct mark set ct mark | m`.
func ctMarkOr(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(^m), Xor: native32(m)},
		&expr.Ct{Register: reg1, Key: expr.CtKeyMARK, SourceRegister: true},
	}
}

// metaMarkOr is `meta mark set meta mark | m`.
func metaMarkOr(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(^m), Xor: native32(m)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1, SourceRegister: true},
	}
}

// ctMarkHas is `ct mark & m == m`.
func ctMarkHas(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(m), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: native32(m)},
	}
}

func iifname(dev string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname(dev)},
	}
}

func oifname(dev string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname(dev)},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

func nfproto(v6 bool) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if v6 {
		p = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

// tcpFlags is `tcp flags & mask OP syn`; it must follow l4proto(tcp).
func tcpFlags(mask byte, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{mask}, Xor: []byte{0}},
		&expr.Cmp{Op: op, Register: reg1, Data: []byte{0x02}},
	}
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// serviceKeyLoad is `meta nfproto ipvX ip[6] daddr . meta l4proto . th
// dport`, loaded into the registers of a concatenated key.
func serviceKeyLoad(v6 bool) []expr.Any {
	return join(nfproto(v6), concatLoad(v6))
}

// concatLoad is `ip[6] daddr . meta l4proto . th dport` without the
// nfproto dependency: registers 1, 9 and 10 (IPv4) or 1..4, 12 and 13
// (IPv6).
func concatLoad(v6 bool) []expr.Any {
	if !v6 {
		return []expr.Any{
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32_01},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32_02, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		}
	}
	return []expr.Any{
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32_04},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32_05, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// serviceLookup is `meta nfproto ipvX ip[6] daddr . meta l4proto . th dport @set`.
func serviceLookup(set *nftables.Set, v6 bool) []expr.Any {
	return append(serviceKeyLoad(v6), &expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID})
}

// serviceVmap is `meta nfproto ipvX ip[6] daddr . meta l4proto . th dport vmap @map`.
func serviceVmap(m *nftables.Set, v6 bool) []expr.Any {
	return append(serviceKeyLoad(v6), &expr.Lookup{SourceRegister: reg1, DestRegister: regVerdict, IsDestRegSet: true, SetName: m.Name, SetID: m.ID})
}

// mssClamp is `meta l4proto tcp tcp flags & (syn|rst) == syn tcp option
// maxseg size set rt mtu counter`. The kernel only ever lowers the MSS.
func mssClamp() []expr.Any {
	var e []expr.Any
	e = append(e, l4proto(unix.IPPROTO_TCP)...)
	e = append(e, tcpFlags(tcpSYN|tcpRST, expr.CmpOpEq)...)
	e = append(e,
		&expr.Rt{Register: reg1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: reg1, DestRegister: reg1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: 2, Offset: 2, Len: 2, SourceRegister: reg1},
		&expr.Counter{},
	)
	return e
}

// numgenBelow is `numgen random mod 100 < p`. numgen yields a host-order
// integer; nft converts it to network order before a "<" (cmp compares
// bytes, most significant first), and so does this.
func numgenBelow(p int) []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: reg1, Modulus: 100, Type: unix.NFT_NG_RANDOM},
		&expr.Byteorder{SourceRegister: reg1, DestRegister: reg1, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Cmp{Op: expr.CmpOpLt, Register: reg1, Data: binaryutil.BigEndian.PutUint32(uint32(p))},
	}
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// serviceElems turns services into set elements, split by family. A key
// is listed once; val (if not nil) gives each element's verdict.
func serviceElems(list []state.NftService, what string, val func(state.NftService) *expr.Verdict) (el4, el6 []nftables.SetElement, err error) {
	seen := map[string]bool{}
	for _, s := range list {
		key, v6, err := serviceKey(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		if seen[string(key)] {
			continue // a set holds each key once
		}
		seen[string(key)] = true
		e := nftables.SetElement{Key: key}
		if val != nil {
			e.VerdictData = val(s)
		}
		if v6 {
			el6 = append(el6, e)
		} else {
			el4 = append(el4, e)
		}
	}
	return el4, el6, nil
}

func canaryChain(p int) string { return nftCanaryPfx + strconv.Itoa(p) }

// underlayDrop is the underlay filter: encapsulated packets to the local
// endpoint from anyone but the peer are counted and dropped.
//
//	udp: meta nfproto ipvX meta l4proto udp udp dport PORT ip[6] daddr LOCAL ip[6] saddr != PEER counter drop
//	gre: meta nfproto ipvX meta l4proto gre ip[6] daddr LOCAL ip[6] saddr != PEER counter drop
func underlayDrop(u *state.NftUnderlay) ([]expr.Any, error) {
	local, peer := net.IP(u.Local.AsSlice()), net.IP(u.Peer.AsSlice())
	if local == nil || peer == nil {
		return nil, fmt.Errorf("underlay: local %q and peer %q must be IP addresses", u.Local, u.Peer)
	}
	v6 := local.To4() == nil
	if v6 != (peer.To4() == nil) {
		return nil, fmt.Errorf("underlay: local %s and peer %s are of different families", u.Local, u.Peer)
	}
	var e []expr.Any
	switch u.Proto {
	case "udp":
		if u.Port == 0 {
			return nil, fmt.Errorf("underlay: udp needs a port")
		}
		e = join(nfproto(v6), l4proto(unix.IPPROTO_UDP), []expr.Any{
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(u.Port)},
		})
	case "gre":
		if u.Port != 0 {
			return nil, fmt.Errorf("underlay: gre has no port (got %d)", u.Port)
		}
		e = join(nfproto(v6), l4proto(unix.IPPROTO_GRE))
	default:
		return nil, fmt.Errorf("underlay: protocol %q is not udp or gre", u.Proto)
	}
	dOff, sOff, n := uint32(16), uint32(12), uint32(4)
	la, pa := []byte(local.To4()), []byte(peer.To4())
	if v6 {
		dOff, sOff, n = 24, 8, 16
		la, pa = local.To16(), peer.To16()
	}
	e = append(e,
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: dOff, Len: n},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: la},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: sOff, Len: n},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: pa},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
	return e, nil
}

// render turns a spec into the objects of table inet NAME (and table arp
// NAME for a spec with NoARP addresses).
//
// Role "old", table inet:
//
//	set svc4, svc6        services at 100 %
//	map canary4, canary6  canary services : jump canary_<P>
//	set acct4, acct6      accounted services, per-element counters (packets to NEW)
//	set flows4, flows6    the same elements, counting new flows to NEW
//	chain canary_<P>      numgen random mod 100 < P ct mark set ct mark | M meta mark set meta mark | M counter
//	chain input           (underlay filter, when Underlay is set)
//	chain prerouting      hook prerouting priority mangle; policy accept
//	  iifname T ct state new ct mark set ct mark | M counter   NEW's outbound flows
//	  iifname T return
//	  ct mark & M == M meta mark set meta mark | M return      flows going to NEW stay there (drain)
//	  ct state != new return
//	  meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn return   only a bare SYN starts a TCP flow
//	  KEY4 @svc4 ct mark set ct mark | M meta mark set meta mark | M counter return
//	  KEY6 @svc6 ...
//	  KEY4 vmap @canary4
//	  KEY6 vmap @canary6
//	chain forward         hook forward priority mangle; policy accept
//	  MSS clamp
//	  oifname T ct state new KEY4 @flows4
//	  oifname T KEY4 @acct4
//	  (and v6)
//
// A "return" in a base chain ends this chain with its policy (accept);
// other tables still see the packet.
//
// Role "new", table inet: chain postrouting (oifname T MSS clamp; on every
// interface when TunnelDev is empty and there are no forwards) and the
// underlay filter; table arp (when NoARP is set): set noarp, chain input:
// arp operation request arp daddr ip @noarp counter drop.
//
// Either role, when Forwards is set: maps fwd4, fwd6 and chains
// fwd_prerouting, fwd_postrouting (see renderForwards; also when
// ForwardMark alone is set: forwards draining). A spec with forwards and
// no TunnelDev renders those alone, whatever the role.
//
// The number of rules depends only on the role, on Underlay being set, on
// forwards being present and on the number of distinct canary percents,
// never on the number of services or forwards.
func render(name string, spec state.NftSpec) (out *rendered, err error) {
	defer func() {
		if err == nil {
			renderKeepDest(out.inet, spec, nftTag(spec))
			renderDNATMark(out.inet, spec, nftTag(spec))
			err = renderGuard(out.inet, spec, nftTag(spec))
		}
	}()
	if name == "" {
		return nil, fmt.Errorf("nft table has no name")
	}
	// The one rule per fact, shared with the CLI and the agent's request
	// checks: a spec that passes renders.
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
	it := &renderedTable{table: t}
	r := &rendered{inet: it}
	tag := nftTag(spec)
	accept := nftables.ChainPolicyAccept
	dev := spec.TunnelDev

	var input *nftables.Chain
	var inputRule []expr.Any
	if spec.Underlay != nil {
		e, err := underlayDrop(spec.Underlay)
		if err != nil {
			return nil, err
		}
		inputRule = e
		input = &nftables.Chain{
			Name: nftInput, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 1), Policy: &accept,
		}
	}
	addRules := func(rules []*nftables.Rule, c *nftables.Chain, exprs ...[]expr.Any) []*nftables.Rule {
		for _, e := range exprs {
			rules = append(rules, &nftables.Rule{Table: c.Table, Chain: c, Exprs: e, UserData: tag})
		}
		return rules
	}
	inputRules := func(rules []*nftables.Rule) []*nftables.Rule {
		if input == nil {
			return rules
		}
		return addRules(rules, input, inputRule)
	}

	fw, err := renderForwards(t, spec, tag)
	if err != nil {
		return nil, err
	}
	// withForwards adds the forwards' maps, chains and rules after the
	// tunnel's (nil fw: nothing).
	withForwards := func() {
		if fw == nil {
			return
		}
		it.sets = append(it.sets, fw.sets...)
		it.elems = append(it.elems, fw.elems...)
		it.chains = append(it.chains, fw.chains...)
		tunnel := it.rules
		it.rules = func() []*nftables.Rule {
			var rules []*nftables.Rule
			if tunnel != nil {
				rules = tunnel()
			}
			return append(rules, fw.rules()...)
		}
	}

	switch spec.Role {
	case state.RoleNew:
		if len(spec.Services) > 0 || len(spec.Accounted) > 0 {
			return nil, fmt.Errorf("nft spec for role new has services: they are for role old")
		}
		// The MSS clamp is the tunnel's. A host with forwards and no
		// tunnel gets none; without forwards an empty TunnelDev clamps
		// on every interface, as it always did.
		var post *nftables.Chain
		var clamp []expr.Any
		if dev != "" || fw == nil {
			post = &nftables.Chain{
				Name: nftPostrouting, Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityMangle, Policy: &accept,
			}
			clamp = mssClamp()
			if dev != "" {
				clamp = join(oifname(dev), clamp)
			}
			it.chains = append(it.chains, post)
		}
		if input != nil {
			it.chains = append(it.chains, input)
		}
		udp, err := renderUDPAnswers(t, spec)
		if err != nil {
			return nil, err
		}
		if udp != nil {
			it.sets = append(it.sets, udp.sets...)
			it.elems = append(it.elems, udp.elems...)
			it.chains = append(it.chains, udp.chains...)
		}
		it.rules = func() []*nftables.Rule {
			var rules []*nftables.Rule
			if post != nil {
				rules = addRules(rules, post, clamp)
			}
			if udp != nil {
				for _, r := range udp.rules() {
					rules = addRules(rules, r.Chain, r.Exprs)
				}
			}
			return inputRules(rules)
		}
		if len(spec.NoARP) > 0 {
			a, err := renderNoARP(name, spec.NoARP, tag)
			if err != nil {
				return nil, err
			}
			r.arp = a
		}
		withForwards()
		return r, nil
	case state.RoleOld:
	default:
		return nil, fmt.Errorf("nft spec role %q is not old or new", spec.Role)
	}

	if len(spec.NoARP) > 0 {
		return nil, fmt.Errorf("nft spec for role old has NoARP addresses: they are for role new")
	}
	if len(spec.UDPServices) > 0 {
		return nil, fmt.Errorf("nft spec for role old has UDP answer services: they are for role new")
	}
	if dev == "" && fw != nil {
		// Forwards only: no tunnel, so nothing of the tunnel's.
		if len(spec.Services) > 0 || len(spec.Accounted) > 0 || spec.Underlay != nil {
			return nil, fmt.Errorf("nft spec for role old has services or an underlay but no tunnel device")
		}
		withForwards()
		return r, nil
	}
	if spec.Mark == 0 {
		return nil, fmt.Errorf("nft spec for role old has no mark")
	}
	if dev == "" {
		return nil, fmt.Errorf("nft spec for role old has no tunnel device")
	}
	m := spec.Mark
	if fw != nil {
		// A forward's key must not also be a service's: the mangle chain
		// would send its flows into the tunnel and DNAT them as well.
		for _, s := range spec.Services {
			if k, _, err := serviceKey(s); err == nil {
				if f, ok := fw.keys[string(k)]; ok {
					return nil, fmt.Errorf("forward %s %s %d is also a service", f.Addr, f.Proto, f.Port)
				}
			}
		}
	}

	// Services: each key once, at one percent.
	var full, canary []state.NftService
	percentOf := map[string]int{}
	percents := map[int]bool{}
	for _, s := range spec.Services {
		key, _, err := serviceKey(s)
		if err != nil {
			return nil, err
		}
		if p, ok := percentOf[string(key)]; ok {
			if p != s.Percent {
				return nil, fmt.Errorf("service %s is listed at %d %% and at %d %%", s.Key(), p, s.Percent)
			}
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
		return nil, err
	}
	cm4, cm6, err := serviceElems(canary, "services", func(s state.NftService) *expr.Verdict {
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: canaryChain(s.Percent)}
	})
	if err != nil {
		return nil, err
	}
	ac4, ac6, err := serviceElems(spec.Accounted, "accounted", nil)
	if err != nil {
		return nil, err
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
		return nil, err
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
	prerouting := &nftables.Chain{
		Name: nftPrerouting, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept,
	}
	forward := &nftables.Chain{
		Name: nftForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle, Policy: &accept,
	}
	it.chains = append(it.chains, prerouting, forward)
	if input != nil {
		it.chains = append(it.chains, input)
	}
	it.rules = func() []*nftables.Rule {
		var rules []*nftables.Rule
		for i, p := range ps {
			rules = addRules(rules, canaryChains[i], join(numgenBelow(p), ctMarkOr(m), metaMarkOr(m), exprCounter()))
		}
		for _, from := range fromPeer {
			rules = addRules(rules, prerouting,
				// NEW's own outbound flows: their replies must go back to T.
				join(from, ctStateNew(), ctMarkOr(m), exprCounter()),
				// Nothing else applies to packets from the tunnel.
				join(from, exprReturn()),
			)
		}
		rules = addRules(rules, prerouting,
			// Packets of flows going to NEW get the mark (other bits
			// kept), so the fwmark rule routes them into the tunnel. This
			// is what keeps draining flows on NEW when a service moves
			// back.
			join(ctMarkHas(m), metaMarkOr(m), exprReturn()),
			// Only the first packet of a flow is considered...
			join(ctStateNotNew(), exprReturn()),
			// ... and for TCP only a bare SYN: conntrack also picks up
			// mid-stream flows as new, and those stay on OLD.
			join(l4proto(unix.IPPROTO_TCP), tcpFlags(tcpFIN|tcpSYN|tcpRST|tcpACK, expr.CmpOpNeq), exprReturn()),
			join(serviceLookup(svc4, false), ctMarkOr(m), metaMarkOr(m), exprCounter(), exprReturn()),
			join(serviceLookup(svc6, true), ctMarkOr(m), metaMarkOr(m), exprCounter(), exprReturn()),
			serviceVmap(can4, false),
			serviceVmap(can6, true),
		)
		rules = addRules(rules, forward,
			mssClamp(),
			join(oifname(dev), ctStateNew(), serviceLookup(flows4, false)),
			join(oifname(dev), serviceLookup(acct4, false)),
			join(oifname(dev), ctStateNew(), serviceLookup(flows6, true)),
			join(oifname(dev), serviceLookup(acct6, true)),
		)
		return inputRules(rules)
	}
	withForwards()
	return r, nil
}

// peerMatch returns the matches for "a packet of NEW's" on role old: a
// tunnel device is NEW's alone (iifname T); a direct tunnel's segment
// interface also carries everyone else's traffic, so there a packet is
// NEW's when it arrives on it from one of PeerSrc (sets peer4 and peer6,
// added to it): iifname SEG ip saddr @peer4, iifname SEG ip6 saddr
// @peer6.
func peerMatch(it *renderedTable, spec state.NftSpec) ([][]expr.Any, error) {
	if len(spec.PeerSrc) == 0 {
		return [][]expr.Any{iifname(spec.TunnelDev)}, nil
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
	src := func(set *nftables.Set, v6 bool) []expr.Any {
		off, n := uint32(12), uint32(4)
		if v6 {
			off, n = 8, 16
		}
		return join(iifname(spec.TunnelDev), nfproto(v6), []expr.Any{
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
		})
	}
	if p4 != nil && p6 != nil { // already added (the guard follows prerouting)
		return [][]expr.Any{src(p4, false), src(p6, true)}, nil
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
	return [][]expr.Any{src(p4, false), src(p6, true)}, nil
}

// forwardParts are the objects of a spec's forwards, added to table inet
// after the tunnel's.
type forwardParts struct {
	sets   []*nftables.Set
	elems  [][]nftables.SetElement
	chains []*nftables.Chain
	rules  func() []*nftables.Rule
	keys   map[string]state.NftForward // by set key
}

// forwardElem turns one forward into a map element: the key as
// serviceKey's, the data `to . to_port` padded the same way (address,
// then port in network order + 2 zero bytes).
func forwardElem(f state.NftForward) (nftables.SetElement, bool, error) {
	key, v6, err := serviceKey(state.NftService{Addr: f.Addr, Proto: f.Proto, Port: f.Port})
	if err != nil {
		return nftables.SetElement{}, false, fmt.Errorf("forward: %w", err)
	}
	to := net.IP(f.To.AsSlice())
	if to == nil {
		return nftables.SetElement{}, false, fmt.Errorf("forward %s %s %d: destination %q is not an IP address", f.Addr, f.Proto, f.Port, f.To)
	}
	if (to.To4() == nil) != v6 {
		return nftables.SetElement{}, false, fmt.Errorf("forward %s %s %d: destination %s is of another address family", f.Addr, f.Proto, f.Port, f.To)
	}
	if f.ToPort == 0 {
		return nftables.SetElement{}, false, fmt.Errorf("forward %s %s %d: destination port 0", f.Addr, f.Proto, f.Port)
	}
	var val []byte
	if v6 {
		val = append(val, to.To16()...)
	} else {
		val = append(val, to.To4()...)
	}
	val = append(val, byte(f.ToPort>>8), byte(f.ToPort), 0, 0)
	return nftables.SetElement{Key: key, Val: val}, v6, nil
}

// forwardDNAT is `KEY @fwdX ct mark set ct mark | fm dnat ipX to KEY map
// @fwdX`, as nft compiles it: the key is loaded twice, once for the
// membership test and once for the map lookup whose data (address, then
// port in the next 32-bit register) feeds the NAT expression.
func forwardDNAT(keys, m *nftables.Set, v6 bool, fm uint32) []expr.Any {
	family, regPort := uint32(unix.NFPROTO_IPV4), uint32(reg32_01)
	if v6 {
		family, regPort = unix.NFPROTO_IPV6, reg32_04 // == NFT_REG_2
	}
	e := join(serviceLookup(keys, v6), ctMarkOr(fm), concatLoad(v6))
	return append(e,
		&expr.Lookup{SourceRegister: reg1, DestRegister: reg1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: family, RegAddrMin: reg1, RegAddrMax: reg1, RegProtoMin: regPort, RegProtoMax: regPort, Specified: true},
	)
}

// renderForwards renders spec.Forwards (nil when there are none):
//
//	map fwd4, fwd6        address . proto . port : to . to_port
//	set fwdkeys4, fwdkeys6 the same keys (see nftFwdKeys4)
//	chain fwd_prerouting  hook prerouting priority dstnat; policy accept
//	  ct state != new return
//	  meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn return
//	  KEY4 @fwdkeys4 ct mark set ct mark | FM dnat ip to KEY4 map @fwd4
//	  KEY6 @fwdkeys6 ct mark set ct mark | FM dnat ip6 to KEY6 map @fwd6
//	chain fwd_postrouting hook postrouting priority srcnat; policy accept
//	  ct mark & FM == FM masquerade
//
// A nat chain only sees the first packet of a conntrack entry; a flow it
// does not translate then is never translated (a null binding), so flows
// picked up mid-stream (a TCP packet other than a bare SYN) stay where
// they were, and a translated flow keeps its binding after its element
// is gone from the map.
//
// Translated flows only keep their binding while the netns still has a
// nat base chain of their family (else the kernel unregisters its NAT
// hooks) and a conntrack user (else conntrack stops tracking). So a spec
// with a ForwardMark and no Forwards renders the same chains and rules
// with empty maps: no new flow is forwarded, and flows already forwarded
// drain. A spec with neither renders nothing of this.
//
// Five rules, however many forwards.
func renderForwards(t *nftables.Table, spec state.NftSpec, tag []byte) (*forwardParts, error) {
	fm := spec.ForwardMark
	if len(spec.Forwards) == 0 && fm == 0 {
		return nil, nil
	}
	if fm == 0 {
		return nil, fmt.Errorf("nft spec has forwards but no forward mark")
	}
	if spec.TunnelDev != "" && fm&spec.Mark != 0 {
		return nil, fmt.Errorf("nft spec forward mark %#x overlaps the tunnel mark %#x", fm, spec.Mark)
	}
	fp := &forwardParts{keys: map[string]state.NftForward{}}
	var el4, el6 []nftables.SetElement
	for _, f := range spec.Forwards {
		e, v6, err := forwardElem(f)
		if err != nil {
			return nil, err
		}
		if prev, ok := fp.keys[string(e.Key)]; ok {
			if prev.To != f.To || prev.ToPort != f.ToPort {
				return nil, fmt.Errorf("forward %s %s %d goes to %s port %d and to %s port %d", f.Addr, f.Proto, f.Port, prev.To, prev.ToPort, f.To, f.ToPort)
			}
			continue // a map holds each key once
		}
		fp.keys[string(e.Key)] = f
		if v6 {
			el6 = append(el6, e)
		} else {
			el4 = append(el4, e)
		}
	}
	fwd4 := &nftables.Set{Table: t, Name: nftFwd4, KeyType: svc4Type, DataType: dst4Type, IsMap: true, Concatenation: true}
	fwd6 := &nftables.Set{Table: t, Name: nftFwd6, KeyType: svc6Type, DataType: dst6Type, IsMap: true, Concatenation: true}
	accept := nftables.ChainPolicyAccept
	pre := &nftables.Chain{
		Name: nftFwdPre, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept,
	}
	post := &nftables.Chain{
		Name: nftFwdPost, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
	}
	keys4 := &nftables.Set{Table: t, Name: nftFwdKeys4, KeyType: svc4Type, Concatenation: true}
	keys6 := &nftables.Set{Table: t, Name: nftFwdKeys6, KeyType: svc6Type, Concatenation: true}
	fp.sets = []*nftables.Set{fwd4, fwd6, keys4, keys6}
	fp.elems = [][]nftables.SetElement{el4, el6, keysOf(el4), keysOf(el6)}
	fp.chains = []*nftables.Chain{pre, post}
	fp.rules = func() []*nftables.Rule {
		var rules []*nftables.Rule
		add := func(c *nftables.Chain, e []expr.Any) {
			rules = append(rules, &nftables.Rule{Table: t, Chain: c, Exprs: e, UserData: tag})
		}
		add(pre, join(ctStateNotNew(), exprReturn()))
		add(pre, join(l4proto(unix.IPPROTO_TCP), tcpFlags(tcpFIN|tcpSYN|tcpRST|tcpACK, expr.CmpOpNeq), exprReturn()))
		add(pre, forwardDNAT(keys4, fwd4, false, fm))
		add(pre, forwardDNAT(keys6, fwd6, true, fm))
		add(post, join(ctMarkHas(fm), []expr.Any{&expr.Masq{}}))
		return rules
	}
	return fp, nil
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
		rules: func() []*nftables.Rule {
			return []*nftables.Rule{{Table: t, Chain: c, UserData: tag, Exprs: []expr.Any{
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

// RenderRuleCount is the number of rules the spec renders to, all tables
// together (0 for an invalid spec). It does not depend on the number of
// services or forwards, only on the number of distinct canary percents
// and on forwards being present (five rules).
func RenderRuleCount(spec state.NftSpec) int {
	r, err := render("count", spec)
	if err != nil {
		return 0
	}
	n := 0
	for _, t := range r.tables() {
		n += len(t.rules())
	}
	return n
}

// addTo adds the rendered table to cc's batch: chains first (canary map
// elements jump to them), then sets and their elements in chunks, then
// the rules.
func (r *renderedTable) addTo(cc *nftables.Conn) error {
	cc.AddTable(r.table)
	for _, c := range r.chains {
		cc.AddChain(c)
	}
	for i, s := range r.sets {
		if err := cc.AddSet(s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", s.Name, err)
		}
		el := r.elems[i]
		for len(el) > 0 {
			n := min(len(el), nftElemChunk)
			if err := cc.SetAddElements(s, el[:n]); err != nil {
				return fmt.Errorf("add elements to set %s: %w", s.Name, err)
			}
			el = el[n:]
		}
	}
	for _, rule := range r.rules() {
		cc.AddRule(rule)
	}
	return nil
}

// keysOf is the map elements' keys, as set elements.
func keysOf(els []nftables.SetElement) []nftables.SetElement {
	out := make([]nftables.SetElement, len(els))
	for i, e := range els {
		out[i] = nftables.SetElement{Key: e.Key}
	}
	return out
}

// renderGuard adds chain guard to table inet when the spec has Guard4 or
// Guard6 (nothing otherwise):
//
//	chain guard           hook forward priority filter; policy accept
//	  iifname T accept            role old with a tunnel: what NEW sends
//	  ct mark & M == M accept     role old with a tunnel: flows into the
//	                              tunnel, NEW's outbound flows, their replies
//	  ct mark & FM == FM accept   with a ForwardMark: forwards (both ways)
//	  meta nfproto ipv4 counter drop   Guard4
//	  meta nfproto ipv6 counter drop   Guard6
//
// The conntrack mark is the flow's, so it also covers the replies and the
// ICMP errors of those flows (conntrack gives them the flow's entry). Only
// migrate's own rules set these bits: the prerouting chain for packets to
// a service (an address of this host) or from the tunnel, fwd_prerouting
// for forwards. A drop in a base chain is final whatever other tables
// say; the accepts are not (another table may still drop).
func renderGuard(it *renderedTable, spec state.NftSpec, tag []byte) error {
	if !spec.Guard4 && !spec.Guard6 {
		return nil
	}
	tunnel := spec.Role == state.RoleOld && spec.TunnelDev != "" && spec.Mark != 0
	if !tunnel && spec.ForwardMark == 0 {
		return fmt.Errorf("nft spec guards forwarding but forwards nothing of migrate's (no tunnel on role old, no forward mark)")
	}
	accept := nftables.ChainPolicyAccept
	guard := &nftables.Chain{
		Name: nftGuard, Table: it.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	}
	it.chains = append(it.chains, guard)
	var exprs [][]expr.Any
	acceptV := []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	if tunnel {
		// Everything out of the tunnel is NEW's (the underlay filter, or
		// WireGuard, sees to that), also packets conntrack calls invalid:
		// once a moved address is routed to NEW directly (the cut-over in
		// the README), NEW's replies still leave through OLD, which never
		// saw their flows start.
		fromPeer, err := peerMatch(it, spec)
		if err != nil {
			return err
		}
		for _, from := range fromPeer {
			exprs = append(exprs, join(from, acceptV))
		}
		exprs = append(exprs, join(ctMarkHas(spec.Mark), acceptV))
	}
	if spec.ForwardMark != 0 {
		exprs = append(exprs, join(ctMarkHas(spec.ForwardMark), acceptV))
	}
	for _, g := range []struct {
		on bool
		v6 bool
	}{{spec.Guard4, false}, {spec.Guard6, true}} {
		if g.on {
			exprs = append(exprs, join(nfproto(g.v6), []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}))
		}
	}
	prev := it.rules
	it.rules = func() []*nftables.Rule {
		var rules []*nftables.Rule
		if prev != nil {
			rules = prev()
		}
		for _, e := range exprs {
			rules = append(rules, &nftables.Rule{Table: it.table, Chain: guard, Exprs: e, UserData: tag})
		}
		return rules
	}
	return nil
}

// udpParts are the objects of NEW's UDP answers.
type udpParts struct {
	sets   []*nftables.Set
	elems  [][]nftables.SetElement
	chains []*nftables.Chain
	rules  func() []*nftables.Rule // Table, Chain and Exprs set
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
func renderUDPAnswers(t *nftables.Table, spec state.NftSpec) (*udpParts, error) {
	if len(spec.UDPServices) == 0 {
		return nil, nil
	}
	if spec.TunnelDev == "" {
		return nil, fmt.Errorf("nft spec has UDP answer services but no tunnel device")
	}
	for _, s := range spec.UDPServices {
		if s.Proto != "udp" {
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
	ans6 := ans(nftUDPAns6, ans6Type, nftables.TypeIP6Addr)
	accept := nftables.ChainPolicyAccept
	in := &nftables.Chain{
		Name: nftUDPIn, Table: t, Type: nftables.ChainTypeFilter,
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
	p.rules = func() []*nftables.Rule {
		rule := func(c *nftables.Chain, e []expr.Any) *nftables.Rule {
			return &nftables.Rule{Table: t, Chain: c, Exprs: e}
		}
		record := func(svc, m *nftables.Set, v6 bool) []expr.Any {
			saddr, daddr, n, pReg := uint32(12), uint32(16), uint32(4), []uint32{reg32_01, reg32_02}
			if v6 {
				saddr, daddr, n, pReg = 8, 24, 16, []uint32{reg32_04, reg32_05}
			}
			return join(iifname(dev), serviceLookup(svc, v6), []expr.Any{
				load(saddr, n, reg1), port(0, pReg[0]), port(2, pReg[1]),
				load(daddr, n, reg32_08),
				&expr.Dynset{SrcRegKey: reg1, SrcRegData: reg32_08, Operation: unix.NFT_DYNSET_OP_UPDATE,
					Timeout: udpClientTimeout, SetName: m.Name, SetID: m.ID},
			})
		}
		answer := func(m *nftables.Set, v6 bool) []expr.Any {
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
			return join(nfproto(v6), l4proto(unix.IPPROTO_UDP), []expr.Any{
				load(daddr, n, reg1), port(2, pReg[0]), port(0, pReg[1]),
				&expr.Lookup{SourceRegister: reg1, DestRegister: reg32_08, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
				write,
				&expr.Counter{},
			})
		}
		return []*nftables.Rule{
			rule(in, record(svc4, ans4, false)),
			rule(in, record(svc6, ans6, true)),
			rule(out, answer(ans4, false)),
			rule(out, answer(ans6, true)),
		}
	}
	return p, nil
}
