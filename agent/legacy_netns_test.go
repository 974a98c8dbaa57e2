package agent

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/state"
)

// TestLegacyNetns loads legacy x_tables rules (iptables-legacy, as
// Docker with the legacy backend writes them) into a fresh network
// namespace and checks what LegacyFacts reports: nothing before any
// legacy table exists, then the tables, FORWARD's policy and drops,
// DOCKER-USER, ufw's chain, and the nat rules that DNAT or jump; reading registers
// no table that was not there.
func TestLegacyNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	for _, tool := range []string{"iptables-legacy", "ip6tables-legacy", "iptables-legacy-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (apt-get install iptables): %v", tool, err)
		}
	}
	if got := LegacyFacts(); got != nil {
		t.Fatalf("a fresh namespace has legacy tables: %+v", got)
	}
	// nft's rules are not legacy ones.
	sh(t, "iptables-nft", "-P", "FORWARD", "DROP")
	if got := LegacyFacts(); got != nil {
		t.Fatalf("iptables-nft's rules reported as legacy: %+v", got)
	}
	ipt := func(args string) { sh(t, append([]string{"iptables-legacy"}, strings.Fields(args)...)...) }
	ipt("-P FORWARD DROP")
	ipt("-N DOCKER-USER")
	ipt("-A FORWARD -j DOCKER-USER")
	ipt("-A FORWARD -o docker0 -j ACCEPT")
	ipt("-A FORWARD -i eth1 -j REJECT")
	got := LegacyFacts()
	want := &state.LegacyFirewall{
		Tables: []string{"ip filter"},
		Families: []state.LegacyFamily{{
			Family: "ip", ForwardPolicy: "DROP", DockerUser: true,
			ForwardDrops: []string{"-A FORWARD -i eth1 -j REJECT --reject-with icmp-port-unreachable"},
		}},
	}
	if !reflect.DeepEqual(withoutChains(got), want) {
		t.Fatalf("filter only: got %+v, want %+v", got, want)
	}
	if got.DNAT() || !got.Families[0].ForwardDrop() {
		t.Errorf("filter only: DNAT %v (want false), ForwardDrop %v (want true)", got.DNAT(), got.Families[0].ForwardDrop())
	}
	if tables := strings.Fields(sh(t, "cat", "/proc/net/ip_tables_names")); len(tables) != 1 {
		t.Errorf("reading registered tables: %v", tables)
	}
	ipt("-t nat -N DOCKER")
	ipt("-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER")
	ipt("-t nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER")
	ipt("-t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
	ipt("-t nat -A DOCKER ! -i docker0 -p tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80")
	ipt("-t nat -A PREROUTING -p udp --dport 53 -j ACCEPT")
	sh(t, "ip6tables-legacy", "-P", "FORWARD", "ACCEPT")
	sh(t, "ip6tables-legacy", "-N", "ufw6-user-input")
	// What every forwarded packet meets first: FORWARD's accept, the
	// jump to DOCKER-USER, its accept; not what comes after a RETURN.
	ipt("-I DOCKER-USER -i mig0 -j ACCEPT")
	ipt("-A DOCKER-USER -j RETURN")
	ipt("-A DOCKER-USER -o mig0 -j ACCEPT")
	ipt("-I FORWARD -o mig1 -j ACCEPT")
	got = LegacyFacts()
	want = &state.LegacyFirewall{
		Tables: []string{"ip nat", "ip filter", "ip6 filter"},
		Families: []state.LegacyFamily{{
			Family: "ip", ForwardPolicy: "DROP", DockerUser: true,
			ForwardDrops: []string{"-A FORWARD -i eth1 -j REJECT --reject-with icmp-port-unreachable"},
			Accepts:      []string{"-A FORWARD -o mig1 -j ACCEPT", "-A DOCKER-USER -i mig0 -j ACCEPT"},
			NAT: []string{
				"-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
				"-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
			},
		}, {Family: "ip6", ForwardPolicy: "ACCEPT", Ufw: true}},
	}
	if !reflect.DeepEqual(withoutChains(got), want) {
		t.Fatalf("with nat and ip6:\ngot  %+v\nwant %+v", got, want)
	}
	if !got.DNAT() || got.Families[1].ForwardDrop() {
		t.Errorf("DNAT %v (want true), ip6 ForwardDrop %v (want false)", got.DNAT(), got.Families[1].ForwardDrop())
	}
}

// withoutChains is l without the filter table's chains and rules
// (legacyFwRules, TestLegacyFwRules), which it checks once: FORWARD's
// policy and first rule are there.
func withoutChains(l *state.LegacyFirewall) *state.LegacyFirewall {
	if l == nil {
		return nil
	}
	c := *l
	c.Families = nil
	for _, f := range l.Families {
		if f.Family == "ip" && (len(f.Chains) == 0 || len(f.Rules) == 0 || f.Rules[0].Chain != "FORWARD") {
			return l // differs from any want
		}
		f.Chains, f.Rules = nil, nil
		c.Families = append(c.Families, f)
	}
	return &c
}
