package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The agent runs as root and keeps its journal, locks, run records, logs
// and installed binaries in its state directory. Whoever can write there,
// or swap a path component for a symbolic link, could make it write
// through a link to any file of the host, or run a binary of their own as
// root. So before any use:
//
//   - every component of the path, from /, is a real directory (Lstat: no
//     symbolic links), owned by root or by the agent's euid, and not
//     writable by group or others unless sticky (/tmp): nobody else can
//     rename the state directory away and put another in its place;
//   - the state directory itself is owned by the agent's euid and has no
//     group or other permission bits (0700);
//
// and every file in it is opened with O_NOFOLLOW (a link planted there is
// refused, never followed) and created with O_EXCL, then renamed into
// place, where it is replaced as a whole. A check that fails is refused
// with the path, what is wrong and how to fix it, before anything is read
// or written.

// CheckStateDir checks dir as above, creating it (mode 0700, and missing
// parents 0755) when it does not exist.
func CheckStateDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("state directory %q: not an absolute path", dir)
	}
	dir = filepath.Clean(dir)
	euid := os.Geteuid()
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := checkAncestors(dir, euid, true); err != nil {
			return err
		}
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create state directory: %w", err)
		}
	} else if err := checkAncestors(dir, euid, false); err != nil {
		return err
	}
	return checkPrivateDir(dir, euid, "state directory")
}

// checkAncestors checks every directory above dir, from /, and creates
// missing ones (0755, owned by the agent) when create is set.
func checkAncestors(dir string, euid int, create bool) error {
	parts := strings.Split(strings.TrimPrefix(filepath.Dir(dir), "/"), "/")
	p := "/"
	for i := -1; i < len(parts); i++ {
		if i >= 0 {
			if parts[i] == "" {
				continue
			}
			p = filepath.Join(p, parts[i])
		}
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) && create {
			if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("state directory %s: create %s: %w", dir, p, err)
			}
			fi, err = os.Lstat(p)
		}
		if err != nil {
			return fmt.Errorf("state directory %s: %w", dir, err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("state directory %s: %s is a symbolic link; the agent runs as root and follows no links on the way to its files: use the real path", dir, p)
		case !fi.IsDir():
			return fmt.Errorf("state directory %s: %s is not a directory", dir, p)
		case st.Uid != 0 && int(st.Uid) != euid:
			return fmt.Errorf("state directory %s: %s belongs to uid %d; every directory above the state directory must belong to root, so that nobody else can replace it", dir, p, st.Uid)
		case fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0:
			return fmt.Errorf("state directory %s: %s is writable by group or others (mode %04o) and not sticky, so another user could replace the state directory; make it 0755", dir, p, fi.Mode().Perm())
		}
	}
	return nil
}

// checkPrivateDir: dir is a real directory of the agent's euid with mode
// 0700 (no group or other bits).
func checkPrivateDir(dir string, euid int, what string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s %s is a symbolic link; the agent runs as root and refuses to follow it: use a real directory owned by root with mode 0700", what, dir)
	case !fi.IsDir():
		return fmt.Errorf("%s %s is not a directory", what, dir)
	case int(st.Uid) != euid:
		return fmt.Errorf("%s %s belongs to uid %d, not to the agent (uid %d): the agent keeps root's journal, locks and binaries there and uses only a directory of its own; fix it with `chown root:root %s && chmod 0700 %s`", what, dir, st.Uid, euid, dir, dir)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("%s %s has mode %04o: others could read or change the agent's journal, locks and binaries; it must be 0700 (`chmod 0700 %s`)", what, dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// openNoFollow opens a file in the state directory without following a
// symbolic link in its last component (the directories above were
// checked), and refuses anything but a regular file.
func openNoFollow(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, perm)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link: the agent never follows links in its state directory; remove it", path)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%v); remove it", path, fi.Mode().Type())
	}
	return f, nil
}

// readNoFollow is os.ReadFile through openNoFollow.
func readNoFollow(path string) ([]byte, error) {
	f, err := openNoFollow(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// writeReplace writes data to path atomically: a new file (O_EXCL, so
// nothing that exists is written through), fsynced, renamed over path
// (which replaces a link instead of following it), then the directory
// fsynced.
func writeReplace(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
