// Package reserve keeps space set aside in the agent's state directory, so
// that the records of an apply, of its undo and of a rollback can still be
// written when something else has filled the file system.
//
// The journal is write-ahead: a step whose record cannot be written is not
// made, and an undo whose record cannot be written stops the undo. On a
// full /var (logs are what usually fills it, in the third week of a
// migration) that left a host half applied: seen in the lab with a
// tmpfs state directory. So a forward apply first makes sure that the
// reserve file exists and that there is working space beyond it, and any
// write of the agent that fails with ENOSPC frees the reserve and is tried
// once more.
package reserve

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/state"
)

const (
	// Name is the reserve's file in the state directory.
	Name = "reserve"
	// Size is what the reserve holds: far more than the records of one
	// apply's undo or of a rollback (a journal line is under 1 KiB, a
	// compaction writes the journal once).
	Size = 8 << 20
	// MinFree is the working space a forward apply needs beyond the
	// reserve, plus twice what the journal and the nft record take (a
	// compaction writes a second copy before the rename).
	MinFree = 4 << 20
)

// ErrNoSpace is returned by Ensure when the file system is too full to
// start an apply.
type ErrNoSpace struct{ state.StateDirSpace }

func (e *ErrNoSpace) Error() string {
	return e.Shortfall() + ": free some space on it and run again"
}

// Check measures dir for Ensure: the reserve, MinFree, and twice the size
// of the given files (the journal and the nft record). Free counts the
// reserve as free.
func Check(dir string, files ...string) (state.StateDirSpace, error) {
	sp := state.StateDirSpace{Dir: dir, Need: MinFree + Size}
	for _, f := range files {
		if st, err := os.Lstat(f); err == nil {
			sp.Need += 2 * st.Size()
		}
	}
	if st, err := os.Lstat(filepath.Join(dir, Name)); err == nil && st.Mode().IsRegular() && st.Size() >= Size {
		sp.Reserve = true
	}
	free, err := Free(dir)
	if err != nil {
		return sp, err
	}
	sp.Free = free
	if sp.Reserve {
		sp.Free += Size
	}
	return sp, nil
}

// Ensure makes sure dir holds the reserve and has at least MinFree plus
// twice the size of the given files free beyond it. It is called before
// a forward apply changes anything; an undo or a rollback never calls it.
func Ensure(dir string, files ...string) error {
	sp, err := Check(dir, files...)
	if err != nil {
		return err
	}
	if sp.Short() {
		return &ErrNoSpace{sp}
	}
	if sp.Reserve {
		return nil
	}
	p := filepath.Join(dir, Name)
	if err := create(p); err != nil {
		if errors.Is(err, unix.ENOSPC) {
			sp.Free, _ = Free(dir)
			return &ErrNoSpace{sp}
		}
		return fmt.Errorf("set space aside in %s: %w", p, err)
	}
	return nil
}

// create writes the reserve with its blocks allocated (fallocate, or,
// where the file system has none, such as ZFS, data written out: random
// bytes, since a compressing file system stores zeros in no space), then
// syncs it.
func create(p string) error {
	_ = os.Remove(p)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	err = allocate(int(f.Fd()), Size)
	if errors.Is(err, unix.EOPNOTSUPP) {
		rng := rand.NewChaCha8([32]byte{'m', 'i', 'g', 'r', 'a', 't', 'e'})
		buf := make([]byte, 1<<16)
		for off := 0; off < Size && err == nil; off += len(buf) {
			_, _ = rng.Read(buf)
			_, err = f.Write(buf)
		}
		err = errors.Join(err, f.Sync())
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
	}
	return err
}

// fallocate is unix.Fallocate (a variable for the test of allocate).
var fallocate = unix.Fallocate

// maxEINTR bounds allocate's retries.
const maxEINTR = 100

// allocate allocates size bytes of fd, again when a signal interrupted
// it: tmpfs's fallocate returns EINTR whenever a signal is pending, and
// SA_RESTART does not restart it. Seen in the VM lane (a state directory
// on the guest's tmpfs under TCG, where allocating 8 MiB is slow): "arm
// the revert timer: set space aside in .../reserve: interrupted system
// call", an apply refused for nothing. Go's os package retries EINTR for
// its own calls; a raw unix call must do it itself.
func allocate(fd int, size int64) error {
	var err error
	for i := 0; i < maxEINTR; i++ {
		if err = fallocate(fd, 0, 0, size); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
	return err
}

// Release removes the reserve; it reports whether there was one.
func Release(dir string) bool {
	p := filepath.Join(dir, Name)
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		return false
	}
	return os.Remove(p) == nil
}

// Retry runs write; when it fails because the file system is full and
// the reserve was there, it frees the reserve and runs write once more.
func Retry(dir string, write func() error) error {
	err := write()
	if errors.Is(err, unix.ENOSPC) && Release(dir) {
		err = write()
	}
	return err
}

// Free is the space root may still use on dir's file system.
func Free(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bfree) * st.Bsize, nil
}
