package kernel

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"time"

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
		if filepath.Base(filepath.Dir(p)) == state.BootUnitWants || state.IsDropInFile(p) {
			_ = os.Remove(filepath.Dir(p)) // only when empty
		}
		if err := syncDir(filepath.Dir(p)); err != nil {
			return err
		}
		daemonReload(p)
		return nil
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
	if err := syncDir(dir); err != nil {
		return err
	}
	daemonReload(f.Path)
	return nil
}

// systemdUnitDir and systemdRuntimeDir are the real systemd's: only there
// is `systemctl daemon-reload` run (tests put the unit directory
// elsewhere and never reach the machine's systemd).
const (
	systemdUnitDir    = "/etc/systemd/system"
	systemdRuntimeDir = "/run/systemd/system"
)

// daemonReload makes systemd read the drop-in at p now,
// not at the next boot: without it a `systemctl reload nftables` before
// the next boot would run the service's old command list, and after a
// rollback the removed drop-in's. The unit and its link only matter at
// boot, when systemd reads every file anyway. A failure is logged, not
// returned: the file is in place, and the next boot (or any daemon-reload)
// picks it up; undoing the apply for it would help nobody.
func daemonReload(p string) {
	if filepath.Dir(filepath.Dir(p)) != systemdUnitDir || !state.IsDropInFile(p) {
		return
	}
	if st, err := os.Stat(systemdRuntimeDir); err != nil || !st.IsDir() {
		return
	}
	systemctl := ""
	for _, c := range []string{"/usr/bin/systemctl", "/bin/systemctl"} {
		if _, err := os.Stat(c); err == nil {
			systemctl = c
			break
		}
	}
	if systemctl == "" {
		log.Printf("%s written, but no systemctl to run daemon-reload: systemd reads it at the next boot", p)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, systemctl, "daemon-reload").CombinedOutput(); err != nil {
		log.Printf("%s written, but systemctl daemon-reload failed (systemd reads it at the next boot): %v %s", p, err, out)
	}
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
