package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
			if t == "filter" || t == "nat" {
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
	userChains := map[string]bool{}
	var rules []string
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	in := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "*"):
			in = line[1:] == table
		case !in || line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				continue
			}
			if f[1] == "-" {
				userChains[f[0]] = true
			} else if table == "filter" && f[0] == "FORWARD" {
				fam.ForwardPolicy = f[1]
			}
		case strings.HasPrefix(line, "-A "):
			rules = append(rules, line)
		}
	}
	if table == "filter" {
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
