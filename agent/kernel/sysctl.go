package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/opsmigrate/migrate/state"
)

// sysctlParts splits a dotted sysctl name into /proc/sys path components.
// As with sysctl(8), a "/" inside a dotted component stands for a "." in
// the file name: net.ipv4.conf.eth0/100.rp_filter is
// net/ipv4/conf/eth0.100/rp_filter.
func sysctlParts(name string) ([]string, error) {
	if name == "" {
		return nil, fmt.Errorf("invalid sysctl name %q", name)
	}
	parts := strings.Split(name, ".")
	for i, p := range parts {
		p = strings.ReplaceAll(p, "/", ".")
		if p == "" || p == "." || p == ".." || strings.ContainsRune(p, 0) {
			return nil, fmt.Errorf("invalid sysctl name %q", name)
		}
		parts[i] = p
	}
	return parts, nil
}

// dottedPart is the inverse of sysctlParts for one component.
func dottedPart(file string) string { return strings.ReplaceAll(file, ".", "/") }

// sysctlPath turns a dotted name into its /proc/sys path.
func (h *Host) sysctlPath(name string) (string, error) {
	parts, err := sysctlParts(name)
	if err != nil {
		return "", err
	}
	return h.SysctlRoot + "/" + strings.Join(parts, "/"), nil
}

func isSysctlGlob(name string) bool {
	for _, p := range strings.Split(name, ".") {
		if p == "*" {
			return true
		}
	}
	return false
}

// expandSysctl expands the "*" components of a dotted name over the
// existing entries (net.ipv6.conf.*.accept_ra: one name per device, plus
// all and default), sorted. Only files match, not directories.
func (h *Host) expandSysctl(name string) ([]string, error) {
	parts, err := sysctlParts(name)
	if err != nil {
		return nil, err
	}
	var out []string
	var walk func(dir string, dotted, rest []string) error
	walk = func(dir string, dotted, rest []string) error {
		if len(rest) == 0 {
			if fi, err := os.Stat(dir); err == nil && fi.Mode().IsRegular() {
				out = append(out, strings.Join(dotted, "."))
			}
			return nil
		}
		next := func(file string) error {
			d := append(append([]string(nil), dotted...), dottedPart(file))
			return walk(dir+"/"+file, d, rest[1:])
		}
		if rest[0] != "*" {
			return next(rest[0])
		}
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("expand sysctl %s: %w", name, err)
		}
		for _, e := range entries { // sorted by file name
			if err := next(e.Name()); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(h.SysctlRoot, nil, parts)
}

// sysctlFacts reads the requested sysctls into out. A name with a "*"
// component reports every match by its full name; matches that cannot be
// read (write-only entries) are left out.
func (h *Host) sysctlFacts(names []string, out map[string]string) error {
	for _, name := range names {
		if !isSysctlGlob(name) {
			v, ok, err := h.readSysctl(name)
			if err != nil {
				return err
			}
			if ok {
				out[name] = v
			}
			continue
		}
		matches, err := h.expandSysctl(name)
		if err != nil {
			return err
		}
		for _, m := range matches {
			v, ok, err := h.readSysctl(m)
			if errors.Is(err, fs.ErrPermission) {
				continue
			}
			if err != nil {
				return err
			}
			if ok {
				out[m] = v
			}
		}
	}
	return nil
}

// readSysctl reads a dotted sysctl. ok is false when it does not exist.
func (h *Host) readSysctl(name string) (value string, ok bool, err error) {
	p, err := h.sysctlPath(name)
	if err != nil {
		return "", false, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), true, nil
}

func (h *Host) writeSysctl(name, value string) error {
	p, err := h.sysctlPath(name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write sysctl %s: %w", name, err)
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return fmt.Errorf("write sysctl %s = %q: %w", name, value, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write sysctl %s = %q: %w", name, value, err)
	}
	return nil
}

func (h *Host) applySysctl(step state.Step) error {
	if step.Action == state.Delete {
		// Only a sysctl that did not exist before migrate's change is
		// "deleted": one of a device migrate created. Its value goes with
		// the device; there is nothing to write. Values that existed are
		// restored by an update instead.
		return nil
	}
	s := step.After.Sysctl
	if isSysctlGlob(s.Name) {
		return fmt.Errorf("sysctl %s: cannot write a pattern", s.Name)
	}
	if cur, ok, err := h.readSysctl(s.Name); err == nil && ok && cur == s.Value {
		return nil
	}
	return h.writeSysctl(s.Name, s.Value)
}
