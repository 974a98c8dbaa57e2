package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opsmigrate/migrate/state"
)

// applyFile writes or removes one of the boot unit's files (the agent
// checked the path and content: owner.go). Files are replaced atomically
// (a temporary name, fsync, rename, fsync of the directory): a host that
// loses power mid-step has the old file or the new one, never half of
// one. Deleting the enable link also removes its directory when that is
// left empty (apply created it where systemd had none).
func (h *Host) applyFile(step state.Step) error {
	if step.Action == state.Delete {
		p := step.Before.File.Path
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if filepath.Base(filepath.Dir(p)) == state.BootUnitWants {
			_ = os.Remove(filepath.Dir(p)) // only when empty
		}
		return syncDir(filepath.Dir(p))
	}
	f := step.After.File
	dir := filepath.Dir(f.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+filepath.Base(f.Path)+".migrate-tmp")
	_ = os.Remove(tmp)
	if f.Link != "" {
		if err := os.Symlink(f.Link, tmp); err != nil {
			return err
		}
	} else if err := writeSynced(tmp, []byte(f.Content)); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, f.Path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replace %s: %w", f.Path, err)
	}
	return syncDir(dir)
}

func writeSynced(p string, b []byte) error {
	fh, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := fh.Write(b); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
