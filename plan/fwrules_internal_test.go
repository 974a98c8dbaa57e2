package plan

import (
	"net/netip"
	"testing"

	"github.com/opsmigrate/migrate/state"
)

// evalChain's rules for jumps and gotos, on chains of ufw's table: a
// goto or jump that only part of the packets take is harmless only when
// the chain it names accepts them (or, for a jump, lets them pass); one
// all of them take decides. A chain whose rules the facts do not hold
// (not FwRuleChain, or absent) is unknown, however empty it looks.
func TestEvalChainJumps(t *testing.T) {
	in := [3]string{"ip", "filter", "ufw-user-input"}
	fwd := "ufw-user-forward"
	q := fwQuery{iif: "mig0"}
	rule := func(chain string, r state.FwRule) state.FwRule {
		r.Family, r.Table, r.Chain = "ip", "filter", chain
		return r
	}
	for _, tc := range []struct {
		name  string
		rules []state.FwRule
		want  fwResult
	}{
		{"empty", nil, fwPass},
		{"accept", []state.FwRule{rule(in[2], state.FwRule{IifName: "mig0", Verdict: "accept"})}, fwAccept},
		{"goto for all, which accepts", []state.FwRule{rule(in[2], state.FwRule{Verdict: "goto " + fwd}), rule(fwd, state.FwRule{Verdict: "accept"})}, fwAccept},
		{"goto for all, which passes", []state.FwRule{rule(in[2], state.FwRule{Verdict: "goto " + fwd}), rule(in[2], state.FwRule{Verdict: "accept"})}, fwPass},
		{"goto for some, which passes", []state.FwRule{rule(in[2], state.FwRule{L4Proto: "udp", Verdict: "goto " + fwd}), rule(in[2], state.FwRule{Verdict: "accept"})}, fwUnknown},
		{"goto for some, which accepts", []state.FwRule{rule(in[2], state.FwRule{L4Proto: "udp", Verdict: "goto " + fwd}), rule(fwd, state.FwRule{Verdict: "accept"}), rule(in[2], state.FwRule{Verdict: "accept"})}, fwAccept},
		{"jump for some, which passes", []state.FwRule{rule(in[2], state.FwRule{L4Proto: "udp", Verdict: "jump " + fwd}), rule(in[2], state.FwRule{Verdict: "accept"})}, fwAccept},
		{"jump for some, which drops", []state.FwRule{rule(in[2], state.FwRule{L4Proto: "udp", Verdict: "jump " + fwd}), rule(fwd, state.FwRule{Verdict: "drop"}), rule(in[2], state.FwRule{Verdict: "accept"})}, fwUnknown},
		{"jump to a chain not read", []state.FwRule{rule(in[2], state.FwRule{Verdict: "jump ufw-user-limit"}), rule(in[2], state.FwRule{Verdict: "accept"})}, fwUnknown},
		{"return for all", []state.FwRule{rule(in[2], state.FwRule{Verdict: "return"}), rule(in[2], state.FwRule{Verdict: "accept"})}, fwPass},
		{"opaque without verdict", []state.FwRule{rule(in[2], state.FwRule{Opaque: true}), rule(in[2], state.FwRule{Verdict: "accept"})}, fwUnknown},
		{"opaque accept, then none", []state.FwRule{rule(in[2], state.FwRule{Opaque: true, Verdict: "accept"})}, fwPass},
		{"drop on another device", []state.FwRule{rule(in[2], state.FwRule{IifName: "eth0", Verdict: "drop"}), rule(in[2], state.FwRule{Verdict: "accept"})}, fwAccept},
	} {
		f := state.Facts{FwRules: tc.rules, Chains: []state.BaseChain{
			{Family: "ip", Table: "filter", Chain: in[2]}, {Family: "ip", Table: "filter", Chain: fwd}, {Family: "ip", Table: "filter", Chain: "ufw-user-limit"},
		}}
		if got, _ := evalChain(f, in, q, 0); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	f := state.Facts{FwRules: []state.FwRule{rule(in[2], state.FwRule{Verdict: "accept"})}}
	if got, _ := evalChain(f, in, q, 0); got != fwUnknown {
		t.Errorf("a chain the facts do not list: %v", got)
	}
}

// A strict query (status's "certainly dropped"): a rule that may accept
// part of it makes it unknown; a drop or reject for all of it, reached
// with nothing accepted before, is fwDrop, also through a jump; without
// strict the same chain is only not accepted (unknown).
func TestEvalChainStrict(t *testing.T) {
	in := [3]string{"ip", "filter", "ufw-user-forward"}
	sub := "ufw-user-input"
	q := fwQuery{iif: "eth0", oif: "mig0", l4proto: "tcp", dport: 8080, strict: true}
	rule := func(chain string, r state.FwRule) state.FwRule {
		r.Family, r.Table, r.Chain = "ip", "filter", chain
		return r
	}
	for _, tc := range []struct {
		name        string
		rules       []state.FwRule
		strict, lax fwResult
	}{
		{"empty", nil, fwPass, fwPass},
		{"another port accepted", []state.FwRule{rule(in[2], state.FwRule{L4Proto: "tcp", Dport: 22, Verdict: "accept"})}, fwPass, fwPass},
		{"an opaque accept", []state.FwRule{rule(in[2], state.FwRule{Opaque: true, Verdict: "accept"})}, fwUnknown, fwPass},
		{"a reject for all", []state.FwRule{rule(in[2], state.FwRule{Verdict: "reject"})}, fwDrop, fwUnknown},
		{"an opaque accept, then a reject", []state.FwRule{rule(in[2], state.FwRule{Opaque: true, Verdict: "accept"}), rule(in[2], state.FwRule{Verdict: "reject"})}, fwUnknown, fwUnknown},
		{"a jump to a drop for all", []state.FwRule{rule(in[2], state.FwRule{Verdict: "jump " + sub}), rule(sub, state.FwRule{Verdict: "drop"})}, fwDrop, fwUnknown},
		{"the service's port accepted", []state.FwRule{rule(in[2], state.FwRule{L4Proto: "tcp", Dport: 8080, Verdict: "accept"})}, fwAccept, fwAccept},
	} {
		f := state.Facts{FwRules: tc.rules, Chains: []state.BaseChain{{Family: "ip", Table: "filter", Chain: in[2]}, {Family: "ip", Table: "filter", Chain: sub}}}
		if got, _ := evalChain(f, in, q, 0); got != tc.strict {
			t.Errorf("%s, strict: %v, want %v", tc.name, got, tc.strict)
		}
		lax := q
		lax.strict = false
		if got, _ := evalChain(f, in, lax, 0); got != tc.lax {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.lax)
		}
	}
}

// TestEvalChainBounded: chains that jump to each other over and over
// (each of 16 chains jumps 64 times to the next: 64^16 paths) end in
// unknown within evalChain's step budget instead of running for ever.
func TestEvalChainBounded(t *testing.T) {
	f := state.Facts{}
	name := func(i int) string { return "c" + string(rune('a'+i)) }
	for i := 0; i < 17; i++ {
		f.Chains = append(f.Chains, state.BaseChain{Family: "inet", Table: "t", Chain: name(i), Read: true})
		if i == 16 {
			break
		}
		for j := 0; j < 64; j++ {
			// A jump only part of the packets take (a port): the
			// walk goes into it, then on to the next rule.
			f.FwRules = append(f.FwRules, state.FwRule{Family: "inet", Table: "t", Chain: name(i), L4Proto: "tcp", Dport: uint16(j + 1), Verdict: "jump " + name(i+1)})
		}
	}
	if res, _ := evalChain(f, [3]string{"inet", "t", name(0)}, fwQuery{iif: "mig0"}, 0); res != fwUnknown {
		t.Errorf("got %v, want unknown", res)
	}
}

// Address prefixes (SaddrNet, DaddrNet): a rule for a prefix the query's
// address is outside of is not about it (firewalld's RFC3964 rejects of
// ::ffff:0.0.0.0/96 and 2002::/16 prefixes before its zones); one whose
// prefix holds the address covers it; one about an address the query
// does not name may be about some of its packets.
func TestEvalChainPrefixes(t *testing.T) {
	ch := [3]string{"ip6", "filter", "FORWARD"}
	p := netip.MustParsePrefix
	svc := netip.MustParseAddr("2001:db8:100::10")
	rule := func(r state.FwRule) state.FwRule {
		r.Family, r.Table, r.Chain = ch[0], ch[1], ch[2]
		return r
	}
	rfc3964 := []state.FwRule{
		rule(state.FwRule{DaddrNet: p("::ffff:0.0.0.0/96"), Verdict: "reject"}),
		rule(state.FwRule{DaddrNet: p("2002:e000::/19"), Verdict: "reject"}),
	}
	for _, tc := range []struct {
		name  string
		rules []state.FwRule
		q     fwQuery
		want  fwResult
	}{
		{"rejects of other prefixes, then an accept", append(rfc3964, rule(state.FwRule{OifName: "mig0", Verdict: "accept"})), fwQuery{oif: "mig0", daddr: svc}, fwAccept},
		{"a reject of the address's prefix", append([]state.FwRule{rule(state.FwRule{DaddrNet: p("2001:db8:100::/48"), Verdict: "reject"})}, rule(state.FwRule{OifName: "mig0", Verdict: "accept"})), fwQuery{oif: "mig0", daddr: svc}, fwUnknown},
		{"an accept of the address's prefix", []state.FwRule{rule(state.FwRule{DaddrNet: p("2001:db8:100::/48"), Verdict: "accept"})}, fwQuery{oif: "mig0", daddr: svc}, fwAccept},
		{"an accept of another prefix", []state.FwRule{rule(state.FwRule{DaddrNet: p("2001:db8:200::/48"), Verdict: "accept"})}, fwQuery{oif: "mig0", daddr: svc}, fwPass},
		{"rejects of addresses no peer has, the query's address not known", append(rfc3964, rule(state.FwRule{OifName: "mig0", Verdict: "accept"})), fwQuery{oif: "mig0"}, fwAccept},
		{"a reject of a private prefix, the query's address not known", append([]state.FwRule{rule(state.FwRule{DaddrNet: p("fc00::/7"), Verdict: "reject"})}, rule(state.FwRule{OifName: "mig0", Verdict: "accept"})), fwQuery{oif: "mig0"}, fwUnknown},
		{"a reject of 6to4 of a public prefix, the query's address not known", append([]state.FwRule{rule(state.FwRule{DaddrNet: p("2002:c633:6400::/40"), Verdict: "reject"})}, rule(state.FwRule{OifName: "mig0", Verdict: "accept"})), fwQuery{oif: "mig0"}, fwUnknown},
		{"an accept of a set holding the address", []state.FwRule{rule(state.FwRule{Daddrs: [][2]netip.Addr{{netip.MustParseAddr("2001:db8:100::1"), netip.MustParseAddr("2001:db8:100::ff")}}, Verdict: "accept"})}, fwQuery{oif: "mig0", daddr: svc}, fwAccept},
		{"a reject of a set without the address", append([]state.FwRule{rule(state.FwRule{Daddrs: [][2]netip.Addr{{netip.MustParseAddr("2001:db8:200::1"), netip.MustParseAddr("2001:db8:200::1")}}, Verdict: "reject"})}, rule(state.FwRule{OifName: "mig0", Verdict: "accept"})), fwQuery{oif: "mig0", daddr: svc}, fwAccept},
		{"a reject of RFC 3964's prefixes as one set (firewalld's nftables backend), the query's address not known", append([]state.FwRule{rule(state.FwRule{Daddrs: [][2]netip.Addr{
			{netip.MustParseAddr("::"), netip.MustParseAddr("::ffff:ffff")},
			{netip.MustParseAddr("::ffff:0.0.0.0"), netip.MustParseAddr("::ffff:255.255.255.255")},
			{netip.MustParseAddr("2002::"), netip.MustParseAddr("2002:ff:ffff:ffff:ffff:ffff:ffff:ffff")},
			{netip.MustParseAddr("2002:a00::"), netip.MustParseAddr("2002:aff:ffff:ffff:ffff:ffff:ffff:ffff")},
			{netip.MustParseAddr("2002:e000::"), netip.MustParseAddr("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff")},
		}, Verdict: "reject"})}, rule(state.FwRule{OifName: "mig0", Verdict: "accept"})), fwQuery{oif: "mig0"}, fwAccept},
		{"a reject of a set, the query's address not known", append([]state.FwRule{rule(state.FwRule{Daddrs: [][2]netip.Addr{{netip.MustParseAddr("2001:db8:200::1"), netip.MustParseAddr("2001:db8:200::1")}}, Verdict: "reject"})}, rule(state.FwRule{OifName: "mig0", Verdict: "accept"})), fwQuery{oif: "mig0"}, fwUnknown},
		{"an accept of a source prefix, the query's source not known", []state.FwRule{rule(state.FwRule{SaddrNet: p("2001:db8::/32"), Verdict: "accept"})}, fwQuery{oif: "mig0", daddr: svc}, fwPass},
	} {
		f := state.Facts{FwRules: tc.rules, Chains: []state.BaseChain{{Family: ch[0], Table: ch[1], Chain: ch[2], Hook: "forward", Type: "filter", Policy: "accept"}}}
		if got, _ := evalChain(f, ch, tc.q, 0); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestUnicastless(t *testing.T) {
	for p, want := range map[string]bool{
		"127.0.0.0/8": true, "127.0.0.1/32": true, "224.0.0.0/4": true, "255.255.255.255/32": true, "0.0.0.0/8": true,
		"10.0.0.0/8": false, "192.0.2.0/24": false, "0.0.0.0/0": false, "96.0.0.0/3": false,
		"::/96": true, "::1/128": true, "::ffff:0.0.0.0/96": true, "fe80::/64": true, "ff02::1/128": true,
		"2002::/24": true, "2002:a00::/24": true, "2002:7f00::/24": true, "2002:ac10::/28": true, "2002:c0a8::/32": true,
		"2002:a9fe::/32": true, "2002:e000::/19": true,
		"2002::/16": false, "2002:c633:6400::/40": false, "2001:db8::/32": false, "fc00::/7": false, "::/0": false, "::/95": false,
	} {
		if got := unicastless(netip.MustParsePrefix(p)); got != want {
			t.Errorf("unicastless(%s) = %v, want %v", p, got, want)
		}
	}
}
