package kernel

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/state"
)

// ruleHandles lists the handles of the rules of table inet migrate, in
// order: they change when a rule is written again.
func ruleHandles(t *testing.T) string {
	t.Helper()
	out := run(t, "nft", "-a", "list", "table", "inet", "migrate")
	var hs []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "comment \"migrate:") {
			if m := regexp.MustCompile(`# handle (\d+)`).FindStringSubmatch(l); m != nil {
				hs = append(hs, m[1])
			}
		}
	}
	if len(hs) == 0 {
		t.Fatalf("no rules:\n%s", out)
	}
	return strings.Join(hs, " ")
}

func nftScript(t *testing.T, script string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.nft")
	if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "nft", "-f", p)
}

// TestNftIncremental: a change of elements alone changes set elements
// only (the rules are the same objects, same handles), a change of the
// fixed part rewrites the rules but keeps the sets that stay; the
// per-service counters survive both, and the kernel holds exactly the
// new spec (no drift) after each.
func TestNftIncremental(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	spec := oldSpec()
	tbl := state.NftTable{Family: "inet", Name: "migrate", Spec: spec}
	apply(t, h, create(state.Object{Nft: &tbl}))
	before := run(t, "nft", "list", "table", "inet", "migrate")
	// Counters as traffic would leave them, put there by hand: the
	// elements are the same, so this is not drift.
	nftScript(t, `delete element inet migrate acct4 { 198.51.100.10 . tcp . 8080 }
add element inet migrate acct4 { 198.51.100.10 . tcp . 8080 counter packets 7 bytes 700 }
delete element inet migrate flows4 { 198.51.100.10 . tcp . 8080 }
add element inet migrate flows4 { 198.51.100.10 . tcp . 8080 counter packets 3 bytes 180 }
delete element inet migrate acct6 { 2001:db8::10 . tcp . 25 }
add element inet migrate acct6 { 2001:db8::10 . tcp . 25 counter packets 11 bytes 1100 }
`)
	counted := map[string]state.Counter{
		"198.51.100.10 tcp 8080": {Packets: 7, Bytes: 700, NewFlows: 3},
		"2001:db8::10 tcp 25":    {Packets: 11, Bytes: 1100},
	}
	check := func(what string, spec state.NftSpec) {
		t.Helper()
		f := nftFactsOf(t, h, "migrate")
		want := state.NftTable{Family: "inet", Name: "migrate", Spec: spec}
		if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(state.Object{Nft: &want}) {
			t.Fatalf("%s: facts %v, drift %q", what, f.Nft, f.NftDrift)
		}
		for k, c := range counted {
			if got := f.Stats.Counters[k]; got != c {
				t.Errorf("%s: counter %s is %+v, want %+v", what, k, got, c)
			}
		}
		if len(f.Stats.Counters) != len(spec.Accounted) {
			t.Errorf("%s: %d counters, %d accounted", what, len(f.Stats.Counters), len(spec.Accounted))
		}
	}
	check("first apply", spec)
	step := func(what string, next state.NftSpec, rulesKept bool) {
		t.Helper()
		hs := ruleHandles(t)
		a := state.NftTable{Family: "inet", Name: "migrate", Spec: spec}
		b := state.NftTable{Family: "inet", Name: "migrate", Spec: next}
		apply(t, h, update(state.Object{Nft: &a}, state.Object{Nft: &b}))
		check(what, next)
		if got := ruleHandles(t); (got == hs) != rulesKept {
			t.Errorf("%s: rule handles %q before, %q after; rules kept should be %v", what, hs, got, rulesKept)
		}
		spec = next
	}
	clone := func(s state.NftSpec) state.NftSpec {
		s.Services = append([]state.NftService(nil), s.Services...)
		s.Accounted = append([]state.NftService(nil), s.Accounted...)
		s.Forwards = append([]state.NftForward(nil), s.Forwards...)
		return s
	}

	next := clone(spec)
	next.Services = append(next.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.12"), Proto: "tcp", Port: 80, Percent: 100})
	next.Accounted = append(next.Accounted, state.NftService{Addr: netip.MustParseAddr("198.51.100.12"), Proto: "tcp", Port: 80})
	step("a service added", next, true)

	next = clone(spec)
	next.Services[0].Percent = 50 // 198.51.100.10 tcp 8080: svc4 -> canary4, 50 % in use already
	step("a stage change to a percent in use", next, true)

	next = clone(spec)
	next.Services[2].Percent = 50 // 198.51.100.11 tcp 25: canary_10 is no longer used
	step("a stage change that drops a canary chain", next, false)
	if out := run(t, "nft", "list", "table", "inet", "migrate"); strings.Contains(out, "canary_10") {
		t.Fatalf("canary_10 left:\n%s", out)
	}

	next = clone(spec)
	next.Services = append(next.Services[:1:1], next.Services[2:]...) // 198.51.100.10 udp 53 goes
	next.Accounted = append(next.Accounted[:2:2], next.Accounted[3:]...)
	step("a service removed", next, true)

	next = clone(spec)
	next.ForwardMark = 0x400000
	next.Forwards = []state.NftForward{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 2222, To: netip.MustParseAddr("203.0.113.5"), ToPort: 22}}
	step("forwards added", next, false)

	next = clone(spec)
	next.Forwards[0].To = netip.MustParseAddr("203.0.113.6")
	next.Forwards = append(next.Forwards, state.NftForward{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: 2223, To: netip.MustParseAddr("203.0.113.5"), ToPort: 23})
	step("a forward changed and one added", next, true)

	next = clone(spec)
	next.Underlay = nil
	step("the underlay filter removed", next, false)

	// Back to the first spec, as a rollback does: the same table, counters
	// and all (elements removed in between start from zero again, as they
	// did then).
	step("back to the first spec", oldSpec(), false)
	after := run(t, "nft", "list", "table", "inet", "migrate")
	after = strings.NewReplacer("counter packets 7 bytes 700", "counter packets 0 bytes 0",
		"counter packets 3 bytes 180", "counter packets 0 bytes 0",
		"counter packets 11 bytes 1100", "counter packets 0 bytes 0").Replace(after)
	if sortedLines(after) != sortedLines(before) {
		t.Errorf("table after the way back differs:\n%s\nfirst:\n%s", after, before)
	}
	if after != before {
		t.Logf("same lines, other order (hash sets list in hash order):\n%s", after)
	}
}

func sortedLines(s string) string {
	l := strings.Split(s, "\n")
	for i := range l {
		l[i] = strings.TrimSpace(strings.TrimSuffix(l[i], ","))
	}
	sortStrings(l)
	return strings.Join(l, "\n")
}

func sortStrings(l []string) { sort.Strings(l) }

// TestNftUpdateAfterHandEdit: the apply reuses the facts' verification
// only while nothing changed the ruleset. A hand edit between the facts
// and the apply makes the apply read the table again, find the drift and
// replace the table whole, hand edit included.
func TestNftUpdateAfterHandEdit(t *testing.T) {
	if !inNetns(t) {
		return
	}
	needNft(t)
	h := newHost(t)
	a := state.NftTable{Family: "inet", Name: "migrate", Spec: oldSpec()}
	apply(t, h, create(state.Object{Nft: &a}))
	for _, edit := range []string{
		"add element inet migrate svc4 { 198.51.100.10 . tcp . 9 }",
		"add rule inet migrate prerouting counter",
		"add chain inet migrate extra",
	} {
		if f := nftFactsOf(t, h, "migrate"); f.NftDrift != "" {
			t.Fatalf("drift before %q: %s", edit, f.NftDrift)
		}
		nftScript(t, edit+"\n")
		b := a
		b.Spec.Services = append(append([]state.NftService(nil), a.Spec.Services...), state.NftService{Addr: netip.MustParseAddr("198.51.100.12"), Proto: "tcp", Port: 80, Percent: 100})
		apply(t, h, update(state.Object{Nft: &a}, state.Object{Nft: &b}))
		f := nftFactsOf(t, h, "migrate")
		if f.NftDrift != "" || f.Nft == nil || !(state.Object{Nft: f.Nft}).Equal(state.Object{Nft: &b}) {
			t.Fatalf("after %q and an update: drift %q", edit, f.NftDrift)
		}
		out := run(t, "nft", "list", "table", "inet", "migrate")
		if strings.Contains(out, "tcp . 9 ") || strings.Contains(out, "tcp . 9,") || strings.Contains(out, "chain extra") {
			t.Fatalf("hand edit %q left after the update:\n%s", edit, out)
		}
		apply(t, h, update(state.Object{Nft: &b}, state.Object{Nft: &a}))
	}
}
