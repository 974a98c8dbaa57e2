package kernel

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
			{Addr: "198.51.100.10", Proto: "tcp", Port: 8080},
			{Addr: "198.51.100.10", Proto: "udp", Port: 53},
			{Addr: "2001:db8::10", Proto: "tcp", Port: 25},
		},
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
	// "tcp flags syn / fin,syn,rst,ack" and "tcp dport" where newer ones
	// print "tcp flags & (...) == syn" and "th dport").
	for _, w := range []string{
		"set svc4 {\n\t\ttype ipv4_addr . inet_proto . inet_service",
		"set svc6 {\n\t\ttype ipv6_addr . inet_proto . inet_service",
		"198.51.100.10 . tcp . 8080",
		"198.51.100.10 . udp . 53",
		"2001:db8::10 . tcp . 25",
		"type filter hook prerouting priority mangle; policy accept;",
		"type filter hook forward priority mangle; policy accept;",
		`iifname "mig0" ct state new ct mark set ct mark | 0x00020000 counter`,
		`iifname "mig0" return`,
		"ct state new tcp flags syn / fin,syn,rst,ack ip daddr . meta l4proto . tcp dport @svc4 ct mark set ct mark | 0x00020000 counter|" +
			"ct state new tcp flags & (fin | syn | rst | ack) == syn ip daddr . meta l4proto . th dport @svc4 ct mark set ct mark | 0x00020000 counter",
		"ct state new tcp flags syn / fin,syn,rst,ack ip6 daddr . meta l4proto . tcp dport @svc6 ct mark set ct mark | 0x00020000 counter|" +
			"ct state new tcp flags & (fin | syn | rst | ack) == syn ip6 daddr . meta l4proto . th dport @svc6 ct mark set ct mark | 0x00020000 counter",
		"ct state new ip daddr . meta l4proto . udp dport @svc4 ct mark set ct mark | 0x00020000 counter|" +
			"ct state new meta l4proto udp ip daddr . meta l4proto . th dport @svc4 ct mark set ct mark | 0x00020000 counter",
		"ct state new ip6 daddr . meta l4proto . udp dport @svc6 ct mark set ct mark | 0x00020000 counter|" +
			"ct state new meta l4proto udp ip6 daddr . meta l4proto . th dport @svc6 ct mark set ct mark | 0x00020000 counter",
		"ct mark & 0x00020000 == 0x00020000 meta mark set meta mark | 0x00020000",
		"tcp option maxseg size set rt mtu counter",
		`comment "migrate:` + tbl.Spec.Digest() + `"`,
	} {
		found := false
		for _, alt := range strings.Split(w, "|") {
			found = found || strings.Contains(out, alt)
		}
		if !found {
			t.Errorf("ruleset lacks %q", w)
		}
	}

	f := nftFactsOf(t, h, "migrate")
	if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(obj) {
		t.Fatalf("facts: %v drift %q", f.Nft, f.NftDrift)
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

	// Update to another spec replaces the drifted table atomically.
	spec2 := oldSpec()
	spec2.Services = spec2.Services[:1]
	spec2.Mark = 0x40000
	tbl2 := state.NftTable{Family: "inet", Name: "migrate", Spec: spec2}
	apply(t, h, update(state.Object{Nft: f.Nft}, state.Object{Nft: &tbl2}))
	f = nftFactsOf(t, h, "migrate")
	if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(state.Object{Nft: &tbl2}) {
		t.Fatalf("after update facts: %v drift %q", f.Nft, f.NftDrift)
	}
	out = run(t, "nft", "list", "ruleset")
	if strings.Contains(out, "udp . 53") || strings.Contains(out, "0x00020000") || !strings.Contains(out, "ct mark set ct mark | 0x00040000") {
		t.Fatalf("after update:\n%s", out)
	}
	if strings.Count(out, "table inet migrate") != 1 {
		t.Fatalf("tables:\n%s", out)
	}

	// A set element added by hand is drift too.
	run(t, "nft", "add", "element", "inet", "migrate", "svc4", "{ 198.51.100.10 . tcp . 9 }")
	if f := nftFactsOf(t, h, "migrate"); f.NftDrift == "" {
		t.Fatalf("no drift after a hand-made element")
	} else {
		t.Logf("drift: %s", f.NftDrift)
	}

	apply(t, h, del(state.Object{Nft: &tbl2}))
	if out := run(t, "nft", "list", "ruleset"); strings.Contains(out, "migrate") {
		t.Fatalf("table left after delete:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(h.StateDir, "nft-migrate.json")); !os.IsNotExist(err) {
		t.Fatalf("record left after delete: %v", err)
	}
	if f := nftFactsOf(t, h, "migrate"); f.Nft != nil || f.NftDrift != "" {
		t.Fatalf("facts after delete: %v %q", f.Nft, f.NftDrift)
	}
	apply(t, h, del(state.Object{Nft: &tbl2}))
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
	c := `comment "migrate:` + spec.Digest() + `"`
	ref := fmt.Sprintf(`table inet ref {
  set svc4 { type ipv4_addr . inet_proto . inet_service; elements = { 198.51.100.10 . tcp . 8080, 198.51.100.10 . udp . 53 } }
  set svc6 { type ipv6_addr . inet_proto . inet_service; elements = { 2001:db8::10 . tcp . 25 } }
  chain prerouting { type filter hook prerouting priority mangle; policy accept;
    iifname "mig0" ct state new ct mark set ct mark | 0x20000 counter %[1]s
    iifname "mig0" return %[1]s
    ct state new tcp flags & (fin|syn|rst|ack) == syn ip daddr . meta l4proto . th dport @svc4 ct mark set ct mark | 0x20000 counter %[1]s
    ct state new tcp flags & (fin|syn|rst|ack) == syn ip6 daddr . meta l4proto . th dport @svc6 ct mark set ct mark | 0x20000 counter %[1]s
    ct state new meta l4proto udp ip daddr . meta l4proto . th dport @svc4 ct mark set ct mark | 0x20000 counter %[1]s
    ct state new meta l4proto udp ip6 daddr . meta l4proto . th dport @svc6 ct mark set ct mark | 0x20000 counter %[1]s
    ct mark & 0x20000 == 0x20000 meta mark set meta mark | 0x20000 %[1]s
  }
  chain forward { type filter hook forward priority mangle; policy accept;
    tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu counter %[1]s
  }
}
`, c)
	p := filepath.Join(t.TempDir(), "ref.nft")
	if err := os.WriteFile(p, []byte(ref), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "nft", "-f", p)
	mine := run(t, "nft", "list", "table", "inet", "mine")
	theirs := run(t, "nft", "list", "table", "inet", "ref")
	if strings.Replace(mine, "table inet mine", "table inet ref", 1) != theirs {
		t.Errorf("nft list differs:\nmigrate:\n%s\nnft:\n%s", mine, theirs)
	}
	// Bytecode: nft's register naming differs (reg 2 == reg 12 for the
	// IPv6 concatenation), so normalise that one.
	norm := func(s, name string) string {
		s = strings.ReplaceAll(s, "inet "+name+" ", "inet T ")
		s = strings.ReplaceAll(s, "meta load l4proto => reg 2 ]", "meta load l4proto => reg 12 ]")
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "[") || strings.HasPrefix(l, "inet T") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	bm := norm(run(t, "nft", "--debug=netlink", "list", "table", "inet", "mine"), "mine")
	br := norm(run(t, "nft", "--debug=netlink", "list", "table", "inet", "ref"), "ref")
	if bm != br {
		t.Errorf("bytecode differs:\nmigrate:\n%s\nnft:\n%s", bm, br)
	}
	if !strings.Contains(bm, "lookup reg 1 set svc6") {
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
	many := oldSpec()
	many.Services = nil
	for i := 0; i < 10000; i++ {
		many.Services = append(many.Services, state.NftService{Addr: fmt.Sprintf("198.51.%d.%d", 100+i/5000, i%250+1), Proto: []string{"tcp", "udp"}[i%2], Port: uint16(1000 + i/250)})
	}
	for i := 0; i < 5000; i++ {
		many.Services = append(many.Services, state.NftService{Addr: fmt.Sprintf("2001:db8::%x", i+1), Proto: "tcp", Port: 443})
	}
	if RenderRuleCount(one) != RenderRuleCount(many) || RenderRuleCount(one) != 8 {
		t.Fatalf("rule counts: one %d, many %d", RenderRuleCount(one), RenderRuleCount(many))
	}
	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: many}
	apply(t, h, create(state.Object{Nft: &tbl}))
	f := nftFactsOf(t, h, "migrate")
	if f.NftDrift != "" || f.Nft == nil || len(f.Nft.Spec.Services) != len(many.Services) {
		t.Fatalf("facts after big apply: drift %q", f.NftDrift)
	}
	out := run(t, "nft", "list", "set", "inet", "migrate", "svc6")
	if n := strings.Count(out, ". tcp . 443"); n != 5000 {
		t.Fatalf("svc6 has %d elements", n)
	}
	// Replace the big table by the small one, and back, in one transaction each.
	tbl1 := state.NftTable{Family: "inet", Name: "migrate", Spec: one}
	apply(t, h, update(state.Object{Nft: &tbl}, state.Object{Nft: &tbl1}))
	apply(t, h, update(state.Object{Nft: &tbl1}, state.Object{Nft: &tbl}))
	if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" || f.Nft == nil || f.Nft.Spec.Digest() != many.Digest() {
		t.Fatalf("facts after replace: drift %q", f.NftDrift)
	}
	apply(t, h, del(state.Object{Nft: &tbl}))
}

func TestNftRenderErrors(t *testing.T) {
	for _, s := range []state.NftSpec{
		{Role: "bogus"},
		{Role: "old", TunnelDev: "mig0"},
		{Role: "old", Mark: 1},
		{Role: "old", Mark: 1, TunnelDev: "mig0", Services: []state.NftService{{Addr: "nope", Proto: "tcp", Port: 1}}},
		{Role: "old", Mark: 1, TunnelDev: "mig0", Services: []state.NftService{{Addr: "192.0.2.1", Proto: "sctp", Port: 1}}},
	} {
		if _, err := render("x", s); err == nil {
			t.Errorf("render(%+v) succeeded", s)
		}
		if n := RenderRuleCount(s); n != 0 {
			t.Errorf("RenderRuleCount(%+v) = %d", s, n)
		}
	}
	if n := RenderRuleCount(state.NftSpec{Role: "new"}); n != 1 {
		t.Errorf("new role renders %d rules", n)
	}
}
