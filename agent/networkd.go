package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/opsmigrate/migrate/state"
)

// networkdComm is systemd-networkd's /proc/PID/comm: the kernel keeps the
// first 15 bytes of the name.
const networkdComm = "systemd-network"

// Where networkd reads networkd.conf, relative to its root: the first main
// file that exists, then the drop-ins of every directory, by basename (the
// earlier directory wins a basename), in basename order. systemd 252 reads
// the main file from /etc only; later versions look in the same places as
// for drop-ins, /etc first.
var (
	networkdMain = []string{
		"etc/systemd/networkd.conf",
		"run/systemd/networkd.conf",
		"usr/local/lib/systemd/networkd.conf",
		"usr/lib/systemd/networkd.conf",
	}
	networkdDropins = []string{
		"etc/systemd/networkd.conf.d",
		"run/systemd/networkd.conf.d",
		"usr/local/lib/systemd/networkd.conf.d",
		"usr/lib/systemd/networkd.conf.d",
	}
)

// NetworkdFacts reports whether systemd-networkd runs in the agent's
// network namespace and, if so, its ManageForeignRoutingPolicyRules= and
// ManageForeignRoutes=, read through the process's own root
// (/proc/PID/root), so a private mount namespace is honoured.
func NetworkdFacts() (*state.Networkd, error) {
	pid, err := findNetworkd("/proc")
	if err != nil {
		return nil, err
	}
	if pid == 0 {
		return &state.Networkd{}, nil
	}
	n := NetworkdSettings(os.DirFS(fmt.Sprintf("/proc/%d/root", pid)))
	n.Running, n.PID = true, pid
	if n.Validate() != nil {
		// Cannot happen with the bounds the reader keeps; never send
		// a report the CLI would refuse.
		n.Files, n.Problems = nil, []string{"the report did not pass its own checks"}
	}
	return &n, nil
}

// findNetworkd returns the lowest PID whose comm is systemd-networkd's
// and whose network namespace is the caller's, or 0. Processes that end
// while it looks are skipped.
func findNetworkd(proc string) (int, error) {
	self, err := nsID(proc + "/self/ns/net")
	if err != nil {
		return 0, fmt.Errorf("networkd: own network namespace: %w", err)
	}
	ents, err := os.ReadDir(proc)
	if err != nil {
		return 0, fmt.Errorf("networkd: %w", err)
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	for _, pid := range pids {
		dir := proc + "/" + strconv.Itoa(pid)
		comm, err := os.ReadFile(dir + "/comm")
		if err != nil || strings.TrimSuffix(string(comm), "\n") != networkdComm {
			continue
		}
		if ns, err := nsID(dir + "/ns/net"); err == nil && ns == self {
			return pid, nil
		}
	}
	return 0, nil
}

// nsID identifies a namespace by its nsfs device and inode.
func nsID(p string) ([2]uint64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return [2]uint64{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return [2]uint64{}, errors.New("no inode")
	}
	return [2]uint64{uint64(st.Dev), st.Ino}, nil
}

// NetworkdSettings reads networkd.conf and its drop-ins from root (a
// process's root directory) as networkd does, and returns the effective
// ManageForeignRoutingPolicyRules= and ManageForeignRoutes= (default yes),
// the files read and what could not be read or parsed. Running and PID
// are left unset.
func NetworkdSettings(root fs.FS) state.Networkd {
	n := state.Networkd{ForeignRules: true, ForeignRoutes: true}
	problem := func(format string, a ...any) {
		if len(n.Problems) < state.MaxNetworkdProblems {
			s := fmt.Sprintf(format, a...)
			if len(s) > 1000 {
				s = s[:1000] + "..."
			}
			n.Problems = append(n.Problems, strings.ToValidUTF8(s, "?"))
		}
	}
	var files []string
	for _, m := range networkdMain {
		if fi, err := fs.Stat(root, m); err == nil && !fi.IsDir() {
			files = append(files, m)
			break
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			problem("/%s: %v", m, err)
		}
	}
	seen := map[string]bool{}
	var dropins []string
	for _, dir := range networkdDropins {
		ents, err := fs.ReadDir(root, dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				problem("/%s: %v", dir, err)
			}
			continue
		}
		for _, e := range ents {
			name := e.Name()
			if !strings.HasSuffix(name, ".conf") || e.IsDir() || seen[name] {
				continue
			}
			seen[name] = true
			dropins = append(dropins, path.Join(dir, name))
		}
	}
	sort.Slice(dropins, func(i, j int) bool { return path.Base(dropins[i]) < path.Base(dropins[j]) })
	files = append(files, dropins...)
	for _, f := range files {
		if len(n.Files) >= state.MaxNetworkdFiles {
			problem("more than %d files: the rest not read", state.MaxNetworkdFiles)
			break
		}
		b, err := fs.ReadFile(root, f)
		if err != nil {
			problem("/%s: %v", f, err)
			continue
		}
		n.Files = append(n.Files, "/"+f)
		for _, p := range parseNetworkdConf("/"+f, string(b), &n) {
			problem("%s", p)
		}
	}
	return n
}

// parseNetworkdConf applies one networkd.conf file's [Network]
// ManageForeignRoutingPolicyRules= and ManageForeignRoutes= to n, as
// systemd parses it: blank lines and lines starting with # or ; are
// comments, a trailing backslash continues the line, keys are
// case-sensitive, booleans are yes/no/true/false/on/off/y/n/t/f/1/0 in
// any case, a later assignment wins. A value it cannot parse is reported
// and counts as yes (systemd ignores the line; yes is the setting that
// removes migrate's rules, so plan warns rather than miss it).
func parseNetworkdConf(name, text string, n *state.Networkd) (problems []string) {
	section := ""
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		line := strings.TrimSpace(lines[i])
		for strings.HasSuffix(line, "\\") && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(line, "\\") + " " + strings.TrimSpace(lines[i])
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				problems = append(problems, fmt.Sprintf("%s:%d: bad section header %q", name, lineNo, line))
				section = ""
				continue
			}
			section = line[1 : len(line)-1]
			continue
		}
		if section != "Network" {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			problems = append(problems, fmt.Sprintf("%s:%d: %q is not KEY=VALUE", name, lineNo, line))
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		var dst *bool
		switch key {
		case "ManageForeignRoutingPolicyRules":
			dst = &n.ForeignRules
		case "ManageForeignRoutes":
			dst = &n.ForeignRoutes
		default:
			continue
		}
		b, ok := parseSystemdBool(value)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s:%d: %s=%q is not a boolean: counted as yes", name, lineNo, key, value))
			b = true
		}
		*dst = b
	}
	return problems
}

// parseSystemdBool parses a boolean as systemd's parse_boolean does.
func parseSystemdBool(s string) (v, ok bool) {
	switch strings.ToLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true, true
	case "0", "no", "n", "false", "f", "off":
		return false, true
	}
	return false, false
}
