package plan_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// ufwChains are the chains ufw 0.36 with IPv6 makes, as the agent
// reports them (the ones plan looks at).
var ufwChains = []state.BaseChain{
	{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "forward", Policy: "drop", Type: "filter"},
	{Family: "ip", Table: "filter", Chain: "INPUT", Hook: "input", Policy: "drop", Type: "filter"},
	{Family: "ip", Table: "filter", Chain: "ufw-user-forward"},
	{Family: "ip", Table: "filter", Chain: "ufw-user-input"},
	{Family: "ip6", Table: "filter", Chain: "FORWARD", Hook: "forward", Policy: "drop", Type: "filter"},
	{Family: "ip6", Table: "filter", Chain: "INPUT", Hook: "input", Policy: "drop", Type: "filter"},
	{Family: "ip6", Table: "filter", Chain: "ufw6-user-forward"},
	{Family: "ip6", Table: "filter", Chain: "ufw6-user-input"},
}

func ufwRule(family, chain string, r state.FwRule) state.FwRule {
	r.Family, r.Table, r.Chain = family, "filter", chain
	if r.Verdict == "" && !r.Opaque {
		r.Verdict = "accept"
	}
	return r
}

// The rules `ufw allow ...` writes (as the agent decodes them, see
// agent's TestFwRulesNetns) for the commands plan gives each host of src.
var (
	a           = netip.MustParseAddr
	oldUnderlay = ufwRule("ip", "ufw-user-input", state.FwRule{L4Proto: "udp", Saddr: a("203.0.113.20"), Daddr: a("198.51.100.10"), Dport: 4789})
	newUnderlay = ufwRule("ip", "ufw-user-input", state.FwRule{L4Proto: "udp", Saddr: a("198.51.100.10"), Daddr: a("203.0.113.20"), Dport: 4789})
	routeIn     = []state.FwRule{ufwRule("ip", "ufw-user-forward", state.FwRule{IifName: "mig0"}), ufwRule("ip6", "ufw6-user-forward", state.FwRule{IifName: "mig0"})}
	routeOut    = []state.FwRule{ufwRule("ip", "ufw-user-forward", state.FwRule{OifName: "mig0"}), ufwRule("ip6", "ufw6-user-forward", state.FwRule{OifName: "mig0"})}
	inOn        = []state.FwRule{ufwRule("ip", "ufw-user-input", state.FwRule{IifName: "mig0"}), ufwRule("ip6", "ufw6-user-input", state.FwRule{IifName: "mig0"})}
	ssh         = ufwRule("ip", "ufw-user-input", state.FwRule{L4Proto: "tcp", Dport: 22})
)

// ufw's live rules decide which of its commands plan still gives: none
// of them, some, or all there; rules for another port, address, protocol
// or device, a rule narrowed by an expression the agent does not decode,
// or a deny before the allow do not count.
func TestUfwSeen(t *testing.T) {
	cmd := map[string]string{
		"old underlay": "`ufw allow proto udp from 203.0.113.20 to 198.51.100.10 port 4789`",
		"route in":     "`ufw route allow in on mig0`",
		"route out":    "`ufw route allow out on mig0`",
		"new underlay": "`ufw allow proto udp from 198.51.100.10 to 203.0.113.20 port 4789`",
		"in on":        "`ufw allow in on mig0`",
	}
	all := func() (o, n []state.FwRule) {
		o = append(append([]state.FwRule{ssh, oldUnderlay}, routeIn...), routeOut...)
		n = append([]state.FwRule{ssh, newUnderlay}, inOn...)
		return o, n
	}
	with := func(rs []state.FwRule, i int, f func(*state.FwRule)) []state.FwRule {
		rs = append([]state.FwRule(nil), rs...)
		f(&rs[i])
		return rs
	}
	for _, tc := range []struct {
		name     string
		old, new []state.FwRule
		want     []string // commands still given; none: a note instead
		not      []string
	}{
		{"nothing allowed", []state.FwRule{ssh}, []state.FwRule{ssh}, []string{"old underlay", "route in", "route out", "new underlay", "in on"}, nil},
		{"all allowed", func() []state.FwRule { o, _ := all(); return o }(), func() []state.FwRule { _, n := all(); return n }(), nil, nil},
		{"part allowed", []state.FwRule{ssh, routeIn[0], routeIn[1]}, []state.FwRule{newUnderlay},
			[]string{"old underlay", "route out", "in on"}, []string{"route in", "new underlay"}},
		{"only the IPv4 half of an interface rule", func() []state.FwRule { o, _ := all(); return o }(), []state.FwRule{newUnderlay, inOn[0]},
			[]string{"in on"}, []string{"new underlay"}},
		{"another port", with(func() []state.FwRule { o, _ := all(); return o }(), 1, func(r *state.FwRule) { r.Dport = 8472 }), nil,
			[]string{"old underlay"}, []string{"route in", "route out"}},
		{"another source", with(func() []state.FwRule { o, _ := all(); return o }(), 1, func(r *state.FwRule) { r.Saddr = a("203.0.113.21") }), nil,
			[]string{"old underlay"}, []string{"route in"}},
		{"another destination", with(func() []state.FwRule { o, _ := all(); return o }(), 1, func(r *state.FwRule) { r.Daddr = a("198.51.100.11") }), nil,
			[]string{"old underlay"}, []string{"route in"}},
		{"another protocol", with(func() []state.FwRule { o, _ := all(); return o }(), 1, func(r *state.FwRule) { r.L4Proto, r.Dport = "gre", 0 }), nil,
			[]string{"old underlay"}, []string{"route in"}},
		{"another device", with(func() []state.FwRule { o, _ := all(); return o }(), 2, func(r *state.FwRule) { r.IifName = "mig1" }), nil,
			[]string{"route in"}, []string{"old underlay", "route out"}},
		{"a deny verdict", with(func() []state.FwRule { o, _ := all(); return o }(), 5, func(r *state.FwRule) { r.Verdict = "drop" }), nil,
			[]string{"route out"}, []string{"old underlay", "route in"}},
		// iifname mig0 drop, then oifname mig0 accept: a packet could
		// come in on mig0 and go out on it.
		{"a deny on the other side, before", with(func() []state.FwRule { o, _ := all(); return o }(), 3, func(r *state.FwRule) { r.Verdict = "drop" }), nil,
			[]string{"route in", "`ufw route allow out on mig0` (its rule is there, but after a rule in ufw6-user-forward"}, []string{"old underlay"}},
		{"an unknown narrowing expression", with(func() []state.FwRule { o, _ := all(); return o }(), 1, func(r *state.FwRule) { r.Opaque = true }), nil,
			[]string{"old underlay"}, []string{"route in", "route out"}},
		{"broader rules", []state.FwRule{
			ufwRule("ip", "ufw-user-input", state.FwRule{L4Proto: "udp", Dport: 4789}), // ufw allow 4789/udp
			ufwRule("ip", "ufw-user-forward", state.FwRule{}),                          // anything
			ufwRule("ip6", "ufw6-user-forward", state.FwRule{}),
		}, nil, nil, nil},
		// ufw deny proto udp from 203.0.113.21 / to port 53, then the allows.
		{"a deny that excludes migrate's traffic, before", append([]state.FwRule{
			ufwRule("ip", "ufw-user-input", state.FwRule{Saddr: a("203.0.113.21"), Verdict: "drop"}),
			ufwRule("ip", "ufw-user-forward", state.FwRule{IifName: "eth1", Verdict: "reject"}),
		}, func() []state.FwRule { o, _ := all(); return o }()...), nil, nil, nil},
		{"a deny that may stop migrate's traffic, before", append([]state.FwRule{
			ufwRule("ip", "ufw-user-input", state.FwRule{L4Proto: "udp", Verdict: "drop"}),
			ufwRule("ip", "ufw-user-forward", state.FwRule{L4Proto: "tcp", Dport: 25, Verdict: "reject"}),
			ufwRule("ip", "ufw-user-forward", state.FwRule{Opaque: true}),
		}, func() []state.FwRule { o, _ := all(); return o }()...), nil,
			[]string{"old underlay", "route in", "route out", "its rule is there, but after a rule in ufw-user-input", "its rule is there, but after a rule in ufw-user-forward"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, src)
			f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
			for h, rules := range map[string][]state.FwRule{plan.Old: tc.old, plan.New: tc.new} {
				hf := f[h]
				hf.Chains, hf.FwRules = ufwChains, rules
				f[h] = hf
				for _, r := range rules {
					if err := r.Validate(); err != nil {
						t.Fatal(err)
					}
				}
			}
			w := strings.Join(plan.Warnings(c, f), "\n")
			for _, want := range tc.want {
				if s, ok := cmd[want]; ok {
					want = s
				}
				if !strings.Contains(w, want) {
					t.Errorf("warnings lack %s:\n%s", want, w)
				}
			}
			for _, not := range tc.not {
				if strings.Contains(w, cmd[not]) {
					t.Errorf("warnings give %s, which the rules hold:\n%s", cmd[not], w)
				}
			}
			for _, host := range []string{plan.Old, plan.New} {
				var given bool
				for name, s := range cmd {
					if strings.Contains(w, s) && strings.HasPrefix(name, map[string]string{plan.Old: "old", plan.New: "new"}[host]) ||
						strings.Contains(w, s) && host == plan.Old && strings.HasPrefix(name, "route") ||
						strings.Contains(w, s) && host == plan.New && name == "in on" {
						given = true
					}
				}
				warned := strings.Contains(w, "WARNING host "+host+": ufw is active")
				noted := strings.Contains(w, "host "+host+": ufw is active (table ip filter); its rules allow migrate's traffic")
				if warned != given || noted == given {
					t.Errorf("host %s: commands given %v, warned %v, noted %v:\n%s", host, given, warned, noted, w)
				}
			}
		})
	}
}
