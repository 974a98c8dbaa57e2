package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

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
	if cur, ok, err := h.readSysctl(s.Name); err == nil && ok && cur == s.Value {
		return nil
	}
	return h.writeSysctl(s.Name, s.Value)
}
