package kernel

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/opsmigrate/migrate/state"
)

// olderLayouts are the layouts of earlier releases, with the directory of
// their golden files under testdata/nft.
var olderLayouts = []struct {
	layout nftLayout
	dir    string
}{{layoutV1, "v1"}, {layoutV2, "v2"}, {layoutV3, "v3"}}

// TestNftLayoutOlderText: each older layout renders exactly what the
// release that wrote it wrote (testdata/nft/v1, v2 and v3 hold their
// golden files, digests included), so a table that release wrote is recognised
// and verified.
func TestNftLayoutOlderText(t *testing.T) {
	for _, old := range olderLayouts {
		for _, g := range goldenSpecs() {
			got, err := canonicalTextLayout("migrate", g.spec, old.layout)
			if err != nil {
				t.Fatalf("%s: %v", g.name, err)
			}
			want, err := os.ReadFile(filepath.Join("testdata", "nft", old.dir, g.name+".nft"))
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("%s: layout %d differs from the earlier release's table (-want +got):\n%s", g.name, old.layout, cmp.Diff(string(want), got))
			}
			if ruleDigestLayout(g.spec, old.layout) == ruleDigest(g.spec) {
				t.Errorf("%s: the current layout has layout %d's digest", g.name, old.layout)
			}
		}
	}
}

// writeAs writes tbl as the release of layout did: its rendering in that
// layout in one transaction, and its record with that layout (none for
// layoutV1: the release before layouts wrote no layout field), with the
// transaction's stamp when it has one.
func writeAs(t *testing.T, h *Host, tbl state.NftTable, layout nftLayout) {
	t.Helper()
	r, err := renderLayout(tbl.Name, tbl.Spec, layout)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := h.NewNft()
	if err != nil {
		t.Fatal(err)
	}
	gen, err := cc.GetGen()
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range r.tables() {
		if err := rt.addTo(cc); err != nil {
			t.Fatal(err)
		}
	}
	if err := cc.FlushWithGenID(gen.ID); err != nil {
		t.Fatal(err)
	}
	stamp := h.stampAfter(cc, gen.ID)
	if stamp == nil {
		t.Fatal("no stamp for the older layout's write")
	}
	rec := nftRecord{NftTable: tbl, Written: stamp}
	if layout != layoutV1 {
		rec.Layout = layout
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(h.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.nftStatePath(tbl.Name), append(b, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
}

// listing is what nft lists of migrate's tables, counters masked,
// elements sorted.
func listing(t *testing.T, spec state.NftSpec) string {
	t.Helper()
	got := run(t, "nft", "list", "table", "inet", "migrate")
	if len(spec.NoARP) > 0 {
		got += run(t, "nft", "list", "table", "arp", "migrate")
	}
	return sortElements(nftCounterRE.ReplaceAllString(got, "counter packets 0 bytes 0"))
}

// underlayRules counts the rules of table inet migrate that status reads
// as the underlay filter (underlayCounter).
func underlayRules(t *testing.T, h *Host) int {
	t.Helper()
	cc, err := h.NewNft()
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Family: nftables.TableFamilyINet, Name: "migrate"}
	chains, err := cc.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range chains {
		if c.Table.Name != "migrate" {
			continue
		}
		rules, err := cc.GetRules(tb, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			if underlayCounter(r.Exprs) != nil {
				n++
			}
		}
	}
	return n
}

// TestNftLayoutUpgrade: a table an earlier release wrote (its layout, its
// digest, its record: layoutV1 from the release before layouts, layoutV2
// from the one before the ct timeout, layoutV3 from the one before chain
// pickup) is not drift for this agent, through
// the stamped fast path and through the full comparison; the next apply
// replaces its layout in one update that keeps the per-service counters;
// rolling that update back gives the spec's table in the current layout.
// Status finds the underlay filter's rule in either layout.
func TestNftLayoutUpgrade(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	for _, old := range olderLayouts {
		for _, g := range goldenSpecs() {
			for _, stamped := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/%s/stamped=%v", old.dir, g.name, stamped), func(t *testing.T) {
					upgradeFrom(t, old.layout, old.dir, g.name, g.spec, stamped)
				})
			}
		}
	}
}

// upgradeFrom writes spec as the release of layout did and checks that
// this agent verifies it, upgrades it and rolls it back.
func upgradeFrom(t *testing.T, layout nftLayout, dir, name string, spec state.NftSpec, stamped bool) {
	g := struct {
		name string
		spec state.NftSpec
	}{name, spec}
	h := newHost(t)
	t.Cleanup(func() {
		// A failed step leaves the table: the next spec starts afresh.
		exec.Command("nft", "delete", "table", "inet", "migrate").Run()
		exec.Command("nft", "delete", "table", "arp", "migrate").Run()
	})
	a := state.NftTable{Family: "inet", Name: "migrate", Spec: g.spec}
	writeAs(t, h, a, layout)
	v1, err := os.ReadFile(filepath.Join("testdata", "nft", dir, g.name+".nft"))
	if err != nil {
		t.Fatal(err)
	}
	if got := listing(t, g.spec); got != sortElements(string(v1)) {
		t.Fatalf("the layout %d write lists\n%s\nthat release's golden file says\n%s", layout, got, v1)
	}
	wantUnderlay := 0
	if g.spec.Underlay != nil {
		wantUnderlay = 1
	}
	if n := underlayRules(t, h); n != wantUnderlay {
		t.Errorf("layout %d: %d underlay rules found, want %d", layout, n, wantUnderlay)
	}
	noDrift := func(what string, req state.FactsRequest, want state.NftTable) state.Facts {
		t.Helper()
		f := facts(t, h, req)
		if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(state.Object{Nft: &want}) {
			t.Fatalf("%s: facts %v, drift %q", what, f.Nft, f.NftDrift)
		}
		return f
	}
	// Stamped: the old agent's stamp still names the ruleset, the
	// facts take the fast path and the apply starts from its
	// verification. Else another transaction moved the
	// generation: the full comparison.
	counted := map[string]state.Counter{}
	if stamped {
		noDrift("stamped, older layout", state.FactsRequest{NftTable: "migrate", NoCounters: true}, a)
	} else {
		run(t, "nft", "add", "table", "ip", "other")
		run(t, "nft", "delete", "table", "ip", "other")
		noDrift("compared, older layout", state.FactsRequest{NftTable: "migrate"}, a)
	}
	if !stamped && len(g.spec.Accounted) > 0 {
		// Counters as traffic would leave them.
		nftScript(t, `delete element inet migrate acct4 { 198.51.100.10 . tcp . 8080 }
add element inet migrate acct4 { 198.51.100.10 . tcp . 8080 counter packets 7 bytes 700 }
delete element inet migrate flows4 { 198.51.100.10 . tcp . 8080 }
add element inet migrate flows4 { 198.51.100.10 . tcp . 8080 counter packets 3 bytes 180 }
`)
		counted["198.51.100.10 tcp 8080"] = state.Counter{Packets: 7, Bytes: 700, NewFlows: 3}
	}

	// The next apply: a change of elements alone, which on a
	// table of the current layout would touch elements only.
	// (forwards-draining has no elements: the same spec.)
	b := a
	if g.spec.Role == state.RoleOld && g.spec.TunnelDev != "" {
		b.Spec.Accounted = append(append([]state.NftService(nil), a.Spec.Accounted...),
			state.NftService{Addr: netip.MustParseAddr("198.51.100.12"), Proto: "tcp", Port: 80})
	}
	if len(g.spec.UDPServices) > 0 {
		b.Spec.UDPServices = append(append([]state.NftService(nil), a.Spec.UDPServices...),
			state.NftService{Addr: netip.MustParseAddr("198.51.100.12"), Proto: "udp", Port: 53})
	}
	if len(g.spec.NoARP) > 0 {
		b.Spec.NoARP = append(append([]netip.Addr(nil), a.Spec.NoARP...), netip.MustParseAddr("198.51.100.13"))
	}
	if len(g.spec.Forwards) > 0 {
		b.Spec.Forwards = append(append([]state.NftForward(nil), a.Spec.Forwards...),
			state.NftForward{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 2223, To: netip.MustParseAddr("203.0.113.5"), ToPort: 23})
	}
	apply(t, h, update(state.Object{Nft: &a}, state.Object{Nft: &b}))
	want, err := CanonicalText("migrate", b.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := listing(t, b.Spec); got != sortElements(want) {
		t.Fatalf("after the update the kernel lists\n%s\nthe current layout is\n%s", got, want)
	}
	f := noDrift("after the update", state.FactsRequest{NftTable: "migrate"}, b)
	for k, c := range counted {
		if got := f.Stats.Counters[k]; got != c {
			t.Errorf("after the update: counter %s is %+v, want %+v", k, got, c)
		}
	}
	if n := underlayRules(t, h); n != wantUnderlay {
		t.Errorf("current layout: %d underlay rules found, want %d", n, wantUnderlay)
	}
	noDrift("stamped, current layout", state.FactsRequest{NftTable: "migrate", NoCounters: true}, b)

	// Roll back: the first spec, in the current layout.
	apply(t, h, update(state.Object{Nft: &b}, state.Object{Nft: &a}))
	want, err = CanonicalText("migrate", a.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if got := listing(t, a.Spec); got != sortElements(want) {
		t.Fatalf("after the rollback the kernel lists\n%s\nthe current layout is\n%s", got, want)
	}
	f = noDrift("after the rollback", state.FactsRequest{NftTable: "migrate"}, a)
	for k, c := range counted {
		if got := f.Stats.Counters[k]; got != c {
			t.Errorf("after the rollback: counter %s is %+v, want %+v", k, got, c)
		}
	}
	apply(t, h, del(state.Object{Nft: &a}))
	if out := run(t, "nft", "list", "ruleset"); strings.TrimSpace(out) != "" {
		t.Fatalf("left after delete:\n%s", out)
	}
}
