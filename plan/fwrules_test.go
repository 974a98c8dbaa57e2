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
		// ufw allow log ...: a jump to ufw-user-logging-input, whose
		// rules the agent does not report.
		{"a jump to a chain plan does not see, before", append([]state.FwRule{
			ufwRule("ip", "ufw-user-input", state.FwRule{Verdict: "jump ufw-user-logging-input"}),
		}, func() []state.FwRule { o, _ := all(); return o }()...), nil,
			[]string{"old underlay"}, []string{"route in", "route out"}},
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

// firewalldFacts are the chains and rules of firewalld 1.3's table inet
// firewalld (as agent's TestFwRulesFirewalldNetns decodes them from the
// real table) with default zone public, its SSH rule, and, when asked,
// a rich rule for the tunnel's packets (from, to, port), mig0 in zone
// trusted, and OLD's migrate-tunnel policy.
func firewalldFacts(from, to string, port uint16, rich, iface, policy bool) state.Facts {
	f := facts("198.51.100.10/24", 1500)
	var rules []state.FwRule
	chain := func(name string, rs ...state.FwRule) {
		f.Chains = append(f.Chains, state.BaseChain{Family: "inet", Table: "firewalld", Chain: name})
		for _, r := range rs {
			r.Family, r.Table, r.Chain = "inet", "firewalld", name
			rules = append(rules, r)
		}
	}
	f.Chains = append(f.Chains,
		state.BaseChain{Family: "inet", Table: "firewalld", Chain: "filter_INPUT", Hook: "input", Priority: 10, Policy: "accept", Type: "filter"},
		state.BaseChain{Family: "inet", Table: "firewalld", Chain: "filter_FORWARD", Hook: "forward", Priority: 10, Policy: "accept", Type: "filter"})
	zone := func(dir, pol, name, last string, allow ...state.FwRule) {
		z := "filter_" + dir + "_" + name
		var js []state.FwRule
		for _, c := range []string{"filter_" + pol + "_POLICIES_pre", z + "_pre", z + "_log", z + "_deny", z + "_allow", z + "_post", "filter_" + pol + "_POLICIES_post"} {
			js = append(js, state.FwRule{Verdict: "jump " + c})
		}
		if last != "" {
			js = append(js, state.FwRule{Verdict: last})
		}
		chain(z, js...)
		chain(z + "_pre")
		chain(z + "_log")
		chain(z + "_deny")
		chain(z+"_allow", allow...)
		chain(z + "_post")
	}
	inZones := []state.FwRule{{Verdict: "goto filter_IN_public"}}
	fwdZones := []state.FwRule{{Verdict: "goto filter_FWD_public"}}
	var fwdPre []state.FwRule
	if !iface && policy {
		// The operator put mig0 in zone block: the tunnel's outer
		// packets, which never arrive through mig0, are still let in.
		inZones = append([]state.FwRule{{IifName: "mig0", Verdict: "goto filter_IN_block"}}, inZones...)
		fwdZones = append([]state.FwRule{{IifName: "mig0", Verdict: "goto filter_FWD_block"}}, fwdZones...)
		zone("IN", "INPUT", "block", "reject")
		zone("FWD", "FORWARD", "block", "reject")
	}
	if iface {
		inZones = append([]state.FwRule{{IifName: "mig0", Verdict: "goto filter_IN_trusted"}}, inZones...)
		fwdZones = append([]state.FwRule{{IifName: "mig0", Verdict: "goto filter_FWD_trusted"}}, fwdZones...)
		zone("IN", "INPUT", "trusted", "accept")
		zone("FWD", "FORWARD", "trusted", "accept", state.FwRule{OifName: "mig0", Verdict: "accept"})
	}
	if policy {
		fwdPre = append(fwdPre, state.FwRule{OifName: "mig0", Verdict: "jump filter_FWD_policy_migrate-tunnel"})
		chain("filter_FWD_policy_migrate-tunnel", state.FwRule{Verdict: "jump filter_FWD_policy_migrate-tunnel_allow"}, state.FwRule{Verdict: "accept"})
		chain("filter_FWD_policy_migrate-tunnel_allow")
	}
	chain("filter_INPUT_ZONES", inZones...)
	chain("filter_FORWARD_ZONES", fwdZones...)
	chain("filter_INPUT_POLICIES_pre", state.FwRule{Verdict: "jump filter_IN_policy_allow-host-ipv6"})
	chain("filter_IN_policy_allow-host-ipv6", state.FwRule{NfProto: "ipv6", L4Proto: "ipv6-icmp", Verdict: "accept", Opaque: true})
	chain("filter_INPUT_POLICIES_post")
	chain("filter_FORWARD_POLICIES_pre", fwdPre...)
	chain("filter_FORWARD_POLICIES_post")
	allow := []state.FwRule{{L4Proto: "tcp", Dport: 22, Verdict: "accept"}}
	if rich {
		allow = append(allow, state.FwRule{NfProto: "ipv4", Saddr: a(from), Daddr: a(to), L4Proto: "udp", Dport: port, Verdict: "accept"})
	}
	zone("IN", "INPUT", "public", "reject", allow...)
	zone("FWD", "FORWARD", "public", "reject")
	f.FwRules = rules
	return f
}

// firewalld's live rules decide which of its commands plan still gives,
// following its zone dispatch: the rich rule in the default zone, the
// tunnel device in zone trusted, OLD's policy into zone trusted.
func TestFirewalldSeen(t *testing.T) {
	rich := "firewall-cmd --permanent --add-rich-rule='rule family=\"ipv4\" source address=\"203.0.113.20\" destination address=\"198.51.100.10\" port port=\"4789\" protocol=\"udp\" accept'"
	iface := "`firewall-cmd --permanent --zone=trusted --add-interface=mig0`"
	policy := "`firewall-cmd --permanent --new-policy=migrate-tunnel` and `firewall-cmd --permanent --policy=migrate-tunnel --add-ingress-zone=ANY` and `firewall-cmd --permanent --policy=migrate-tunnel --add-egress-zone=trusted` and `firewall-cmd --permanent --policy=migrate-tunnel --set-target=ACCEPT`"
	for _, tc := range []struct {
		name                string
		from, to            string
		port                uint16
		rich, iface, policy bool
		want, not           []string
	}{
		{"nothing allowed", "203.0.113.20", "198.51.100.10", 4789, false, false, false, []string{"`" + rich + "`", iface, policy, "`firewall-cmd --reload`"}, nil},
		{"all allowed", "203.0.113.20", "198.51.100.10", 4789, true, true, true, []string{"host old: firewalld is active (table inet firewalld); its rules allow migrate's traffic"}, []string{"WARNING host old: firewalld", "firewall-cmd"}},
		{"interface only", "203.0.113.20", "198.51.100.10", 4789, false, true, false, []string{"`" + rich + "`", policy, "`firewall-cmd --reload`"}, []string{iface}},
		{"rich rule and policy, mig0 in a zone that rejects", "203.0.113.20", "198.51.100.10", 4789, true, false, true, []string{iface}, []string{rich, policy}},
		{"rich rule for another port", "203.0.113.20", "198.51.100.10", 8472, true, true, true, []string{"`" + rich + "`"}, []string{iface, policy}},
		{"rich rule from another address", "203.0.113.21", "198.51.100.10", 4789, true, true, true, []string{"`" + rich + "`"}, []string{iface, policy}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, src)
			f := map[string]state.Facts{plan.Old: firewalldFacts(tc.from, tc.to, tc.port, tc.rich, tc.iface, tc.policy), plan.New: facts("203.0.113.20/24", 1500)}
			for _, r := range f[plan.Old].FwRules {
				if err := r.Validate(); err != nil {
					t.Fatal(err)
				}
			}
			w := strings.Join(plan.Warnings(c, f), "\n")
			for _, want := range tc.want {
				if !strings.Contains(w, want) {
					t.Errorf("warnings lack %s:\n%s", want, w)
				}
			}
			for _, not := range tc.not {
				if strings.Contains(w, not) {
					t.Errorf("warnings have %s:\n%s", not, w)
				}
			}
		})
	}
}
