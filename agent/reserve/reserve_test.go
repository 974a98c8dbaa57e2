package reserve

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/state"
)

func TestEnsureMakesReserveOnce(t *testing.T) {
	dir := t.TempDir()
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, Name))
	if err != nil || st.Size() != Size || st.Mode().Perm() != 0o600 {
		t.Fatalf("reserve: %v %v", st, err)
	}
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureRefusesLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	if err := os.Symlink(target, filepath.Join(dir, Name)); err != nil {
		t.Fatal(err)
	}
	// A link in the state directory is replaced, never followed.
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Ensure wrote through a symbolic link: %v", err)
	}
}

func TestRetryFreesReserveOnENOSPC(t *testing.T) {
	dir := t.TempDir()
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
	calls := 0
	full := func() error {
		calls++
		if _, err := os.Stat(filepath.Join(dir, Name)); err == nil {
			return fmt.Errorf("write: %w", unix.ENOSPC)
		}
		return nil
	}
	if err := Retry(dir, full); err != nil || calls != 2 {
		t.Fatalf("Retry with a reserve: err %v after %d call(s), want nil after 2", err, calls)
	}
	// Without a reserve there is nothing to free: one call, its error.
	calls = 0
	always := func() error { calls++; return unix.ENOSPC }
	if err := Retry(dir, always); !errors.Is(err, unix.ENOSPC) || calls != 1 {
		t.Fatalf("Retry without a reserve: err %v after %d call(s)", err, calls)
	}
	// Other errors are not retried.
	calls = 0
	if err := Ensure(dir); err != nil {
		t.Fatal(err)
	}
	other := func() error { calls++; return unix.EIO }
	if err := Retry(dir, other); !errors.Is(err, unix.EIO) || calls != 1 {
		t.Fatalf("Retry on EIO: err %v after %d call(s)", err, calls)
	}
	if _, err := os.Stat(filepath.Join(dir, Name)); err != nil {
		t.Fatalf("EIO freed the reserve: %v", err)
	}
}

func TestNoSpaceMessage(t *testing.T) {
	e := &ErrNoSpace{state.StateDirSpace{Dir: "/var/lib/migrate", Free: 3 << 20, Need: Size + MinFree}}
	want := "the file system of /var/lib/migrate has 3.0 MiB free and migrate needs 12.0 MiB there before it changes anything (a reserve, so that an undo or a rollback can always be recorded, and room to record the apply): free some space on it and run again"
	if e.Error() != want {
		t.Fatalf("got  %s\nwant %s", e.Error(), want)
	}
}

// TestAllocateRetriesEINTR: an fallocate interrupted by a signal (tmpfs
// returns EINTR whenever one is pending) is made again, and the reserve
// is written; any other error is returned at once.
func TestAllocateRetriesEINTR(t *testing.T) {
	real := fallocate
	defer func() { fallocate = real }()
	calls := 0
	fallocate = func(fd int, mode uint32, off, size int64) error {
		calls++
		if calls < 3 {
			return unix.EINTR
		}
		return real(fd, mode, off, size)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, Name)
	if err := create(p); err != nil || calls != 3 {
		t.Fatalf("create with two EINTRs: %v after %d call(s)", err, calls)
	}
	if st, err := os.Stat(p); err != nil || st.Size() != Size {
		t.Fatalf("the reserve after the retries: %v %v", st, err)
	}
	calls = 0
	fallocate = func(int, uint32, int64, int64) error { calls++; return unix.EIO }
	if err := allocate(0, Size); !errors.Is(err, unix.EIO) || calls != 1 {
		t.Errorf("EIO: %v after %d call(s), want it returned at once", err, calls)
	}
	calls = 0
	fallocate = func(int, uint32, int64, int64) error { calls++; return unix.EINTR }
	if err := allocate(0, Size); !errors.Is(err, unix.EINTR) || calls != maxEINTR {
		t.Errorf("EINTR for ever: %v after %d call(s), want it returned after %d", err, calls, maxEINTR)
	}
}
