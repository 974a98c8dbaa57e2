package agent

import (
	"bytes"
	"net/netip"
	"sort"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/state"
)

// FwRules reads the rules of the chains state.FwRulesRead names (those
// state.FwRuleChain names, and base chains at the forward hook with
// policy drop), at
// most state.MaxFwRules of each (the first ones, in order) and
// state.MaxFwRulesTotal in all, each decoded by decodeFwRule. A chain cut
// short ends in one Opaque rule without verdict (what follows is not
// known). Other chains' rules are not read.
func FwRules() ([]state.FwRule, error) {
	_, rules, err := ForeignFirewall("")
	return rules, err
}

func fwRules(c *nftables.Conn, chains []*nftables.Chain, own string) ([]state.FwRule, error) {
	var out []state.FwRule
	total := 0
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name == own {
			continue
		}
		family := familyName(ch.Table.Family)
		forwardDrop := ch.Hooknum != nil && hookName(ch.Table.Family, *ch.Hooknum) == "forward" && ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop
		if !forwardDrop && !state.FwRuleChain(family, ch.Table.Name, ch.Name) {
			continue
		}
		rest := state.FwRule{Family: family, Table: ch.Table.Name, Chain: ch.Name, Opaque: true}
		if total >= state.MaxFwRulesTotal {
			out = append(out, rest)
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, err
		}
		cut := len(rules) > state.MaxFwRules
		if cut {
			rules = rules[:state.MaxFwRules]
		}
		for _, r := range rules {
			out = append(out, decodeFwRule(family, ch.Table.Name, ch.Name, r.Exprs))
		}
		if cut {
			out = append(out, rest)
		}
		total += len(rules)
	}
	sort.SliceStable(out, func(i, j int) bool {
		return chainLess(out[i].Family, out[i].Table, out[i].Chain, out[j].Family, out[j].Table, out[j].Chain)
	})
	return out, nil
}

// load is what a register holds, waiting for the cmp that reads it.
type load struct {
	what  string // iifname, oifname, l4proto, nfproto, saddr, daddr, dport, other
	start int    // first 32-bit register
	words int
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
// single address, and --dport with a single port, and nft's own for the
// same (meta iifname/oifname/l4proto/nfproto, ip/ip6 saddr/daddr, ip
// protocol, tcp/udp dport): a load into a register followed by `cmp eq`
// of that register. Counters and log statements do not change what a
// rule matches; its verdict (or reject) ends it. Anything else makes the
// rule Opaque: a cmp that is not `eq` (`! -i`, ranges), a cmp of a
// register no known load wrote (as after an expression google/nftables
// does not decode, which it drops from the list), an interface prefix
// (`-i mig+`), an address with a mask (a prefix, which iptables-nft
// writes as a shorter load or a bitwise), sets, xtables matches and
// targets other than REJECT, limits, ct state, other verdicts...
func decodeFwRule(family, table, chain string, exprs []expr.Any) state.FwRule {
	r := state.FwRule{Family: family, Table: table, Chain: chain}
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
			case expr.MetaKeyL4PROTO:
				l.what = "l4proto"
			case expr.MetaKeyNFPROTO:
				l.what = "nfproto"
			default:
				l.words = 4
			}
			clobber(l.start, l.words)
			pending[l.start] = l
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				r.Opaque = true
				pending = map[int]load{}
				continue
			}
			l := load{what: "other", start: reg32(e.DestRegister), words: int(e.Len+3) / 4}
			switch {
			case e.Base == expr.PayloadBaseNetworkHeader && v4() && e.Len == 4 && e.Offset == 12:
				l.what = "saddr"
			case e.Base == expr.PayloadBaseNetworkHeader && v4() && e.Len == 4 && e.Offset == 16:
				l.what = "daddr"
			case e.Base == expr.PayloadBaseNetworkHeader && v4() && e.Len == 1 && e.Offset == 9:
				l.what = "l4proto" // ip protocol
			case e.Base == expr.PayloadBaseNetworkHeader && v6() && e.Len == 16 && e.Offset == 8:
				l.what = "saddr"
			case e.Base == expr.PayloadBaseNetworkHeader && v6() && e.Len == 16 && e.Offset == 24:
				l.what = "daddr"
			case e.Base == expr.PayloadBaseTransportHeader && e.Len == 2 && e.Offset == 2:
				l.what = "dport"
			}
			clobber(l.start, l.words)
			pending[l.start] = l
		case *expr.Cmp:
			l, ok := pending[reg32(e.Register)]
			delete(pending, reg32(e.Register))
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
				a, ok := netip.AddrFromSlice(d)
				if !ok || (len(d) == 16 && a.Is4In6()) {
					r.Opaque = true
					continue
				}
				if l.what == "saddr" {
					setAddr(&r.Saddr, a)
				} else {
					setAddr(&r.Daddr, a)
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
	if r.Validate() != nil {
		// Not in the form plan compares (a jump to a chain name nft
		// allows but Validate does not): keep the place, not the rule.
		r = state.FwRule{Family: family, Table: table, Chain: chain, Opaque: true}
	}
	return r
}
