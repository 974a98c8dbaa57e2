package plan

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// iptablesTool is the command that edits chain of table in family when it
// is one of iptables-nft's own base chains (`iptables -P FORWARD DROP`,
// rules kept in iptables-persistent's rules.v4 or RHEL's
// /etc/sysconfig/iptables and restored at boot): iptables or ip6tables.
// Rules for such a chain are given in iptables' syntax, and they are
// saved with iptables-save, not in an nftables file. "" for any other
// chain (nft's syntax).
func iptablesTool(family, table, chain string) string {
	if table != "filter" || (chain != "INPUT" && chain != "FORWARD") {
		return ""
	}
	switch family {
	case "ip":
		return "iptables"
	case "ip6":
		return "ip6tables"
	}
	return ""
}

// acceptRule is an accept rule that migrate's advice asks a firewall's
// chain for: each field set is a match.
type acceptRule struct {
	iif, oif     string
	saddr, daddr netip.Addr
	proto        string // tcp, udp, gre
	dport        int
}

// insertCmd is the command that inserts r at the top of chain, in the
// syntax of the tool that owns the chain (iptablesTool), else nft's.
func insertCmd(family, table, chain string, r acceptRule) string {
	if tool := iptablesTool(family, table, chain); tool != "" {
		return iptablesInsert(tool, chain, r)
	}
	args := []string{"nft", "insert", "rule", family, table, chain}
	if r.iif != "" {
		args = append(args, "iifname", fmt.Sprintf("%q", r.iif))
	}
	if r.oif != "" {
		args = append(args, "oifname", fmt.Sprintf("%q", r.oif))
	}
	for _, a := range []struct {
		dir  string
		addr netip.Addr
	}{{"saddr", r.saddr}, {"daddr", r.daddr}} {
		if !a.addr.IsValid() {
			continue
		}
		ip := "ip"
		if a.addr.Is6() {
			ip = "ip6"
		}
		args = append(args, ip, a.dir, a.addr.String())
	}
	switch {
	case r.dport != 0:
		args = append(args, r.proto, "dport", fmt.Sprint(r.dport))
	case r.proto != "":
		args = append(args, "meta", "l4proto", r.proto)
	}
	return strings.Join(append(args, "accept"), " ")
}

// iptablesInsert is tool's command (iptables, ip6tables, or their
// -legacy) that inserts r at the top of chain.
func iptablesInsert(tool, chain string, r acceptRule) string {
	args := []string{tool, "-I", chain}
	if r.iif != "" {
		args = append(args, "-i", r.iif)
	}
	if r.oif != "" {
		args = append(args, "-o", r.oif)
	}
	if r.saddr.IsValid() {
		args = append(args, "-s", r.saddr.String())
	}
	if r.daddr.IsValid() {
		args = append(args, "-d", r.daddr.String())
	}
	if r.proto != "" {
		args = append(args, "-p", r.proto)
	}
	if r.dport != 0 {
		args = append(args, "--dport", fmt.Sprint(r.dport))
	}
	return strings.Join(append(args, "-j", "ACCEPT"), " ")
}

// keepRules says where rules added to chain by hand must go as well, so
// that the firewall's next reload or restore does not drop them; it
// follows "and".
func keepRules(family, table, chain string) string {
	if iptablesTool(family, table, chain) != "" {
		return "save the rules with your other iptables rules (`netfilter-persistent save` with iptables-persistent, `service iptables save` with iptables-services), or the next restore of the saved rules drops them again"
	}
	return "put the rules in the file that loads the table (/etc/nftables.conf, for nftables.service), or its next reload drops them again"
}

// showChain is the command that lists chain's rules in order, in its own
// tool's syntax.
func showChain(family, table, chain string) string {
	if tool := iptablesTool(family, table, chain); tool != "" {
		return tool + " -L " + chain + " -n --line-numbers"
	}
	return fmt.Sprintf("nft list chain %s %s %s", family, table, chain)
}

// keepShort is keepRules for status's reasons: where the rules go as
// well, after "accept them there again: CMDS, ".
func keepShort(family, table, chain string) string {
	if iptablesTool(family, table, chain) != "" {
		return "and save them with your other iptables rules"
	}
	return "and in the file that loads the table"
}

// dropsHow says how base chain ch of f drops what its rules before do not
// accept: "has policy drop", or, with policy accept, "ends in a drop" or
// "ends in a reject" when one of its rules drops or rejects every packet
// (Debian's example nftables.conf's final `counter drop`, the `-A INPUT
// -j REJECT --reject-with icmp-host-prohibited` of RHEL's
// iptables-services); "" when it drops nothing of everything (its rules
// may still drop part: those chains are not judged).
func dropsHow(f state.Facts, ch state.BaseChain) string {
	if !ch.Filters() {
		return ""
	}
	if ch.Policy == "drop" {
		return "has policy drop"
	}
	for _, r := range f.FwRules {
		if r.Family != ch.Family || r.Table != ch.Table || r.Chain != ch.Chain || r.Opaque || (r.Verdict != "drop" && r.Verdict != "reject") {
			continue
		}
		if r.Validate() == nil && r.NfProto == "" && r.IifName == "" && r.OifName == "" && r.L4Proto == "" && srcMatch(r).any() && dstMatch(r).any() &&
			r.Dport == 0 && len(r.L4Protos) == 0 && len(r.Dports) == 0 && len(r.CtState) == 0 {
			return "ends in a " + r.Verdict
		}
	}
	return ""
}

// endAccepts says whether what reaches the end of chain ch of f is
// accepted: a base chain with policy accept. The end of a regular chain
// goes back to the chain that jumped to it (ufw's, firewalld's, whose
// callers know what follows).
func endAccepts(f state.Facts, ch [3]string) bool {
	for _, b := range f.Chains {
		if b.Family == ch[0] && b.Table == ch[1] && b.Chain == ch[2] {
			return b.Hook != "" && b.Policy != "drop"
		}
	}
	return false
}
