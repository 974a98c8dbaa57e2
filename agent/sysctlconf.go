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
// globs are skipped), the value the host's sysctl files would set again
// when they are applied, and where: the last assignment in the order
// above. Names no file sets are left out. Keys with a glob in the files
// are not expanded (systemd 249+ allows them): not reported.
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
	for _, f := range files {
		b, err := fs.ReadFile(root, f)
		if err != nil || len(b) > maxSysctlConfBytes {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 0, 4096), maxSysctlConfBytes)
		for line := 1; sc.Scan(); line++ {
			key, val, ok := sysctlConfLine(sc.Text())
			if ok && want[key] {
				out[key] = state.SysctlSetting{Value: val, File: "/" + f, Line: line}
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// sysctlConfLine parses "key = value" as sysctl.d(5) does: # and ;
// comments, a leading "-" (ignore errors) dropped, and a key written with
// "/" as its separator (net/ipv4/ip_forward) turned into the dotted form
// migrate uses (a "." in such a key is part of a name: eth0.100 ->
// eth0/100).
func sysctlConfLine(s string) (key, val string, ok bool) {
	s = strings.TrimSpace(s)
	if s == "" || s[0] == '#' || s[0] == ';' {
		return "", "", false
	}
	k, v, found := strings.Cut(s, "=")
	if !found {
		return "", "", false
	}
	k = strings.TrimPrefix(strings.TrimSpace(k), "-")
	if i := strings.IndexAny(k, "./"); i >= 0 && k[i] == '/' {
		k = strings.Map(func(r rune) rune {
			switch r {
			case '/':
				return '.'
			case '.':
				return '/'
			}
			return r
		}, k)
	}
	if k == "" || strings.ContainsAny(k, "*?[") {
		return "", "", false
	}
	return k, strings.TrimSpace(v), true
}
