package agent

import (
	"bytes"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// An IPv6 reverse-path filter in iptables: firewalld's IPv6_rpfilter (on
// by default) on its iptables backend is `ip6tables -t mangle -I
// PREROUTING -m rpfilter --invert --validmark -j DROP` (1.x; 0.6 puts
// it in table raw). It drops what arrives through the tunnel from a
// client whose address is routed elsewhere, whatever firewalld's zones
// allow. The agent reports where such a rule is, so plan warns from the
// rule itself rather than from firewalld's presence.

// rpfilterTables are the ip6 tables whose PREROUTING may hold it.
var rpfilterTables = []string{"raw", "mangle"}

// xtRPFilterInvert is XT_RPFILTER_INVERT, a bit of xt_rpfilter_info's
// first (only) byte, flags.
const xtRPFilterInvert = 1 << 3

// rpfilter6 names the ip6 tables among raw and mangle whose PREROUTING
// (iptables-nft's) drops what fails the reverse-path match: as
// iptables-nft writes `-m rpfilter --invert` (the xt match), or nft's
// own `fib saddr . ... oif missing` before a drop.
func rpfilter6(c *nftables.Conn, chains []*nftables.Chain) ([]string, error) {
	var out []string
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Family != nftables.TableFamilyIPv6 || ch.Name != "PREROUTING" || ch.Hooknum == nil || !slices.Contains(rpfilterTables, ch.Table.Name) {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			if rpfilterDrop(r.Exprs) {
				out = append(out, ch.Table.Name)
				break
			}
		}
	}
	return out, nil
}

// rpfilterDrop says whether a rule's expressions are an inverted
// reverse-path match followed by a drop (counters and logs aside).
func rpfilterDrop(exprs []expr.Any) bool {
	match, fib := false, false
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Match:
			if e.Name != "rpfilter" {
				return false
			}
			u, ok := e.Info.(*xt.Unknown)
			if !ok || len(*u) == 0 || (*u)[0]&xtRPFilterInvert == 0 {
				return false
			}
			match = true
		case *expr.Fib:
			fib = e.FlagSADDR && e.ResultOIF
		case *expr.Cmp:
			// `oif missing`: the fib result compared to 0.
			if !fib || e.Op != expr.CmpOpEq || len(bytes.Trim(e.Data, "\x00")) != 0 {
				return false
			}
			match = true
		case *expr.Counter, *expr.Log:
		case *expr.Verdict:
			return match && e.Kind == expr.VerdictDrop
		default:
			return false
		}
	}
	return false
}

// legacyRPFilter says whether an ip6tables-legacy-save text of table
// (raw or mangle) drops in PREROUTING what fails `-m rpfilter --invert`.
func legacyRPFilter(table string, text []byte) bool {
	found := false
	saveLines(text, table, func(line string) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "-A" || f[1] != "PREROUTING" || legacyTarget(f) != "DROP" {
			return
		}
		rp, inv := false, false
		for i, w := range f {
			rp = rp || (w == "rpfilter" && i > 0 && f[i-1] == "-m")
			inv = inv || w == "--invert"
		}
		found = found || (rp && inv)
	})
	return found
}
