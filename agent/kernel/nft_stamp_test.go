package kernel

import (
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/state"
)

// stampedNow tells whether facts would take the fast path now: the
// agent's record carries the stamp of the namespace's current ruleset.
func stampedNow(t *testing.T, h *Host) bool {
	t.Helper()
	cc, err := h.NewNft()
	if err != nil {
		t.Fatal(err)
	}
	g, err := cc.GetGen()
	if err != nil {
		t.Fatal(err)
	}
	saved := h.verified
	_, ok := h.nftStamped("migrate", g.ID)
	h.verified = saved
	return ok
}

// editRecord rewrites the agent's record through f.
func editRecord(t *testing.T, h *Host, f func(r *nftRecord)) {
	t.Helper()
	r, err := h.loadNftRecord("migrate")
	if err != nil {
		t.Fatal(err)
	}
	f(r)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.nftStatePath("migrate"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestNftStampedFacts: facts skip listing migrate's table only while the
// namespace's ruleset is exactly what migrate's own last transaction
// left (same generation, boot and namespace); every change by hand to
// the table, any other change to the ruleset, another boot or namespace
// and a record without a stamp go through the full comparison, and the
// hand edits are reported as drift.
func TestNftStampedFacts(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	if _, _, ok := h.nftWhere(); !ok {
		t.Skipf("no boot id or netns cookie here: %v", h.whereErr)
	}
	// Each facts call comes from a fresh agent, as each CLI command
	// starts one: nothing of an earlier verification is kept in memory.
	factsOf := func(counters bool) state.Facts {
		t.Helper()
		h2, err := New(h.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		defer h2.Close()
		return facts(t, h2, state.FactsRequest{NftTable: "migrate", NoCounters: !counters})
	}
	expect := func(what string, spec state.NftSpec, fast bool) {
		t.Helper()
		if got := stampedNow(t, h); got != fast {
			t.Fatalf("%s: fast path %v, want %v", what, got, fast)
		}
		want := state.NftTable{Family: "inet", Name: "migrate", Spec: spec}
		for _, counters := range []bool{false, true} {
			f := factsOf(counters)
			if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(state.Object{Nft: &want}) {
				t.Fatalf("%s (counters %v): facts %v, drift %q", what, counters, f.Nft, f.NftDrift)
			}
		}
	}
	a := state.NftTable{Family: "inet", Name: "migrate", Spec: oldSpec()}
	apply(t, h, create(state.Object{Nft: &a}))
	expect("created", a.Spec, true)

	b := a
	b.Spec.Services = append(append([]state.NftService(nil), a.Spec.Services...), state.NftService{Addr: netip.MustParseAddr("198.51.100.12"), Proto: "tcp", Port: 80, Percent: 100})
	apply(t, h, update(state.Object{Nft: &a}, state.Object{Nft: &b}))
	expect("a service added (elements only)", b.Spec, true)

	c := b
	c.Spec.Services = append([]state.NftService(nil), b.Spec.Services...)
	c.Spec.Services[2].Percent = 50 // canary_10 goes: the rules are rewritten
	apply(t, h, update(state.Object{Nft: &b}, state.Object{Nft: &c}))
	expect("a canary chain dropped (rules rewritten)", c.Spec, true)

	// Hand edits of migrate's table: each is drift, found although the
	// record's stamp was current just before.
	for _, e := range []struct{ name, cmd, want string }{
		{"canary verdict", "delete element inet migrate canary4 { 198.51.100.11 . tcp . 25 }\n" +
			"add element inet migrate canary4 { 198.51.100.11 . tcp . 25 : accept }", "verdict"},
		{"element removed", "delete element inet migrate svc4 { 198.51.100.12 . tcp . 80 }", "svc4 has"},
		{"element added", "add element inet migrate svc4 { 198.51.100.10 . tcp . 9 }", "svc4 has"},
		{"rule added", "add rule inet migrate prerouting counter", "no migrate tag"},
	} {
		if !stampedNow(t, h) {
			t.Fatalf("%s: no fast path before the edit", e.name)
		}
		nftScript(t, e.cmd+"\n")
		if stampedNow(t, h) {
			t.Fatalf("%s: fast path after a hand edit", e.name)
		}
		for _, counters := range []bool{false, true} {
			f := factsOf(counters)
			if !strings.Contains(f.NftDrift, e.want) {
				t.Fatalf("%s (counters %v): drift %q, want it to mention %q", e.name, counters, f.NftDrift, e.want)
			}
		}
		f := factsOf(false)
		apply(t, h, update(state.Object{Nft: f.Nft}, state.Object{Nft: &c}))
		expect(e.name+", repaired", c.Spec, true)
	}

	// Not drift, but not migrate's transaction either: full comparison.
	nftScript(t, "add table inet other\n")
	expect("another table added", c.Spec, false)
	nftScript(t, "delete table inet other\n")
	expect("another table deleted", c.Spec, false)
	apply(t, h, update(state.Object{Nft: &c}, state.Object{Nft: &b}))
	expect("written again", b.Spec, true)

	// Facts for a plan render nothing: plan changes nothing.
	facts(t, h, state.FactsRequest{NftTable: "migrate", NoCounters: true})
	if h.verified == nil || h.verified.rendering != nil || h.verified.rendered != nil {
		t.Fatal("facts for a plan (no ForUpdate) started a rendering")
	}
	apply(t, h, update(state.Object{Nft: &b}, state.Object{Nft: &c}))
	expect("updated without a rendering from the facts", c.Spec, true)
	apply(t, h, update(state.Object{Nft: &c}, state.Object{Nft: &b}))
	expect("and back", b.Spec, true)

	// Facts, then an update, in one agent (as apply does): the update
	// diffs from the rendering made in the background after the facts.
	facts(t, h, state.FactsRequest{NftTable: "migrate", NoCounters: true, ForUpdate: true})
	if h.verified == nil || h.verified.rendering == nil {
		t.Fatal("no background rendering after stamped facts for an update")
	}
	apply(t, h, update(state.Object{Nft: &b}, state.Object{Nft: &c}))
	expect("updated from the background rendering", c.Spec, true)
	apply(t, h, update(state.Object{Nft: &c}, state.Object{Nft: &b}))
	expect("and back", b.Spec, true)

	// A stamp of another boot or namespace, or none, is not trusted.
	var keep nftRecord
	editRecord(t, h, func(r *nftRecord) {
		keep = *r
		s := *r.Written
		s.BootID = "00000000-0000-0000-0000-000000000000"
		r.Written = &s
	})
	expect("another boot", b.Spec, false)
	editRecord(t, h, func(r *nftRecord) { s := *keep.Written; s.Netns++; r.Written = &s })
	expect("another namespace", b.Spec, false)
	editRecord(t, h, func(r *nftRecord) { r.Written = nil })
	expect("a record without a stamp", b.Spec, false)
	editRecord(t, h, func(r *nftRecord) { *r = keep })
	expect("the stamp back", b.Spec, true)

	// A record that says more than the kernel holds is drift, stamp or
	// not... as long as the generation moved. With the generation
	// unchanged, the record is trusted: it is the agent's own file
	// (0600 under /var/lib/migrate), as in the full comparison.
	apply(t, h, del(state.Object{Nft: &b}))
	if f := factsOf(false); f.Nft != nil || f.NftDrift != "" {
		t.Fatalf("after delete: %v %q", f.Nft, f.NftDrift)
	}
}
