package kernel

import (
	"flag"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/opsmigrate/migrate/state"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/nft/*.nft from CanonicalText")

// goldenSpecs are the representative specs of testdata/nft/NAME.nft: each
// file is what `nft list table inet migrate` (then `nft list table arp
// migrate`, when the spec has one) prints for a fresh table of the spec.
func goldenSpecs() []struct {
	name string
	spec state.NftSpec
} {
	full := oldSpec() // services (100 % and canary), accounted, UDP underlay, both families
	full.Guard4, full.Guard6 = true, true

	direct := oldSpec() // a direct tunnel: the segment's interface, NEW's sources
	direct.TunnelDev, direct.Underlay = "eth0", nil
	direct.PeerSrc = []netip.Addr{netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.11"), netip.MustParseAddr("2001:db8::10")}
	direct.KeepDest, direct.Guard4 = true, true

	fwds := []state.NftForward{
		{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 2222, To: netip.MustParseAddr("203.0.113.20"), ToPort: 22},
		{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 5353, To: netip.MustParseAddr("203.0.113.20"), ToPort: 53},
		{Addr: netip.MustParseAddr("2001:db8::10"), Proto: "tcp", Port: 443, To: netip.MustParseAddr("2001:db8:1::20"), ToPort: 8443},
	}
	oldFwd := oldSpec()
	oldFwd.Forwards, oldFwd.ForwardMark = fwds, 0x40000
	oldFwd.Underlay = &state.NftUnderlay{Proto: "gre", Local: netip.MustParseAddr("192.0.2.1"), Peer: netip.MustParseAddr("192.0.2.2")}

	return []struct {
		name string
		spec state.NftSpec
	}{
		{"old-full", full},
		{"old-direct", direct},
		{"old-tunnel-forwards", oldFwd},
		{"new-full", state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000, DNATReplies: true,
			NoARP: []netip.Addr{netip.MustParseAddr("198.51.100.12"), netip.MustParseAddr("198.51.100.10")},
			UDPServices: []state.NftService{
				{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "udp", Port: 53},
				{Addr: netip.MustParseAddr("198.51.100.11"), Proto: "udp", Port: 123},
				{Addr: netip.MustParseAddr("2001:db8::10"), Proto: "udp", Port: 53},
			},
			Underlay: &state.NftUnderlay{Proto: "gre", Local: netip.MustParseAddr("2001:db8::1"), Peer: netip.MustParseAddr("2001:db8::2")}}},
		{"new-direct-dnat", state.NftSpec{Role: "new", TunnelDev: "eth1", Mark: 0x20000, DNATReplies: true,
			PeerDst: []netip.Addr{netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.11"), netip.MustParseAddr("2001:db8::10")},
			NoARP:   []netip.Addr{netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.11")}}},
		{"old-canary-only", state.NftSpec{Role: "old", TunnelDev: "mig0", Mark: 0x100, Services: []state.NftService{
			{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 80, Percent: 1},
			{Addr: netip.MustParseAddr("198.51.100.11"), Proto: "udp", Port: 53, Percent: 99},
		}}},
		{"new-forwards", state.NftSpec{Role: "new", TunnelDev: "mig0", Mark: 0x20000, Forwards: fwds, ForwardMark: 0x40000, Guard6: true,
			Underlay: &state.NftUnderlay{Proto: "udp", Port: 4789, Local: netip.MustParseAddr("2001:db8::1"), Peer: netip.MustParseAddr("2001:db8::2")}}},
		{"forwards-only", state.NftSpec{Role: "old", Forwards: fwds, ForwardMark: 0x40000, Guard4: true, Guard6: true}},
		{"forwards-draining", state.NftSpec{Role: "new", ForwardMark: 0x40000}},
	}
}

func goldenPath(name string) string { return filepath.Join("testdata", "nft", name+".nft") }

var nftCounterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// TestNftGoldenKernel loads each golden spec into a fresh netns through
// the agent's own apply and checks that what nft lists is the golden
// text, counters masked (all zero in a fresh table anyway). This ties the
// root-free golden text (TestNftCanonicalText) to what the kernel holds.
// MIGRATE_NFT_GOLDEN_FROM_KERNEL=1 writes the files from the kernel
// instead.
func TestNftGoldenKernel(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	for _, g := range goldenSpecs() {
		obj := state.Object{Nft: &state.NftTable{Family: "inet", Name: "migrate", Spec: g.spec}}
		apply(t, h, create(obj))
		got := run(t, "nft", "list", "table", "inet", "migrate")
		if len(g.spec.NoARP) > 0 {
			got += run(t, "nft", "list", "table", "arp", "migrate")
		}
		got = nftCounterRE.ReplaceAllString(got, "counter packets 0 bytes 0")
		apply(t, h, del(obj))
		if out := run(t, "nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
			t.Fatalf("%s: left after delete:\n%s", g.name, out)
		}
		// What an operator does to keep a firewall across reboots,
		// `nft list ruleset > /etc/nftables.conf`, must load again with
		// the host's own nft (Debian 12's 1.0.6 here and in the VM lane):
		// a file it cannot load leaves the host with no firewall at boot.
		saved := filepath.Join(t.TempDir(), g.name+".nft")
		if err := os.WriteFile(saved, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("nft", "-c", "-f", saved).CombinedOutput(); err != nil {
			t.Errorf("%s: nft cannot load back what it listed (nft -c -f): %v\n%s", g.name, err, out)
		}
		if os.Getenv("MIGRATE_NFT_GOLDEN_FROM_KERNEL") == "1" {
			if err := os.WriteFile(goldenPath(g.name), []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(goldenPath(g.name))
		if err != nil {
			t.Fatal(err)
		}
		if sortElements(got) != sortElements(string(want)) {
			t.Errorf("%s: the kernel lists\n%s\nthe golden file %s says\n%s", g.name, got, goldenPath(g.name), want)
		}
	}
}

var (
	nftElementsRE = regexp.MustCompile(`(?s)elements = \{ (.*?) \}`)
	nftElemDelim  = regexp.MustCompile(`,(\n\t\t\t     | )`)
)

// sortElements sorts the elements of each set in an nft listing by their
// text, keeping nft's line breaks: nft lists them in the kernel's order.
func sortElements(s string) string {
	return nftElementsRE.ReplaceAllStringFunc(s, func(block string) string {
		inner := nftElementsRE.FindStringSubmatch(block)[1]
		items := nftElemDelim.Split(inner, -1)
		delims := nftElemDelim.FindAllString(inner, -1)
		sort.Strings(items)
		var b strings.Builder
		for i, it := range items {
			if i > 0 {
				b.WriteString(delims[i-1])
			}
			b.WriteString(it)
		}
		return "elements = { " + b.String() + " }"
	})
}

// TestNftCanonicalText checks, without root, the canonical text of each
// golden spec against testdata/nft (go test -run TestNftCanonicalText
// -update ./agent/kernel/ rewrites the files; TestNftGoldenKernel then
// checks them against the kernel, as root).
func TestNftCanonicalText(t *testing.T) {
	for _, g := range goldenSpecs() {
		got, err := CanonicalText("migrate", g.spec)
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		if n := strings.Count(got, ` comment "migrate:`); n != RenderRuleCount(g.spec) {
			t.Errorf("%s: %d rules in the text, RenderRuleCount %d", g.name, n, RenderRuleCount(g.spec))
		}
		if *updateGolden {
			if err := os.WriteFile(goldenPath(g.name), []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(goldenPath(g.name))
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s: canonical text differs from %s (-want +got):\n%s", g.name, goldenPath(g.name), cmp.Diff(string(want), got))
		}
	}
	if _, err := CanonicalText("migrate", state.NftSpec{Role: "old"}); err == nil {
		t.Error("the canonical text of an invalid spec was made")
	}
}
