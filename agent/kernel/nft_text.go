package kernel

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/opsmigrate/migrate/state"
	"golang.org/x/sys/unix"
)

// CanonicalText is what `nft list table inet NAME` prints, then `nft list
// table arp NAME` when the spec has one, for a fresh table of the spec
// (nftables 1.0.6): sets with their type, flags and elements, chains with
// their hook, priority and policy, and the rules, every counter at zero.
// Set elements are sorted by their text (nft lists them in the kernel's
// order). It is pure: the golden files in testdata/nft are checked
// against it without root, and against the kernel's listing as root
// (TestNftGoldenKernel), so they change exactly when the rules do.
func CanonicalText(name string, spec state.NftSpec) (string, error) {
	return canonicalTextLayout(name, spec, layoutCurrent)
}

// canonicalTextLayout is CanonicalText for the rules of a given layout.
func canonicalTextLayout(name string, spec state.NftSpec, layout nftLayout) (string, error) {
	r, err := renderLayout(name, spec, layout)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, t := range r.tables() {
		t.writeText(&b)
	}
	return b.String(), nil
}

func (r *renderedTable) writeText(b *strings.Builder) {
	family := map[nftables.TableFamily]string{nftables.TableFamilyINet: "inet", nftables.TableFamilyARP: "arp"}[r.table.Family]
	fmt.Fprintf(b, "table %s %s {\n", family, r.table.Name)
	var blocks []string
	for _, o := range r.objs {
		blocks = append(blocks, objText(o))
	}
	for i, s := range r.sets {
		blocks = append(blocks, setText(s, r.elems[i]))
	}
	comment, _ := userdata.GetString(r.tag, userdata.TypeComment)
	byChain := map[*nftables.Chain][]string{}
	for _, m := range r.model() {
		var words []string
		for _, w := range strings.Fields(m.text) {
			words = append(words, w)
			if w == "counter" {
				words = append(words, "packets", "0", "bytes", "0")
			}
		}
		byChain[m.chain] = append(byChain[m.chain], fmt.Sprintf("\t\t%s comment %q\n", strings.Join(words, " "), comment))
	}
	for _, c := range r.chains {
		var cb strings.Builder
		fmt.Fprintf(&cb, "\tchain %s {\n", c.Name)
		if c.Hooknum != nil {
			policy := "accept"
			if c.Policy != nil && *c.Policy == nftables.ChainPolicyDrop {
				policy = "drop"
			}
			fmt.Fprintf(&cb, "\t\ttype %s hook %s priority %s; policy %s;\n", c.Type, hookName(r.table.Family, *c.Hooknum), prioText(*c.Hooknum, int(*c.Priority)), policy)
		}
		for _, l := range byChain[c] {
			cb.WriteString(l)
		}
		cb.WriteString("\t}\n")
		blocks = append(blocks, cb.String())
	}
	b.WriteString(strings.Join(blocks, "\n"))
	b.WriteString("}\n")
}

func setText(s *nftables.Set, elems []nftables.SetElement) string {
	var b strings.Builder
	kind, typ := "set", s.KeyType.Name
	if s.IsMap {
		kind, typ = "map", typ+" : "+s.DataType.Name
	}
	fmt.Fprintf(&b, "\t%s %s {\n\t\ttype %s\n", kind, s.Name, typ)
	if s.Size > 0 {
		fmt.Fprintf(&b, "\t\tsize %d\n", s.Size)
	}
	var flags []string
	if s.Dynamic {
		flags = append(flags, "dynamic")
	}
	if s.HasTimeout {
		flags = append(flags, "timeout")
	}
	if len(flags) > 0 {
		fmt.Fprintf(&b, "\t\tflags %s\n", strings.Join(flags, ","))
	}
	if s.Counter {
		b.WriteString("\t\tcounter\n")
	}
	if len(elems) > 0 {
		var items []string
		for _, e := range elems {
			item := dataText(s.KeyType.Name, e.Key)
			switch {
			case e.VerdictData != nil:
				item += " : " + verdictText(e.VerdictData)
			case s.IsMap:
				item += " : " + dataText(s.DataType.Name, e.Val)
			}
			if s.Counter {
				item += " counter packets 0 bytes 0"
			}
			items = append(items, item)
		}
		sort.Strings(items)
		// nft breaks the line after every element, or after every
		// second one of a set of IPv4 addresses.
		per := 1
		if s.KeyType.Name == nftables.TypeIPAddr.Name {
			per = 2
		}
		b.WriteString("\t\telements = { ")
		for i, it := range items {
			if i > 0 {
				if i%per == 0 {
					b.WriteString(",\n\t\t\t     ")
				} else {
					b.WriteString(", ")
				}
			}
			b.WriteString(it)
		}
		b.WriteString(" }\n")
	}
	b.WriteString("\t}\n")
	return b.String()
}

// dataText prints a key or a value of type typ ("ipv4_addr . inet_proto
// . inet_service"): each field padded to 4 bytes, as serviceKey makes them.
func dataText(typ string, data []byte) string {
	var out []string
	for _, f := range strings.Split(typ, " . ") {
		n := 4
		if f == nftables.TypeIP6Addr.Name {
			n = 16
		}
		if len(data) < n {
			return fmt.Sprintf("<%s: %x>", typ, data)
		}
		v := data[:n]
		data = data[n:]
		switch f {
		case nftables.TypeIPAddr.Name, nftables.TypeIP6Addr.Name:
			a, _ := netip.AddrFromSlice(v)
			out = append(out, a.String())
		case nftables.TypeInetProto.Name:
			out = append(out, map[byte]string{6: "tcp", 17: "udp", 47: "gre"}[v[0]])
		case nftables.TypeInetService.Name:
			out = append(out, strconv.Itoa(int(binary.BigEndian.Uint16(v))))
		default:
			out = append(out, fmt.Sprintf("%x", v))
		}
	}
	return strings.Join(out, " . ")
}

func verdictText(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}

// hookName: the arp family numbers its hooks apart (see nfARPIn).
func hookName(f nftables.TableFamily, h nftables.ChainHook) string {
	if f == nftables.TableFamilyARP {
		return map[nftables.ChainHook]string{0: "input", 1: "output", 2: "forward"}[h]
	}
	return map[nftables.ChainHook]string{0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}[h]
}

// prioText prints a priority as nft does: by the name of a standard
// priority valid at the hook, with an offset of at most 10, else as a
// number.
func prioText(h nftables.ChainHook, p int) string {
	for _, s := range []struct {
		name  string
		prio  int
		hooks []nftables.ChainHook // nil: any hook
	}{
		{"raw", -300, nil}, {"mangle", -150, nil}, {"dstnat", -100, []nftables.ChainHook{*nftables.ChainHookPrerouting}},
		{"filter", 0, nil}, {"security", 50, nil}, {"srcnat", 100, []nftables.ChainHook{*nftables.ChainHookPostrouting}},
	} {
		if s.hooks != nil && s.hooks[0] != h {
			continue
		}
		switch d := p - s.prio; {
		case d == 0:
			return s.name
		case d > 0 && d <= 10:
			return fmt.Sprintf("%s + %d", s.name, d)
		case d < 0 && d >= -10:
			return fmt.Sprintf("%s - %d", s.name, -d)
		}
	}
	return strconv.Itoa(p)
}

// nftDuration prints a duration as nft does: 3m, 1h30m, 10s.
func nftDuration(d time.Duration) string {
	var b strings.Builder
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.d
		}
	}
	if b.Len() == 0 {
		return "0s"
	}
	return b.String()
}

// objText is a stateful object as nft 1.0.6 lists it: objects come first
// in a table, and a ct timeout's policy shows only the values that differ
// from nft's defaults (the kernel's).
func objText(o *nftables.NamedObj) string {
	ct, ok := o.Obj.(*expr.CtTimeout)
	if !ok {
		return fmt.Sprintf("\t# object %s of an unknown kind\n", o.Name)
	}
	proto := map[uint8]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp"}[ct.L4Proto]
	l3 := map[uint16]string{unix.NFPROTO_INET: "inet", unix.NFPROTO_IPV4: "ip", unix.NFPROTO_IPV6: "ip6"}[ct.L3Proto]
	defaults := kernelTCPTimeouts
	names := map[uint16]string{expr.CtStateTCPSYNSENT: "syn_sent", expr.CtStateTCPSYNRECV: "syn_recv", expr.CtStateTCPESTABLISHED: "established",
		expr.CtStateTCPFINWAIT: "fin_wait", expr.CtStateTCPCLOSEWAIT: "close_wait", expr.CtStateTCPLASTACK: "last_ack", expr.CtStateTCPTIMEWAIT: "time_wait",
		expr.CtStateTCPCLOSE: "close", expr.CtStateTCPSYNSENT2: "syn_sent2", expr.CtStateTCPRETRANS: "retrans", expr.CtStateTCPUNACK: "unack"}
	var keys []int
	for k, v := range ct.Policy {
		if ct.L4Proto == unix.IPPROTO_TCP && defaults[k] != v {
			// nft lists a value only when it differs from its own
			// defaults, which are the kernel's.
			keys = append(keys, int(k))
		}
	}
	sort.Ints(keys)
	var pol []string
	for _, k := range keys {
		pol = append(pol, fmt.Sprintf("%s : %d", names[uint16(k)], ct.Policy[uint16(k)]))
	}
	return fmt.Sprintf("\tct timeout %s {\n\t\tprotocol %s\n\t\tl3proto %s\n\t\tpolicy = { %s }\n\t}\n", o.Name, proto, l3, strings.Join(pol, ", "))
}
