package kernel

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/state"
)

func needNft(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft CLI not found")
	}
}

func oldSpec() state.NftSpec {
	return state.NftSpec{
		Role:      "old",
		TunnelDev: "mig0",
		Mark:      0x20000,
		Services: []state.NftService{
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 8080, Percent: 100},
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53, Percent: 100},
			{Addr: netip.MustParseAddr("198.51.100.11"), Proto: "tcp", Port: 25, Percent: 10},
			{Addr: netip.MustParseAddr("198.51.100.11"), Proto: "tcp", Port: 587, Percent: 50},
			{Addr: netip.MustParseAddr("2001:db8::10"), Proto: "tcp", Port: 25, Percent: 100},
			{Addr: netip.MustParseAddr("2001:db8::11"), Proto: "udp", Port: 53, Percent: 50},
		},
		Accounted: []state.NftService{
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 8080},
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 9000}, // draining
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53},
			{Addr: netip.MustParseAddr("198.51.100.11"), Proto: "tcp", Port: 25},
			{Addr: netip.MustParseAddr("198.51.100.11"), Proto: "tcp", Port: 587},
			{Addr: netip.MustParseAddr("2001:db8::10"), Proto: "tcp", Port: 25},
			{Addr: netip.MustParseAddr("2001:db8::11"), Proto: "udp", Port: 53},
		},
		Underlay: &state.NftUnderlay{Proto: "udp", Port: 4789, Local: netip.MustParseAddr("192.0.2.1"), Peer: netip.MustParseAddr("192.0.2.2")},
	}
}

func nftFactsOf(t *testing.T, h *Host, name string) state.Facts {
	t.Helper()
	return facts(t, h, state.FactsRequest{NftTable: name})
}

func TestNftOldRole(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: oldSpec()}
	obj := state.Object{Nft: &tbl}
	apply(t, h, create(obj))

	out := run(t, "nft", "list", "ruleset")
	t.Logf("ruleset:\n%s", out)
	// Each line lists the spellings of nft versions: "a|b" (1.0.6 prints
	// "tcp flags syn / fin,syn,rst,ack" and drops the "meta nfproto"
	// dependency; newer ones print "tcp flags & (...) == syn").
	for _, w := range []string{
		"set svc4 {\n\t\ttype ipv4_addr . inet_proto . inet_service",
		"set svc6 {\n\t\ttype ipv6_addr . inet_proto . inet_service",
		"map canary4 {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict",
		"map canary6 {\n\t\ttype ipv6_addr . inet_proto . inet_service : verdict",
		"set acct4 {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tcounter",
		"set flows6 {\n\t\ttype ipv6_addr . inet_proto . inet_service\n\t\tcounter",
		"198.51.100.10 . tcp . 8080",
		"198.51.100.10 . udp . 53",
		"198.51.100.11 . tcp . 25 : jump canary_10",
		"198.51.100.11 . tcp . 587 : jump canary_50",
		"elements = { 2001:db8::11 . udp . 53 : jump canary_50 }",
		"198.51.100.10 . tcp . 9000 counter packets 0 bytes 0",
		"2001:db8::10 . tcp . 25",
		"chain canary_10 {\n\t\tnumgen random mod 100 < 10 ct mark set ct mark | 0x00020000 ct timeout set \"moved_tcp\" meta mark set meta mark | 0x00020000 counter",
		"chain canary_50 {\n\t\tnumgen random mod 100 < 50 ct mark set",
		"type filter hook prerouting priority mangle; policy accept;",
		"type filter hook forward priority mangle; policy accept;",
		"type filter hook prerouting priority mangle; policy accept;\n\t\tudp dport 4789 ip daddr 192.0.2.1 ip saddr != 192.0.2.2 counter packets 0 bytes 0 drop",
		`iifname "mig0" ct state new ct mark set ct mark | 0x00020000 ct timeout set "moved_tcp" counter`,
		`iifname "mig0" return`,
		"ct mark & 0x00020000 == 0x00020000 meta mark set meta mark | 0x00020000 return",
		"ct state != new return",
		"tcp flags != syn / fin,syn,rst,ack goto pickup|tcp flags & (fin | syn | rst | ack) != syn goto pickup",
		"chain pickup {\n\t\tsocket wildcard 0 return",
		"ip daddr . meta l4proto . th dport @svc4 ct mark set ct mark | 0x00020000 ct timeout set \"moved_tcp\" meta mark set meta mark | 0x00020000 counter packets 0 bytes 0 return comment \"migrate:" + ruleDigest(oldSpec()) + "\"\n\t\tip6 daddr",
		"ip daddr . meta l4proto . th dport @svc4 ct mark set ct mark | 0x00020000 ct timeout set \"moved_tcp\" meta mark set meta mark | 0x00020000 counter packets 0 bytes 0 return",
		"ip6 daddr . meta l4proto . th dport @svc6 ct mark set ct mark | 0x00020000 ct timeout set \"moved_tcp\" meta mark set meta mark | 0x00020000 counter packets 0 bytes 0 return",
		"ip daddr . meta l4proto . th dport vmap @canary4",
		"ip6 daddr . meta l4proto . th dport vmap @canary6",
		"tcp option maxseg size set rt mtu counter",
		`oifname "mig0" ct state new ip daddr . meta l4proto . th dport @flows4`,
		`oifname "mig0" ip daddr . meta l4proto . th dport @acct4`,
		`oifname "mig0" ct state new ip6 daddr . meta l4proto . th dport @flows6`,
		`oifname "mig0" ip6 daddr . meta l4proto . th dport @acct6`,
		"udp dport 4789 ip daddr 192.0.2.1 ip saddr != 192.0.2.2 counter packets 0 bytes 0 drop",
		`comment "migrate:` + ruleDigest(tbl.Spec) + `"`,
	} {
		found := false
		for _, alt := range strings.Split(w, "|") {
			found = found || strings.Contains(out, alt)
		}
		if !found {
			t.Errorf("ruleset lacks %q", w)
		}
	}
	if strings.Contains(out, "table arp") {
		t.Errorf("role old wrote an arp table")
	}
	if n := strings.Count(out, `comment "migrate:`); n != RenderRuleCount(tbl.Spec) || n != 20 {
		t.Errorf("%d tagged rules, RenderRuleCount %d", n, RenderRuleCount(tbl.Spec))
	}

	f := nftFactsOf(t, h, "migrate")
	if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(obj) {
		t.Fatalf("facts: %v drift %q", f.Nft, f.NftDrift)
	}
	if f.Stats == nil || len(f.Stats.Counters) != len(tbl.Spec.Accounted) {
		t.Fatalf("stats: %+v", f.Stats)
	}
	for _, s := range tbl.Spec.Accounted {
		if _, ok := f.Stats.Counters[s.Key()]; !ok {
			t.Errorf("no counter for %s: %v", s.Key(), f.Stats.Counters)
		}
	}
	// Applying the same table again is a no-op (counters kept).
	apply(t, h, create(obj))

	// A rule added by hand is drift.
	run(t, "nft", "add", "rule", "inet", "migrate", "prerouting", "counter")
	f = nftFactsOf(t, h, "migrate")
	if f.NftDrift == "" || f.Nft == nil || f.Nft.Name != "migrate" || f.Nft.Family != "inet" || f.Nft.Spec.Role != "" {
		t.Fatalf("no drift after a hand-made rule: %v %q", f.Nft, f.NftDrift)
	}
	t.Logf("drift: %s", f.NftDrift)
	if !strings.Contains(f.NftDrift, "no migrate tag") {
		t.Errorf("drift reason: %s", f.NftDrift)
	}
	// Stats are still read from a drifted table, and are not drift.
	if f.Stats == nil || len(f.Stats.Counters) != len(tbl.Spec.Accounted) {
		t.Errorf("stats of a drifted table: %+v", f.Stats)
	}

	// Update to another spec replaces the drifted table atomically.
	spec2 := oldSpec()
	spec2.Services = spec2.Services[:1]
	spec2.Accounted = spec2.Accounted[:1]
	spec2.Underlay = nil
	spec2.Mark = 0x40000
	tbl2 := state.NftTable{Family: "inet", Name: "migrate", Spec: spec2}
	apply(t, h, update(state.Object{Nft: f.Nft}, state.Object{Nft: &tbl2}))
	f = nftFactsOf(t, h, "migrate")
	if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(state.Object{Nft: &tbl2}) {
		t.Fatalf("after update facts: %v drift %q", f.Nft, f.NftDrift)
	}
	out = run(t, "nft", "list", "ruleset")
	if strings.Contains(out, "udp . 53") || strings.Contains(out, "0x00020000") || strings.Contains(out, "canary_") ||
		strings.Contains(out, "chain input") || !strings.Contains(out, "ct mark set ct mark | 0x00040000") {
		t.Fatalf("after update:\n%s", out)
	}
	if strings.Count(out, "table inet migrate") != 1 {
		t.Fatalf("tables:\n%s", out)
	}

	// A set element added by hand is drift too, in any set.
	for _, set := range []string{"svc4", "acct4", "flows6"} {
		elem := "{ 198.51.100.10 . tcp . 9 }"
		if strings.HasSuffix(set, "6") {
			elem = "{ 2001:db8::10 . tcp . 9 }"
		}
		run(t, "nft", "add", "element", "inet", "migrate", set, elem)
		if f := nftFactsOf(t, h, "migrate"); f.NftDrift == "" {
			t.Fatalf("no drift after a hand-made element in %s", set)
		} else {
			t.Logf("drift: %s", f.NftDrift)
		}
		run(t, "nft", "delete", "element", "inet", "migrate", set, elem)
		if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" {
			t.Fatalf("drift after removing the element again: %s", f.NftDrift)
		}
	}

	apply(t, h, del(state.Object{Nft: &tbl2}))
	if out := run(t, "nft", "list", "ruleset"); strings.Contains(out, "migrate") {
		t.Fatalf("table left after delete:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(h.StateDir, "nft-migrate.json")); !os.IsNotExist(err) {
		t.Fatalf("record left after delete: %v", err)
	}
	if f := nftFactsOf(t, h, "migrate"); f.Nft != nil || f.NftDrift != "" || f.Stats != nil {
		t.Fatalf("facts after delete: %v %q %+v", f.Nft, f.NftDrift, f.Stats)
	}
	apply(t, h, del(state.Object{Nft: &tbl2}))
}

// TestNftDriftKinds: changes by hand to what migrate wrote, each of which
// a comparison of rule tags alone would miss.
func TestNftDriftKinds(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: oldSpec()}
	for _, c := range []struct {
		name, cmd, want string
	}{
		{"canary verdict", "delete element inet migrate canary4 { 198.51.100.11 . tcp . 25 }\n" +
			"add element inet migrate canary4 { 198.51.100.11 . tcp . 25 : jump canary_50 }", "verdict"},
		{"element removed", "delete element inet migrate acct6 { 2001:db8::11 . udp . 53 }", "acct6 has 1 elements, migrate wrote 2"},
		{"policy", "add chain inet migrate forward { type filter hook forward priority mangle; policy drop; }", "chains"},
		{"extra chain", "add chain inet migrate extra", "chains"},
		{"extra set", "add set inet migrate extra { type ipv4_addr; }", "sets"},
		{"arp table", "add table arp migrate", "table arp migrate exists, but migrate wrote none"},
	} {
		apply(t, h, create(state.Object{Nft: &tbl}))
		if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" {
			t.Fatalf("%s: drift before the change: %s", c.name, f.NftDrift)
		}
		p := filepath.Join(t.TempDir(), "change.nft")
		if err := os.WriteFile(p, []byte(c.cmd+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, "nft", "-f", p)
		f := nftFactsOf(t, h, "migrate")
		if !strings.Contains(f.NftDrift, c.want) {
			t.Errorf("%s: drift %q, want it to mention %q", c.name, f.NftDrift, c.want)
		}
		// Applying over drift replaces both tables in one go.
		apply(t, h, update(state.Object{Nft: f.Nft}, state.Object{Nft: &tbl}))
		if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" {
			t.Fatalf("%s: drift after re-apply: %s", c.name, f.NftDrift)
		}
		if out := run(t, "nft", "list", "ruleset"); strings.Contains(out, "table arp") || strings.Contains(out, "extra") {
			t.Fatalf("%s: left over after re-apply:\n%s", c.name, out)
		}
	}
}

// TestNftBytecode compares the rules migrate writes with what the nft CLI
// compiles from the equivalent text, expression by expression.
func TestNftBytecode(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	spec := oldSpec()
	tbl := state.NftTable{Family: "inet", Name: "mine", Spec: spec}
	apply(t, h, create(state.Object{Nft: &tbl}))
	c := `comment "migrate:` + ruleDigest(spec) + `"`
	const key4, key6 = "meta nfproto ipv4 ip daddr . meta l4proto . th dport", "meta nfproto ipv6 ip6 daddr . meta l4proto . th dport"
	ref := fmt.Sprintf(`table inet ref {
  ct timeout moved_tcp { protocol tcp; l3proto inet; policy = { established: 604800 }; }
  set svc4 { type ipv4_addr . inet_proto . inet_service; elements = { 198.51.100.10 . tcp . 8080, 198.51.100.10 . udp . 53 } }
  set svc6 { type ipv6_addr . inet_proto . inet_service; elements = { 2001:db8::10 . tcp . 25 } }
  map canary4 { type ipv4_addr . inet_proto . inet_service : verdict; elements = { 198.51.100.11 . tcp . 25 : jump canary_10, 198.51.100.11 . tcp . 587 : jump canary_50 } }
  map canary6 { type ipv6_addr . inet_proto . inet_service : verdict; elements = { 2001:db8::11 . udp . 53 : jump canary_50 } }
  set acct4 { type ipv4_addr . inet_proto . inet_service; counter; elements = { 198.51.100.10 . tcp . 8080, 198.51.100.10 . tcp . 9000, 198.51.100.10 . udp . 53, 198.51.100.11 . tcp . 25, 198.51.100.11 . tcp . 587 } }
  set acct6 { type ipv6_addr . inet_proto . inet_service; counter; elements = { 2001:db8::10 . tcp . 25, 2001:db8::11 . udp . 53 } }
  set flows4 { type ipv4_addr . inet_proto . inet_service; counter; elements = { 198.51.100.10 . tcp . 8080, 198.51.100.10 . tcp . 9000, 198.51.100.10 . udp . 53, 198.51.100.11 . tcp . 25, 198.51.100.11 . tcp . 587 } }
  set flows6 { type ipv6_addr . inet_proto . inet_service; counter; elements = { 2001:db8::10 . tcp . 25, 2001:db8::11 . udp . 53 } }
  chain canary_10 {
    numgen random mod 100 < 10 ct mark set ct mark | 0x20000 ct timeout set "moved_tcp" meta mark set meta mark | 0x20000 counter %[1]s
  }
  chain canary_50 {
    numgen random mod 100 < 50 ct mark set ct mark | 0x20000 ct timeout set "moved_tcp" meta mark set meta mark | 0x20000 counter %[1]s
  }
  chain pickup {
    socket wildcard 0 return %[1]s
    %[2]s @svc4 ct mark set ct mark | 0x20000 ct timeout set "moved_tcp" meta mark set meta mark | 0x20000 counter return %[1]s
    %[3]s @svc6 ct mark set ct mark | 0x20000 ct timeout set "moved_tcp" meta mark set meta mark | 0x20000 counter return %[1]s
  }
  chain prerouting { type filter hook prerouting priority mangle; policy accept;
    meta nfproto ipv4 udp dport 4789 ip daddr 192.0.2.1 ip saddr != 192.0.2.2 counter drop %[1]s
    iifname "mig0" ct state new ct mark set ct mark | 0x20000 ct timeout set "moved_tcp" counter %[1]s
    iifname "mig0" return %[1]s
    ct mark & 0x20000 == 0x20000 meta mark set meta mark | 0x20000 return %[1]s
    ct state != new return %[1]s
    meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn goto pickup %[1]s
    %[2]s @svc4 ct mark set ct mark | 0x20000 ct timeout set "moved_tcp" meta mark set meta mark | 0x20000 counter return %[1]s
    %[3]s @svc6 ct mark set ct mark | 0x20000 ct timeout set "moved_tcp" meta mark set meta mark | 0x20000 counter return %[1]s
    %[2]s vmap @canary4 %[1]s
    %[3]s vmap @canary6 %[1]s
  }
  chain forward { type filter hook forward priority mangle; policy accept;
    tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu counter %[1]s
    oifname "mig0" ct state new %[2]s @flows4 %[1]s
    oifname "mig0" %[2]s @acct4 %[1]s
    oifname "mig0" ct state new %[3]s @flows6 %[1]s
    oifname "mig0" %[3]s @acct6 %[1]s
  }
}
`, c, key4, key6)
	compareWithNft(t, "inet", "mine", ref)

	// Role new: MSS clamp on the tunnel, GRE/IPv6 underlay filter, and
	// the arp table.
	nspec := state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000, NoARP: []netip.Addr{netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.12")},
		Underlay: &state.NftUnderlay{Proto: "gre", Local: netip.MustParseAddr("2001:db8::1"), Peer: netip.MustParseAddr("2001:db8::2")}}
	apply(t, h, create(state.Object{Nft: &state.NftTable{Family: "inet", Name: "nw", Spec: nspec}}))
	c = `comment "migrate:` + ruleDigest(nspec) + `"`
	compareWithNft(t, "inet", "nw", fmt.Sprintf(`table inet ref {
  chain forward { type filter hook forward priority mangle; policy accept;
    oifname "mig0" tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu counter %[1]s
  }
  chain input { type filter hook input priority filter - 1; policy accept;
    meta nfproto ipv6 meta l4proto gre ip6 daddr 2001:db8::1 ip6 saddr != 2001:db8::2 counter drop %[1]s
  }
}
`, c))
	compareWithNft(t, "arp", "nw", fmt.Sprintf(`table arp ref {
  set noarp { type ipv4_addr; elements = { 198.51.100.10, 198.51.100.12 } }
  chain input { type filter hook input priority filter; policy accept;
    arp operation request arp daddr ip @noarp counter drop %[1]s
  }
}
`, c))
}

// compareWithNft loads ref (a table named "ref") with the nft CLI and
// compares its listing and bytecode with migrate's table FAMILY NAME.
func compareWithNft(t *testing.T, family, name, ref string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ref.nft")
	if err := os.WriteFile(p, []byte(ref), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "nft", "-f", p)
	defer run(t, "nft", "delete", "table", family, "ref")
	mine := run(t, "nft", "list", "table", family, name)
	theirs := run(t, "nft", "list", "table", family, "ref")
	if strings.Replace(mine, "table "+family+" "+name, "table "+family+" ref", 1) != theirs {
		t.Errorf("nft list differs:\nmigrate:\n%s\nnft:\n%s", mine, theirs)
	}
	// Bytecode: nft's register naming differs (reg 2 == reg 12 for the
	// IPv6 concatenation), so normalise that one.
	norm := func(s, name string) string {
		s = strings.ReplaceAll(s, family+" "+name+" ", family+" T ")
		s = strings.ReplaceAll(s, "meta load l4proto => reg 2 ]", "meta load l4proto => reg 12 ]")
		var keep, elems []string
		flush := func() { // set elements come in hash order
			sort.Strings(elems)
			keep, elems = append(keep, elems...), nil
		}
		for _, l := range strings.Split(s, "\n") {
			switch {
			case strings.HasPrefix(l, "\telement"):
				elems = append(elems, l)
			case strings.HasPrefix(strings.TrimSpace(l), "["):
				flush()
				keep = append(keep, l)
			case strings.HasPrefix(l, family+" T"):
				// "inet T chain HANDLE [POSITION]": a table updated in
				// place numbers its rules on from what it had, a fresh
				// one from 1.
				flush()
				if f := strings.Fields(l); len(f) >= 3 {
					l = strings.Join(f[:3], " ")
				}
				keep = append(keep, l)
			}
		}
		flush()
		return strings.Join(keep, "\n")
	}
	bm := norm(run(t, "nft", "--debug=netlink", "list", "table", family, name), name)
	br := norm(run(t, "nft", "--debug=netlink", "list", "table", family, "ref"), "ref")
	if bm != br {
		t.Errorf("bytecode differs:\nmigrate:\n%s\nnft:\n%s", bm, br)
	}
	if !strings.Contains(bm, "[ counter pkts ") {
		t.Errorf("no bytecode in debug output:\n%s", bm)
	}
}

func TestNftManyServices(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	one := oldSpec()
	one.Services = one.Services[:1]
	one.Accounted = one.Accounted[:1]
	many := oldSpec()
	many.Services = nil
	for i := 0; i < 10000; i++ {
		many.Services = append(many.Services, state.NftService{Addr: netip.AddrFrom4([4]byte{198, 51, byte(100 + i/5000), byte(i%250 + 1)}), Proto: []state.Proto{"tcp", "udp"}[i%2], Port: uint16(1000 + i/250), Percent: 100})
	}
	for i := 0; i < 5000; i++ {
		many.Services = append(many.Services, state.NftService{Addr: netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1)), Proto: "tcp", Port: 443, Percent: 100})
	}
	many.Accounted = nil
	for _, s := range many.Services {
		s.Percent = 0
		many.Accounted = append(many.Accounted, s)
	}
	if RenderRuleCount(one) != RenderRuleCount(many) || RenderRuleCount(one) != 18 {
		t.Fatalf("rule counts: one %d, many %d", RenderRuleCount(one), RenderRuleCount(many))
	}
	// Canaries add one rule per distinct percent, however many services.
	canary := many
	canary.Services = append([]state.NftService(nil), many.Services...)
	for i := range canary.Services {
		canary.Services[i].Percent = []int{100, 5, 20, 100}[i%4]
	}
	if n := RenderRuleCount(canary); n != RenderRuleCount(one)+2 {
		t.Fatalf("rule count with 2 canary percents: %d", n)
	}
	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: many}
	apply(t, h, create(state.Object{Nft: &tbl}))
	f := nftFactsOf(t, h, "migrate")
	if f.NftDrift != "" || f.Nft == nil || len(f.Nft.Spec.Services) != len(many.Services) {
		t.Fatalf("facts after big apply: drift %q", f.NftDrift)
	}
	if f.Stats == nil || len(f.Stats.Counters) != len(many.Accounted) {
		t.Fatalf("stats: %d counters", len(f.Stats.Counters))
	}
	out := run(t, "nft", "list", "set", "inet", "migrate", "svc6")
	if n := strings.Count(out, ". tcp . 443"); n != 5000 {
		t.Fatalf("svc6 has %d elements", n)
	}
	// Replace the big table by the small one, by the canary one and back,
	// in one transaction each.
	tbl1 := state.NftTable{Family: "inet", Name: "migrate", Spec: one}
	tblc := state.NftTable{Family: "inet", Name: "migrate", Spec: canary}
	apply(t, h, update(state.Object{Nft: &tbl}, state.Object{Nft: &tbl1}))
	apply(t, h, update(state.Object{Nft: &tbl1}, state.Object{Nft: &tblc}))
	if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" || f.Nft == nil || f.Nft.Spec.Digest() != canary.Digest() {
		t.Fatalf("facts after replace: drift %q", f.NftDrift)
	}
	if out := run(t, "nft", "list", "map", "inet", "migrate", "canary4"); strings.Count(out, "jump canary_5") != 2500 {
		t.Fatalf("canary4 has %d canary_5 elements", strings.Count(out, "jump canary_5"))
	}
	apply(t, h, update(state.Object{Nft: &tblc}, state.Object{Nft: &tbl}))
	if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" || f.Nft == nil || f.Nft.Spec.Digest() != many.Digest() {
		t.Fatalf("facts after replace: drift %q", f.NftDrift)
	}
	apply(t, h, del(state.Object{Nft: &tbl}))
}

func TestNftRenderErrors(t *testing.T) {
	svc := func(addr string, proto state.Proto, port uint16, pct int) []state.NftService {
		a, _ := netip.ParseAddr(addr) // "": none
		return []state.NftService{{Addr: a, Proto: proto, Port: port, Percent: pct}}
	}
	old := func(f func(*state.NftSpec)) state.NftSpec {
		s := state.NftSpec{Role: "old", Mark: 1, TunnelDev: "mig0"}
		f(&s)
		return s
	}
	for _, s := range []state.NftSpec{
		{Role: "bogus"},
		{Role: "old", TunnelDev: "mig0"},
		{Role: "old", Mark: 1},
		{Role: "old", Mark: 1, TunnelDev: "a-much-too-long-name"},
		old(func(s *state.NftSpec) { s.Services = svc("", "tcp", 1, 100) }),
		old(func(s *state.NftSpec) { s.Services = svc("192.0.2.1", "sctp", 1, 100) }),
		old(func(s *state.NftSpec) { s.Services = svc("192.0.2.1", "tcp", 0, 100) }),
		old(func(s *state.NftSpec) { s.Services = svc("192.0.2.1", "tcp", 1, 0) }),
		old(func(s *state.NftSpec) { s.Services = svc("192.0.2.1", "tcp", 1, 101) }),
		old(func(s *state.NftSpec) {
			s.Services = append(svc("192.0.2.1", "tcp", 1, 100), svc("192.0.2.1", "tcp", 1, 10)...)
		}),
		old(func(s *state.NftSpec) { s.Accounted = svc("192.0.2.1", "icmp", 1, 0) }),
		old(func(s *state.NftSpec) { s.NoARP = []netip.Addr{netip.MustParseAddr("192.0.2.1")} }),
		old(func(s *state.NftSpec) {
			s.Underlay = &state.NftUnderlay{Proto: "udp", Local: netip.MustParseAddr("192.0.2.1"), Peer: netip.MustParseAddr("192.0.2.2")}
		}),
		old(func(s *state.NftSpec) {
			s.Underlay = &state.NftUnderlay{Proto: "gre", Port: 4789, Local: netip.MustParseAddr("192.0.2.1"), Peer: netip.MustParseAddr("192.0.2.2")}
		}),
		old(func(s *state.NftSpec) {
			s.Underlay = &state.NftUnderlay{Proto: "ipip", Local: netip.MustParseAddr("192.0.2.1"), Peer: netip.MustParseAddr("192.0.2.2")}
		}),
		old(func(s *state.NftSpec) {
			s.Underlay = &state.NftUnderlay{Proto: "gre", Local: netip.MustParseAddr("192.0.2.1"), Peer: netip.MustParseAddr("2001:db8::2")}
		}),
		{Role: "new", Services: svc("192.0.2.1", "tcp", 1, 100)},
		{Role: "new", NoARP: []netip.Addr{netip.MustParseAddr("2001:db8::1")}},
		{Role: "new", NoARP: []netip.Addr{{}}},
	} {
		if _, err := render("x", s); err == nil {
			t.Errorf("render(%+v) succeeded", s)
		} else if n := RenderRuleCount(s); n != 0 {
			t.Errorf("RenderRuleCount(%+v) = %d", s, n)
		}
	}
	u := &state.NftUnderlay{Proto: "udp", Port: 4789, Local: netip.MustParseAddr("192.0.2.1"), Peer: netip.MustParseAddr("192.0.2.2")}
	for _, c := range []struct {
		spec state.NftSpec
		n    int
	}{
		{state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 1}, 1},
		{state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 1, Underlay: u}, 2},
		{state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 1, Underlay: u, NoARP: []netip.Addr{netip.MustParseAddr("192.0.2.9"), netip.MustParseAddr("192.0.2.9")}}, 3},
		{old(func(s *state.NftSpec) {}), 17},
		{old(func(s *state.NftSpec) { s.Underlay = u }), 18},
	} {
		if n := RenderRuleCount(c.spec); n != c.n {
			t.Errorf("RenderRuleCount(%+v) = %d, want %d", c.spec, n, c.n)
		}
	}
}

// TestNftDirectOld: a direct tunnel's OLD table takes only packets from
// the migrated addresses on the segment interface as NEW's (sets peer4
// and peer6), in prerouting and in the guard; facts verify it, and an
// element added by hand to a peer set is drift.
func TestNftDirectOld(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	spec := oldSpec()
	spec.TunnelDev, spec.Underlay = "eth0", nil
	spec.PeerSrc = []netip.Addr{netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.11"), netip.MustParseAddr("2001:db8::10")}
	spec.Guard4 = true
	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: spec}
	obj := state.Object{Nft: &tbl}
	apply(t, h, create(obj))
	out := run(t, "nft", "list", "ruleset")
	t.Logf("ruleset:\n%s", out)
	for _, w := range []string{
		"set peer4 {\n\t\ttype ipv4_addr\n\t\telements = { 198.51.100.10, 198.51.100.11 }",
		"set peer6 {\n\t\ttype ipv6_addr\n\t\telements = { 2001:db8::10 }",
		`iifname "eth0" ip saddr @peer4 ct state new ct mark set ct mark | 0x00020000 ct timeout set "moved_tcp" counter`,
		`iifname "eth0" ip6 saddr @peer6 ct state new ct mark set ct mark | 0x00020000 ct timeout set "moved_tcp" counter`,
		`iifname "eth0" ip saddr @peer4 return`,
		`iifname "eth0" ip6 saddr @peer6 return`,
		`iifname "eth0" ip saddr @peer4 accept`,
		`iifname "eth0" ip6 saddr @peer6 accept`,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("ruleset lacks %q", w)
		}
	}
	if strings.Contains(out, `iifname "eth0" return`) || strings.Contains(out, `iifname "eth0" accept`) {
		t.Errorf("a rule takes everything from the segment as NEW's")
	}
	if n := strings.Count(out, `comment "migrate:`); n != RenderRuleCount(spec) {
		t.Errorf("%d tagged rules, RenderRuleCount %d", n, RenderRuleCount(spec))
	}
	f := nftFactsOf(t, h, "migrate")
	if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(obj) {
		t.Fatalf("facts: %v drift %q", f.Nft, f.NftDrift)
	}
	run(t, "nft", "add", "element", "inet", "migrate", "peer4", "{ 192.0.2.99 }")
	if f := nftFactsOf(t, h, "migrate"); f.NftDrift == "" {
		t.Fatalf("no drift after a hand-made element in peer4")
	}
	apply(t, h, del(obj))
	if out := run(t, "nft", "list", "ruleset"); strings.Contains(out, "migrate") {
		t.Fatalf("table left after delete:\n%s", out)
	}
}
