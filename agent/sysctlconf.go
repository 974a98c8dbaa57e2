package agent

import (
	"bufio"
	"bytes"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// Where the sysctl settings applied at boot and by `sysctl --system` live,
// relative to the host's root, highest precedence first: systemd-sysctl
// reads the *.conf files of these directories by basename (a basename in an
// earlier directory hides the same name in a later one), in basename
// order, a later assignment winning; procps' `sysctl --system` reads the
// same files and /etc/sysctl.conf after them (Debian links it as
// /etc/sysctl.d/99-sysctl.conf for systemd-sysctl).
var (
	sysctlConfDirs = []string{"etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d", "lib/sysctl.d"}
	sysctlConfMain = "etc/sysctl.conf"
)

// maxSysctlConfBytes bounds what is read of one file.
const maxSysctlConfBytes = 1 << 20

// SysctlConf reports, for each of names (migrate's sysctls, plan.Sysctls;
// globs among them are skipped), the value the host's sysctl files would
// set again when they are applied, and where. As systemd-sysctl does, an
// assignment naming the sysctl wins over every glob (the last such
// assignment in the order above); else the last glob assignment matching
// it (systemd 249+: net.ipv4.conf.*.rp_filter), unless a line "-NAME"
// without a value excludes it from globs. Names no file sets are left out.
func SysctlConf(root fs.FS, names []string) map[string]state.SysctlSetting {
	want := map[string]bool{}
	for _, n := range names {
		if !strings.ContainsAny(n, "*?[") {
			want[n] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	byBase := map[string]string{} // basename -> path of the file read
	for _, dir := range sysctlConfDirs {
		ents, err := fs.ReadDir(root, dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".conf") {
				continue
			}
			if _, seen := byBase[e.Name()]; !seen {
				byBase[e.Name()] = path.Join(dir, e.Name())
			}
		}
	}
	bases := make([]string, 0, len(byBase))
	for b := range byBase {
		bases = append(bases, b)
	}
	sort.Strings(bases)
	files := make([]string, 0, len(bases)+1)
	for _, b := range bases {
		files = append(files, byBase[b])
	}
	files = append(files, sysctlConfMain)
	out := map[string]state.SysctlSetting{}
	fromGlob := map[string]state.SysctlSetting{}
	excluded := map[string]bool{}
	for _, f := range files {
		b, err := fs.ReadFile(root, f)
		if err != nil || len(b) > maxSysctlConfBytes {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 4096), maxSysctlConfBytes)
		for line := 1; sc.Scan(); line++ {
			a, ok := sysctlConfLine(sc.Text())
			switch {
			case !ok:
			case a.exclude:
				// It replaces an earlier assignment too.
				excluded[a.key] = true
				delete(out, a.key)
			case a.glob:
				for n := range want {
					if sysctlGlobMatch(a.key, n) {
						fromGlob[n] = state.SysctlSetting{Value: a.val, File: "/" + f, Line: line, Pattern: a.key}
					}
				}
			case want[a.key]:
				out[a.key] = state.SysctlSetting{Value: a.val, File: "/" + f, Line: line}
			}
		}
	}
	for n, s := range fromGlob {
		if _, named := out[n]; !named && !excluded[n] {
			out[n] = s
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// sysctlGlobMatch says whether the glob key pattern matches the sysctl
// name, both in migrate's dotted form, as systemd-sysctl's glob over
// /proc/sys does: a wildcard stands for one path component (a device
// name, dots and all), never for a separator.
func sysctlGlobMatch(pattern, name string) bool {
	ok, err := path.Match(sysctlPath(pattern), sysctlPath(name))
	return err == nil && ok
}

// sysctlPath turns a dotted sysctl name into its path under /proc/sys
// (a "/" in the dotted form is a "." of a name: eth0/100 -> eth0.100).
func sysctlPath(dotted string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, dotted)
}

// sysctlAssign is one line of a sysctl file.
type sysctlAssign struct {
	key, val string
	glob     bool // key holds a glob
	exclude  bool // "-KEY" alone: KEY is left out of glob assignments
}

// sysctlConfLine parses "key = value" as sysctl.d(5) does: # and ;
// comments, a leading "-" (ignore errors) dropped, and a key written with
// "/" as its separator (net/ipv4/ip_forward) turned into the dotted form
// migrate uses (a "." in such a key is part of a name: eth0.100 ->
// eth0/100). A "-KEY" line without a value excludes KEY from globs.
func sysctlConfLine(s string) (a sysctlAssign, ok bool) {
	s = strings.TrimSpace(s)
	if s == "" || s[0] == '#' || s[0] == ';' {
		return a, false
	}
	k, v, found := strings.Cut(s, "=")
	k = strings.TrimSpace(k)
	if !found {
		if !strings.HasPrefix(k, "-") || strings.ContainsAny(k, "*?[") {
			return a, false
		}
		a.exclude = true
	}
	k = strings.TrimSpace(strings.TrimPrefix(k, "-"))
	if i := strings.IndexAny(k, "./"); i >= 0 && k[i] == '/' {
		k = sysctlPath(k)
	}
	if k == "" {
		return a, false
	}
	a.key, a.val, a.glob = k, strings.TrimSpace(v), strings.ContainsAny(k, "*?[")
	return a, true
}
