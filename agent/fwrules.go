package agent

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/state"
)

// FwRules reads the rules of the chains state.FwRulesRead names (those
// state.FwRuleChain names, and filter chains at the forward or input
// hook: state.BaseChain.Filters), then of the chains of the same table
// those jump or go to, and so on (marked Read in the chains' facts), at
// most state.MaxFwRules of each (the first ones, in order) and
// state.MaxFwRulesTotal in all, each decoded by decodeFwRule. A chain cut
// short ends in one Opaque rule without verdict (what follows is not
// known). Other chains' rules are not read.
func FwRules() ([]state.FwRule, error) {
	_, rules, err := ForeignFirewall("")
	return rules, err
}

// fwRules reads the rules FwRules says; followed names the chains read
// because another read chain jumps or goes to them ("family table
// chain").
func fwRules(c *nftables.Conn, chains []*nftables.Chain, own string) (out []state.FwRule, followed map[string]bool, err error) {
	total := 0
	sets := map[string]func(string) setData{} // per table
	byName := map[string]*nftables.Chain{}
	var queue []*nftables.Chain
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name == own {
			continue
		}
		family := familyName(ch.Table.Family)
		byName[family+" "+ch.Table.Name+" "+ch.Name] = ch
		// As state.BaseChain.Filters says of the chain's facts.
		filters := ch.Hooknum != nil && (ch.Type == nftables.ChainTypeFilter || (ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop)) &&
			(hookName(ch.Table.Family, *ch.Hooknum) == "forward" || hookName(ch.Table.Family, *ch.Hooknum) == "input")
		if filters || state.FwRuleChain(family, ch.Table.Name, ch.Name) {
			queue = append(queue, ch)
		}
	}
	read := map[string]bool{}
	for _, ch := range queue {
		read[familyName(ch.Table.Family)+" "+ch.Table.Name+" "+ch.Name] = true
	}
	followed = map[string]bool{}
	for len(queue) > 0 {
		ch := queue[0]
		queue = queue[1:]
		family := familyName(ch.Table.Family)
		rest := state.FwRule{Family: family, Table: ch.Table.Name, Chain: ch.Name, Opaque: true}
		if total >= state.MaxFwRulesTotal {
			out = append(out, rest)
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, nil, err
		}
		key := family + " " + ch.Table.Name
		if sets[key] == nil {
			sets[key] = setReader(c, ch.Table)
		}
		n := 0
		for _, r := range rules {
			if n >= state.MaxFwRules {
				out = append(out, rest)
				break
			}
			for _, d := range decodeFwRule(family, ch.Table.Name, ch.Name, r.Exprs, sets[key]) {
				out = append(out, d)
				n++
				// A chain it jumps or goes to, of its table.
				verdict, target, _ := strings.Cut(d.Verdict, " ")
				name := key + " " + target
				if (verdict == "jump" || verdict == "goto") && !read[name] && byName[name] != nil {
					read[name], followed[name] = true, true
					queue = append(queue, byName[name])
				}
			}
		}
		total += n
	}
	sort.SliceStable(out, func(i, j int) bool {
		return chainLess(out[i].Family, out[i].Table, out[i].Chain, out[j].Family, out[j].Table, out[j].Chain)
	})
	return out, followed, nil
}

// load is what a register holds, waiting for the cmp that reads it.
type load struct {
	what  string // iifname, oifname, l4proto, nfproto, saddr, daddr, dport, ctstate, other
	start int    // first 32-bit register
	words int
	// mask: for ctstate, the bits a bitwise kept (0: none applied yet).
	mask uint32
	// size and bits: for saddr and daddr, the bytes loaded (fewer than
	// the address's for a prefix that ends on a byte, as iptables-nft
	// loads `-s 10.0.0.0/8`) and the prefix length a bitwise kept (0:
	// none applied: size*8).
	size, bits int
}

// reg32 numbers a register as a 32-bit one: NFT_REG_1..4 (16 bytes
// each, as iptables-nft uses them) are NFT_REG32_00, 04, 08, 12.
func reg32(r uint32) int {
	if r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4 {
		return int(unix.NFT_REG32_00 + (r-unix.NFT_REG_1)*4)
	}
	return int(r)
}

// decodeFwRule decodes the expressions of one rule of table family. It
// knows the matches iptables-nft writes for -i, -o, -p, -s and -d with a
// single address or a prefix, and --dport with a single port, and nft's own for the
// same (meta iifname/oifname/l4proto/nfproto, ip/ip6 saddr/daddr, ip
// protocol, tcp/udp dport; meta iif/oif, an interface index, as the name
// it has now): a load into a register followed by `cmp eq` of that
// register; and nft's `ct state A,B` (CtState). Counters and log statements do not change what a
// rule matches; its verdict (or reject) ends it. Anything else makes the
// rule Opaque: a cmp that is not `eq` (`! -i`, ranges), a cmp of a
// register no known load wrote (as after an expression google/nftables
// does not decode, which it drops from the list), an interface prefix
// (`-i mig+`), sets other than of protocols, ports or addresses (or of
// more than state.MaxFwSetElements), xtables matches and
// targets other than REJECT, limits, ct state other than nft's `ct
// state A,B` (CtState), other verdicts...
func decodeFwRule(family, table, chain string, exprs []expr.Any, sets func(name string) setData) []state.FwRule {
	r := state.FwRule{Family: family, Table: table, Chain: chain}
	// vmap: the rules a verdict map lookup stands for, one per element
	// (what the rule matched before it, the element's key, its verdict);
	// a packet whose key is in no element goes on to the next rule.
	var vmap []state.FwRule
	pending := map[int]load{}
	clobber := func(start, words int) {
		for s, l := range pending {
			if s < start+words && start < s+l.words {
				delete(pending, s)
			}
		}
	}
	set := func(field *string, v string) {
		if *field != "" && *field != v {
			r.Opaque = true // matches nothing: never an allow
			return
		}
		*field = v
	}
	setAddr := func(field *netip.Addr, v netip.Addr) {
		if field.IsValid() && *field != v {
			r.Opaque = true
			return
		}
		*field = v
	}
	setPrefix := func(field *netip.Prefix, v netip.Prefix) {
		if field.IsValid() && *field != v {
			r.Opaque = true
			return
		}
		*field = v
	}
	v4 := func() bool { return family == "ip" || (family == "inet" && r.NfProto == "ipv4") }
	v6 := func() bool { return family == "ip6" || (family == "inet" && r.NfProto == "ipv6") }
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Counter, *expr.Log:
		case *expr.Meta:
			if e.SourceRegister {
				r.Opaque = true // meta ... set: not a match this reads
				continue
			}
			l := load{what: "other", start: reg32(e.Register), words: 1}
			switch e.Key {
			case expr.MetaKeyIIFNAME:
				l.what, l.words = "iifname", 4
			case expr.MetaKeyOIFNAME:
				l.what, l.words = "oifname", 4
			case expr.MetaKeyIIF:
				l.what = "iif" // an interface index (`iif lo`)
			case expr.MetaKeyOIF:
				l.what = "oif"
			case expr.MetaKeyL4PROTO:
				l.what = "l4proto"
			case expr.MetaKeyNFPROTO:
				l.what = "nfproto"
			case expr.MetaKeyPROTOCOL:
				l.what = "protocol" // the ethertype (`meta protocol ip`)
			default:
				l.words = 4
			}
			clobber(l.start, l.words)
			pending[l.start] = l
		case *expr.Ct:
			// `ct state A,B` is a load, a bitwise AND with the states'
			// bits and a cmp neq 0; any other ct key is not read.
			if e.SourceRegister {
				r.Opaque = true
				continue
			}
			l := load{what: "other", start: reg32(e.Register), words: 1}
			if e.Key == expr.CtKeySTATE {
				l.what = "ctstate"
			}
			clobber(l.start, l.words)
			pending[l.start] = l
		case *expr.Bitwise:
			l, ok := pending[reg32(e.SourceRegister)]
			if ok && (l.what == "saddr" || l.what == "daddr") {
				// A prefix not ending on a byte: `ip saddr & MASK`.
				bits, prefix := prefixMask(e.Mask)
				if !prefix || l.bits != 0 || e.SourceRegister != e.DestRegister || int(e.Len) != l.size || len(e.Mask) != l.size || len(bytes.Trim(e.Xor, "\x00")) != 0 {
					r.Opaque = true
					delete(pending, reg32(e.SourceRegister))
					clobber(reg32(e.DestRegister), int(e.Len+3)/4)
					continue
				}
				l.bits = bits
				pending[l.start] = l
				continue
			}
			zero := len(e.Xor) == 4 && binary.NativeEndian.Uint32(e.Xor) == 0
			if !ok || l.what != "ctstate" || l.mask != 0 || e.SourceRegister != e.DestRegister || e.Len != 4 || len(e.Mask) != 4 || !zero || binary.NativeEndian.Uint32(e.Mask) == 0 {
				r.Opaque = true
				delete(pending, reg32(e.SourceRegister))
				clobber(reg32(e.DestRegister), int(e.Len+3)/4)
				continue
			}
			l.mask = binary.NativeEndian.Uint32(e.Mask)
			pending[l.start] = l
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				r.Opaque = true
				pending = map[int]load{}
				continue
			}
			l := load{what: "other", start: reg32(e.DestRegister), words: int(e.Len+3) / 4, size: int(e.Len)}
			// An address, or the first bytes of one (a prefix).
			addrAt := func(saddr, daddr, size uint32) bool {
				switch {
				case e.Base != expr.PayloadBaseNetworkHeader || e.Len == 0 || e.Len > size:
					return false
				case e.Offset == saddr:
					l.what = "saddr"
				case e.Offset == daddr:
					l.what = "daddr"
				default:
					return false
				}
				return true
			}
			switch {
			case v4() && addrAt(12, 16, 4):
			case e.Base == expr.PayloadBaseNetworkHeader && v4() && e.Len == 1 && e.Offset == 9:
				l.what = "l4proto" // ip protocol
			case v6() && addrAt(8, 24, 16):
			case e.Base == expr.PayloadBaseTransportHeader && e.Len == 2 && e.Offset == 2:
				l.what = "dport"
			}
			clobber(l.start, l.words)
			pending[l.start] = l
		case *expr.Cmp:
			l, ok := pending[reg32(e.Register)]
			delete(pending, reg32(e.Register))
			if ok && l.what == "ctstate" {
				// Only `state & MASK != 0`: the packet is in one of
				// MASK's states; every known bit of it named.
				if e.Op != expr.CmpOpNeq || len(e.Data) != 4 || binary.NativeEndian.Uint32(e.Data) != 0 || l.mask == 0 || r.CtState != nil {
					r.Opaque = true
					continue
				}
				rest := l.mask
				for _, b := range state.CtStateBits {
					if l.mask&b.Bit != 0 {
						r.CtState = append(r.CtState, b.Name)
						rest &^= b.Bit
					}
				}
				if rest != 0 {
					r.CtState, r.Opaque = nil, true
				}
				continue
			}
			if !ok || e.Op != expr.CmpOpEq {
				r.Opaque = true
				continue
			}
			d := e.Data
			switch l.what {
			case "iifname", "oifname":
				name, rest, exact := bytes.Cut(d, []byte{0})
				if !exact || len(bytes.Trim(rest, "\x00")) != 0 || state.CheckIfname(l.what, string(name)) != nil {
					r.Opaque = true // a prefix (mig+), or not a name
					continue
				}
				if l.what == "iifname" {
					set(&r.IifName, string(name))
				} else {
					set(&r.OifName, string(name))
				}
			case "iif", "oif":
				// The index names the interface it has now, in the
				// agent's namespace (the host's): `iif lo` is lo's.
				var ifc *net.Interface
				var err error
				if len(d) == 4 {
					ifc, err = net.InterfaceByIndex(int(binary.NativeEndian.Uint32(d)))
				}
				if len(d) != 4 || err != nil || state.CheckIfname(l.what, ifc.Name) != nil {
					r.Opaque = true
					continue
				}
				if l.what == "iif" {
					set(&r.IifName, ifc.Name)
				} else {
					set(&r.OifName, ifc.Name)
				}
			case "l4proto":
				if len(d) != 1 {
					r.Opaque = true
					continue
				}
				p := state.L4ProtoNames[d[0]]
				if p == "" {
					p = strconv.Itoa(int(d[0]))
				}
				set(&r.L4Proto, p)
			case "protocol":
				switch {
				case family == "inet" && len(d) == 2 && binary.BigEndian.Uint16(d) == unix.ETH_P_IP:
					set(&r.NfProto, "ipv4")
				case family == "inet" && len(d) == 2 && binary.BigEndian.Uint16(d) == unix.ETH_P_IPV6:
					set(&r.NfProto, "ipv6")
				default:
					r.Opaque = true
				}
			case "nfproto":
				switch {
				case family == "inet" && len(d) == 1 && d[0] == unix.NFPROTO_IPV4:
					set(&r.NfProto, "ipv4")
				case family == "inet" && len(d) == 1 && d[0] == unix.NFPROTO_IPV6:
					set(&r.NfProto, "ipv6")
				default:
					r.Opaque = true
				}
			case "saddr", "daddr":
				full := 4
				if v6() {
					full = 16
				}
				bits := l.bits
				if bits == 0 {
					bits = l.size * 8
				}
				if len(d) != l.size {
					r.Opaque = true
					continue
				}
				a, ok := netip.AddrFromSlice(append(append([]byte(nil), d...), make([]byte, full-len(d))...))
				p := netip.PrefixFrom(a, bits)
				switch {
				case !ok || (a.Is4In6() && bits == full*8) || p != p.Masked():
					// An IPv4-mapped address (a prefix of them, as
					// firewalld's RFC3964 rejects of
					// ::ffff:0.0.0.0/96, is read), or a value with
					// bits outside its mask (matches nothing).
					r.Opaque = true
				case bits == full*8 && l.what == "saddr":
					setAddr(&r.Saddr, a)
				case bits == full*8:
					setAddr(&r.Daddr, a)
				case l.what == "saddr":
					setPrefix(&r.SaddrNet, p)
				default:
					setPrefix(&r.DaddrNet, p)
				}
			case "dport":
				// A port only means one in the protocols that have it
				// there; `th dport` alone matches GRE's header too.
				if len(d) != 2 || (r.L4Proto != "tcp" && r.L4Proto != "udp" && r.L4Proto != "sctp" && r.L4Proto != "udplite") {
					r.Opaque = true
					continue
				}
				p := uint16(d[0])<<8 | uint16(d[1])
				if r.Dport != 0 && r.Dport != p {
					r.Opaque = true
					continue
				}
				r.Dport = p
			default:
				r.Opaque = true
			}
		case *expr.Range:
			// A port range (`udp dport 4000-4010`, iptables-nft's
			// `--dport 4000:4010`); any other range is not read.
			l, ok := pending[reg32(e.Register)]
			delete(pending, reg32(e.Register))
			if !ok || l.what != "dport" || e.Op != expr.CmpOpEq || len(e.FromData) != 2 || len(e.ToData) != 2 || r.Dport != 0 || r.Dports != nil ||
				(r.L4Proto != "tcp" && r.L4Proto != "udp" && r.L4Proto != "sctp" && r.L4Proto != "udplite") {
				r.Opaque = true
				continue
			}
			from, to := binary.BigEndian.Uint16(e.FromData), binary.BigEndian.Uint16(e.ToData)
			if from > to {
				r.Opaque = true
				continue
			}
			r.Dports = [][2]uint16{{from, to}}
		case *expr.Lookup:
			// `meta l4proto { icmp, ipv6-icmp }`, `tcp dport { 22,
			// 80, 1000-2000 }`: the set's elements as sets holds them.
			// A verdict map (`ct state vmap { established : accept,
			// ... }`, `meta protocol vmap { ip : jump in4 }`) ends the
			// rule: it stands for one rule per element.
			l, ok := pending[reg32(e.SourceRegister)]
			delete(pending, reg32(e.SourceRegister))
			if e.IsDestRegSet && e.DestRegister == 0 && !e.Invert && ok && sets != nil && vmap == nil && !r.Opaque {
				if rules, ok := expandVmap(r, l, sets(e.SetName)); ok {
					vmap = rules
					continue
				}
			}
			addr := (l.what == "saddr" || l.what == "daddr") && l.bits == 0 && (l.size == 4 && v4() || l.size == 16 && v6())
			if !ok || e.Invert || e.IsDestRegSet || (l.what != "l4proto" && l.what != "dport" && !addr) || sets == nil {
				r.Opaque = true
				continue
			}
			set := sets(e.SetName)
			elems, interval := set.elems, set.interval
			if !set.ok || set.vmap || len(elems) > 2*state.MaxFwSetElements {
				r.Opaque = true
				continue
			}
			if addr {
				field := &r.Saddrs
				if l.what == "daddr" {
					field = &r.Daddrs
				}
				spans, ok := addrSpans(elems, interval, l.size)
				if !ok || len(spans) == 0 || len(spans) > state.MaxFwSetElements || *field != nil {
					r.Opaque = true
					continue
				}
				*field = spans
				continue
			}
			if l.what == "l4proto" {
				if interval || r.L4Proto != "" || r.L4Protos != nil {
					r.Opaque = true
					continue
				}
				for _, el := range elems {
					if len(el.Key) < 1 {
						r.Opaque = true
						break
					}
					p := state.L4ProtoNames[el.Key[0]]
					if p == "" {
						p = strconv.Itoa(int(el.Key[0]))
					}
					r.L4Protos = append(r.L4Protos, p)
				}
				continue
			}
			if r.Dport != 0 || r.Dports != nil || (r.L4Proto != "tcp" && r.L4Proto != "udp" && r.L4Proto != "sctp" && r.L4Proto != "udplite") {
				r.Opaque = true
				continue
			}
			spans, ok := portSpans(elems, interval)
			if !ok || len(spans) == 0 || len(spans) > state.MaxFwSetElements {
				r.Opaque = true
				continue
			}
			r.Dports = spans
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictAccept:
				r.Verdict = "accept"
			case expr.VerdictDrop:
				r.Verdict = "drop"
			case expr.VerdictReturn:
				r.Verdict = "return"
			case expr.VerdictJump:
				r.Verdict = "jump " + e.Chain
			case expr.VerdictGoto:
				r.Verdict = "goto " + e.Chain
			default:
				r.Opaque = true
			}
		case *expr.Reject:
			r.Verdict = "reject"
		case *expr.Match:
			// iptables-nft's xtables matches that narrow a rule the
			// way the native ones above do; any other is Opaque.
			switch m := xtMatch(e); {
			case !m.ok:
				r.Opaque = true
			case m.ctState != nil:
				if r.CtState != nil {
					r.Opaque = true
					continue
				}
				r.CtState = m.ctState
			case m.ports:
				if r.Dport != 0 || r.Dports != nil || r.L4Proto != e.Name {
					r.Opaque = true // the port of another protocol
					continue
				}
				if m.dports[0] == m.dports[1] {
					r.Dport = m.dports[0]
				} else if m.dports != [2]uint16{0, 65535} {
					r.Dports = [][2]uint16{m.dports}
				}
			}
		case *expr.Target:
			// iptables-nft's -j REJECT is the xtables target.
			if e.Name != "REJECT" {
				r.Opaque = true
				continue
			}
			r.Verdict = "reject"
		default:
			// A match or statement not decoded here (xt match or
			// target, lookup, bitwise, range, limit, ct, ...): it may
			// narrow the match, change the packet or end the rule.
			r.Opaque = true
			pending = map[int]load{}
		}
	}
	if vmap != nil && (r.Opaque || r.Verdict != "") {
		// Something after the map's lookup (nothing follows it when
		// the key is in no element): not the rule read above.
		vmap = nil
		r.Opaque = true
	}
	if vmap != nil {
		for i := range vmap {
			if vmap[i].Validate() != nil {
				return []state.FwRule{{Family: family, Table: table, Chain: chain, Opaque: true}}
			}
		}
		return vmap
	}
	if r.Validate() != nil {
		// Not in the form plan compares (a jump to a chain name nft
		// allows but Validate does not): keep the place, not the rule.
		r = state.FwRule{Family: family, Table: table, Chain: chain, Opaque: true}
	}
	return []state.FwRule{r}
}

// expandVmap turns a lookup of the key l holds in verdict map set into
// one rule per element: base (what the rule matched before) with the
// element's key and verdict. Keys read: a conntrack state (`ct state
// vmap`), an inet table's layer-3 protocol (`meta protocol`, `meta
// nfproto`), a layer-4 protocol, a destination port, an interface name;
// one element at a time, at most state.MaxFwSetElements.
func expandVmap(base state.FwRule, l load, set setData) ([]state.FwRule, bool) {
	if !set.ok || !set.vmap || set.interval || len(set.elems) == 0 || len(set.elems) > state.MaxFwSetElements || l.mask != 0 {
		return nil, false
	}
	var out []state.FwRule
	for _, el := range set.elems {
		r := base
		k := el.Key
		switch l.what {
		case "ctstate":
			if len(k) != 4 {
				return nil, false
			}
			name := ""
			for _, b := range state.CtStateBits {
				if binary.NativeEndian.Uint32(k) == b.Bit {
					name = b.Name
				}
			}
			if name == "" || r.CtState != nil {
				return nil, false
			}
			r.CtState = []string{name}
		case "protocol", "nfproto":
			v4, v6 := len(k) == 2 && binary.BigEndian.Uint16(k) == unix.ETH_P_IP, len(k) == 2 && binary.BigEndian.Uint16(k) == unix.ETH_P_IPV6
			if l.what == "nfproto" {
				v4, v6 = len(k) == 1 && k[0] == unix.NFPROTO_IPV4, len(k) == 1 && k[0] == unix.NFPROTO_IPV6
			}
			switch {
			case base.Family != "inet" || r.NfProto != "":
				return nil, false
			case v4:
				r.NfProto = "ipv4"
			case v6:
				r.NfProto = "ipv6"
			default:
				return nil, false
			}
		case "l4proto":
			if len(k) != 1 || r.L4Proto != "" || r.L4Protos != nil {
				return nil, false
			}
			r.L4Proto = state.L4ProtoNames[k[0]]
			if r.L4Proto == "" {
				r.L4Proto = strconv.Itoa(int(k[0]))
			}
		case "dport":
			if len(k) != 2 || r.Dport != 0 || r.Dports != nil || (r.L4Proto != "tcp" && r.L4Proto != "udp" && r.L4Proto != "sctp" && r.L4Proto != "udplite") {
				return nil, false
			}
			r.Dport = binary.BigEndian.Uint16(k)
		case "iifname", "oifname":
			name, rest, exact := bytes.Cut(k, []byte{0})
			if !exact || len(bytes.Trim(rest, "\x00")) != 0 || state.CheckIfname(l.what, string(name)) != nil {
				return nil, false
			}
			if l.what == "iifname" {
				if r.IifName != "" {
					return nil, false
				}
				r.IifName = string(name)
			} else {
				if r.OifName != "" {
					return nil, false
				}
				r.OifName = string(name)
			}
		default:
			return nil, false
		}
		v, ok := vmapVerdict(el.Val)
		if !ok {
			return nil, false
		}
		r.Verdict = v
		out = append(out, r)
	}
	return out, true
}

// vmapVerdict decodes a verdict map element's data: google/nftables
// leaves it raw in Val (the nested NFTA_VERDICT_CODE and _CHAIN
// attributes) and VerdictData nil.
func vmapVerdict(b []byte) (string, bool) {
	code, chain, haveCode := int32(0), "", false
	for len(b) >= 4 {
		n, typ := int(binary.NativeEndian.Uint16(b)), binary.NativeEndian.Uint16(b[2:])&0x3fff // NLA_TYPE_MASK
		if n < 4 || n > len(b) {
			return "", false
		}
		v := b[4:n]
		switch typ {
		case unix.NFTA_VERDICT_CODE:
			if len(v) != 4 {
				return "", false
			}
			code, haveCode = int32(binary.BigEndian.Uint32(v)), true
		case unix.NFTA_VERDICT_CHAIN:
			chain = string(bytes.TrimRight(v, "\x00"))
		}
		b = b[min((n+3)&^3, len(b)):]
	}
	if !haveCode {
		return "", false
	}
	const nfDrop, nfAccept = 0, 1 // NF_DROP, NF_ACCEPT
	switch code {
	case nfAccept:
		return "accept", true
	case nfDrop:
		return "drop", true
	case unix.NFT_RETURN:
		return "return", true
	case unix.NFT_JUMP:
		return "jump " + chain, chain != ""
	case unix.NFT_GOTO:
		return "goto " + chain, chain != ""
	}
	return "", false
}

// xtMatched is what decodeFwRule reads of an xtables match: ok when it
// is one of those below, with the conntrack states it keeps (ctState)
// or the destination ports (dports, tcp and udp); ok alone for one that
// matches every packet (a comment).
type xtMatched struct {
	ok      bool
	ctState []string
	ports   bool // dports is set
	dports  [2]uint16
}

// xtMatch reads iptables-nft's `-m conntrack --ctstate A,B` (revisions
// 1-3; iptables 1.8.9 writes `-m state --state` as it too), `-m state`
// (revision 0, older iptables-nft), `-m comment`, and `-m tcp`/`-m udp`
// with a destination port or range only (older iptables-nft writes `-p
// tcp --dport N` so). The xtables state bits are nft's for invalid,
// established, related and new (1 << (ctinfo + 1), invalid 1); untracked
// is 16 in the state match (XT_STATE_UNTRACKED, 1 << (IP_CT_IS_REPLY +
// 1)) and 256 in the conntrack match (XT_CONNTRACK_STATE_UNTRACKED, 1 <<
// (IP_CT_NUMBER + 3)), which also has SNAT 64 and DNAT 128 (firewalld's
// `--ctstate RELATED,ESTABLISHED,DNAT`; its rich rules' `--ctstate
// NEW,UNTRACKED`).
func xtMatch(m *expr.Match) xtMatched {
	type bit struct {
		name string
		bit  uint32
	}
	stateBits := []bit{{"invalid", 1}, {"established", 2}, {"related", 4}, {"new", 8}, {"untracked", 16}}
	conntrackBits := []bit{{"invalid", 1}, {"established", 2}, {"related", 4}, {"new", 8}, {"snat", 64}, {"dnat", 128}, {"untracked", 256}}
	states := func(mask uint32, bits []bit) xtMatched {
		var out []string
		for _, b := range bits {
			if mask&b.bit != 0 {
				out = append(out, b.name)
				mask &^= b.bit
			}
		}
		if mask != 0 || out == nil {
			return xtMatched{}
		}
		return xtMatched{ok: true, ctState: out}
	}
	conntrack := func(base xt.ConntrackMtinfoBase, mask uint16) xtMatched {
		// --ctstate alone (ConntrackStateAlias: written for -m
		// state), not inverted.
		if base.MatchFlags&^uint16(xt.ConntrackState|xt.ConntrackStateAlias) != 0 || base.MatchFlags&uint16(xt.ConntrackState) == 0 || base.InvertFlags != 0 {
			return xtMatched{}
		}
		return states(uint32(mask), conntrackBits)
	}
	switch info := m.Info.(type) {
	case *xt.ConntrackMtinfo3:
		return conntrack(info.ConntrackMtinfoBase, info.StateMask)
	case *xt.ConntrackMtinfo2:
		return conntrack(info.ConntrackMtinfoBase, info.StateMask)
	case *xt.ConntrackMtinfo1:
		return conntrack(info.ConntrackMtinfoBase, uint16(info.StateMask))
	case *xt.Comment:
		return xtMatched{ok: true}
	case *xt.Tcp:
		if info.SrcPorts != [2]uint16{0, 65535} || info.Option != 0 || info.FlagsMask != 0 || info.InvFlags != 0 || info.DstPorts[0] > info.DstPorts[1] {
			return xtMatched{}
		}
		return xtMatched{ok: true, ports: true, dports: info.DstPorts}
	case *xt.Udp:
		if info.SrcPorts != [2]uint16{0, 65535} || info.InvFlags != 0 || info.DstPorts[0] > info.DstPorts[1] {
			return xtMatched{}
		}
		return xtMatched{ok: true, ports: true, dports: info.DstPorts}
	case *xt.Unknown:
		// struct xt_state_info { unsigned int statemask; }, padded.
		if m.Name == "state" && m.Rev == 0 && len(*info) >= 4 {
			return states(binary.NativeEndian.Uint32((*info)[:4]), stateBits)
		}
	}
	return xtMatched{}
}

// setReader reads the elements of table's sets by name, once each, for
// decodeFwRule: the elements, whether the set holds intervals, and
// whether it could be read.
func setReader(c *nftables.Conn, t *nftables.Table) func(string) setData {
	cache := map[string]setData{}
	return func(name string) setData {
		if r, ok := cache[name]; ok {
			return r
		}
		var r setData
		if set, err := c.GetSetByName(t, name); err == nil && !set.Concatenation && (!set.IsMap || set.DataType.Name == "verdict") {
			if elems, err := c.GetSetElements(set); err == nil {
				r = setData{elems: elems, interval: set.Interval, vmap: set.IsMap, ok: true}
			}
		}
		cache[name] = r
		return r
	}
}

// setData is a set as decodeFwRule reads it: its elements, whether it
// holds intervals, whether it is a verdict map, and whether it could be
// read.
type setData struct {
	elems          []nftables.SetElement
	interval, vmap bool
	ok             bool
}

// addrSpans turns an address set's elements (keys of size bytes: 4 for
// IPv4, 16 for IPv6) into spans From..To, as portSpans does ports: each
// element one address, or, in an interval set (prefixes, ranges), a
// start element and the end element after it (the first address past
// the span; a start with none is open to the last address).
func addrSpans(elems []nftables.SetElement, interval bool, size int) ([][2]netip.Addr, bool) {
	type el struct {
		a   netip.Addr
		end bool
	}
	var l []el
	for _, e := range elems {
		if len(e.Key) != size {
			return nil, false
		}
		a, _ := netip.AddrFromSlice(e.Key)
		l = append(l, el{a, e.IntervalEnd})
	}
	// An end before a start at the same address: the "nothing below"
	// marker before a span that starts at the zero address.
	sort.Slice(l, func(i, j int) bool { return l[i].a.Less(l[j].a) || (l[i].a == l[j].a && l[i].end && !l[j].end) })
	var out [][2]netip.Addr
	if !interval {
		for _, e := range l {
			if e.end {
				return nil, false
			}
			out = append(out, [2]netip.Addr{e.a, e.a})
		}
		return out, true
	}
	last := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if size == 16 {
		last = netip.AddrFrom16([16]byte{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff})
	}
	open, from := false, netip.Addr{}
	for _, e := range l {
		switch {
		case !e.end && !open:
			open, from = true, e.a
		case e.end && open:
			if !e.a.Prev().IsValid() || e.a.Prev().Less(from) {
				return nil, false
			}
			out = append(out, [2]netip.Addr{from, e.a.Prev()})
			open = false
		case e.end && !open:
			// the leading "nothing below" marker (the zero address)
		default:
			return nil, false // two starts in a row
		}
	}
	if open {
		out = append(out, [2]netip.Addr{from, last})
	}
	return out, true
}

// portSpans turns a port set's elements (2-byte keys, big-endian) into
// spans From..To: each element one port, or, in an interval set, a start
// element and the end element after it (the first port past the span; a
// start with none is open to 65535), whatever order the kernel lists
// them in.
func portSpans(elems []nftables.SetElement, interval bool) ([][2]uint16, bool) {
	type el struct {
		port uint16
		end  bool
	}
	var l []el
	for _, e := range elems {
		if len(e.Key) < 2 {
			return nil, false
		}
		l = append(l, el{uint16(e.Key[0])<<8 | uint16(e.Key[1]), e.IntervalEnd})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].port < l[j].port })
	var out [][2]uint16
	if !interval {
		for _, e := range l {
			if e.end {
				return nil, false
			}
			out = append(out, [2]uint16{e.port, e.port})
		}
		return out, true
	}
	open, from := false, uint16(0)
	for _, e := range l {
		switch {
		case !e.end && !open:
			open, from = true, e.port
		case e.end && open:
			if e.port == 0 {
				return nil, false
			}
			out = append(out, [2]uint16{from, e.port - 1})
			open = false
		case e.end && !open:
			// the leading "nothing below" marker (key 0)
		default:
			return nil, false // two starts in a row
		}
	}
	if open {
		out = append(out, [2]uint16{from, 65535})
	}
	return out, true
}

// prefixMask says whether mask (a bitwise's, in network order) is a
// prefix's: ones, then zeros; bits counts the ones.
func prefixMask(mask []byte) (bits int, prefix bool) {
	zeros := false
	for _, b := range mask {
		for i := 7; i >= 0; i-- {
			one := b&(1<<i) != 0
			switch {
			case one && zeros:
				return 0, false
			case one:
				bits++
			default:
				zeros = true
			}
		}
	}
	return bits, bits > 0
}
