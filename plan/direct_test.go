package plan_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// directSrc: OLD and NEW on one segment (198.51.100.0/24, NEW's
// segment address .20 on eth1 beside its own public one), with an IPv4
// and an IPv6 service on OLD's segment addresses.
var directSrc = strings.Replace(strings.Replace(src, `type         = "vxlan"`, `type         = "direct"`, 1),
	`new_endpoint = "203.0.113.20"`, `new_endpoint = "198.51.100.20"`, 1) + `
service "web6" {
  address  = "2001:db8:100::10"
  protocol = "udp"
  ports    = [53]
  stage    = "new"
}
`

func directFacts() map[string]state.Facts {
	o := facts("198.51.100.10/24", 1500)
	o.Addrs = append(o.Addrs, state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix("2001:db8:100::10/64")})
	o.Sysctls["net.ipv6.conf.eth0.accept_ra"] = "1"
	o.PeerLink = &state.PeerLink{Addr: "198.51.100.20", Dev: "eth0", Neigh: "reachable", LinkLocal: "fe80::1:10"}
	n := facts("203.0.113.20/24", 1500)
	n.Links = append(n.Links, state.Link{Name: "eth1", Type: "veth", MTU: 1500, Up: true})
	n.Addrs = append(n.Addrs, state.Addr{Dev: "eth1", CIDR: netip.MustParsePrefix("198.51.100.20/24")}, state.Addr{Dev: "eth1", CIDR: netip.MustParsePrefix("2001:db8:100::20/64")})
	n.PeerLink = &state.PeerLink{Addr: "198.51.100.10", Dev: "eth1", Neigh: "stale", LinkLocal: "fe80::1:20"}
	return map[string]state.Facts{plan.Old: o, plan.New: n}
}

func TestDirectPlan(t *testing.T) {
	c := mustParse(t, directSrc)
	p, err := plan.Make(c, directFacts(), state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	old, nw := lines(p.Steps(plan.Old)), lines(p.Steps(plan.New))
	t.Logf("old:\n%snew:\n%s", old, nw)
	for _, w := range []string{
		// No device, no inner address: the table routes to NEW's
		// segment addresses.
		"route table 4242 0.0.0.0/0 via 198.51.100.20 dev eth0",
		"route table 4242 ::/0 via 2001:db8:100::20 dev eth0",
		"fwmark 0x20000/0x20000",
		"net.ipv4.conf.eth0.accept_local",
		"net.ipv4.conf.eth0.rp_filter",
		"net.ipv4.conf.all.send_redirects",
		"net.ipv4.conf.eth0.send_redirects",
		"net.ipv4.ip_early_demux",
		"net.ipv6.conf.eth0.accept_ra",
		"NEW's packets: from 198.51.100.10, 2001:db8:100::10 on eth0",
	} {
		if !strings.Contains(old, w) {
			t.Errorf("old lacks %q", w)
		}
	}
	for _, w := range []string{
		// IPv4 may route via an address NEW holds on lo (with
		// arp_announce 2); IPv6 may not: OLD's link-local.
		"route table 4242 0.0.0.0/0 via 198.51.100.10 dev eth1",
		"route table 4242 ::/0 via fe80::1:10 dev eth1",
		"net.ipv4.conf.eth1.rp_filter",
		"net.ipv4.conf.eth1.arp_announce",
		"198.51.100.10/32 dev lo",
		"2001:db8:100::10/128 dev lo",
		"no ARP for 198.51.100.10",
		"udp answers from the service address",
	} {
		if !strings.Contains(nw, w) {
			t.Errorf("new lacks %q", w)
		}
	}
	for _, no := range []string{"mig0", "169.254.42", "fe80::42", "throw", "underlay"} {
		if strings.Contains(old+nw, no) {
			t.Errorf("a direct plan mentions %q", no)
		}
	}
	if p.Verify == nil || p.Verify.OldPings != "198.51.100.20" || p.Verify.NewPings != "198.51.100.10" {
		t.Errorf("verify = %+v, want the endpoints", p.Verify)
	}
	cloud := false
	for _, n := range p.Notes {
		cloud = cloud || strings.Contains(n, "source/destination check")
	}
	if !cloud {
		t.Errorf("no cloud caveat in the notes: %q", p.Notes)
	}
	for _, h := range []string{plan.Old, plan.New} {
		r := plan.FactsRequest(c, h)
		if !strings.Contains(strings.Join(r.Sysctls, " "), "net.ipv4.conf.*.rp_filter") {
			t.Errorf("%s: facts request reads %v, not every interface's rp_filter", h, r.Sysctls)
		}
	}
}

// plan refuses direct when the hosts are not on one link, with the
// reason, and when the link check could not run.
func TestDirectRefusesHostsNotOnOneLink(t *testing.T) {
	c := mustParse(t, directSrc)
	for _, tc := range []struct {
		name string
		edit func(map[string]state.Facts)
		want string
	}{
		{"gateway", func(f map[string]state.Facts) {
			f[plan.Old].PeerLink.Gw = "198.51.100.1"
		}, "m.hcl:10:1: direct tunnel: OLD reaches NEW's endpoint 198.51.100.20 through the gateway 198.51.100.1 (dev eth0): OLD and NEW are not on one link"},
		{"other device", func(f map[string]state.Facts) {
			f[plan.New].PeerLink.Dev = "eth0"
		}, "NEW reaches OLD's endpoint 198.51.100.10 by eth0, but its own endpoint 198.51.100.20 is on eth1"},
		{"no answer", func(f map[string]state.Facts) {
			f[plan.New].PeerLink.Neigh = "failed"
		}, "nothing answered for it there after a probe (neighbour entry: failed)"},
		{"not asked", func(f map[string]state.Facts) {
			o := f[plan.Old]
			o.PeerLink = nil
			f[plan.Old] = o
		}, "could not ask OLD how it reaches NEW's endpoint"},
		{"endpoint not held", func(f map[string]state.Facts) {
			n := f[plan.New]
			n.Addrs = n.Addrs[:1]
			f[plan.New] = n
		}, "new_endpoint 198.51.100.20 is not an address NEW holds on an interface"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := directFacts()
			tc.edit(f)
			_, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// With a direct tunnel there is no device to trust: the firewall advice
// names the migrated addresses on each host's segment interface, never a
// whole interface and never a tunnel's underlay rule.
func TestDirectFirewallWarnings(t *testing.T) {
	c := mustParse(t, directSrc)
	f := directFacts()
	for _, h := range []string{plan.Old, plan.New} {
		hf := f[h]
		hf.Chains = []state.BaseChain{
			{Family: "ip", Table: "filter", Chain: "ufw-user-input"},
			{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "forward", Policy: "drop", Type: "filter"},
			{Family: "inet", Table: "firewalld", Chain: "filter_INPUT", Hook: "input", Policy: "accept", Type: "filter"},
		}
		f[h] = hf
	}
	p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(p.Notes, "\n")
	t.Logf("notes:\n%s", all)
	for _, w := range []string{
		"ufw route allow out on eth0 to 198.51.100.10",
		"ufw route allow in on eth0 from 2001:db8:100::10",
		"ufw allow in on eth1 to 198.51.100.10",
		`firewall-cmd --permanent --policy=migrate-direct --add-rich-rule='rule family="ipv6" source address="2001:db8:100::10" accept'`,
		`firewall-cmd --permanent --add-rich-rule='rule family="ipv4" destination address="198.51.100.10" accept'`,
	} {
		if !strings.Contains(all, w) {
			t.Errorf("notes lack %q", w)
		}
	}
	for _, no := range []string{"proto gre", "proto udp", "allow in on eth0`", "--add-interface", `""`} {
		if strings.Contains(all, no) {
			t.Errorf("notes advise %q for a direct tunnel", no)
		}
	}
}

// Docker's FORWARD drop on OLD with a direct tunnel: the advice is
// iptables rules in DOCKER-USER (nft syntax cannot go into Docker's
// iptables chains), one pair per migrated address of the chain's family;
// a plain nft forward chain with policy drop keeps the nft advice.
func TestDirectDockerUserAdvice(t *testing.T) {
	c := mustParse(t, directSrc)
	f := directFacts()
	hf := f[plan.Old]
	hf.Chains = []state.BaseChain{
		{Family: "ip", Table: "filter", Chain: "DOCKER-USER"},
		{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "forward", Policy: "drop", Type: "filter"},
		{Family: "inet", Table: "mine", Chain: "fwd", Hook: "forward", Policy: "drop", Type: "filter"},
	}
	f[plan.Old] = hf
	p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(p.Notes, "\n")
	t.Logf("notes:\n%s", all)
	for _, w := range []string{
		"table ip filter, chain FORWARD (hook forward) has policy drop: it drops the traffic migrate forwards unless it accepts it. Docker keeps chain DOCKER-USER for your rules; accept migrate's flows on eth0 there (before migrate apply): `iptables -I DOCKER-USER -o eth0 -d 198.51.100.10 -j ACCEPT` and `iptables -I DOCKER-USER -i eth0 -s 198.51.100.10 -j ACCEPT`",
		"table inet mine, chain fwd (hook forward) has policy drop",
		"`nft insert rule inet mine fwd oifname \"eth0\" ip6 daddr 2001:db8:100::10 accept`",
	} {
		if !strings.Contains(all, w) {
			t.Errorf("notes lack %q", w)
		}
	}
	for _, no := range []string{"iptables -I DOCKER-USER -o eth0 -d 2001:db8", "DOCKER-USER -o eth0 -d 198.51.100.10 -j ACCEPT` and `nft"} {
		if strings.Contains(all, no) {
			t.Errorf("notes advise %q", no)
		}
	}
}

// Docker on NEW (another table's nat chain at prerouting): the answers of
// the flows it DNATs go back to OLD, but only flows to the migrated
// addresses are marked (the segment also brings other hosts' flows to
// NEW's own published ports); no throw route, there are no outer
// packets. Without Docker nothing of this.
func TestDirectDNATReplies(t *testing.T) {
	c := mustParse(t, directSrc)
	for _, docker := range []bool{false, true} {
		f := directFacts()
		if docker {
			n := f[plan.New]
			n.Chains = []state.BaseChain{{Family: "ip", Table: "nat", Chain: "PREROUTING", Hook: "prerouting", Priority: -100, Policy: "accept", Type: "nat"}}
			f[plan.New] = n
		}
		p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		var spec *state.NftSpec
		for _, s := range p.Steps(plan.New) {
			if o := s.Object(); o.Nft != nil {
				spec = &o.Nft.Spec
			}
		}
		if spec == nil {
			t.Fatal("no nft table on NEW")
		}
		nw := lines(p.Steps(plan.New))
		rule := strings.Contains(nw, "fwmark 0x20000/0x20000")
		if !docker {
			if spec.DNATReplies || len(spec.PeerDst) > 0 || rule || strings.Contains(nw, "accept_local") || strings.Contains(nw, "iif lo lookup 4242") {
				t.Errorf("without a foreign DNAT on NEW: dnat_replies %v, peer_dst %v, fwmark rule %v (or accept_local):\n%s", spec.DNATReplies, spec.PeerDst, rule, nw)
			}
			continue
		}
		if !spec.DNATReplies || fmt.Sprint(spec.PeerDst) != "[198.51.100.10 2001:db8:100::10]" || spec.TunnelDev != "eth1" {
			t.Errorf("with Docker on NEW: dnat_replies %v, peer_dst %v, tunnel_dev %q; want true, the migrated addresses, eth1", spec.DNATReplies, spec.PeerDst, spec.TunnelDev)
		}
		if n := strings.Count(nw, "fwmark 0x20000/0x20000 lookup 4242"); n != 2 {
			t.Errorf("NEW has %d fwmark rules, want one per family:\n%s", n, nw)
		}
		if !strings.Contains(nw, "net.ipv4.conf.eth1.accept_local") {
			t.Errorf("NEW does not accept OLD's probe from a migrated address on the segment:\n%s", nw)
		}
		if !strings.Contains(nw, "from 198.51.100.10/32 iif lo lookup 4242") {
			t.Errorf("NEW's rule from the migrated address takes OLD's own connections on the segment too (want iif lo):\n%s", nw)
		}
		if strings.Contains(nw, "throw") {
			t.Errorf("a direct plan has a throw route on NEW:\n%s", nw)
		}
	}
}

// A direct tunnel's clients arrive on the segment interface, the one
// NEW's flows leave by: a forward chain that accepts everything in and
// out on it accepts migrate's flows (plan's note, no status alarm), and
// one that accepts nothing certainly drops them.
func TestDirectForwardDrop(t *testing.T) {
	c := mustParse(t, directSrc)
	for _, tc := range []struct {
		name     string
		rules    []state.FwRule
		accepted bool
		broken   bool
	}{
		{"in and out on eth0", []state.FwRule{{IifName: "eth0", Verdict: "accept"}, {OifName: "eth0", Verdict: "accept"}}, true, false},
		{"in on eth0 only", []state.FwRule{{IifName: "eth0", Verdict: "accept"}}, true, false},
		{"nothing", nil, false, true},
	} {
		f := directFacts()
		hf := f[plan.Old]
		hf.Chains = []state.BaseChain{{Family: "inet", Table: "mine", Chain: "fwd", Hook: "forward", Policy: "drop", Type: "filter"}}
		for _, r := range tc.rules {
			r.Family, r.Table, r.Chain = "inet", "mine", "fwd"
			hf.FwRules = append(hf.FwRules, r)
		}
		f[plan.Old] = hf
		d := plan.ForwardDrops(c, f)
		if len(d) != 1 || d[0].Accepts != tc.accepted {
			t.Errorf("%s: %+v, want accepted %v", tc.name, d, tc.accepted)
		}
		if b := plan.ForwardDropBroken(c, f); (b != "") != tc.broken {
			t.Errorf("%s: ForwardDropBroken = %q, want broken %v", tc.name, b, tc.broken)
		}
	}
}

// NEW of a direct tunnel with a hand-written input chain at policy drop:
// plan gives one command per migrated address (in on the segment's
// interface), only those the chain's rules do not show, then a note.
func TestDirectInputDrop(t *testing.T) {
	c := mustParse(t, directSrc)
	for _, tc := range []struct {
		name  string
		rules []state.FwRule
		want  []string
		note  bool
	}{
		{"nothing", nil, []string{
			`nft insert rule inet fw input iifname "eth1" ip daddr 198.51.100.10 accept`,
			`nft insert rule inet fw input iifname "eth1" ip6 daddr 2001:db8:100::10 accept`}, false},
		{"the IPv4 address", []state.FwRule{{NfProto: "ipv4", IifName: "eth1", Daddr: netip.MustParseAddr("198.51.100.10"), Verdict: "accept"}}, []string{
			`nft insert rule inet fw input iifname "eth1" ip6 daddr 2001:db8:100::10 accept`}, false},
		{"everything on eth1", []state.FwRule{{IifName: "eth1", Verdict: "accept"}}, nil, true},
	} {
		f := directFacts()
		hf := f[plan.New]
		hf.Chains = []state.BaseChain{{Family: "inet", Table: "fw", Chain: "input", Hook: "input", Policy: "drop", Type: "filter"}}
		for _, r := range tc.rules {
			r.Family, r.Table, r.Chain = "inet", "fw", "input"
			hf.FwRules = append(hf.FwRules, r)
		}
		f[plan.New] = hf
		w := strings.Join(plan.Warnings(c, f), "\n")
		for _, cmd := range tc.want {
			if !strings.Contains(w, "`"+cmd+"`") || !strings.Contains(w, "WARNING host new: table inet fw, chain input (hook input) has policy drop") {
				t.Errorf("%s: warnings lack %q:\n%s", tc.name, cmd, w)
			}
		}
		if tc.name == "the IPv4 address" && strings.Contains(w, "ip daddr 198.51.100.10 accept`") {
			t.Errorf("%s: warnings give the command the chain holds:\n%s", tc.name, w)
		}
		if got := strings.Contains(w, "host new: table inet fw, chain input (hook input) has policy drop; its rules accept what arrives on eth1"); got != tc.note {
			t.Errorf("%s: note %v, want %v:\n%s", tc.name, got, tc.note, w)
		}
	}
}

// A direct tunnel with firewalld 0.6 on its iptables backend (CentOS 7,
// iptables-legacy) on OLD: no policies there, and rich rules are for what
// arrives for the host, so OLD's forwarding of the migrated addresses is
// firewalld's direct rules; no iptables-legacy advice for firewalld's
// own FORWARD. NEW keeps the rich rule.
func TestDirectFirewalldLegacy(t *testing.T) {
	c := mustParse(t, directSrc)
	f := directFacts()
	fam := state.LegacyFamily{Family: "ip", ForwardPolicy: "ACCEPT",
		Chains: []state.BaseChain{
			{Family: "ip", Table: "filter", Chain: "INPUT", Hook: "input", Type: "filter", Policy: "accept"},
			{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "forward", Type: "filter", Policy: "accept"},
			{Family: "ip", Table: "filter", Chain: "INPUT_direct", Read: true},
			{Family: "ip", Table: "filter", Chain: "INPUT_ZONES", Read: true},
			{Family: "ip", Table: "filter", Chain: "FORWARD_IN_ZONES", Read: true},
		},
		Rules: []state.FwRule{
			{Family: "ip", Table: "filter", Chain: "INPUT", Verdict: "jump INPUT_ZONES"},
			{Family: "ip", Table: "filter", Chain: "INPUT", Verdict: "reject"},
			{Family: "ip", Table: "filter", Chain: "FORWARD", Verdict: "jump FORWARD_IN_ZONES"},
			{Family: "ip", Table: "filter", Chain: "FORWARD", Verdict: "reject"},
		},
	}
	for _, h := range []string{plan.Old, plan.New} {
		hf := f[h]
		hf.Legacy = &state.LegacyFirewall{Tables: []string{"ip filter"}, Families: []state.LegacyFamily{fam}}
		f[h] = hf
	}
	p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(p.Notes, "\n")
	for _, w := range []string{
		"WARNING host old: firewalld is active (its iptables backend on iptables-legacy, not in nft's ruleset): it rejects migrate's flows on eth0 (direct tunnel)",
		"`firewall-cmd --permanent --direct --add-rule ipv4 filter FORWARD 0 -o eth0 -d 198.51.100.10 -j ACCEPT` and `firewall-cmd --permanent --direct --add-rule ipv4 filter FORWARD 0 -i eth0 -s 198.51.100.10 -j ACCEPT`",
		`firewall-cmd --permanent --add-rich-rule='rule family="ipv4" destination address="198.51.100.10" accept'`,
	} {
		if !strings.Contains(all, w) {
			t.Errorf("notes lack %q:\n%s", w, all)
		}
	}
	for _, no := range []string{"iptables-legacy -I", "new-policy"} {
		if strings.Contains(all, no) {
			t.Errorf("notes advise %q:\n%s", no, all)
		}
	}
}
