package agent

import (
	"reflect"
	"strings"
	"testing"
)

// TestRPFilterNetns: an IPv6 reverse-path filter in iptables, as
// firewalld's iptables backend writes it (IPv6_rpfilter=yes), read in a
// fresh network namespace: through iptables-nft in ip6 mangle (1.x's
// build_rpfilter_rules), as nft's own fib expression in a table ip6 raw,
// and on iptables-legacy in ip6 raw (0.6's). A reverse-path match that is
// not inverted, or inverted but only logged, is none; where there are
// none the facts say nothing.
func TestRPFilterNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	read := func() []string {
		t.Helper()
		f, err := foreignFirewall("migrate")
		if err != nil {
			t.Fatal(err)
		}
		return f.RPFilter6
	}
	if got := read(); got != nil {
		t.Fatalf("a fresh namespace: RPFilter6 %q", got)
	}
	ip6 := func(tool, args string) { sh(t, append([]string{tool}, strings.Fields(args)...)...) }
	ip6("ip6tables-nft", "-t mangle -A PREROUTING -m rpfilter -j DROP")
	ip6("ip6tables-nft", "-t mangle -A PREROUTING -m rpfilter --invert -j LOG --log-prefix rpfilter_DROP:")
	if got := read(); got != nil {
		t.Fatalf("a reverse-path match not inverted, or only logged: RPFilter6 %q", got)
	}
	ip6("ip6tables-nft", "-t mangle -I PREROUTING -m rpfilter --invert --validmark -j DROP")
	ip6("ip6tables-nft", "-t mangle -I PREROUTING -p ipv6-icmp --icmpv6-type=neighbour-solicitation -j ACCEPT")
	if got, want := read(), []string{"mangle"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("firewalld 1.x's rule through iptables-nft: RPFilter6 %q, want %q", got, want)
	}
	sh(t, "nft", "add table ip6 raw; add chain ip6 raw PREROUTING { type filter hook prerouting priority raw; }; add rule ip6 raw PREROUTING fib saddr . mark . iif oif missing counter drop")
	if got, want := read(), []string{"mangle", "raw"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("and nft's fib in ip6 raw: RPFilter6 %q, want %q", got, want)
	}
	if l := LegacyFacts(); l != nil {
		t.Fatalf("iptables-nft's rules reported as legacy: %+v", l)
	}
	ip6("ip6tables-legacy", "-t raw -A PREROUTING -m rpfilter --invert -j DROP")
	l := LegacyFacts()
	if l == nil || len(l.Families) != 1 || l.Families[0].Family != "ip6" || l.Families[0].RPFilter != "raw" {
		t.Fatalf("firewalld 0.6's rule on iptables-legacy: %+v", l)
	}
	ip6("ip6tables-legacy", "-t raw -F PREROUTING")
	if l := LegacyFacts(); l == nil || l.Families[0].RPFilter != "" {
		t.Fatalf("legacy ip6 raw emptied: %+v", l)
	}
}
