package agent

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/state"
)

// TestFwRulesNetns loads rules into ufw's user chains in a fresh network
// namespace, with iptables-nft as ufw 0.36 writes them (the lines of its
// user.rules) and with nft, and checks what FwRules decodes: the plain
// matches exactly, anything that could narrow a match as Opaque, and
// nothing from chains plan does not read.
func TestFwRulesNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	for _, tool := range []string{"iptables-nft", "ip6tables-nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (apt-get install iptables): %v", tool, err)
		}
	}
	ipt := func(args string) { sh(t, append([]string{"iptables-nft"}, strings.Fields(args)...)...) }
	ip6t := func(args string) { sh(t, append([]string{"ip6tables-nft"}, strings.Fields(args)...)...) }
	for _, c := range []string{"ufw-user-input", "ufw-user-forward", "ufw-user-limit", "ufw-not-read"} {
		ipt("-N " + c)
	}
	for _, c := range []string{"ufw6-user-input", "ufw6-user-forward"} {
		ip6t("-N " + c)
	}
	// ufw's own lines (`ufw allow 22/tcp`, `ufw allow proto udp from ..
	// to .. port 4789`, `ufw allow in on mig0`, `ufw allow proto gre
	// ...`, `ufw route allow in/out on mig0`, wireguard's `to any`).
	ipt("-A ufw-user-input -p tcp --dport 22 -j ACCEPT")
	ipt("-A ufw-user-input -p udp -d 198.51.100.1 --dport 4789 -s 198.51.100.2 -j ACCEPT")
	ipt("-A ufw-user-input -i mig0 -j ACCEPT")
	ipt("-A ufw-user-input -p gre -d 198.51.100.1 -s 198.51.100.2 -j ACCEPT")
	ipt("-A ufw-user-input -p udp --dport 51820 -s 198.51.100.2 -j ACCEPT")
	// ufw deny/reject/limit and what narrows.
	ipt("-A ufw-user-input -p udp --dport 4789 -j DROP")
	ipt("-A ufw-user-input -p udp --dport 4790 -j REJECT")
	ipt("-A ufw-user-input -p tcp --dport 2222 -m conntrack --ctstate NEW -j ufw-user-limit")
	ipt("-A ufw-user-input -i mig+ -j ACCEPT")
	ipt("-A ufw-user-input ! -i mig0 -j ACCEPT")
	ipt("-A ufw-user-input -p udp -s 198.51.100.0/24 --dport 4789 -j ACCEPT")
	ipt("-A ufw-user-input -p udp -s 198.51.100.0/25 --dport 4789 -j ACCEPT")
	ipt("-A ufw-user-input -p udp --dport 4789:4790 -j ACCEPT")
	ipt("-A ufw-user-input -i mig0 -m limit --limit 3/min -j ACCEPT")
	ipt("-A ufw-user-input -i mig0 -j RETURN")
	ipt("-A ufw-user-forward -i mig0 -j ACCEPT")
	ipt("-A ufw-user-forward -o mig0 -j ACCEPT")
	ipt("-A ufw-user-limit -j REJECT")
	ipt("-A ufw-not-read -j ACCEPT")
	ip6t("-A ufw6-user-input -p udp -d 2001:db8::1 --dport 4789 -s 2001:db8::2 -j ACCEPT")
	ip6t("-A ufw6-user-forward -o mig0 -j ACCEPT")
	// nft's own syntax in the same chain, and a set.
	sh(t, "nft", "add rule ip filter ufw-user-forward iifname \"mig0\" meta l4proto udp udp dport 53 counter accept")
	sh(t, "nft", "add rule ip filter ufw-user-forward ip protocol gre ip saddr 198.51.100.2 drop")
	sh(t, "nft", "add rule ip filter ufw-user-forward ip saddr { 198.51.100.2, 198.51.100.3 } accept")
	sh(t, "nft", "add rule ip filter ufw-user-forward th dport 4789 accept")
	// Prefixes: nft's own, and firewalld's RFC3964 rejects as
	// ip6tables-nft writes them (an IPv4-mapped prefix among them).
	sh(t, "nft", "add rule ip filter ufw-user-forward ip saddr 10.0.0.0/12 drop")
	// Address sets: an interval one (prefixes, a range, an address) and
	// IPv6's.
	sh(t, "nft", "add rule ip filter ufw-user-forward ip daddr { 10.0.0.0/8, 192.0.2.10-192.0.2.19, 203.0.113.20 } udp dport 4789 accept")
	sh(t, "nft", "add rule ip6 filter ufw6-user-forward ip6 saddr { 2001:db8::/32, ::1 } drop")
	ip6t("-A ufw6-user-forward -d ::ffff:0.0.0.0/96 -j REJECT")
	ip6t("-A ufw6-user-forward -d 2002:e000::/19 -j REJECT")

	rules, err := FwRules()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	a := netip.MustParseAddr
	in := func(r state.FwRule) state.FwRule {
		r.Family, r.Table, r.Chain = "ip", "filter", "ufw-user-input"
		return r
	}
	fwd := func(r state.FwRule) state.FwRule {
		r.Family, r.Table, r.Chain = "ip", "filter", "ufw-user-forward"
		return r
	}
	want := []state.FwRule{
		fwd(state.FwRule{IifName: "mig0", Verdict: "accept"}),
		fwd(state.FwRule{OifName: "mig0", Verdict: "accept"}),
		fwd(state.FwRule{IifName: "mig0", L4Proto: "udp", Dport: 53, Verdict: "accept"}),
		fwd(state.FwRule{L4Proto: "gre", Saddr: a("198.51.100.2"), Verdict: "drop"}),
		fwd(state.FwRule{Saddrs: [][2]netip.Addr{{a("198.51.100.2"), a("198.51.100.2")}, {a("198.51.100.3"), a("198.51.100.3")}}, Verdict: "accept"}),
		fwd(state.FwRule{Opaque: true, Verdict: "accept"}),
		fwd(state.FwRule{SaddrNet: netip.MustParsePrefix("10.0.0.0/12"), Verdict: "drop"}),
		fwd(state.FwRule{Daddrs: [][2]netip.Addr{{a("10.0.0.0"), a("10.255.255.255")}, {a("192.0.2.10"), a("192.0.2.19")}, {a("203.0.113.20"), a("203.0.113.20")}}, L4Proto: "udp", Dport: 4789, Verdict: "accept"}),
		in(state.FwRule{L4Proto: "tcp", Dport: 22, Verdict: "accept"}),
		in(state.FwRule{L4Proto: "udp", Saddr: a("198.51.100.2"), Daddr: a("198.51.100.1"), Dport: 4789, Verdict: "accept"}),
		in(state.FwRule{IifName: "mig0", Verdict: "accept"}),
		in(state.FwRule{L4Proto: "gre", Saddr: a("198.51.100.2"), Daddr: a("198.51.100.1"), Verdict: "accept"}),
		in(state.FwRule{L4Proto: "udp", Saddr: a("198.51.100.2"), Dport: 51820, Verdict: "accept"}),
		in(state.FwRule{L4Proto: "udp", Dport: 4789, Verdict: "drop"}),
		in(state.FwRule{L4Proto: "udp", Dport: 4790, Verdict: "reject"}),                                        // xtables target REJECT
		in(state.FwRule{L4Proto: "tcp", Dport: 2222, CtState: []string{"new"}, Verdict: "jump ufw-user-limit"}), // -m conntrack: an xtables match

		in(state.FwRule{Verdict: "accept", Opaque: true}),
		in(state.FwRule{Verdict: "accept", Opaque: true}),
		in(state.FwRule{L4Proto: "udp", SaddrNet: netip.MustParsePrefix("198.51.100.0/24"), Dport: 4789, Verdict: "accept"}), // a shorter load
		in(state.FwRule{L4Proto: "udp", SaddrNet: netip.MustParsePrefix("198.51.100.0/25"), Dport: 4789, Verdict: "accept"}), // a bitwise
		in(state.FwRule{L4Proto: "udp", Dports: [][2]uint16{{4789, 4790}}, Verdict: "accept"}),                               // a range expression
		in(state.FwRule{IifName: "mig0", Verdict: "accept", Opaque: true}),
		in(state.FwRule{IifName: "mig0", Verdict: "return"}),
		// Read because ufw-user-input jumps to it (ufw-not-read is not).
		{Family: "ip", Table: "filter", Chain: "ufw-user-limit", Verdict: "reject"},
		{Family: "ip6", Table: "filter", Chain: "ufw6-user-forward", OifName: "mig0", Verdict: "accept"},
		{Family: "ip6", Table: "filter", Chain: "ufw6-user-forward", Saddrs: [][2]netip.Addr{{a("::1"), a("::1")}, {a("2001:db8::"), a("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")}}, Verdict: "drop"},
		{Family: "ip6", Table: "filter", Chain: "ufw6-user-forward", DaddrNet: netip.MustParsePrefix("::ffff:0.0.0.0/96"), Verdict: "reject"},
		{Family: "ip6", Table: "filter", Chain: "ufw6-user-forward", DaddrNet: netip.MustParsePrefix("2002:e000::/19"), Verdict: "reject"},
		{Family: "ip6", Table: "filter", Chain: "ufw6-user-input", L4Proto: "udp", Saddr: a("2001:db8::2"), Daddr: a("2001:db8::1"), Dport: 4789, Verdict: "accept"},
	}
	if !reflect.DeepEqual(rules, want) {
		g, _ := json.MarshalIndent(rules, "", " ")
		w, _ := json.MarshalIndent(want, "", " ")
		t.Errorf("FwRules:\n%s\nwant:\n%s\n%s", g, w, sh(t, "nft", "--debug=netlink", "list", "ruleset"))
	}
}

// TestFwRulesFirewalldNetns loads the table firewalld 1.3 wrote in the
// lab (agent/testdata/firewalld-1.3.nft: after the commands plan gives
// OLD) into a fresh network namespace and checks what FwRules decodes of
// the chains plan follows: the zone dispatch, the zone's rich rules, the
// policy's jump; and nothing of firewalld's nat and mangle chains.
func TestFwRulesFirewalldNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	sh(t, "nft", "-f", "testdata/firewalld-1.3.nft")
	rules, err := FwRules()
	if err != nil {
		t.Fatal(err)
	}
	by := map[string][]state.FwRule{}
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
		if r.Family != "inet" || r.Table != "firewalld" || !strings.HasPrefix(r.Chain, "filter_") || strings.HasPrefix(r.Chain, "filter_OUTPUT") {
			t.Errorf("rule of a chain plan does not read: %+v", r)
		}
		c := r.Chain
		r.Family, r.Table, r.Chain = "", "", ""
		by[c] = append(by[c], r)
	}
	a := netip.MustParseAddr
	for chain, want := range map[string][]state.FwRule{
		"filter_INPUT_ZONES":          {{IifName: "mig0", Verdict: "goto filter_IN_trusted"}, {Verdict: "goto filter_IN_public"}},
		"filter_FORWARD_ZONES":        {{IifName: "mig0", Verdict: "goto filter_FWD_trusted"}, {Verdict: "goto filter_FWD_public"}},
		"filter_FORWARD_POLICIES_pre": {{OifName: "mig0", Verdict: "jump filter_FWD_policy_migrate-tunnel"}},
		"filter_FWD_trusted_allow":    {{OifName: "mig0", Verdict: "accept"}},
		"filter_IN_public_allow": {
			{L4Proto: "tcp", Dport: 22, Verdict: "accept"},
			{NfProto: "ipv6", L4Proto: "udp", DaddrNet: netip.MustParsePrefix("fe80::/64"), Dport: 546, Verdict: "accept"},
			{L4Proto: "tcp", Dport: 8080, Verdict: "accept"},
			{NfProto: "ipv4", Daddr: a("198.51.100.1"), Saddr: a("198.51.100.2"), L4Proto: "udp", Dport: 4789, Verdict: "accept"},
			{NfProto: "ipv4", Daddr: a("198.51.100.1"), Saddr: a("198.51.100.2"), L4Proto: "gre", Verdict: "accept"},
			{NfProto: "ipv6", Saddr: a("2001:db8::2"), L4Proto: "udp", Dport: 51820, Verdict: "accept"},
		},
		"filter_IN_public": {
			{Verdict: "jump filter_INPUT_POLICIES_pre"}, {Verdict: "jump filter_IN_public_pre"}, {Verdict: "jump filter_IN_public_log"},
			{Verdict: "jump filter_IN_public_deny"}, {Verdict: "jump filter_IN_public_allow"}, {Verdict: "jump filter_IN_public_post"},
			{Verdict: "jump filter_INPUT_POLICIES_post"}, {L4Protos: []string{"icmp", "ipv6-icmp"}, Verdict: "accept"}, {Verdict: "reject"},
		},
	} {
		if !reflect.DeepEqual(by[chain], want) {
			g, _ := json.Marshal(by[chain])
			w, _ := json.Marshal(want)
			t.Errorf("%s:\n%s\nwant\n%s", chain, g, w)
		}
	}
	// firewalld's RFC 3964 rejects, one anonymous interval set of nine
	// prefixes, read as nine spans (plan takes no client's or peer's
	// address to be in them).
	var rfc3964 *state.FwRule
	for i, r := range by["filter_FORWARD"] {
		if len(r.Daddrs) > 0 {
			rfc3964 = &by["filter_FORWARD"][i]
		}
	}
	if rfc3964 == nil || len(rfc3964.Daddrs) != 9 || rfc3964.Verdict != "reject" || rfc3964.Opaque ||
		rfc3964.Daddrs[0] != [2]netip.Addr{a("::"), a("::ffff:ffff")} || rfc3964.Daddrs[8] != [2]netip.Addr{a("2002:e000::"), a("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff")} {
		g, _ := json.Marshal(by["filter_FORWARD"])
		t.Errorf("filter_FORWARD's RFC 3964 rejects: %s", g)
	}
	if _, ok := by["filter_IN_public_deny"]; ok {
		t.Errorf("rules in an empty chain: %+v", by["filter_IN_public_deny"])
	}
}

// TestFwRulesBoundedNetns: a chain longer than state.MaxFwRules is
// reported as its first rules and one Opaque rule for the rest, so plan
// cannot take what follows for nothing.
func TestFwRulesBoundedNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	var b strings.Builder
	b.WriteString("table ip filter {\n chain ufw-user-input {\n")
	for i := 0; i < state.MaxFwRules+10; i++ {
		fmt.Fprintf(&b, "  tcp dport %d accept\n", 1000+i)
	}
	b.WriteString(" }\n}\n")
	f := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, "nft", "-f", f)
	rules, err := FwRules()
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != state.MaxFwRules+1 {
		t.Fatalf("%d rules, want %d", len(rules), state.MaxFwRules+1)
	}
	if r := rules[state.MaxFwRules-1]; r.Dport != uint16(1000+state.MaxFwRules-1) || r.Opaque {
		t.Errorf("last rule reported: %+v", r)
	}
	if r := rules[state.MaxFwRules]; !r.Opaque || r.Verdict != "" || r.Chain != "ufw-user-input" {
		t.Errorf("the rest: %+v", r)
	}
}
