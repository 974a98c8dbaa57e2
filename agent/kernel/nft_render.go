package kernel

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
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
	// nftMovedTimeout is OLD's ct timeout object for the flows it moves
	// (layoutV3).
	nftMovedTimeout = "moved_tcp"
	// nftPickup is OLD's chain for a mid-stream TCP packet conntrack
	// takes as new (layoutV4).
	nftPickup = "pickup"
)

// kernelTCPTimeouts are the kernel's default TCP conntrack timeouts in
// seconds (nf_conntrack_proto_tcp.c), by state: ESTABLISHED is 5 days.
// libnftnl's defaults, and google/nftables' CtStateTCPTimeoutDefaults,
// have 12 hours for ESTABLISHED instead.
var kernelTCPTimeouts = map[uint16]uint32{
	expr.CtStateTCPSYNSENT: 120, expr.CtStateTCPSYNRECV: 60, expr.CtStateTCPESTABLISHED: 432000,
	expr.CtStateTCPFINWAIT: 120, expr.CtStateTCPCLOSEWAIT: 60, expr.CtStateTCPLASTACK: 30,
	expr.CtStateTCPTIMEWAIT: 120, expr.CtStateTCPCLOSE: 10, expr.CtStateTCPSYNSENT2: 120,
	expr.CtStateTCPRETRANS: 300, expr.CtStateTCPUNACK: 300,
}

// movedTimeoutObj is ct timeout moved_tcp: TCP with the kernel's default
// timeouts but 7 days for an established connection (the kernel's 5, and
// whatever the host's nf_conntrack_tcp_timeout_* sysctls say, do not
// matter for the flows that carry it). Not the default itself: nft lists
// only the values that differ from its defaults, the kernel's, and nft
// 1.0.6 cannot load back the "policy = {  }" it lists for an all-default
// policy (TestNftGoldenKernel). Every state is given:
// google/nftables starts from its own defaults (12 hours established)
// and, at the version in go.mod, writes the given policy into that
// package-level map itself.
func movedTimeouts() expr.CtStatePolicyTimeout {
	p := expr.CtStatePolicyTimeout(maps.Clone(kernelTCPTimeouts))
	p[expr.CtStateTCPESTABLISHED] = movedEstablished
	return p
}

// movedEstablished is how long (seconds) OLD's conntrack keeps an idle
// established connection it moved to NEW: 7 days.
const movedEstablished = 7 * 24 * 3600

func movedTimeoutObj(t *nftables.Table) *nftables.NamedObj {
	return &nftables.NamedObj{Table: t, Name: nftMovedTimeout, Type: nftables.ObjTypeCtTimeout, Obj: &expr.CtTimeout{
		L3Proto: unix.NFPROTO_INET,
		L4Proto: unix.IPPROTO_TCP,
		Policy:  movedTimeouts(),
	}}
}

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
	// ans6TypeV2 puts the ports first: Debian 12's nft (1.0.6) cannot
	// load back a dynset update whose key starts with an IPv6 address
	// and has a data value ("netlink_gen_expr: Assertion `dreg <
	// ctx->reg_low' failed"), so a ruleset saved with `nft list ruleset`
	// on NEW would not load again at boot.
	ans6TypeV2 = nftables.MustConcatSetType(nftables.TypeInetService, nftables.TypeInetService, nftables.TypeIP6Addr)
)

// nftRule is one rule of the model the renderer builds: its chain, the
// text `nft list` prints for it (a counter without its values, and
// without the tag's comment: CanonicalText adds both) and the
// expressions written to the kernel. The two are written side by side,
// and the golden tests (testdata/nft) check the text against what the
// kernel lists.
type nftRule struct {
	chain *nftables.Chain
	text  string
	exprs []expr.Any
}

// rule makes a rule of chain c from its text and its expressions, joined.
func rule(c *nftables.Chain, text string, exprs ...[]expr.Any) nftRule {
	return nftRule{chain: c, text: text, exprs: join(exprs...)}
}

// renderedTable is one nftables table with its sets, chains and rules.
type renderedTable struct {
	table  *nftables.Table
	tag    []byte               // every rule's userdata (nftTag)
	objs   []*nftables.NamedObj // stateful objects (ct timeout): before the rules that name them
	sets   []*nftables.Set
	elems  [][]nftables.SetElement // parallel to sets
	chains []*nftables.Chain
	// model builds the rules; it runs after the sets were added to the
	// batch, so lookups carry the sets' transaction IDs.
	model func() []nftRule
}

// addRules appends the rules f builds to the table's, after those
// already there.
func (r *renderedTable) addRules(f func() []nftRule) {
	prev := r.model
	r.model = func() []nftRule {
		var rules []nftRule
		if prev != nil {
			rules = prev()
		}
		return append(rules, f()...)
	}
}

// rules are the table's rules as written to the kernel.
func (r *renderedTable) rules() []*nftables.Rule {
	if r.model == nil {
		return nil
	}
	var out []*nftables.Rule
	for _, m := range r.model() {
		out = append(out, &nftables.Rule{Table: r.table, Chain: m.chain, Exprs: m.exprs, UserData: r.tag})
	}
	return out
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

func exprReturn() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}} }
func exprGoto(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}}
}

// socketWildcard0 is `socket wildcard 0`: the host has a full socket for
// the packet (an established one, else a listener) bound to a specific
// address. No socket, or a TIME_WAIT or request socket, ends the rule
// (the expression breaks); a listener on 0.0.0.0 or :: gives 1.
func socketWildcard0() []expr.Any {
	return []expr.Any{
		&expr.Socket{Key: expr.SocketKeyWildcard, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0}},
	}
}
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

// The texts nft prints for the matches and statements above.

// mark is how nft prints a mark.
func mark(m uint32) string { return fmt.Sprintf("0x%08x", m) }

// ipName is the payload protocol of a family: ip or ip6.
func ipName(v6 bool) string {
	if v6 {
		return "ip6"
	}
	return "ip"
}

// keyText is serviceKeyLoad's text: nft leaves the nfproto dependency
// out, ip[6] daddr implies it.
func keyText(v6 bool) string { return ipName(v6) + " daddr . meta l4proto . th dport" }

func ctMarkOrText(m uint32) string   { return "ct mark set ct mark | " + mark(m) }
func metaMarkOrText(m uint32) string { return "meta mark set meta mark | " + mark(m) }
func ctMarkHasText(m uint32) string  { return fmt.Sprintf("ct mark & %s == %s", mark(m), mark(m)) }

// Only a bare SYN starts a TCP flow (the dependency on meta l4proto tcp
// is implied by tcp flags), and mssClamp.
const (
	notBareSYNText = "tcp flags != syn / fin,syn,rst,ack"
	mssClampText   = "tcp flags syn / syn,rst tcp option maxseg size set rt mtu counter"
)

// underlayDrop is the underlay filter: encapsulated packets to the local
// endpoint from anyone but the peer are counted and dropped.
//
//	udp: meta nfproto ipvX meta l4proto udp udp dport PORT ip[6] daddr LOCAL ip[6] saddr != PEER counter drop
//	gre: meta nfproto ipvX meta l4proto gre ip[6] daddr LOCAL ip[6] saddr != PEER counter drop
//
// nft lists them without the dependencies the later matches imply.
func underlayDrop(u *state.NftUnderlay) ([]expr.Any, string, error) {
	local, peer := net.IP(u.Local.AsSlice()), net.IP(u.Peer.AsSlice())
	if local == nil || peer == nil {
		return nil, "", fmt.Errorf("underlay: local %q and peer %q must be IP addresses", u.Local, u.Peer)
	}
	v6 := local.To4() == nil
	if v6 != (peer.To4() == nil) {
		return nil, "", fmt.Errorf("underlay: local %s and peer %s are of different families", u.Local, u.Peer)
	}
	var e []expr.Any
	var text string
	switch u.Proto {
	case "udp":
		if u.Port == 0 {
			return nil, "", fmt.Errorf("underlay: udp needs a port")
		}
		e = join(nfproto(v6), l4proto(unix.IPPROTO_UDP), []expr.Any{
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(u.Port)},
		})
		text = fmt.Sprintf("udp dport %d ", u.Port)
	case "gre":
		if u.Port != 0 {
			return nil, "", fmt.Errorf("underlay: gre has no port (got %d)", u.Port)
		}
		e = join(nfproto(v6), l4proto(unix.IPPROTO_GRE))
		text = "meta l4proto gre "
	default:
		return nil, "", fmt.Errorf("underlay: protocol %q is not udp or gre", u.Proto)
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
	ip := ipName(v6)
	text += fmt.Sprintf("%s daddr %s %s saddr != %s counter drop", ip, local, ip, peer)
	return e, text, nil
}

// renderUnderlay is chain input with the underlay filter, when the spec
// has an underlay (nil otherwise). The role adds the chain and the rule.
func renderUnderlay(t *nftables.Table, spec state.NftSpec) (*nftRule, error) {
	if spec.Underlay == nil {
		return nil, nil
	}
	e, text, err := underlayDrop(spec.Underlay)
	if err != nil {
		return nil, err
	}
	accept := nftables.ChainPolicyAccept
	input := &nftables.Chain{
		Name: nftInput, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 1), Policy: &accept,
	}
	return &nftRule{chain: input, text: text, exprs: e}, nil
}

// nftLayout numbers the ways render lays a spec's rules out in chains.
// The rules' digest (ruleDigestLayout) carries the layout from layoutV2
// on, so a table an older agent wrote is told apart by its digest, and
// is verified against its own layout (nftVerify) and replaced with the
// current one by the next apply (updateNft: its chains go, the sets and
// their counters stay).
type nftLayout int

const (
	// layoutV1: OLD's guard in its own chain (hook forward, priority
	// filter), OLD's underlay filter in chain input (priority filter - 1),
	// NEW's underlay filter and udp_in in two chains.
	layoutV1 nftLayout = 1
	// layoutV2: fewer base chains, each a hook entry and an nft_do_chain
	// per packet: OLD's guard at the end of chain forward, OLD's underlay
	// filter first in chain prerouting, NEW's underlay filter and udp_in
	// in one chain input; NEW's MSS clamp on the tunnel in chain forward
	// (hook forward) instead of postrouting, so NEW's own packets, inner
	// and outer, cross none of it; and NEW's IPv6 UDP answer map keyed
	// ports first (ans6TypeV2), which nft 1.0.6 can load back.
	layoutV2 nftLayout = 2
	// layoutV3: layoutV2 plus, on OLD, the ct timeout object moved_tcp
	// (nftMovedTimeout), set on every flow OLD marks for NEW: OLD knows a
	// connection went to NEW only from its conntrack entry, so a moved
	// connection whose entry timed out while idle came back to OLD's own
	// stack and was reset. The object gives marked TCP flows the kernel's
	// default timeouts (5 days established) whatever the host's
	// nf_conntrack_tcp_timeout_* sysctls say.
	layoutV3 nftLayout = 3
	// layoutV4: layoutV3 plus, on OLD (without keep_dest), chain pickup:
	// a TCP packet that conntrack takes as new but is not a bare SYN (a
	// mid-stream pickup, after `conntrack -F` or a lost entry) to a moved
	// service goes to NEW unless OLD holds a socket bound to its specific
	// address for it (socket wildcard 0: OLD's own connection, draining,
	// or a listener on that very address). Before, every pickup stayed on
	// OLD, whose stack reset the moved connections.
	layoutV4 nftLayout = 4
	// layoutCurrent is what this agent writes.
	layoutCurrent = layoutV4
)

// render turns a spec into the objects of the current layout.
func render(name string, spec state.NftSpec) (*rendered, error) {
	return renderLayout(name, spec, layoutCurrent)
}

// renderLayout turns a spec into the objects of table inet NAME (and table arp
// NAME for a spec with NoARP addresses). The role's own chains come from
// renderOld (nft_render_old.go) or renderNew (nft_render_new.go); then
// come the parts either role may have, always in this order: the
// forwards (renderForwards), keep_dest (old), dnat_mark (new), the guard
// (renderGuard).
//
// Either role, when Forwards is set: maps fwd4, fwd6 and chains
// fwd_prerouting, fwd_postrouting (see renderForwards; also when
// ForwardMark alone is set: forwards draining). A spec with forwards and
// no TunnelDev renders those alone, whatever the role.
//
// The number of rules depends only on the role, on Underlay being set, on
// forwards being present and on the number of distinct canary percents,
// never on the number of services or forwards.
func renderLayout(name string, spec state.NftSpec, layout nftLayout) (*rendered, error) {
	if name == "" {
		return nil, fmt.Errorf("nft table has no name")
	}
	// The one rule per fact, shared with the CLI and the agent's request
	// checks: a spec that passes renders.
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
	if layout < layoutV1 || layout > layoutV4 {
		return nil, fmt.Errorf("nft layout %d is unknown", layout)
	}
	r := &rendered{inet: &renderedTable{table: t, tag: nftTag(spec, layout)}}
	input, err := renderUnderlay(t, spec)
	if err != nil {
		return nil, err
	}
	fw, err := renderForwards(t, spec)
	if err != nil {
		return nil, err
	}
	switch spec.Role {
	case state.RoleNew:
		err = renderNew(r, spec, input, fw, layout)
	case state.RoleOld:
		err = renderOld(r, spec, input, fw, layout)
	default:
		err = fmt.Errorf("nft spec role %q is not old or new", spec.Role)
	}
	if err != nil {
		return nil, err
	}
	if fw != nil {
		// The forwards' maps, chains and rules come after the role's.
		it := r.inet
		it.sets = append(it.sets, fw.sets...)
		it.elems = append(it.elems, fw.elems...)
		it.chains = append(it.chains, fw.chains...)
		it.addRules(fw.rules)
	}
	renderKeepDest(r.inet, spec)
	if err := renderDNATMark(r.inet, spec); err != nil {
		return nil, err
	}
	if err := renderGuard(r.inet, spec, layout); err != nil {
		return nil, err
	}
	return r, nil
}

// forwardParts are the objects of a spec's forwards, added to table inet
// after the tunnel's.
type forwardParts struct {
	sets   []*nftables.Set
	elems  [][]nftables.SetElement
	chains []*nftables.Chain
	rules  func() []nftRule
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
func renderForwards(t *nftables.Table, spec state.NftSpec) (*forwardParts, error) {
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
	dnatText := func(keys, m *nftables.Set, v6 bool) string {
		return fmt.Sprintf("%s @%s %s dnat %s to %s map @%s", keyText(v6), keys.Name, ctMarkOrText(fm), ipName(v6), keyText(v6), m.Name)
	}
	fp.rules = func() []nftRule {
		return []nftRule{
			rule(pre, "ct state != new return", ctStateNotNew(), exprReturn()),
			rule(pre, notBareSYNText+" return", l4proto(unix.IPPROTO_TCP), tcpFlags(tcpFIN|tcpSYN|tcpRST|tcpACK, expr.CmpOpNeq), exprReturn()),
			rule(pre, dnatText(keys4, fwd4, false), forwardDNAT(keys4, fwd4, false, fm)),
			rule(pre, dnatText(keys6, fwd6, true), forwardDNAT(keys6, fwd6, true, fm)),
			rule(post, ctMarkHasText(fm)+" masquerade", ctMarkHas(fm), []expr.Any{&expr.Masq{}}),
		}
	}
	return fp, nil
}

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
	for _, o := range r.objs {
		cc.AddObj(o)
	}
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
//
// From layoutV2 on, when the table has OLD's chain forward (hook forward,
// priority mangle), these rules go at its end instead, in the same order,
// with the same counters: one base chain less for every forwarded packet.
// The outcome for every packet is the same: chain forward's own rules
// have no verdict, so every packet still reaches the guard's rules; an
// accept ends only migrate's chain (as it did the guard), and a drop in
// any base chain is final, at mangle as at filter priority. Only chains of
// other tables between the two priorities no longer see the packets the
// guard drops.
func renderGuard(it *renderedTable, spec state.NftSpec, layout nftLayout) error {
	if !spec.Guard4 && !spec.Guard6 {
		return nil
	}
	// Validate refused a guard with nothing of migrate's to let through.
	tunnel := spec.Role == state.RoleOld && spec.TunnelDev != "" && spec.Mark != 0
	var guard *nftables.Chain
	if layout != layoutV1 && spec.Role == state.RoleOld {
		for _, c := range it.chains {
			if c.Name == nftForward && c.Hooknum != nil && *c.Hooknum == *nftables.ChainHookForward {
				guard = c
			}
		}
	}
	if guard == nil {
		accept := nftables.ChainPolicyAccept
		guard = &nftables.Chain{
			Name: nftGuard, Table: it.table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
		}
		it.chains = append(it.chains, guard)
	}
	var rules []nftRule
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
			rules = append(rules, rule(guard, from.text+" accept", from.exprs, acceptV))
		}
		rules = append(rules, rule(guard, ctMarkHasText(spec.Mark)+" accept", ctMarkHas(spec.Mark), acceptV))
	}
	if spec.ForwardMark != 0 {
		rules = append(rules, rule(guard, ctMarkHasText(spec.ForwardMark)+" accept", ctMarkHas(spec.ForwardMark), acceptV))
	}
	for _, g := range []struct {
		on bool
		v6 bool
	}{{spec.Guard4, false}, {spec.Guard6, true}} {
		if g.on {
			rules = append(rules, rule(guard, fmt.Sprintf("meta nfproto ipv%d counter drop", map[bool]int{false: 4, true: 6}[g.v6]),
				nfproto(g.v6), []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}))
		}
	}
	it.addRules(func() []nftRule { return rules })
	return nil
}
