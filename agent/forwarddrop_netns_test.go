package agent

import (
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// forwardDropPlan moves 198.51.100.10 (and 2001:db8::10) through mig0.
const forwardDropPlan = `
host "old" {
  ssh         = "root@198.51.100.10:22"
  known_hosts = "/dev/null"
}
host "new" {
  ssh         = "root@203.0.113.20"
  known_hosts = "/dev/null"
}
tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
service "web" {
  address  = "198.51.100.10"
  protocol = "tcp"
  ports    = [8080]
  stage    = "new"
}
service "web6" {
  address  = "2001:db8::10"
  protocol = "tcp"
  ports    = [8080]
  stage    = "new"
}
`

// hostFacts reads this namespace's chains and rules as the agent reports
// them, as the facts of a host holding cidrs on its uplink, eth0 (not in
// this namespace: plan reads the facts only), with forwardDropPlan.
func hostFacts(t *testing.T, cidrs ...string) (*config.Config, state.Facts) {
	t.Helper()
	c, err := config.Parse([]byte(forwardDropPlan), "m.hcl")
	if err != nil {
		t.Fatal(err)
	}
	chains, rules, err := ForeignFirewall("migrate")
	if err != nil {
		t.Fatal(err)
	}
	f := state.Facts{Chains: chains, FwRules: rules}
	for _, a := range cidrs {
		f.Addrs = append(f.Addrs, state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix(a)})
	}
	return c, f
}

// forwardDrops says what plan makes of OLD's forward drops, as the agent
// reads them here.
func forwardDrops(t *testing.T) map[string]plan.ForwardDrop {
	t.Helper()
	c, old := hostFacts(t, "198.51.100.10/24", "2001:db8::10/64")
	f := map[string]state.Facts{plan.Old: old}
	out := map[string]plan.ForwardDrop{}
	for _, d := range plan.ForwardDrops(c, f) {
		out[d.Family+" "+d.Table+" "+d.Chain] = d
	}
	if w := plan.ForwardDropBroken(c, f); w != "" {
		t.Logf("status: %s", w)
	}
	return out
}

// TestForwardDropDocker28Netns loads Docker 28's rules
// (testdata/docker-28.rules: FORWARD policy drop, DOCKER-USER first,
// then DOCKER-FORWARD and the chains it jumps to) with iptables-nft in a
// fresh network namespace. Without the operator's rules the flows OLD
// forwards into mig0 certainly reach the policy (status says so); with
// the two DOCKER-USER rules plan prints, the chain accepts them both
// ways; with one of them it does not.
func TestForwardDropDocker28Netns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	sh(t, "iptables-nft-restore", "testdata/docker-28.rules")
	const fwd = "ip filter FORWARD"
	d, ok := forwardDrops(t)[fwd]
	if !ok || d.Accepts || !strings.Contains(d.Drops, "new flows of service web (198.51.100.10:8080/tcp) toward NEW (out on mig0)") {
		t.Fatalf("Docker 28, DOCKER-USER empty: %+v (found %v), want the flows toward NEW dropped", d, ok)
	}
	sh(t, "iptables-nft", "-I", "DOCKER-USER", "-i", "mig0", "-j", "ACCEPT")
	if d := forwardDrops(t)[fwd]; d.Accepts {
		t.Errorf("only -i mig0 accepted: %+v, want not all accepted", d)
	}
	sh(t, "iptables-nft", "-I", "DOCKER-USER", "-o", "mig0", "-j", "ACCEPT")
	if d := forwardDrops(t)[fwd]; !d.Accepts || d.Drops != "" {
		t.Errorf("with plan's DOCKER-USER rules: %+v, want accepted", d)
	}
	// Configuration management empties DOCKER-USER: dropped again.
	sh(t, "iptables-nft", "-F", "DOCKER-USER")
	if d := forwardDrops(t)[fwd]; d.Accepts || d.Drops == "" {
		t.Errorf("DOCKER-USER flushed: %+v, want dropped", d)
	}
}

// TestForwardDropDockerOldNetns is the same with the layout of Docker
// 20.10 to 26 (FORWARD jumps to DOCKER-USER, DOCKER-ISOLATION-STAGE-1,
// then Docker's own rules for docker0).
func TestForwardDropDockerOldNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	for _, r := range []string{
		"-P FORWARD DROP", "-N DOCKER", "-N DOCKER-ISOLATION-STAGE-1", "-N DOCKER-ISOLATION-STAGE-2", "-N DOCKER-USER",
		"-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
		"-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-A FORWARD -o docker0 -j DOCKER", "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT", "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
		"-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT",
		"-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2", "-A DOCKER-ISOLATION-STAGE-1 -j RETURN",
		"-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP", "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
		"-A DOCKER-USER -j RETURN",
	} {
		sh(t, append([]string{"iptables-nft"}, strings.Fields(r)...)...)
	}
	const fwd = "ip filter FORWARD"
	if d := forwardDrops(t)[fwd]; d.Accepts || d.Drops == "" {
		t.Errorf("Docker 20.10-26, DOCKER-USER only returns: %+v, want dropped", d)
	}
	sh(t, "iptables-nft", "-I", "DOCKER-USER", "-i", "mig0", "-j", "ACCEPT")
	sh(t, "iptables-nft", "-I", "DOCKER-USER", "-o", "mig0", "-j", "ACCEPT")
	if d := forwardDrops(t)[fwd]; !d.Accepts {
		t.Errorf("with plan's DOCKER-USER rules: %+v, want accepted", d)
	}
}

// TestForwardDropNftNetns: a hand-written inet table whose forward chain
// has policy drop. Its own rules are read whatever the table's name;
// a jump to a chain plan does not read leaves it unknown (neither
// accepted nor certainly dropped).
func TestForwardDropNftNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	sh(t, "nft", "add table inet fw")
	sh(t, "nft", "add chain inet fw forward { type filter hook forward priority filter; policy drop; }")
	sh(t, "nft", "add rule inet fw forward ct state established,related accept")
	sh(t, "nft", "add rule inet fw forward ct state invalid drop")
	const fwd = "inet fw forward"
	// A new flow's first packet is neither established nor related
	// (nor invalid): it reaches the policy.
	if d := forwardDrops(t)[fwd]; d.Accepts || !strings.Contains(d.Drops, "(198.51.100.10:8080/tcp) toward NEW") {
		t.Errorf("ct state established,related accept only: %+v, want the new flows toward NEW dropped", d)
	}
	_, rules, err := ForeignFirewall("migrate")
	if err != nil {
		t.Fatal(err)
	}
	want := []state.FwRule{
		{Family: "inet", Table: "fw", Chain: "forward", CtState: []string{"established", "related"}, Verdict: "accept"},
		{Family: "inet", Table: "fw", Chain: "forward", CtState: []string{"invalid"}, Verdict: "drop"},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("ct state rules decoded as %+v, want %+v", rules, want)
	}
	// `ct state != established` (a cmp without the bitwise) is not
	// read: unknown. A ct state vmap is, element by element: a new
	// flow's first packet is in none of its states.
	sh(t, "nft", "insert rule inet fw forward ct state != established accept")
	if d := forwardDrops(t)[fwd]; d.Accepts || d.Drops != "" {
		t.Errorf("ct state != established accept first: %+v, want unknown", d)
	}
	sh(t, "nft", "flush chain inet fw forward")
	sh(t, "nft", "add rule inet fw forward ct state vmap { established : accept, related : accept, invalid : drop }")
	if d := forwardDrops(t)[fwd]; d.Accepts || !strings.Contains(d.Drops, "(198.51.100.10:8080/tcp) toward NEW") {
		t.Errorf("ct state vmap: %+v, want dropped", d)
	}
	sh(t, "nft", "flush chain inet fw forward")
	sh(t, "nft", "add rule inet fw forward iifname lo accept")
	if d := forwardDrops(t)[fwd]; d.Accepts || !strings.Contains(d.Drops, "(198.51.100.10:8080/tcp) toward NEW") {
		t.Errorf("nothing for mig0: %+v, want dropped", d)
	}
	sh(t, "nft", "add rule inet fw forward iifname mig0 accept")
	sh(t, "nft", "add rule inet fw forward oifname mig0 accept")
	if d := forwardDrops(t)[fwd]; !d.Accepts {
		t.Errorf("iifname and oifname mig0 accepted: %+v, want accepted", d)
	}
	// An accept through a set may hold mig0: accepted or not, it
	// cannot tell, and it does not call the flows dropped.
	sh(t, "nft", "flush chain inet fw forward")
	sh(t, "nft", "add set inet fw trusted { type ifname; elements = { \"mig0\" }; }")
	sh(t, "nft", "add rule inet fw forward iifname @trusted accept")
	sh(t, "nft", "add rule inet fw forward oifname @trusted accept")
	if d := forwardDrops(t)[fwd]; d.Accepts || d.Drops != "" {
		t.Errorf("accepts through a set: %+v, want unknown", d)
	}
	sh(t, "nft", "add rule inet fw forward iifname mig0 accept")
	sh(t, "nft", "add rule inet fw forward oifname mig0 accept")
	// A chain it jumps to is read too: a drop there comes first.
	sh(t, "nft", "add chain inet fw mine")
	sh(t, "nft", "insert rule inet fw forward jump mine")
	sh(t, "nft", "add rule inet fw mine oifname mig0 drop")
	if d := forwardDrops(t)[fwd]; d.Accepts || !strings.Contains(d.Drops, "(198.51.100.10:8080/tcp) toward NEW") {
		t.Errorf("a jump to a chain that drops the flows first: %+v, want dropped", d)
	}
	// One whose rules it cannot read through (a mark) leaves it
	// unknown.
	sh(t, "nft", "flush chain inet fw mine")
	sh(t, "nft", "add rule inet fw mine meta mark 7 drop")
	if d := forwardDrops(t)[fwd]; d.Accepts || d.Drops != "" {
		t.Errorf("a jump to a chain with a mark's drop first: %+v, want unknown", d)
	}
}

// TestFwRulesSetsNetns: the sets of an input chain with policy drop, as
// hand-written firewalls use them, are read (anonymous and named, ports
// single and in intervals, protocols); an inverted lookup, a verdict map
// and a concatenation are not.
func TestFwRulesSetsNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	sh(t, "nft", "add table inet fw")
	sh(t, "nft", "add chain inet fw input { type filter hook input priority filter; policy drop; }")
	sh(t, "nft", "add set inet fw web { type inet_service; elements = { 8080, 8443 }; }")
	for _, r := range []string{
		"meta l4proto { icmp, ipv6-icmp } accept",
		"tcp dport { 22, 80, 443 } accept",
		"tcp dport { 1000-2000, 3000 } accept",
		"tcp dport @web accept",
		"tcp dport != { 25 } drop",
		"ip saddr . tcp dport { 192.0.2.1 . 22 } accept",
		"iif lo accept",
	} {
		sh(t, "nft", "add rule inet fw input "+r)
	}
	_, rules, err := ForeignFirewall("migrate")
	if err != nil {
		t.Fatal(err)
	}
	rule := func(r state.FwRule) state.FwRule {
		r.Family, r.Table, r.Chain = "inet", "fw", "input"
		return r
	}
	want := []state.FwRule{
		rule(state.FwRule{L4Protos: []string{"icmp", "ipv6-icmp"}, Verdict: "accept"}),
		rule(state.FwRule{L4Proto: "tcp", Dports: [][2]uint16{{22, 22}, {80, 80}, {443, 443}}, Verdict: "accept"}),
		rule(state.FwRule{L4Proto: "tcp", Dports: [][2]uint16{{1000, 2000}, {3000, 3000}}, Verdict: "accept"}),
		rule(state.FwRule{L4Proto: "tcp", Dports: [][2]uint16{{8080, 8080}, {8443, 8443}}, Verdict: "accept"}),
		rule(state.FwRule{L4Proto: "tcp", Opaque: true, Verdict: "drop"}),
		rule(state.FwRule{NfProto: "ipv4", L4Proto: "tcp", Opaque: true, Verdict: "accept"}), // the concatenation
		rule(state.FwRule{IifName: "lo", Verdict: "accept"}),
	}
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("set rules decoded as\n%+v\nwant\n%+v", rules, want)
	}
}

// TestForwardDropIptablesNetns: the firewall of a host kept with
// iptables (iptables-persistent's rules.v4, restored by iptables-nft):
// FORWARD and INPUT at policy DROP, conntrack's established flows
// accepted first with `-m conntrack --ctstate` or `-m state --state`,
// which iptables-nft writes as xtables matches, not as nft's `ct state`.
// They are read as states: a new flow's first packet is neither, so the
// flows toward NEW certainly reach FORWARD's policy (status can say so);
// with plan's two iptables rules the chain accepts them. A match that is
// not read (an inverted state) leaves it unknown.
func TestForwardDropIptablesNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	for _, r := range []string{
		"-P INPUT DROP", "-P FORWARD DROP",
		"-A INPUT -i lo -j ACCEPT",
		"-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-A INPUT -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT",
		"-A INPUT -p udp -m udp --dport 4000:4010 -j ACCEPT",
		// firewalld's iptables backend: the conntrack match's own
		// bits for DNAT (128) and untracked (256; 16 in the state match).
		"-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT",
		"-A INPUT -p udp -m udp --dport 4789 -m conntrack --ctstate NEW,UNTRACKED -j ACCEPT",
		"-A INPUT -m state --state UNTRACKED -j ACCEPT",
		"-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT",
		"-A FORWARD -m conntrack --ctstate INVALID -j DROP",
	} {
		sh(t, append([]string{"iptables-nft"}, strings.Fields(r)...)...)
	}
	sh(t, "ip6tables-nft", "-P", "FORWARD", "DROP")
	sh(t, "ip6tables-nft", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "ACCEPT")
	_, rules, err := ForeignFirewall("migrate")
	if err != nil {
		t.Fatal(err)
	}
	in := func(r state.FwRule) state.FwRule { r.Family, r.Table, r.Chain = "ip", "filter", "INPUT"; return r }
	fw := func(r state.FwRule) state.FwRule { r.Family, r.Table, r.Chain = "ip", "filter", "FORWARD"; return r }
	want := []state.FwRule{
		fw(state.FwRule{CtState: []string{"established", "related"}, Verdict: "accept"}),
		fw(state.FwRule{CtState: []string{"invalid"}, Verdict: "drop"}),
		in(state.FwRule{IifName: "lo", Verdict: "accept"}),
		in(state.FwRule{CtState: []string{"established", "related"}, Verdict: "accept"}),
		in(state.FwRule{L4Proto: "tcp", Dport: 22, Verdict: "accept"}),
		in(state.FwRule{L4Proto: "udp", Dports: [][2]uint16{{4000, 4010}}, Verdict: "accept"}),
		in(state.FwRule{CtState: []string{"established", "related", "dnat"}, Verdict: "accept"}),
		in(state.FwRule{L4Proto: "udp", Dport: 4789, CtState: []string{"new", "untracked"}, Verdict: "accept"}),
		in(state.FwRule{CtState: []string{"untracked"}, Verdict: "accept"}),
		{Family: "ip6", Table: "filter", Chain: "FORWARD", CtState: []string{"established"}, Verdict: "accept"},
	}
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("iptables rules decoded as\n%+v\nwant\n%+v", rules, want)
	}
	for _, fwd := range []string{"ip filter FORWARD", "ip6 filter FORWARD"} {
		if d := forwardDrops(t)[fwd]; d.Accepts || !strings.Contains(d.Drops, "toward NEW (out on mig0)") {
			t.Errorf("%s, established flows only: %+v, want the new flows toward NEW dropped", fwd, d)
		}
	}
	sh(t, "iptables-nft", "-I", "FORWARD", "-i", "mig0", "-j", "ACCEPT")
	sh(t, "iptables-nft", "-I", "FORWARD", "-o", "mig0", "-j", "ACCEPT")
	if d := forwardDrops(t)["ip filter FORWARD"]; !d.Accepts || d.Drops != "" {
		t.Errorf("with plan's iptables rules: %+v, want accepted", d)
	}
	sh(t, "ip6tables-nft", "-I", "FORWARD", "-m", "conntrack", "!", "--ctstate", "NEW", "-j", "ACCEPT")
	if d := forwardDrops(t)["ip6 filter FORWARD"]; d.Accepts || d.Drops != "" {
		t.Errorf("an inverted state first: %+v, want unknown", d)
	}
}

// TestFwRulesPolicyAcceptNetns: the rules of a filter chain at the input
// or forward hook are read whatever its policy (one with policy accept
// may end in a drop or reject: state.BaseChain.Filters); other chains'
// are not.
func TestFwRulesPolicyAcceptNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	sh(t, "nft", "add table inet fw")
	sh(t, "nft", "add chain inet fw input { type filter hook input priority filter; policy accept; }")
	sh(t, "nft", "add rule inet fw input tcp dport 22 accept")
	sh(t, "nft", "add rule inet fw input counter drop")
	sh(t, "nft", "add chain inet fw out { type filter hook output priority filter; policy accept; }")
	sh(t, "nft", "add rule inet fw out counter drop")
	sh(t, "nft", "add chain inet fw nat_in { type nat hook input priority 100; policy accept; }")
	sh(t, "nft", "add rule inet fw nat_in counter accept")
	sh(t, "iptables-nft", "-A", "FORWARD", "-j", "REJECT")
	_, rules, err := ForeignFirewall("migrate")
	if err != nil {
		t.Fatal(err)
	}
	want := []state.FwRule{
		{Family: "inet", Table: "fw", Chain: "input", L4Proto: "tcp", Dport: 22, Verdict: "accept"},
		{Family: "inet", Table: "fw", Chain: "input", Verdict: "drop"},
		{Family: "ip", Table: "filter", Chain: "FORWARD", Verdict: "reject"},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Errorf("rules read\n%+v\nwant\n%+v", rules, want)
	}
}

// TestFwRulesServerRulesetNetns loads the nftables wiki's "simple
// ruleset for a server" (wiki.nftables.org: inbound at policy drop, a ct
// state verdict map, a meta protocol verdict map jumping to a chain per
// family, the open ports in a set; forward at policy drop), as NEW's
// firewall. The verdict maps are read element by element, the chains
// they jump to with them: a service's new flow in on mig0 certainly
// reaches the policy (status can say so), until the rule plan gives is
// in.
func TestFwRulesServerRulesetNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	sh(t, "nft", "-f", "testdata/server-ruleset.nft")
	chains, rules, err := ForeignFirewall("migrate")
	if err != nil {
		t.Fatal(err)
	}
	rule := func(chain string, r state.FwRule) state.FwRule {
		r.Family, r.Table, r.Chain = "inet", "firewall", chain
		return r
	}
	want := []state.FwRule{
		rule("inbound", state.FwRule{CtState: []string{"established"}, Verdict: "accept"}),
		rule("inbound", state.FwRule{CtState: []string{"related"}, Verdict: "accept"}),
		rule("inbound", state.FwRule{CtState: []string{"invalid"}, Verdict: "drop"}),
		rule("inbound", state.FwRule{IifName: "lo", Verdict: "accept"}),
		rule("inbound", state.FwRule{NfProto: "ipv4", Verdict: "jump inbound_ipv4"}),
		rule("inbound", state.FwRule{NfProto: "ipv6", Verdict: "jump inbound_ipv6"}),
		rule("inbound", state.FwRule{L4Proto: "tcp", Dports: [][2]uint16{{22, 22}, {80, 80}, {443, 443}}, Verdict: "accept"}),
		// icmp type: nft's nfproto dependency, the protocol, then the
		// type, which is not read.
		rule("inbound_ipv4", state.FwRule{NfProto: "ipv4", L4Proto: "icmp", Verdict: "accept", Opaque: true}),
		rule("inbound_ipv6", state.FwRule{NfProto: "ipv6", L4Proto: "ipv6-icmp", Verdict: "accept", Opaque: true}),
		rule("inbound_ipv6", state.FwRule{NfProto: "ipv6", L4Proto: "ipv6-icmp", Verdict: "accept", Opaque: true}),
	}
	// The element order of a map is the kernel's: compare as sets.
	sortRules := func(l []state.FwRule) []state.FwRule {
		l = append([]state.FwRule(nil), l...)
		sort.SliceStable(l, func(i, j int) bool { return fmt.Sprint(l[i]) < fmt.Sprint(l[j]) })
		return l
	}
	if !reflect.DeepEqual(sortRules(rules), sortRules(want)) {
		t.Errorf("rules read\n%+v\nwant\n%+v", rules, want)
	}
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	read := 0
	for _, ch := range chains {
		if ch.Read {
			read++
		}
	}
	if read != 2 {
		t.Errorf("chains marked read: %d, want inbound_ipv4 and inbound_ipv6:\n%+v", read, chains)
	}

	broken := func() string {
		c, f := hostFacts(t, "203.0.113.20/24")
		return plan.NewInputBroken(c, map[string]state.Facts{plan.New: f, plan.Old: {}})
	}
	if b := broken(); !strings.Contains(b, "NEW's table inet firewall, chain inbound (hook input) has policy drop and none of its rules accepts the new flows of service web (198.51.100.10:8080/tcp) in on mig0") {
		t.Errorf("NewInputBroken = %q, want the service's new flows dropped", b)
	}
	sh(t, "nft", "insert rule inet firewall inbound iifname \"mig0\" accept")
	if b := broken(); b != "" {
		t.Errorf("with plan's rule: NewInputBroken = %q", b)
	}
}
