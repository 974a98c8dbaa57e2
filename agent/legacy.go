package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/state"
)

// Legacy x_tables (iptables-legacy): a host whose iptables is the legacy
// backend (`update-alternatives --set iptables /usr/sbin/iptables-legacy`,
// as older Docker and Kubernetes guides advised) has rules that nft does
// not list, yet they run at the same hooks: a FORWARD policy DROP drops
// what OLD forwards into the tunnel, a nat PREROUTING DNAT rewrites a
// moved flow's destination.
//
// How they are read: /proc/net/ip_tables_names and ip6_tables_names list
// the tables registered in this network namespace (the kernel registers
// a legacy table in a namespace only once something asks for it), so a
// host without legacy rules costs two small file reads and no command.
// Where filter or nat is listed, the agent runs iptables-legacy-save (or
// ip6tables-legacy-save) -t TABLE and parses its text; only then: `-t` on
// a table that is not listed would register it (an empty one). Reading the tables
// with getsockopt(IPT_SO_GET_INFO, IPT_SO_GET_ENTRIES) would spare the
// command, but the entries are binary structs whose matches and targets
// each have their own layout and revision: the save tool already decodes
// them into a stable text, which is all plan needs (policies, targets).
// Without the tool (a legacy table but no iptables package) the facts say
// so and plan warns that it cannot tell.

// legacyProc is where the kernel lists the legacy tables, per family.
var legacyProc = []struct{ family, names, save string }{
	{"ip", "/proc/net/ip_tables_names", "iptables-legacy-save"},
	{"ip6", "/proc/net/ip6_tables_names", "ip6tables-legacy-save"},
}

// LegacyFacts reports the legacy x_tables tables of the agent's network
// namespace, nil when there are none.
func LegacyFacts() *state.LegacyFirewall {
	var out state.LegacyFirewall
	var errs []string
	for _, p := range legacyProc {
		b, err := os.ReadFile(p.names)
		if err != nil {
			continue // the module is not loaded: no table
		}
		var tables []string
		for _, t := range strings.Fields(string(b)) {
			out.Tables = append(out.Tables, p.family+" "+t)
			if t == "filter" || t == "nat" || (p.family == "ip6" && slices.Contains(rpfilterTables, t)) {
				tables = append(tables, t)
			}
		}
		if len(tables) == 0 {
			continue
		}
		fam := state.LegacyFamily{Family: p.family}
		tool := legacyTool(p.save)
		if tool == "" {
			errs = append(errs, fmt.Sprintf("legacy tables %s %s, but no %s on the host to read them", p.family, strings.Join(tables, ","), p.save))
			continue
		}
		for _, t := range tables {
			text, err := legacySave(tool, t)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			parseLegacy(&fam, t, text)
		}
		out.Families = append(out.Families, fam)
	}
	if len(out.Tables) == 0 {
		return nil
	}
	out.Error = strings.Join(errs, "; ")
	return &out
}

// legacyTool finds a save tool in the system's directories first, then
// in PATH: the agent runs as root, and what it executes should not depend
// on an SSH session's PATH.
func legacyTool(name string) string {
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil && filepath.IsAbs(p) {
		return p
	}
	return ""
}

func legacySave(tool, table string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "-t", table)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 256 { // facts stay small
			msg = msg[:256] + "..."
		}
		return nil, fmt.Errorf("%s -t %s: %v: %s", filepath.Base(tool), table, err, msg)
	}
	return out, nil
}

// parseLegacy reads one table of iptables-legacy-save's output into fam:
// filter's FORWARD policy, its rules that drop or reject, whether chain
// DOCKER-USER (Docker's) or ufw-user-input (ufw's) exists; nat's PREROUTING and OUTPUT rules that DNAT,
// REDIRECT or jump (or go) to one of the table's chains.
func parseLegacy(fam *state.LegacyFamily, table string, text []byte) {
	if slices.Contains(rpfilterTables, table) {
		if legacyRPFilter(table, text) {
			fam.RPFilter = table
		}
		return
	}
	userChains := map[string]bool{}
	var rules []string
	saveLines(text, table, func(line string) {
		switch {
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return
			}
			if f[1] == "-" {
				userChains[f[0]] = true
			} else if table == "filter" && f[0] == "FORWARD" {
				fam.ForwardPolicy = f[1]
			}
		case strings.HasPrefix(line, "-A "):
			rules = append(rules, line)
		}
	})
	if table == "filter" {
		fam.Chains, fam.Rules = legacyFwRules(fam.Family, text)
		fam.Accepts = leadingAccepts(rules, "FORWARD", userChains["DOCKER-USER"])
		fam.DockerUser = userChains["DOCKER-USER"]
		fam.Ufw = userChains["ufw-user-input"] || userChains["ufw6-user-input"]
	}
	for _, r := range rules {
		f := strings.Fields(r)
		chain, target := f[1], legacyTarget(f)
		switch {
		case table == "filter" && chain == "FORWARD" && (target == "DROP" || target == "REJECT"):
			if len(fam.ForwardDrops) < state.MaxLegacyRules {
				fam.ForwardDrops = append(fam.ForwardDrops, r)
			}
		case table == "nat" && (chain == "PREROUTING" || chain == "OUTPUT") && (target == "DNAT" || target == "REDIRECT" || userChains[target]):
			if len(fam.NAT) < state.MaxLegacyRules {
				fam.NAT = append(fam.NAT, r)
			}
		}
	}
}

// legacyTarget is a rule's -j or -g target ("" for none).
func legacyTarget(f []string) string {
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" || f[i] == "--jump" || f[i] == "--goto" {
			return f[i+1]
		}
	}
	return ""
}

// leadingAccepts are the ACCEPT rules of chain that every packet meets
// before any other rule, in order; an unconditional jump to DOCKER-USER
// (Docker's first FORWARD rule) adds DOCKER-USER's own leading ACCEPT
// rules and ends the walk, as does any other rule: what comes after may
// drop, so plan counts only these.
func leadingAccepts(rules []string, chain string, dockerUser bool) []string {
	var out []string
	for _, r := range rules {
		f := strings.Fields(r)
		if f[1] != chain {
			continue
		}
		switch {
		case legacyTarget(f) == "ACCEPT":
			if len(out) < state.MaxLegacyRules {
				out = append(out, r)
			}
			continue
		case chain == "FORWARD" && dockerUser && r == "-A FORWARD -j DOCKER-USER":
			out = append(out, leadingAccepts(rules, "DOCKER-USER", false)...)
			if len(out) > state.MaxLegacyRules {
				out = out[:state.MaxLegacyRules]
			}
		}
		return out
	}
	return out
}

// legacyFwRules reads the filter table of an iptables-legacy-save text
// as the agent reads nft's chains (FwRules): its chains, the built-in
// ones as base chains with their policy, and each rule as
// legacyFwRule decodes it, at most state.MaxFwRules a chain (then an
// Opaque rule for the rest) and state.MaxFwRulesTotal in all.
func legacyFwRules(family string, text []byte) ([]state.BaseChain, []state.FwRule) {
	var chains []state.BaseChain
	var rules []state.FwRule
	perChain := map[string]int{}
	user := map[string]bool{} // the table's own chains, by name
	saveLines(text, "filter", func(line string) {
		switch {
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) < 2 || len(f[0]) > 64 || len(chains) >= state.MaxFwRules || !validChain(family, f[0]) {
				return
			}
			user[f[0]] = f[1] == "-"
			ch := state.BaseChain{Family: family, Table: "filter", Chain: f[0], Read: true}
			if hook := map[string]string{"INPUT": "input", "FORWARD": "forward", "OUTPUT": "output"}[f[0]]; hook != "" && f[1] != "-" {
				ch = state.BaseChain{Family: family, Table: "filter", Chain: f[0], Hook: hook, Type: "filter", Policy: "accept"}
				if f[1] == "DROP" {
					ch.Policy = "drop"
				}
			}
			chains = append(chains, ch)
		case strings.HasPrefix(line, "-A "):
			tok, ok := legacyTokens(line)
			if !ok || len(tok) < 2 || !validChain(family, tok[1]) {
				return
			}
			chain := tok[1]
			switch n := perChain[chain]; {
			case len(rules) >= state.MaxFwRulesTotal:
			case n == state.MaxFwRules:
				rules = append(rules, state.FwRule{Family: family, Table: "filter", Chain: chain, Opaque: true})
			case n < state.MaxFwRules:
				rules = append(rules, legacyFwRule(family, chain, tok[2:], user))
			}
			perChain[chain]++
		}
	})
	return chains, rules
}

// validChain says whether name can name a chain in the facts (printable
// ASCII, no whitespace: state.FwRule's check). iptables allows little
// else; a save text with other bytes is not iptables' own, and its
// rules of such a chain are left out.
func validChain(family, name string) bool {
	return state.FwRule{Family: family, Table: "filter", Chain: name}.Validate() == nil
}

// saveLines calls each with the lines of table's section of an
// iptables-save text (its chain lines and rules: not the table's header,
// comments, blank lines or COMMIT).
func saveLines(text []byte, table string, each func(line string)) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	in := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "*"):
			in = line[1:] == table
		case !in || line == "" || strings.HasPrefix(line, "#") || line == "COMMIT":
		default:
			each(line)
		}
	}
}

// legacyTokens splits an iptables-save line into its words, a quoted
// one (`--comment "a b"`) as one, its quotes and escapes removed.
func legacyTokens(line string) ([]string, bool) {
	var out []string
	var cur strings.Builder
	inWord, quoted, escaped := false, false, false
	for _, c := range line {
		switch {
		case escaped:
			cur.WriteRune(c)
			escaped = false
		case c == '\\':
			escaped, inWord = true, true
		case c == '"':
			quoted, inWord = !quoted, true
		case (c == ' ' || c == '\t') && !quoted:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	if quoted || escaped {
		return nil, false
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, true
}

// legacyFwRule decodes one rule's words (after `-A CHAIN`) as
// decodeFwRule does nft's: interfaces (not `+` prefixes), single
// addresses, the protocol, a destination port, range or multiport list,
// conntrack states (`-m conntrack --ctstate`, `-m state --state`),
// comments, and the target: ACCEPT, DROP, REJECT (with its
// --reject-with), RETURN, LOG (no verdict), a chain to jump (-j) or go
// (-g) to. Anything else (a negation, another match or target, an
// option it does not know) makes it Opaque.
func legacyFwRule(family, chain string, w []string, user map[string]bool) state.FwRule {
	r := state.FwRule{Family: family, Table: "filter", Chain: chain}
	full := 32
	if family == "ip6" {
		full = 128
	}
	// addr: an address (a prefix of full length), or a shorter masked
	// prefix (iptables-save prints `-s 10.0.0.0/8`); ok false for
	// anything else.
	addr := func(s string) (a netip.Addr, net netip.Prefix, ok bool) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, err := netip.ParseAddr(s)
			return a, netip.Prefix{}, err == nil && a.Is6() == (family == "ip6") && !a.Is4In6()
		}
		switch {
		case p.Addr().Is6() != (family == "ip6") || p != p.Masked():
			return a, net, false
		case p.Bits() == full:
			return p.Addr(), net, !p.Addr().Is4In6()
		case p.Bits() == 0:
			return a, net, true // 0.0.0.0/0, ::/0: any address
		}
		return a, p, true
	}
	ports := func(s string) ([][2]uint16, bool) {
		var out [][2]uint16
		for _, part := range strings.Split(s, ",") {
			lo, hi, span := strings.Cut(part, ":")
			a, err1 := strconv.ParseUint(lo, 10, 16)
			b, err2 := a, error(nil)
			if span {
				b, err2 = strconv.ParseUint(hi, 10, 16)
			}
			if err1 != nil || err2 != nil || a > b {
				return nil, false
			}
			out = append(out, [2]uint16{uint16(a), uint16(b)})
		}
		return out, len(out) > 0 && len(out) <= state.MaxFwSetElements
	}
	target := false // the words after -j belong to its target
	for i := 0; i < len(w); i++ {
		arg := func() (string, bool) {
			if i+1 >= len(w) {
				return "", false
			}
			i++
			return w[i], true
		}
		opt := w[i]
		if target {
			// REJECT's --reject-with, LOG's --log-prefix and the like:
			// how it drops or logs, not what it matches.
			if strings.HasPrefix(opt, "--") {
				arg()
				continue
			}
			r.Opaque = true
			continue
		}
		if opt == "!" {
			// A negated match (`! -i mig0`): neither read nor taken as
			// its opposite; its option and value are skipped.
			r.Opaque = true
			i += 2
			continue
		}
		v, ok := "", true
		switch opt {
		case "-i", "--in-interface", "-o", "--out-interface", "-s", "--source", "-d", "--destination", "-p", "--protocol",
			"-m", "--match", "--dport", "--destination-port", "--dports", "--destination-ports", "--ctstate", "--state", "--comment", "-j", "--jump", "-g", "--goto":
			v, ok = arg()
		default:
			r.Opaque = true // a negation, a match's option not read
			continue
		}
		if !ok {
			r.Opaque = true
			break
		}
		switch opt {
		case "-i", "--in-interface", "-o", "--out-interface":
			if strings.HasSuffix(v, "+") || state.CheckIfname("interface", v) != nil {
				r.Opaque = true
			} else if opt == "-i" || opt == "--in-interface" {
				r.IifName = v
			} else {
				r.OifName = v
			}
		case "-s", "--source", "-d", "--destination":
			a, net, ok := addr(v)
			switch {
			case !ok:
				r.Opaque = true
			case opt == "-s" || opt == "--source":
				r.Saddr, r.SaddrNet = a, net
			default:
				r.Daddr, r.DaddrNet = a, net
			}
		case "-p", "--protocol":
			p := strings.ToLower(v)
			if p == "all" {
				continue
			}
			if p == "icmpv6" {
				p = "ipv6-icmp"
			}
			known := false
			for _, name := range state.L4ProtoNames {
				known = known || p == name
			}
			if !known {
				r.Opaque = true
				continue
			}
			r.L4Proto = p
		case "-m", "--match":
			switch v {
			case "tcp", "udp", "multiport", "conntrack", "state", "comment":
			default:
				r.Opaque = true
			}
		case "--dport", "--destination-port", "--dports", "--destination-ports":
			spans, ok := ports(v)
			switch {
			case !ok || r.Dport != 0 || r.Dports != nil || (r.L4Proto != "tcp" && r.L4Proto != "udp" && r.L4Proto != "sctp" && r.L4Proto != "udplite"):
				r.Opaque = true
			case len(spans) == 1 && spans[0][0] == spans[0][1]:
				r.Dport = spans[0][0]
			default:
				r.Dports = spans
			}
		case "--ctstate", "--state":
			for _, st := range strings.Split(strings.ToLower(v), ",") {
				known := slices.Contains(state.CtNatStates, st) && opt == "--ctstate"
				for _, b := range state.CtStateBits {
					known = known || st == b.Name
				}
				if !known || slices.Contains(r.CtState, st) {
					r.Opaque = true
					break
				}
				r.CtState = append(r.CtState, st)
			}
		case "--comment":
		case "-j", "--jump", "-g", "--goto":
			target = true
			switch {
			case v == "ACCEPT":
				r.Verdict = "accept"
			case v == "DROP":
				r.Verdict = "drop"
			case v == "REJECT":
				r.Verdict = "reject"
			case v == "RETURN":
				r.Verdict = "return"
			case v == "LOG" || v == "NFLOG":
			case (opt == "-g" || opt == "--goto") && user[v]:
				r.Verdict = "goto " + v
			case user[v]:
				r.Verdict = "jump " + v
			default:
				// A target that changes the packet or ends the rule
				// otherwise (MARK, TCPMSS, NFQUEUE...).
				r.Opaque = true
			}
		}
	}
	if r.Validate() != nil {
		return state.FwRule{Family: family, Table: "filter", Chain: chain, Opaque: true}
	}
	return r
}
