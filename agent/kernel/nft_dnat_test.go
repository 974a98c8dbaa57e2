package kernel

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/opsmigrate/migrate/state"
)

// The chains for hosts where another table DNATs, against what nft
// compiles from the same rules, and read back as migrate's own (no
// drift).
func TestNftDNATChains(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	spec := state.NftSpec{Role: "old", TunnelDev: "mig0", Mark: 0x20000, KeepDest: true}
	tbl := state.NftTable{Family: "inet", Name: "mine", Spec: spec}
	obj := state.Object{Nft: &tbl}
	apply(t, h, create(obj))
	c := `comment "migrate:` + ruleDigest(spec) + `"`
	compareWithNft(t, "inet", "mine", fmt.Sprintf(`table inet ref {
  ct timeout moved_tcp { protocol tcp; l3proto inet; policy = { established: 604800 }; }
  set svc4 { type ipv4_addr . inet_proto . inet_service; }
  set svc6 { type ipv6_addr . inet_proto . inet_service; }
  map canary4 { type ipv4_addr . inet_proto . inet_service : verdict; }
  map canary6 { type ipv6_addr . inet_proto . inet_service : verdict; }
  set acct4 { type ipv4_addr . inet_proto . inet_service; counter; }
  set acct6 { type ipv6_addr . inet_proto . inet_service; counter; }
  set flows4 { type ipv4_addr . inet_proto . inet_service; counter; }
  set flows6 { type ipv6_addr . inet_proto . inet_service; counter; }
  chain prerouting { type filter hook prerouting priority mangle; policy accept;
    iifname "mig0" ct state new ct mark set ct mark | 0x20000 ct timeout set "moved_tcp" counter %[1]s
    iifname "mig0" return %[1]s
    ct mark & 0x20000 == 0x20000 meta mark set meta mark | 0x20000 return %[1]s
    ct state != new return %[1]s
    meta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn return %[1]s
    meta nfproto ipv4 ip daddr . meta l4proto . th dport @svc4 ct mark set ct mark | 0x20000 ct timeout set "moved_tcp" meta mark set meta mark | 0x20000 counter return %[1]s
    meta nfproto ipv6 ip6 daddr . meta l4proto . th dport @svc6 ct mark set ct mark | 0x20000 ct timeout set "moved_tcp" meta mark set meta mark | 0x20000 counter return %[1]s
    meta nfproto ipv4 ip daddr . meta l4proto . th dport vmap @canary4 %[1]s
    meta nfproto ipv6 ip6 daddr . meta l4proto . th dport vmap @canary6 %[1]s
  }
  chain forward { type filter hook forward priority mangle; policy accept;
    tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu counter %[1]s
    oifname "mig0" ct state new meta nfproto ipv4 ip daddr . meta l4proto . th dport @flows4 %[1]s
    oifname "mig0" meta nfproto ipv4 ip daddr . meta l4proto . th dport @acct4 %[1]s
    oifname "mig0" ct state new meta nfproto ipv6 ip6 daddr . meta l4proto . th dport @flows6 %[1]s
    oifname "mig0" meta nfproto ipv6 ip6 daddr . meta l4proto . th dport @acct6 %[1]s
  }
  chain keep_dest { type nat hook prerouting priority dstnat - 1; policy accept;
    meta mark & 0x20000 == 0x20000 meta nfproto ipv4 dnat ip to ip daddr %[1]s
    meta mark & 0x20000 == 0x20000 meta nfproto ipv6 dnat ip6 to ip6 daddr %[1]s
  }
  chain keep_dest_out { type nat hook output priority -101; policy accept;
    meta mark & 0x20000 == 0x20000 meta nfproto ipv4 dnat ip to ip daddr %[1]s
    meta mark & 0x20000 == 0x20000 meta nfproto ipv6 dnat ip6 to ip6 daddr %[1]s
  }
}
`, c))
	if f := nftFactsOf(t, h, "mine"); f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(obj) {
		t.Errorf("old with keep_dest reads back as drift %q", f.NftDrift)
	}
	if n := RenderRuleCount(spec); n != 18 {
		t.Errorf("RenderRuleCount %d, want 18", n)
	}

	nspec := state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000, DNATReplies: true}
	ntbl := state.NftTable{Family: "inet", Name: "mine", Spec: nspec}
	nobj := state.Object{Nft: &ntbl}
	apply(t, h, update(obj, nobj))
	c = `comment "migrate:` + ruleDigest(nspec) + `"`
	compareWithNft(t, "inet", "mine", fmt.Sprintf(`table inet ref {
  chain forward { type filter hook forward priority mangle; policy accept;
    oifname "mig0" tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu counter %[1]s
  }
  chain dnat_mark { type filter hook prerouting priority mangle; policy accept;
    iifname "mig0" ct state new ct mark set ct mark | 0x20000 %[1]s
    ct direction reply ct mark & 0x20000 == 0x20000 meta mark set meta mark | 0x20000 %[1]s
  }
}
`, c))
	if f := nftFactsOf(t, h, "mine"); f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(nobj) {
		t.Errorf("new with dnat_replies reads back as drift %q", f.NftDrift)
	}

	// A direct tunnel: only flows to the migrated addresses on the
	// segment's interface are OLD's.
	dspec := state.NftSpec{Role: "new", TunnelDev: "eth1", Mark: 0x20000, DNATReplies: true,
		PeerDst: []netip.Addr{netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("2001:db8::10")}}
	dtbl := state.NftTable{Family: "inet", Name: "mine", Spec: dspec}
	dobj := state.Object{Nft: &dtbl}
	apply(t, h, update(nobj, dobj))
	c = `comment "migrate:` + ruleDigest(dspec) + `"`
	compareWithNft(t, "inet", "mine", fmt.Sprintf(`table inet ref {
  set peerdst4 { type ipv4_addr; elements = { 198.51.100.10 }; }
  set peerdst6 { type ipv6_addr; elements = { 2001:db8::10 }; }
  chain forward { type filter hook forward priority mangle; policy accept;
    oifname "eth1" tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu counter %[1]s
  }
  chain dnat_mark { type filter hook prerouting priority mangle; policy accept;
    iifname "eth1" meta nfproto ipv4 ip daddr @peerdst4 ct state new ct mark set ct mark | 0x20000 %[1]s
    iifname "eth1" meta nfproto ipv6 ip6 daddr @peerdst6 ct state new ct mark set ct mark | 0x20000 %[1]s
    ct direction reply ct mark & 0x20000 == 0x20000 meta mark set meta mark | 0x20000 %[1]s
  }
}
`, c))
	if f := nftFactsOf(t, h, "mine"); f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(dobj) {
		t.Errorf("new with dnat_replies on a segment reads back as drift %q", f.NftDrift)
	}
}
