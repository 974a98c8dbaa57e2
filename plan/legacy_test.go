package plan_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// legacyDocker is what the agent reports of Docker's rules written with
// iptables-legacy (nft lists none of them).
var legacyDocker = &state.LegacyFirewall{
	Tables: []string{"ip nat", "ip filter"},
	Families: []state.LegacyFamily{{
		Family: "ip", ForwardPolicy: "DROP", DockerUser: true,
		NAT: []string{
			"-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
			"-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
		},
	}},
}

// Legacy Docker on OLD: the moved flows keep their destination, as with
// an nft nat chain, and plan gives the iptables-legacy commands for
// DOCKER-USER. NEW without legacy tables gets nothing.
func TestLegacyDockerOld(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
	hf := f[plan.Old]
	hf.Legacy = legacyDocker
	f[plan.Old] = hf
	p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	newSteps, oldSteps := lines(p.Hosts[0].Steps), lines(p.Hosts[1].Steps)
	if !strings.Contains(oldSteps, "moved flows keep their destination (another table DNATs)") {
		t.Errorf("old steps lack keep_dest:\n%s", oldSteps)
	}
	if strings.Contains(newSteps, "answers of flows another table DNATs") {
		t.Errorf("new steps route DNAT answers without any DNAT on NEW:\n%s", newSteps)
	}
	w := strings.Join(plan.Warnings(c, f), "\n")
	want := "WARNING host old: legacy iptables (iptables-legacy, not in nft's ruleset): table ip filter, chain FORWARD has policy drop: it drops the traffic migrate forwards unless it accepts it. Accept migrate's flows in chain DOCKER-USER, which Docker keeps for your rules (before migrate apply): `iptables-legacy -I DOCKER-USER -i mig0 -j ACCEPT` and `iptables-legacy -I DOCKER-USER -o mig0 -j ACCEPT`"
	if w != want {
		t.Errorf("warnings:\n%s\nwant\n%s", w, want)
	}
}

// Legacy Docker on NEW: the answers of the flows its DNAT hands to the
// container go back to the tunnel (dnat_mark), as with an nft nat chain;
// NEW does not forward, so its FORWARD drop gets no warning.
func TestLegacyDockerNew(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
	hf := f[plan.New]
	hf.Legacy = legacyDocker
	f[plan.New] = hf
	p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	newSteps, oldSteps := lines(p.Hosts[0].Steps), lines(p.Hosts[1].Steps)
	if !strings.Contains(newSteps, "answers of flows another table DNATs go back to the tunnel") {
		t.Errorf("new steps lack dnat_mark:\n%s", newSteps)
	}
	if strings.Contains(oldSteps, "keep their destination") {
		t.Errorf("old steps keep destinations without any DNAT on OLD:\n%s", oldSteps)
	}
	if w := plan.Warnings(c, f); len(w) != 0 {
		t.Errorf("warnings for NEW, which does not forward: %q", w)
	}
}

// A legacy FORWARD that rejects everything (policy ACCEPT, a final
// REJECT), without DOCKER-USER, gets commands for FORWARD itself; a
// legacy ip6 FORWARD drop does not matter without IPv6 services; nat
// OUTPUT alone (no PREROUTING rule) is no keep_dest; a table the agent
// could not read is said.
func TestLegacyWarnings(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
	hf := f[plan.Old]
	hf.Legacy = &state.LegacyFirewall{
		Tables: []string{"ip filter", "ip nat", "ip6 filter"},
		Families: []state.LegacyFamily{
			{Family: "ip", ForwardPolicy: "ACCEPT", ForwardDrops: []string{"-A FORWARD -i eth1 -j DROP", "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"},
				NAT: []string{"-A OUTPUT -p tcp --dport 25 -j REDIRECT --to-ports 2525"}},
			{Family: "ip6", ForwardPolicy: "DROP"},
		},
	}
	f[plan.Old] = hf
	hn := f[plan.New]
	hn.Legacy = &state.LegacyFirewall{Tables: []string{"ip filter"}, Error: "legacy tables ip filter, but no iptables-legacy-save on the host to read them"}
	f[plan.New] = hn
	p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if oldSteps := lines(p.Hosts[1].Steps); strings.Contains(oldSteps, "keep their destination") {
		t.Errorf("keep_dest for a nat OUTPUT rule only:\n%s", oldSteps)
	}
	w := strings.Join(plan.Warnings(c, f), "\n")
	for _, want := range []string{
		"WARNING host old: legacy iptables (iptables-legacy, not in nft's ruleset): table ip filter, chain FORWARD drops or rejects what its rules do not accept: it drops the traffic migrate forwards unless it accepts it. Accept migrate's flows in a rule at the top of FORWARD (before migrate apply): `iptables-legacy -I FORWARD -i mig0 -j ACCEPT` and `iptables-legacy -I FORWARD -o mig0 -j ACCEPT`",
		"WARNING host new: legacy iptables tables (ip filter) could not be read: legacy tables ip filter, but no iptables-legacy-save on the host to read them.",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, "ip6") || strings.Count(w, "WARNING") != 2 {
		t.Errorf("warnings (want 2, none for ip6 without IPv6 services):\n%s", w)
	}
}

// Over a direct tunnel the legacy commands name the segment's interface
// and the migrated addresses, per family.
func TestLegacyDirect(t *testing.T) {
	c := mustParse(t, directSrc)
	f := directFacts()
	hf := f[plan.Old]
	hf.Legacy = &state.LegacyFirewall{
		Tables:   []string{"ip filter", "ip6 filter"},
		Families: []state.LegacyFamily{{Family: "ip", ForwardPolicy: "DROP", DockerUser: true}, {Family: "ip6", ForwardPolicy: "DROP"}},
	}
	f[plan.Old] = hf
	w := strings.Join(plan.Warnings(c, f), "\n")
	for _, want := range []string{
		"`iptables-legacy -I DOCKER-USER -o eth0 -d 198.51.100.10 -j ACCEPT` and `iptables-legacy -I DOCKER-USER -i eth0 -s 198.51.100.10 -j ACCEPT`",
		"`ip6tables-legacy -I FORWARD -o eth0 -d 2001:db8:100::10 -j ACCEPT` and `ip6tables-legacy -I FORWARD -i eth0 -s 2001:db8:100::10 -j ACCEPT`",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
}

// Only the legacy DNAT, on which keep_dest depends, is part of the facts'
// digest: the operator's DOCKER-USER rules after plan do not make a saved
// plan stale, nor does a host without legacy tables get a new digest.
func TestLegacyDigest(t *testing.T) {
	f := facts("198.51.100.10/24", 1500)
	base := f.Digest()
	f.Legacy = &state.LegacyFirewall{Tables: []string{"ip filter"}, Families: []state.LegacyFamily{{Family: "ip", ForwardPolicy: "DROP"}}}
	if f.Digest() != base {
		t.Errorf("a legacy FORWARD policy changed the digest")
	}
	f.Legacy = legacyDocker
	if f.Digest() == base {
		t.Errorf("a legacy PREROUTING DNAT did not change the digest")
	}
}

// ufw on the legacy backend: ufw's commands for both hosts (an
// iptables-legacy rule would go at ufw's next reload), not the FORWARD
// advice.
func TestLegacyUfw(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
	for _, h := range []string{plan.Old, plan.New} {
		hf := f[h]
		hf.Legacy = &state.LegacyFirewall{Tables: []string{"ip filter"}, Families: []state.LegacyFamily{{Family: "ip", ForwardPolicy: "DROP", Ufw: true}}}
		f[h] = hf
	}
	w := strings.Join(plan.Warnings(c, f), "\n")
	for _, want := range []string{
		"WARNING host old: ufw is active on the legacy backend (iptables-legacy, not in nft's ruleset; plan does not read its rules there): its default policies drop migrate's traffic. Allow it (before migrate apply), unless `ufw status` shows these rules: `ufw allow proto udp from 203.0.113.20 to 198.51.100.10 port 4789` and `ufw route allow in on mig0` and `ufw route allow out on mig0`",
		"WARNING host new: ufw is active on the legacy backend (iptables-legacy, not in nft's ruleset; plan does not read its rules there): its default policies drop migrate's traffic. Allow it (before migrate apply), unless `ufw status` shows these rules: `ufw allow proto udp from 198.51.100.10 to 203.0.113.20 port 4789` and `ufw allow in on mig0`",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, "iptables-legacy -I") || strings.Count(w, "WARNING") != 2 {
		t.Errorf("warnings (want ufw's two only):\n%s", w)
	}
}

// Once the commands' rules are the first a forwarded packet meets (in
// DOCKER-USER, or FORWARD itself), plan notes it instead of warning; with
// one of them, it gives the other only. A rule after one that is not an
// accept does not count (the agent leaves it out of Accepts).
func TestLegacyAccepted(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
	set := func(accepts ...string) string {
		hf := f[plan.Old]
		l := *legacyDocker
		l.Families = []state.LegacyFamily{l.Families[0]}
		l.Families[0].Accepts = accepts
		hf.Legacy = &l
		f[plan.Old] = hf
		return strings.Join(plan.Warnings(c, f), "\n")
	}
	w := set("-A FORWARD -o mig0 -j ACCEPT", "-A DOCKER-USER -i mig0 -j ACCEPT")
	if want := "host old: legacy iptables (iptables-legacy, not in nft's ruleset): table ip filter, chain FORWARD has policy drop; its first rules accept what migrate forwards (in and out on mig0)"; w != want {
		t.Errorf("both accepted:\n%s\nwant\n%s", w, want)
	}
	w = set("-A DOCKER-USER -i mig0 -j ACCEPT", "-A DOCKER-USER -o mig1 -j ACCEPT")
	if !strings.HasSuffix(w, "(before migrate apply): `iptables-legacy -I DOCKER-USER -o mig0 -j ACCEPT`") || strings.Contains(w, "-i mig0") {
		t.Errorf("one accepted:\n%s", w)
	}
}

// TestLegacyUfwRead: ufw on the legacy backend whose tables the agent
// read (LegacyFamily.Chains): plan gives only the commands ufw's chains
// lack, and status judges NEW's ufw as on nft.
func TestLegacyUfwRead(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
	ufwTables := func(user ...state.FwRule) *state.LegacyFirewall {
		fam := state.LegacyFamily{Family: "ip", ForwardPolicy: "DROP", Ufw: true, Chains: []state.BaseChain{
			{Family: "ip", Table: "filter", Chain: "INPUT", Hook: "input", Type: "filter", Policy: "drop"},
			{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "forward", Type: "filter", Policy: "drop"},
			{Family: "ip", Table: "filter", Chain: "ufw-user-input", Read: true},
			{Family: "ip", Table: "filter", Chain: "ufw-user-forward", Read: true},
		}}
		for _, r := range user {
			r.Family, r.Table, r.Chain = "ip", "filter", "ufw-user-input"
			fam.Rules = append(fam.Rules, r)
		}
		return &state.LegacyFirewall{Tables: []string{"ip filter"}, Families: []state.LegacyFamily{fam}}
	}
	n := f[plan.New]
	n.Legacy = ufwTables(state.FwRule{L4Proto: "tcp", Dport: 22, Verdict: "accept"})
	f[plan.New] = n
	w := strings.Join(plan.Warnings(c, f), "\n")
	if want := "WARNING host new: ufw is active on the legacy backend (iptables-legacy, not in nft's ruleset): chain INPUT (hook input) has policy drop: it drops the tunnel's packets from the peer; what arrives through mig0 for the services passes only if ufw allows their ports. Allow migrate's traffic (before migrate apply): `ufw allow proto udp from 198.51.100.10 to 203.0.113.20 port 4789` and `ufw allow in on mig0`"; !strings.Contains(w, want) {
		t.Errorf("warnings lack %q:\n%s", want, w)
	}
	if b := plan.NewInputBroken(c, f); !strings.Contains(b, "ufw is active on NEW (enabled, reset or reloaded after the apply?) and drops the new flows of service web") {
		t.Errorf("NewInputBroken = %q", b)
	}
	if h := plan.TunnelFirewallHint(c, f); !strings.Contains(h, "ufw is active on NEW (legacy backend) and lacks `ufw allow proto udp from 198.51.100.10 to 203.0.113.20 port 4789`") {
		t.Errorf("TunnelFirewallHint = %q", h)
	}
	n.Legacy = ufwTables(state.FwRule{L4Proto: "udp", Saddr: netip.MustParseAddr("198.51.100.10"), Daddr: netip.MustParseAddr("203.0.113.20"), Dport: 4789, Verdict: "accept"}, state.FwRule{IifName: "mig0", Verdict: "accept"})
	f[plan.New] = n
	if w := strings.Join(plan.Warnings(c, f), "\n"); !strings.Contains(w, "host new: ufw is active on the legacy backend (iptables-legacy, not in nft's ruleset); its rules allow migrate's traffic") || strings.Contains(w, "WARNING host new") {
		t.Errorf("warnings with ufw's rules in:\n%s", w)
	}
	if b := plan.NewInputBroken(c, f); b != "" {
		t.Errorf("NewInputBroken with ufw's rules in = %q", b)
	}
}

// TestLegacyForwardRead: with the legacy filter table read whole, plan
// judges FORWARD as it does nft's chains: the accepts appended after
// conntrack's established rule (`iptables-legacy -A`, as administrators
// write them) count, where the first-rules reading of older facts kept
// warning.
func TestLegacyForwardRead(t *testing.T) {
	c := mustParse(t, src)
	f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
	rule := func(r state.FwRule) state.FwRule { r.Family, r.Table, r.Chain = "ip", "filter", "FORWARD"; return r }
	fam := state.LegacyFamily{Family: "ip", ForwardPolicy: "DROP",
		Chains: []state.BaseChain{{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "forward", Type: "filter", Policy: "drop"}},
		Rules:  []state.FwRule{rule(state.FwRule{CtState: []string{"related", "established"}, Verdict: "accept"}), rule(state.FwRule{IifName: "mig0", Verdict: "accept"})},
	}
	warn := func() string {
		hf := f[plan.Old]
		hf.Legacy = &state.LegacyFirewall{Tables: []string{"ip filter"}, Families: []state.LegacyFamily{fam}}
		f[plan.Old] = hf
		return strings.Join(plan.Warnings(c, f), "\n")
	}
	if w := warn(); !strings.Contains(w, "(before migrate apply): `iptables-legacy -I FORWARD -o mig0 -j ACCEPT`") || strings.Contains(w, "-i mig0 -j ACCEPT`") {
		t.Errorf("in accepted, out not:\n%s", w)
	}
	fam.Rules = append(fam.Rules, rule(state.FwRule{OifName: "mig0", Verdict: "accept"}))
	if w, want := warn(), "host old: legacy iptables (iptables-legacy, not in nft's ruleset): table ip filter, chain FORWARD has policy drop; its rules accept what migrate forwards (in and out on mig0)"; w != want {
		t.Errorf("both accepted after the established rule:\n%s\nwant\n%s", w, want)
	}
}
