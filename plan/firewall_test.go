package plan_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// dockerChains are the chains Docker's iptables-nft rules make (table ip
// nat and ip filter), as the agent reports them.
var dockerChains = []state.BaseChain{
	{Family: "ip", Table: "filter", Chain: "DOCKER"},
	{Family: "ip", Table: "filter", Chain: "DOCKER-ISOLATION-STAGE-1"},
	{Family: "ip", Table: "filter", Chain: "DOCKER-USER"},
	{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "forward", Priority: 0, Policy: "drop", Type: "filter"},
	{Family: "ip", Table: "nat", Chain: "DOCKER"},
	{Family: "ip", Table: "nat", Chain: "PREROUTING", Hook: "prerouting", Priority: -100, Policy: "accept", Type: "nat"},
}

// Docker on both hosts: OLD's moved flows keep their destination, NEW
// routes the answers of flows its Docker DNATs back into the tunnel (the
// fwmark rule and the throw for OLD's endpoint), and plan gives the
// DOCKER-USER commands for OLD's FORWARD drop. Without Docker nothing of
// it appears.
func TestDockerDesired(t *testing.T) {
	c := mustParse(t, src)
	mk := func(docker bool) (*plan.Plan, map[string]state.Facts) {
		t.Helper()
		f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
		if docker {
			for _, h := range []string{plan.Old, plan.New} {
				hf := f[h]
				hf.Chains = dockerChains
				hf.Sysctls["net.ipv4.ip_forward"] = "1"
				f[h] = hf
			}
		}
		p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		return p, f
	}
	p, f := mk(true)
	newSteps, oldSteps := lines(p.Hosts[0].Steps), lines(p.Hosts[1].Steps)
	for _, want := range []string{
		"+ rule v4 pref 900 fwmark 0x20000/0x20000 lookup 4242 proto 77\n",
		"+ route table 4242 throw 198.51.100.10/32\n",
		"answers of flows another table DNATs go back to the tunnel",
	} {
		if !strings.Contains(newSteps, want) {
			t.Errorf("new steps lack %q:\n%s", want, newSteps)
		}
	}
	if !strings.Contains(oldSteps, "moved flows keep their destination (another table DNATs)") {
		t.Errorf("old steps:\n%s", oldSteps)
	}
	w := strings.Join(plan.Warnings(c, f), "\n")
	for _, want := range []string{
		"WARNING host old: table ip filter, chain FORWARD (hook forward) has policy drop",
		"`iptables -I DOCKER-USER -i mig0 -j ACCEPT` and `iptables -I DOCKER-USER -o mig0 -j ACCEPT`",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, "host new") {
		t.Errorf("warning for NEW, whose Docker accepts what migrate brings:\n%s", w)
	}
	// With firewalld on OLD too, DOCKER-USER's rules are firewalld's
	// direct rules, in plan and in status (firewalld flushes iptables'
	// tables at every reload).
	o := f[plan.Old]
	o.Chains = append(append([]state.BaseChain{}, dockerChains...), state.BaseChain{Family: "inet", Table: "firewalld", Chain: "filter_INPUT", Hook: "input", Priority: 10, Policy: "accept", Type: "filter"})
	o.FwRules = []state.FwRule{{Family: "ip", Table: "filter", Chain: "FORWARD", Verdict: "jump DOCKER-USER"}, {Family: "ip", Table: "filter", Chain: "DOCKER-USER", Verdict: "return"}}
	f[plan.Old] = o
	direct := "`firewall-cmd --permanent --direct --add-chain ipv4 filter DOCKER-USER` and `firewall-cmd --permanent --direct --add-rule ipv4 filter DOCKER-USER 0 -i mig0 -j ACCEPT` and `firewall-cmd --permanent --direct --add-rule ipv4 filter DOCKER-USER 0 -o mig0 -j ACCEPT` and `firewall-cmd --reload`"
	if w := strings.Join(plan.Warnings(c, f), "\n"); !strings.Contains(w, "allow the tunnel there with firewalld's direct rules") || !strings.Contains(w, direct) || strings.Contains(w, "iptables -I DOCKER-USER") {
		t.Errorf("warnings with firewalld on OLD, want %s:\n%s", direct, w)
	}
	if b := plan.ForwardDropBroken(c, f); !strings.Contains(b, "accept them in Docker's DOCKER-USER again with firewalld's direct rules") || !strings.Contains(b, direct) {
		t.Errorf("ForwardDropBroken with firewalld on OLD = %q", b)
	}

	p, _ = mk(false)
	all := lines(p.Hosts[0].Steps) + lines(p.Hosts[1].Steps)
	for _, not := range []string{"DNAT", "throw 198.51.100.10"} {
		if strings.Contains(all, not) {
			t.Errorf("without Docker the plan has %q:\n%s", not, all)
		}
	}
	if s := lines(p.Hosts[0].Steps); strings.Contains(s, "fwmark") {
		t.Errorf("without Docker NEW gets a fwmark rule:\n%s", s)
	}
}

// ufw and firewalld on both hosts: plan gives each host the commands for
// its side, for the tunnel type, with the peer's endpoint as source and
// the host's own bind address as destination.
func TestHostFirewallCommands(t *testing.T) {
	ufw := []state.BaseChain{
		{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "forward", Policy: "drop", Type: "filter"},
		{Family: "ip", Table: "filter", Chain: "INPUT", Hook: "input", Policy: "drop", Type: "filter"},
		{Family: "ip", Table: "filter", Chain: "ufw-user-forward"},
		{Family: "ip", Table: "filter", Chain: "ufw-user-input"},
		{Family: "ip6", Table: "filter", Chain: "FORWARD", Hook: "forward", Policy: "drop", Type: "filter"},
		{Family: "ip6", Table: "filter", Chain: "ufw6-user-input"},
	}
	firewalld := []state.BaseChain{
		{Family: "inet", Table: "firewalld", Chain: "filter_FORWARD", Hook: "forward", Priority: 10, Policy: "accept", Type: "filter"},
		{Family: "inet", Table: "firewalld", Chain: "filter_INPUT", Hook: "input", Priority: 10, Policy: "accept", Type: "filter"},
		{Family: "inet", Table: "firewalld", Chain: "filter_PREROUTING", Hook: "prerouting", Priority: 10, Policy: "accept", Type: "filter"},
		{Family: "inet", Table: "firewalld", Chain: "mangle_PREROUTING", Hook: "prerouting", Priority: -140, Policy: "accept", Type: "filter"},
		{Family: "inet", Table: "firewalld", Chain: "nat_PREROUTING", Hook: "prerouting", Priority: -90, Policy: "accept", Type: "nat"},
	}
	for _, tc := range []struct {
		name, tunnel string
		chains       []state.BaseChain
		want         []string
		not          []string
	}{
		{"ufw vxlan", `type = "vxlan"`, ufw, []string{
			"WARNING host old: ufw is active (table ip filter): chain INPUT (hook input) has policy drop: it drops the tunnel's packets from the peer; chain FORWARD (hook forward) has policy drop: it drops the flows OLD forwards to and from mig0. Allow migrate's traffic (before migrate apply): `ufw allow proto udp from 203.0.113.20 to 198.51.100.10 port 4789` and `ufw route allow in on mig0` and `ufw route allow out on mig0`",
			"WARNING host new: ufw is active (table ip filter): chain INPUT (hook input) has policy drop: it drops the tunnel's packets from the peer; what arrives through mig0 for the services passes only if ufw allows their ports. Allow migrate's traffic (before migrate apply): `ufw allow proto udp from 198.51.100.10 to 203.0.113.20 port 4789` and `ufw allow in on mig0`",
		}, []string{"DOCKER-USER", "table ip filter, chain FORWARD", "table ip6 filter, chain FORWARD"}},
		{"ufw vxlan port", "type = \"vxlan\"\n  port = 8472", ufw, []string{"`ufw allow proto udp from 203.0.113.20 to 198.51.100.10 port 8472`"}, nil},
		{"ufw gre", `type = "gre"`, ufw, []string{"`ufw allow proto gre from 203.0.113.20 to 198.51.100.10`", "`ufw allow proto gre from 198.51.100.10 to 203.0.113.20`"}, nil},
		{"ufw wireguard", `type = "wireguard"`, ufw, []string{"`ufw allow proto udp from 203.0.113.20 to any port 51820`"}, nil},
		{"firewalld vxlan", `type = "vxlan"`, firewalld, []string{
			"WARNING host old: firewalld is active (table inet firewalld): chain filter_INPUT (hook input) ends in `reject with icmpx admin-prohibited` for what no zone allows: the tunnel's packets from the peer; chain filter_FORWARD (hook forward) does the same to the flows OLD forwards to and from mig0. Allow migrate's traffic (before migrate apply): `firewall-cmd --permanent --add-rich-rule='rule family=\"ipv4\" source address=\"203.0.113.20\" destination address=\"198.51.100.10\" port port=\"4789\" protocol=\"udp\" accept'` and `firewall-cmd --permanent --zone=trusted --add-interface=mig0` and `firewall-cmd --permanent --new-policy=migrate-tunnel` and `firewall-cmd --permanent --policy=migrate-tunnel --add-ingress-zone=ANY` and `firewall-cmd --permanent --policy=migrate-tunnel --add-egress-zone=trusted` and `firewall-cmd --permanent --policy=migrate-tunnel --set-target=ACCEPT` and `firewall-cmd --reload`",
			"WARNING host new: firewalld is active (table inet firewalld): chain filter_INPUT (hook input) ends in `reject with icmpx admin-prohibited` for what no zone allows: the tunnel's packets from the peer and what arrives through mig0 for the services. Allow migrate's traffic (before migrate apply): `firewall-cmd --permanent --add-rich-rule='rule family=\"ipv4\" source address=\"198.51.100.10\" destination address=\"203.0.113.20\" port port=\"4789\" protocol=\"udp\" accept'` and `firewall-cmd --permanent --zone=trusted --add-interface=mig0` and `firewall-cmd --reload`",
		}, nil},
		{"firewalld gre", `type = "gre"`, firewalld, []string{`rule family="ipv4" source address="203.0.113.20" destination address="198.51.100.10" protocol value="gre" accept`}, nil},
		{"firewalld wireguard", `type = "wireguard"`, firewalld, []string{`rule family="ipv4" source address="203.0.113.20" port port="51820" protocol="udp" accept`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, strings.Replace(src, `type         = "vxlan"`, tc.tunnel, 1))
			f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
			for _, h := range []string{plan.Old, plan.New} {
				hf := f[h]
				hf.Chains = tc.chains
				f[h] = hf
			}
			w := strings.Join(plan.Warnings(c, f), "\n")
			for _, want := range tc.want {
				if !strings.Contains(w, want) {
					t.Errorf("warnings lack\n%s\ngot:\n%s", want, w)
				}
			}
			// firewalld's reverse-path filter is IPv6's only: no
			// warning for these IPv4 services, one per host with an
			// IPv6 one.
			if n := strings.Count(w, "IPv6 rpfilter"); n != 0 {
				t.Errorf("%d rpfilter warnings for IPv4 services:\n%s", n, w)
			}
			c6 := mustParse(t, strings.Replace(src, `type         = "vxlan"`, tc.tunnel, 1)+"service \"web6\" {\n  address  = \"2001:db8::10\"\n  protocol = \"tcp\"\n  ports    = [8080]\n  stage    = \"new\"\n}\n")
			// IPv6_rpfilter=no leaves firewalld's filter_PREROUTING
			// empty; =yes puts its fib rule there (a drop plan
			// cannot read through).
			if n := strings.Count(strings.Join(plan.Warnings(c6, f), "\n"), "IPv6 rpfilter"); n != 0 {
				t.Errorf("%d rpfilter warnings with filter_PREROUTING empty", n)
			}
			for _, h := range []string{plan.Old, plan.New} {
				hf := f[h]
				hf.FwRules = append(hf.FwRules, state.FwRule{Family: "inet", Table: "firewalld", Chain: "filter_PREROUTING", NfProto: "ipv6", Opaque: true, Verdict: "drop"})
				f[h] = hf
			}
			if n := strings.Count(strings.Join(plan.Warnings(c6, f), "\n"), "IPv6 rpfilter"); tc.chains[0].Table == "firewalld" && n != 2 {
				t.Errorf("%d rpfilter warnings with an IPv6 service, want one per host", n)
			}
			for _, not := range tc.not {
				if strings.Contains(w, not) {
					t.Errorf("warnings have %q:\n%s", not, w)
				}
			}
		})
	}
}

// NEW behind 1:1 NAT: its ufw lets in the tunnel's packets to the private
// address its tunnel binds, from OLD's endpoint; OLD's from NEW's public
// endpoint (its NAT gives NEW's packets that source).
func TestHostFirewallCommandsBehindNAT(t *testing.T) {
	c := mustParse(t, src)
	f := natFacts("198.51.100.10", "198.18.0.20")
	for _, h := range []string{plan.Old, plan.New} {
		hf := f[h]
		hf.Chains = []state.BaseChain{{Family: "ip", Table: "filter", Chain: "ufw-user-input"}}
		f[h] = hf
	}
	w := strings.Join(plan.Warnings(c, f), "\n")
	for _, want := range []string{
		"`ufw allow proto udp from 198.51.100.10 to 198.18.0.20 port 4789`",
		"`ufw allow proto udp from 203.0.113.20 to 198.51.100.10 port 4789`",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %s:\n%s", want, w)
		}
	}
}

// Docker's FORWARD drop: the warning until DOCKER-USER (read as the
// agent decodes it) accepts the tunnel both ways, then a note; status's
// ForwardDropBroken only where no rule can accept the flows into the
// tunnel (an accept of part of them, or a rule it cannot read, is not
// "certainly dropped").
func TestDockerForwardDropRead(t *testing.T) {
	c := mustParse(t, src)
	fwd := func(chain string, r state.FwRule) state.FwRule {
		r.Family, r.Table, r.Chain = "ip", "filter", chain
		return r
	}
	docker := []state.FwRule{
		fwd("FORWARD", state.FwRule{Verdict: "jump DOCKER-USER"}),
		fwd("FORWARD", state.FwRule{Verdict: "jump DOCKER-ISOLATION-STAGE-1"}),
		fwd("FORWARD", state.FwRule{OifName: "docker0", Opaque: true, Verdict: "accept"}),
		fwd("FORWARD", state.FwRule{OifName: "docker0", Verdict: "jump DOCKER"}),
		fwd("FORWARD", state.FwRule{IifName: "docker0", Opaque: true, Verdict: "accept"}),
		fwd("DOCKER-ISOLATION-STAGE-1", state.FwRule{Verdict: "return"}),
		fwd("DOCKER-USER", state.FwRule{Verdict: "return"}),
	}
	const warning = "WARNING host old: table ip filter, chain FORWARD (hook forward) has policy drop"
	const note = "host old: table ip filter, chain FORWARD (hook forward) has policy drop; its rules accept what migrate forwards (in and out on mig0)"
	for _, tc := range []struct {
		name       string
		user       []state.FwRule
		accepted   bool
		brokenWhen string
	}{
		{"DOCKER-USER empty", nil, false, "new flows of service web (198.51.100.10:8080/tcp) toward NEW (out on mig0)"},
		{"plan's two rules", []state.FwRule{{IifName: "mig0", Verdict: "accept"}, {OifName: "mig0", Verdict: "accept"}}, true, ""},
		{"only in", []state.FwRule{{IifName: "mig0", Verdict: "accept"}}, false, "toward NEW"},
		{"only out", []state.FwRule{{OifName: "mig0", Verdict: "accept"}}, false, "back from NEW"},
		{"an accept of some sources", []state.FwRule{{Opaque: true, Verdict: "accept"}}, false, ""},
		{"a drop first", []state.FwRule{{Opaque: true, Verdict: "drop"}, {IifName: "mig0", Verdict: "accept"}, {OifName: "mig0", Verdict: "accept"}}, false, ""},
	} {
		f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
		old := f[plan.Old]
		old.Chains = append(append([]state.BaseChain{}, dockerChains...), state.BaseChain{Family: "ip", Table: "filter", Chain: "DOCKER-ISOLATION-STAGE-2"})
		var rules []state.FwRule
		for _, r := range tc.user {
			rules = append(rules, fwd("DOCKER-USER", r))
		}
		old.FwRules = append(rules, docker...)
		f[plan.Old] = old
		w := strings.Join(plan.Warnings(c, f), "\n")
		if tc.accepted != strings.Contains(w, note) || tc.accepted == strings.Contains(w, warning) {
			t.Errorf("%s: warnings (accepted: %v):\n%s", tc.name, tc.accepted, w)
		}
		b := plan.ForwardDropBroken(c, f)
		if (tc.brokenWhen == "") != (b == "") || !strings.Contains(b, tc.brokenWhen) {
			t.Errorf("%s: ForwardDropBroken = %q, want %q", tc.name, b, tc.brokenWhen)
		}
	}
}

// ufw enabled on OLD after the apply with routed traffic at deny: status
// calls the moved flows dropped until ufw-user-forward accepts them (a
// rule for other ports does not), and not when routed traffic is allowed
// (FORWARD's policy accept).
func TestUfwForwardBroken(t *testing.T) {
	c := mustParse(t, src)
	for _, tc := range []struct {
		name   string
		policy string
		user   []state.FwRule
		broken bool
	}{
		{"routed deny, no rule", "drop", nil, true},
		{"routed deny, another port", "drop", []state.FwRule{{L4Proto: "tcp", Dport: 22, Verdict: "accept"}}, true},
		{"routed deny, plan's rules", "drop", []state.FwRule{{IifName: "mig0", Verdict: "accept"}, {OifName: "mig0", Verdict: "accept"}}, false},
		{"routed deny, the service's port", "drop", []state.FwRule{{L4Proto: "tcp", Dport: 8080, Verdict: "accept"}}, false},
		{"routed allow", "accept", nil, false},
	} {
		f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
		old := f[plan.Old]
		old.Chains = []state.BaseChain{
			{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "forward", Policy: tc.policy, Type: "filter"},
			{Family: "ip", Table: "filter", Chain: "INPUT", Hook: "input", Policy: "drop", Type: "filter"},
			{Family: "ip", Table: "filter", Chain: "ufw-user-forward"},
			{Family: "ip", Table: "filter", Chain: "ufw-user-input"},
		}
		for _, r := range tc.user {
			r.Family, r.Table, r.Chain = "ip", "filter", "ufw-user-forward"
			old.FwRules = append(old.FwRules, r)
		}
		f[plan.Old] = old
		b := plan.ForwardDropBroken(c, f)
		if tc.broken != strings.Contains(b, "ufw is active on OLD") || (tc.broken && !strings.Contains(b, "`ufw route allow in on mig0` and `ufw route allow out on mig0`")) {
			t.Errorf("%s: ForwardDropBroken = %q, want broken: %v", tc.name, b, tc.broken)
		}
	}
}

// TestIptablesAdvice: a host firewalled with iptables (iptables-nft's own
// ip filter chains at policy DROP, conntrack's established flows
// accepted first, as an iptables-persistent rules.v4 has them) gets
// plan's and status's advice in iptables' syntax, with where such rules
// are kept (iptables-save), not nft commands and an nftables file.
func TestIptablesAdvice(t *testing.T) {
	c := mustParse(t, src)
	established := state.FwRule{CtState: []string{"established", "related"}, Verdict: "accept"}
	firewalled := func(f state.Facts, chains ...string) state.Facts {
		for _, ch := range chains {
			hook := strings.ToLower(ch)
			f.Chains = append(f.Chains, state.BaseChain{Family: "ip", Table: "filter", Chain: ch, Hook: hook, Policy: "drop", Type: "filter"})
			r := established
			r.Family, r.Table, r.Chain = "ip", "filter", ch
			f.FwRules = append(f.FwRules, r)
		}
		return f
	}
	f := map[string]state.Facts{
		plan.Old: firewalled(facts("198.51.100.10/24", 1500), "FORWARD", "INPUT"),
		plan.New: firewalled(facts("203.0.113.20/24", 1500), "INPUT"),
	}
	w := strings.Join(plan.Warnings(c, f), "\n")
	for _, want := range []string{
		"WARNING host old: table ip filter, chain FORWARD (hook forward) has policy drop (iptables): it drops the traffic migrate forwards unless its own rules accept it. Add rules there (before migrate apply): `iptables -I FORWARD -i mig0 -j ACCEPT` and `iptables -I FORWARD -o mig0 -j ACCEPT`, and save the rules with your other iptables rules (`netfilter-persistent save`",
		"WARNING host old: table ip filter, chain INPUT (hook input) has policy drop: it drops the tunnel's packets from the peer unless its own rules accept them. Accept them (before migrate apply): `iptables -I INPUT -s 203.0.113.20 -d 198.51.100.10 -p udp --dport 4789 -j ACCEPT`, and save the rules",
		"WARNING host new: table ip filter, chain INPUT (hook input) has policy drop: it drops the tunnel's packets from the peer and what arrives through mig0 for the services unless its own rules accept them. Accept them (before migrate apply): `iptables -I INPUT -s 198.51.100.10 -d 203.0.113.20 -p udp --dport 4789 -j ACCEPT` and `iptables -I INPUT -i mig0 -j ACCEPT`, and save the rules",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("plan's warnings lack\n%s\n in:\n%s", want, w)
		}
	}
	if strings.Contains(w, "nft insert") || strings.Contains(w, "nftables.conf") {
		t.Errorf("nft's advice for iptables' chains:\n%s", w)
	}
	// status: the established flows' rule does not take a new flow's
	// first packet; the policy certainly drops it.
	if b := plan.ForwardDropBroken(c, f); !strings.Contains(b, "OLD's table ip filter, chain FORWARD (hook forward) has policy drop and none of its rules accepts the new flows of service web") ||
		!strings.Contains(b, "`iptables -I FORWARD -i mig0 -j ACCEPT` and `iptables -I FORWARD -o mig0 -j ACCEPT`, and save them with your other iptables rules") {
		t.Errorf("ForwardDropBroken = %q", b)
	}
	if b := plan.NewInputBroken(c, f); !strings.Contains(b, "NEW's table ip filter, chain INPUT (hook input) has policy drop") || !strings.Contains(b, "`iptables -I INPUT -i mig0 -j ACCEPT`, and save them") {
		t.Errorf("NewInputBroken = %q", b)
	}
	// A failed tunnel ping: the chain that lacks the tunnel's rule.
	if h := plan.TunnelFirewallHint(c, f); h != "OLD's table ip filter, chain INPUT (hook input) has policy drop and lacks `iptables -I INPUT -s 203.0.113.20 -d 198.51.100.10 -p udp --dport 4789 -j ACCEPT`; NEW's table ip filter, chain INPUT (hook input) has policy drop and lacks `iptables -I INPUT -s 198.51.100.10 -d 203.0.113.20 -p udp --dport 4789 -j ACCEPT`" {
		t.Errorf("TunnelFirewallHint = %q", h)
	}
	// A table of nft's own named filter keeps nft's syntax.
	f[plan.New] = firewalled(facts("203.0.113.20/24", 1500), "input")
	for i := range f[plan.New].Chains {
		f[plan.New].Chains[i].Family, f[plan.New].FwRules[i].Family = "inet", "inet"
	}
	if b := plan.NewInputBroken(c, f); !strings.Contains(b, "`nft insert rule inet filter input iifname \"mig0\" accept`, and in the file that loads the table") {
		t.Errorf("NewInputBroken, nft's table = %q", b)
	}
}

// TestFinalDrop: a base chain with policy accept that ends in a rule
// dropping or rejecting every packet (Debian's example nftables.conf,
// RHEL's iptables-services defaults) drops migrate's traffic as a policy
// drop would; a drop of part of it (invalid flows), or one plan cannot
// read, does not make a chain one.
func TestFinalDrop(t *testing.T) {
	c := mustParse(t, src)
	for _, tc := range []struct {
		name string
		last state.FwRule
		want string // "" for no warning about the chain
	}{
		{"counter drop", state.FwRule{Verdict: "drop"}, "WARNING host new: table inet fw, chain input (hook input) ends in a drop: it drops the tunnel's packets from the peer and what arrives through mig0 for the services unless its own rules accept them. Accept them (before migrate apply): `nft insert rule inet fw input ip saddr 198.51.100.10 ip daddr 203.0.113.20 udp dport 4789 accept` and `nft insert rule inet fw input iifname \"mig0\" accept`"},
		{"reject", state.FwRule{Verdict: "reject"}, "WARNING host new: table inet fw, chain input (hook input) ends in a reject: it drops"},
		{"invalid flows", state.FwRule{CtState: []string{"invalid"}, Verdict: "drop"}, ""},
		{"not read", state.FwRule{Opaque: true, Verdict: "drop"}, ""},
	} {
		f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
		n := f[plan.New]
		n.Chains = []state.BaseChain{{Family: "inet", Table: "fw", Chain: "input", Hook: "input", Policy: "accept", Type: "filter"}}
		for _, r := range []state.FwRule{{CtState: []string{"established", "related"}, Verdict: "accept"}, {L4Proto: "tcp", Dport: 22, Verdict: "accept"}, tc.last} {
			r.Family, r.Table, r.Chain = "inet", "fw", "input"
			n.FwRules = append(n.FwRules, r)
		}
		f[plan.New] = n
		w := strings.Join(plan.Warnings(c, f), "\n")
		if (tc.want == "") != !strings.Contains(w, "chain input") || !strings.Contains(w, tc.want) {
			t.Errorf("%s: warnings\n%s\nwant %q", tc.name, w, tc.want)
		}
		if b := plan.NewInputBroken(c, f); (tc.want == "") != (b == "") {
			t.Errorf("%s: NewInputBroken = %q", tc.name, b)
		}
	}
}

// TestInvalidDropFirst: `ct state invalid drop` before the accepts (as
// most hand-written chains, and the nftables wiki's verdict map, have it)
// does not shadow them: migrate's flows are not invalid.
func TestInvalidDropFirst(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
	n := f[plan.New]
	n.Chains = []state.BaseChain{{Family: "inet", Table: "fw", Chain: "input", Hook: "input", Policy: "drop", Type: "filter"}}
	for _, r := range []state.FwRule{
		{CtState: []string{"established"}, Verdict: "accept"},
		{CtState: []string{"invalid"}, Verdict: "drop"},
		{NfProto: "ipv4", L4Proto: "udp", Saddr: netip.MustParseAddr("198.51.100.10"), Daddr: netip.MustParseAddr("203.0.113.20"), Dport: 4789, Verdict: "accept"},
		{IifName: "mig0", Verdict: "accept"},
	} {
		r.Family, r.Table, r.Chain = "inet", "fw", "input"
		n.FwRules = append(n.FwRules, r)
	}
	f[plan.New] = n
	w := strings.Join(plan.Warnings(c, f), "\n")
	if !strings.Contains(w, "host new: table inet fw, chain input (hook input) has policy drop; its rules accept the tunnel's packets from the peer and what arrives through mig0 for the services") || strings.Contains(w, "WARNING host new: table inet fw") {
		t.Errorf("warnings:\n%s", w)
	}
}

// TestInputDropServiceFamily: IPv6 services over an IPv4 underlay. NEW's
// ip6 input chain never sees the tunnel's packets, but it sees what
// arrives through mig0 for the IPv6 services: plan warns about it with
// that command only (it skipped the chain before), and status too.
func TestInputDropServiceFamily(t *testing.T) {
	c := mustParse(t, src+`
service "web6" {
  address  = "2001:db8::10"
  protocol = "tcp"
  ports    = [8080]
  stage    = "new"
}
`)
	f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
	o := f[plan.Old]
	o.Addrs = append(o.Addrs, state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix("2001:db8::10/64")})
	f[plan.Old] = o
	n := f[plan.New]
	n.Chains = []state.BaseChain{{Family: "ip6", Table: "filter", Chain: "INPUT", Hook: "input", Policy: "drop", Type: "filter"}}
	n.FwRules = []state.FwRule{{Family: "ip6", Table: "filter", Chain: "INPUT", CtState: []string{"established", "related"}, Verdict: "accept"}}
	f[plan.New] = n
	w := strings.Join(plan.Warnings(c, f), "\n")
	if want := "WARNING host new: table ip6 filter, chain INPUT (hook input) has policy drop: it drops what arrives through mig0 for the services unless its own rules accept them. Accept them (before migrate apply): `ip6tables -I INPUT -i mig0 -j ACCEPT`, and save the rules"; !strings.Contains(w, want) {
		t.Errorf("warnings lack\n%s\nin\n%s", want, w)
	}
	if b := plan.NewInputBroken(c, f); !strings.Contains(b, "NEW's table ip6 filter, chain INPUT (hook input) has policy drop and none of its rules accepts the new flows of service web6") {
		t.Errorf("NewInputBroken = %q", b)
	}
	n.FwRules = append(n.FwRules, state.FwRule{Family: "ip6", Table: "filter", Chain: "INPUT", IifName: "mig0", Verdict: "accept"})
	f[plan.New] = n
	if w := strings.Join(plan.Warnings(c, f), "\n"); !strings.Contains(w, "host new: table ip6 filter, chain INPUT (hook input) has policy drop; its rules accept what arrives through mig0 for the services") {
		t.Errorf("warnings with the rule in:\n%s", w)
	}
}

// firewalld08 is what the agent reads of firewalld 0.8's nftables backend
// (RHEL 8.0-8.3; nftables.py of v0.8.2): no policies, the forward chain
// going to the zone of the interface a flow comes in on, then to the one
// it goes out on; zone public on eth0 with ssh. trusted adds mig0 to zone
// trusted (its chains end in accept), rich the tunnel's rich rule.
func firewalld08(trusted bool, rich ...state.FwRule) ([]state.BaseChain, []state.FwRule) {
	base := func(name, hook string) state.BaseChain {
		return state.BaseChain{Family: "inet", Table: "firewalld", Chain: name, Hook: hook, Priority: 10, Policy: "accept", Type: "filter"}
	}
	chains := []state.BaseChain{base("filter_INPUT", "input"), base("filter_FORWARD", "forward")}
	var rules []state.FwRule
	add := func(chain string, rs ...state.FwRule) {
		chains = append(chains, state.BaseChain{Family: "inet", Table: "firewalld", Chain: chain, Read: true})
		for _, r := range rs {
			r.Family, r.Table, r.Chain = "inet", "firewalld", chain
			rules = append(rules, r)
		}
	}
	fixed := func(chain string, dispatch ...string) {
		rs := []state.FwRule{{CtState: []string{"established", "related"}, Verdict: "accept"}, {Opaque: true, Verdict: "accept"}, {IifName: "lo", Verdict: "accept"}}
		for _, d := range dispatch {
			rs = append(rs, state.FwRule{Verdict: "jump " + d})
		}
		rs = append(rs, state.FwRule{CtState: []string{"invalid"}, Verdict: "drop"}, state.FwRule{Verdict: "reject"})
		for _, r := range rs {
			r.Family, r.Table, r.Chain = "inet", "firewalld", chain
			rules = append(rules, r)
		}
	}
	fixed("filter_INPUT", "filter_INPUT_ZONES_SOURCE", "filter_INPUT_ZONES")
	fixed("filter_FORWARD", "filter_FORWARD_IN_ZONES_SOURCE", "filter_FORWARD_IN_ZONES", "filter_FORWARD_OUT_ZONES_SOURCE", "filter_FORWARD_OUT_ZONES")
	zone := func(prefix, name string, final ...state.FwRule) {
		z := "filter_" + prefix + "_" + name
		add(z, append([]state.FwRule{{Verdict: "jump " + z + "_log"}, {Verdict: "jump " + z + "_deny"}, {Verdict: "jump " + z + "_allow"}}, final...)...)
		add(z + "_log")
		add(z + "_deny")
	}
	icmp := state.FwRule{L4Protos: []string{"icmp", "ipv6-icmp"}, Verdict: "accept"}
	zone("IN", "public", icmp)
	add("filter_IN_public_allow", append([]state.FwRule{{L4Proto: "tcp", Dport: 22, CtState: []string{"new", "untracked"}, Verdict: "accept"}}, rich...)...)
	zone("FWDI", "public", icmp)
	add("filter_FWDI_public_allow")
	zone("FWDO", "public")
	add("filter_FWDO_public_allow")
	dispatch := func(chain, dir, zoneChain string) {
		var rs []state.FwRule
		if trusted {
			r := state.FwRule{Verdict: "goto " + strings.Replace(zoneChain, "public", "trusted", 1)}
			if dir == "in" {
				r.IifName = "mig0"
			} else {
				r.OifName = "mig0"
			}
			rs = append(rs, r)
		}
		r := state.FwRule{Verdict: "goto " + zoneChain}
		if dir == "in" {
			r.IifName = "eth0"
		} else {
			r.OifName = "eth0"
		}
		add(chain, append(rs, r, state.FwRule{Verdict: "goto " + zoneChain})...)
	}
	add("filter_INPUT_ZONES_SOURCE")
	add("filter_FORWARD_IN_ZONES_SOURCE")
	add("filter_FORWARD_OUT_ZONES_SOURCE")
	dispatch("filter_INPUT_ZONES", "in", "filter_IN_public")
	dispatch("filter_FORWARD_IN_ZONES", "in", "filter_FWDI_public")
	dispatch("filter_FORWARD_OUT_ZONES", "out", "filter_FWDO_public")
	if trusted {
		accept := state.FwRule{Verdict: "accept"}
		zone("IN", "trusted", accept)
		add("filter_IN_trusted_allow")
		zone("FWDI", "trusted", accept)
		add("filter_FWDI_trusted_allow")
		zone("FWDO", "trusted", accept)
		add("filter_FWDO_trusted_allow")
	}
	return chains, rules
}

// TestFirewalld08: firewalld 0.8 on nftables has no policies: plan gives
// the rich rule and zone trusted for mig0 (whose target also accepts what
// OLD forwards out through it), no --new-policy (0.8's firewall-cmd has
// none), and once both are in its rules, no warning. Status says nothing
// of its forward chain (its `ct status dnat accept` is not read through).
func TestFirewalld08(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
	set := func(trusted bool, rich ...state.FwRule) {
		for _, h := range []string{plan.Old, plan.New} {
			hf := f[h]
			hf.Chains, hf.FwRules = firewalld08(trusted, rich...)
			f[h] = hf
		}
	}
	set(false)
	w := strings.Join(plan.Warnings(c, f), "\n")
	for _, want := range []string{
		"WARNING host old: firewalld is active (table inet firewalld): chain filter_INPUT (hook input) ends in `reject with icmpx admin-prohibited`",
		"(before migrate apply): `firewall-cmd --permanent --add-rich-rule='rule family=\"ipv4\" source address=\"203.0.113.20\" destination address=\"198.51.100.10\" port port=\"4789\" protocol=\"udp\" accept'` and `firewall-cmd --permanent --zone=trusted --add-interface=mig0` and `firewall-cmd --reload`",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, "policy") {
		t.Errorf("policy commands for firewalld 0.8, which has none:\n%s", w)
	}
	if b := plan.ForwardDropBroken(c, f); b != "" {
		t.Errorf("ForwardDropBroken = %q, want nothing (ct status dnat is not read through)", b)
	}
	rich := func(from, to string) state.FwRule {
		return state.FwRule{NfProto: "ipv4", Saddr: netip.MustParseAddr(from), Daddr: netip.MustParseAddr(to), L4Proto: "udp", Dport: 4789, CtState: []string{"new", "untracked"}, Verdict: "accept"}
	}
	set(true, rich("203.0.113.20", "198.51.100.10"), rich("198.51.100.10", "203.0.113.20"))
	w = strings.Join(plan.Warnings(c, f), "\n")
	for _, h := range []string{"old", "new"} {
		if !strings.Contains(w, "host "+h+": firewalld is active (table inet firewalld); its rules allow migrate's traffic") {
			t.Errorf("no note that %s's firewalld allows migrate's traffic:\n%s", h, w)
		}
	}
	if strings.Contains(w, "WARNING") {
		t.Errorf("warnings with the commands in:\n%s", w)
	}
}
