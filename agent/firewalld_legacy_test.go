package agent

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// centos7Rules is testdata/firewalld-0.6-centos7.save (CentOS 7's
// firewalld 0.6 on its only backend, iptables-legacy: zone public on
// eth0 with ssh) with lines added: each rule goes first in its chain
// (as firewalld inserts a zone's interface), after the chains it
// declares.
func centos7Rules(t *testing.T, chains []string, rules ...string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/firewalld-0.6-centos7.save")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var out []string
	declared := false
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") && !declared {
			declared = true
			for _, c := range chains {
				out = append(out, ":"+c+" - [0:0]")
			}
		}
		if l == "COMMIT" {
			// Rules of chains the file does not have.
			for _, r := range rules {
				if !strings.Contains(string(b), "-A "+strings.Fields(r)[1]+" ") {
					out = append(out, r)
				}
			}
		}
		for _, r := range rules {
			if chain := strings.Fields(r)[1]; strings.HasPrefix(l, "-A "+chain+" ") && !strings.Contains(strings.Join(out, "\n"), r) {
				out = append(out, r)
			}
		}
		out = append(out, l)
	}
	return []byte(strings.Join(out, "\n"))
}

// centos7RPFilter is ip6tables-legacy-save -t raw under firewalld 0.6
// with IPv6_rpfilter=yes (its default): ipXtables.py's
// build_rpfilter_rules, LOG included (LogDenied=all).
const centos7RPFilter = `*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:OUTPUT_direct - [0:0]
:PREROUTING_ZONES - [0:0]
:PREROUTING_ZONES_SOURCE - [0:0]
:PREROUTING_direct - [0:0]
:PRE_public - [0:0]
:PRE_public_allow - [0:0]
:PRE_public_deny - [0:0]
:PRE_public_log - [0:0]
-A PREROUTING -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT
-A PREROUTING -p ipv6-icmp -m icmp6 --icmpv6-type 134 -j ACCEPT
-A PREROUTING -m rpfilter --invert -j LOG --log-prefix "rpfilter_DROP: "
-A PREROUTING -m rpfilter --invert -j DROP
-A PREROUTING -j PREROUTING_direct
-A PREROUTING -j PREROUTING_ZONES_SOURCE
-A PREROUTING -j PREROUTING_ZONES
-A OUTPUT -j OUTPUT_direct
-A PREROUTING_ZONES -i eth0 -g PRE_public
-A PREROUTING_ZONES -g PRE_public
-A PRE_public -j PRE_public_log
-A PRE_public -j PRE_public_deny
-A PRE_public -j PRE_public_allow
COMMIT
`

// trustedMig0 is what `firewall-cmd --zone=trusted --add-interface=mig0`
// adds under firewalld 0.6 (ipXtables.py: the zone's chains, with its
// ACCEPT target fourth in each; the interface first in the dispatch
// chains, -j since the target is not the default one).
var trustedMig0 = struct{ chains, rules []string }{
	chains: []string{"FWDI_trusted", "FWDI_trusted_allow", "FWDI_trusted_deny", "FWDI_trusted_log", "FWDO_trusted", "FWDO_trusted_allow", "FWDO_trusted_deny", "FWDO_trusted_log", "IN_trusted", "IN_trusted_allow", "IN_trusted_deny", "IN_trusted_log"},
	rules: []string{
		"-A FORWARD_IN_ZONES -i mig0 -j FWDI_trusted", "-A FORWARD_OUT_ZONES -o mig0 -j FWDO_trusted", "-A INPUT_ZONES -i mig0 -j IN_trusted",
		"-A FWDI_trusted -j FWDI_trusted_log", "-A FWDI_trusted -j FWDI_trusted_deny", "-A FWDI_trusted -j FWDI_trusted_allow", "-A FWDI_trusted -j ACCEPT",
		"-A FWDO_trusted -j FWDO_trusted_log", "-A FWDO_trusted -j FWDO_trusted_deny", "-A FWDO_trusted -j FWDO_trusted_allow", "-A FWDO_trusted -j ACCEPT",
		"-A IN_trusted -j IN_trusted_log", "-A IN_trusted -j IN_trusted_deny", "-A IN_trusted -j IN_trusted_allow", "-A IN_trusted -j ACCEPT",
	},
}

// TestFirewalldCentOS7: firewalld 0.6 (CentOS 7) on iptables-legacy, read
// by the agent from its save text. plan gives firewall-cmd commands, not
// iptables-legacy ones (firewalld rewrites its chains at every reload),
// and no policy (0.6 has none: zone trusted's target accepts what goes
// out through mig0 too); the commands' rules, as 0.6 writes them
// (--ctstate NEW,UNTRACKED on the rich rule), make the warnings notes;
// status calls the flows rejected until they are there.
func TestFirewalldCentOS7(t *testing.T) {
	c, err := config.Parse([]byte(forwardDropPlan), "m.hcl")
	if err != nil {
		t.Fatal(err)
	}
	host := func(addr string, text []byte) state.Facts {
		chains, rules := legacyFwRules("ip", text)
		return state.Facts{
			Addrs: []state.Addr{{Dev: "eth0", CIDR: netip.MustParsePrefix(addr)}},
			Legacy: &state.LegacyFirewall{Tables: []string{"ip filter"}, Families: []state.LegacyFamily{{
				Family: "ip", ForwardPolicy: "ACCEPT", Chains: chains, Rules: rules,
			}}},
		}
	}
	port8080 := "-A IN_public_allow -p tcp -m tcp --dport 8080 -m conntrack --ctstate NEW,UNTRACKED -j ACCEPT"
	rich := func(from, to string) string {
		return "-A IN_public_allow -s " + from + "/32 -d " + to + "/32 -p udp -m udp --dport 4789 -m conntrack --ctstate NEW,UNTRACKED -j ACCEPT"
	}
	richCmd := func(from, to string) string {
		return `firewall-cmd --permanent --add-rich-rule='rule family="ipv4" source address="` + from + `" destination address="` + to + `" port port="4789" protocol="udp" accept'`
	}
	trustedCmd := "firewall-cmd --permanent --zone=trusted --add-interface=mig0"
	where := "firewalld is active (its iptables backend on iptables-legacy, not in nft's ruleset)"

	f := map[string]state.Facts{
		plan.Old: host("198.51.100.10/24", centos7Rules(t, nil, port8080)),
		plan.New: host("203.0.113.20/24", centos7Rules(t, nil)),
	}
	w := strings.Join(plan.Warnings(c, f), "\n")
	for _, want := range []string{
		"WARNING host old: " + where + ": chain INPUT (hook input) ends in `-j REJECT` for what no zone allows: the tunnel's packets from the peer; chain FORWARD (hook forward) does the same",
		"(before migrate apply): `" + richCmd("203.0.113.20", "198.51.100.10") + "` and `" + trustedCmd + "` and `firewall-cmd --reload`",
		"WARNING host new: " + where + ": chain INPUT (hook input) ends in `-j REJECT` for what no zone allows: the tunnel's packets from the peer and what arrives through mig0 for the services",
		"(before migrate apply): `" + richCmd("198.51.100.10", "203.0.113.20") + "` and `" + trustedCmd + "` and `firewall-cmd --reload`",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	// forwardDropPlan's IPv6 service: firewalld's IPv6 rpfilter, in ip6
	// raw (0.6's build_rpfilter_rules), read from ip6tables-legacy-save.
	// With IPv6_rpfilter=no raw's PREROUTING is empty and plan says
	// nothing of it.
	if strings.Contains(w, "rpfilter") {
		t.Errorf("IPv6 rpfilter warning without its rule:\n%s", w)
	}
	for _, host := range []string{plan.Old, plan.New} {
		fam := state.LegacyFamily{Family: "ip6"}
		parseLegacy(&fam, "raw", []byte(centos7RPFilter))
		if fam.RPFilter != "raw" {
			t.Fatalf("0.6's ip6 raw rules read as RPFilter %q", fam.RPFilter)
		}
		h := f[host]
		h.Legacy.Families = append(h.Legacy.Families, fam)
		f[host] = h
	}
	w = strings.Join(plan.Warnings(c, f), "\n")
	if n := strings.Count(w, "its IPv6 rpfilter (table ip6 raw, chain PREROUTING, iptables-legacy: `-m rpfilter --invert -j DROP`) drops packets arriving from \"mig0\""); n != 2 {
		t.Errorf("%d IPv6 rpfilter warnings, want one per host:\n%s", n, w)
	}
	if strings.Contains(w, "iptables-legacy -I") || strings.Contains(w, "policy") {
		t.Errorf("warnings give iptables-legacy commands or a policy (firewalld 0.6 has none):\n%s", w)
	}
	if b := plan.ForwardDropBroken(c, f); !strings.Contains(b, "firewalld (its iptables backend on iptables-legacy, not in nft's ruleset) is active on OLD (started or reloaded after the apply?) and rejects the new flows of service web (198.51.100.10:8080/tcp) toward NEW (out on mig0)") || !strings.Contains(b, "allow them: `"+trustedCmd+"` and `firewall-cmd --reload`") {
		t.Errorf("ForwardDropBroken = %q", b)
	}
	if b := plan.NewInputBroken(c, f); !strings.Contains(b, "firewalld (its iptables backend on iptables-legacy, not in nft's ruleset) is active on NEW (started or reloaded after the apply?) and rejects the new flows of service web (198.51.100.10:8080/tcp) in on mig0") {
		t.Errorf("NewInputBroken = %q", b)
	}
	if h := plan.TunnelFirewallHint(c, f); !strings.Contains(h, "on OLD and lacks `"+richCmd("203.0.113.20", "198.51.100.10")+"`") || !strings.Contains(h, "on NEW and lacks `"+richCmd("198.51.100.10", "203.0.113.20")+"`") {
		t.Errorf("TunnelFirewallHint = %q", h)
	}

	// The rich rule only: mig0 still in no zone.
	f[plan.Old] = host("198.51.100.10/24", centos7Rules(t, nil, port8080, rich("203.0.113.20", "198.51.100.10")))
	if w := strings.Join(plan.Warnings(c, f), "\n"); !strings.Contains(w, "WARNING host old: "+where) || !strings.Contains(w, "Allow migrate's traffic (before migrate apply): `"+trustedCmd+"` and `firewall-cmd --reload`") {
		t.Errorf("OLD with the rich rule in: warnings\n%s", w)
	}

	// Both commands ran on both hosts.
	f[plan.Old] = host("198.51.100.10/24", centos7Rules(t, trustedMig0.chains, append([]string{port8080, rich("203.0.113.20", "198.51.100.10")}, trustedMig0.rules...)...))
	f[plan.New] = host("203.0.113.20/24", centos7Rules(t, trustedMig0.chains, append([]string{rich("198.51.100.10", "203.0.113.20")}, trustedMig0.rules...)...))
	w = strings.Join(plan.Warnings(c, f), "\n")
	for _, h := range []string{"old", "new"} {
		if !strings.Contains(w, "host "+h+": "+where+"; its rules allow migrate's traffic") {
			t.Errorf("no note that %s's firewalld allows migrate's traffic:\n%s", h, w)
		}
	}
	for _, l := range strings.Split(w, "\n") {
		if strings.Contains(l, "WARNING") && !strings.Contains(l, "IPv6 rpfilter") {
			t.Errorf("warnings once firewalld's commands ran:\n%s", w)
		}
	}
	for name, got := range map[string]string{"ForwardDropBroken": plan.ForwardDropBroken(c, f), "NewInputBroken": plan.NewInputBroken(c, f), "TunnelFirewallHint": plan.TunnelFirewallHint(c, f)} {
		if got != "" {
			t.Errorf("%s with the commands in = %q", name, got)
		}
	}
}
