package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/internal/needroot"
)

// outside is a file beyond the state directory that a planted link points
// to; it must never be written through.
type outside struct {
	path string
	data string
	mod  time.Time
}

func newOutside(t *testing.T, name string) outside {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	data := "precious " + name + "\n"
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return outside{p, data, fi.ModTime()}
}

func (o outside) untouched(t *testing.T, what string) {
	t.Helper()
	b, err := os.ReadFile(o.path)
	if err != nil {
		t.Fatalf("%s: the file outside is gone: %v", what, err)
	}
	fi, _ := os.Stat(o.path)
	if string(b) != o.data || !fi.ModTime().Equal(o.mod) {
		t.Errorf("%s: written through the link: %q (mtime %v, was %v)", what, b, fi.ModTime(), o.mod)
	}
}

func plant(t *testing.T, dir, name string, o outside) {
	t.Helper()
	if err := os.Symlink(o.path, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// Every file the agent opens in its state directory is refused when it is
// a symbolic link (reads and writes in place), or replaced as a whole by a
// rename (files it rewrites): a link to a file outside is never written
// through, and never read.
func TestStateDirSymlinksNotFollowed(t *testing.T) {
	step := proto.ApplyParams{Step: sysctlStep("1"), Run: "r1", Seq: 1}
	for _, tc := range []struct {
		file    string
		op      func(h *HostFiles) error
		refused bool // false: the link is replaced, not followed
	}{
		{"lock", func(h *HostFiles) error { return h.Lock(proto.LockInfo{ID: "l1"}) }, true},
		{"lock.json", func(h *HostFiles) error { defer h.Unlock(); return h.Lock(proto.LockInfo{ID: "l1"}) }, false},
		{"lock.json", func(h *HostFiles) error { return h.ForceUnlock("l1") }, true},
		{"journal.lock", func(h *HostFiles) error { return h.BeginStep(step) }, true},
		{"journal.json", func(h *HostFiles) error { return h.BeginStep(step) }, true},
		{"journal.json", func(h *HostFiles) error { _, err := h.Journal(); return err }, true},
		{"runs.lock", func(h *HostFiles) error { _, err := h.RunStatus("r1"); return err }, true},
		{"run-r1.json", func(h *HostFiles) error { _, err := h.RunStatus("r1"); return err }, true},
		{"run-r1.json", func(h *HostFiles) error { return h.Arm(proto.ArmParams{Run: "r1", TimeoutMS: 60000}) }, true},
		{"watchdog-r1.log", func(h *HostFiles) error { _, err := h.startWatchdog("r1"); return err }, true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			o := newOutside(t, tc.file)
			plant(t, dir, tc.file, o)
			err := tc.op(&HostFiles{Dir: dir})
			o.untouched(t, tc.file)
			if tc.refused {
				if err == nil || !strings.Contains(err.Error(), "is a symbolic link") {
					t.Fatalf("%s as a link: err %v, want a refusal naming the link", tc.file, err)
				}
				t.Logf("%s: %v", tc.file, err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Lstat(filepath.Join(dir, tc.file)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				t.Errorf("%s is still the planted link", tc.file)
			}
		})
	}
}

// The state directory must be the agent's own, 0700, on a path of real
// directories nobody else can write: anything else is refused before a
// file is touched.
func TestStateDirChecked(t *testing.T) {
	mk := func(t *testing.T, mode os.FileMode) (string, string) {
		base := t.TempDir()
		dir := filepath.Join(base, "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		return base, dir
	}
	cases := []struct {
		name  string
		setup func(t *testing.T) string
		want  string
		root  bool
	}{
		{"world-writable", func(t *testing.T) string { _, d := mk(t, 0o777); return d }, "has mode 0777", false},
		{"group-readable", func(t *testing.T) string { _, d := mk(t, 0o750); return d }, "has mode 0750", false},
		{"sticky world-writable", func(t *testing.T) string { _, d := mk(t, 0o1777); return d }, "has mode 0777", false},
		{"foreign owner", func(t *testing.T) string {
			_, d := mk(t, 0o700)
			if err := os.Chown(d, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return d
		}, "belongs to uid 65534", true},
		{"a link to a directory", func(t *testing.T) string {
			base, d := mk(t, 0o700)
			l := filepath.Join(base, "link")
			if err := os.Symlink(d, l); err != nil {
				t.Fatal(err)
			}
			return l
		}, "is a symbolic link", false},
		{"a link above it", func(t *testing.T) string {
			base, _ := mk(t, 0o700)
			l := filepath.Join(t.TempDir(), "up")
			if err := os.Symlink(base, l); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(l, "state")
		}, "is a symbolic link", false},
		{"writable parent", func(t *testing.T) string {
			base, d := mk(t, 0o700)
			if err := os.Chmod(base, 0o777); err != nil {
				t.Fatal(err)
			}
			return d
		}, "writable by group or others (mode 0777) and not sticky", false},
		{"foreign parent", func(t *testing.T) string {
			base, d := mk(t, 0o700)
			if err := os.Chown(base, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return d
		}, "belongs to uid 65534", true},
		{"a file", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "state")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, "is not a directory", false},
		{"relative", func(t *testing.T) string { return "state" }, "not an absolute path", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				needroot.Skip(t, "chown to another user")
			}
			dir := tc.setup(t)
			before := listDir(t, dir)
			err := CheckStateDir(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckStateDir(%s): %v, want %q", dir, err, tc.want)
			}
			t.Logf("%v", err)
			// What the agent does first in every session is refused the
			// same way, and writes nothing.
			h := &HostFiles{Dir: dir}
			if err := h.Lock(proto.LockInfo{ID: "l1"}); err == nil {
				t.Fatal("Lock in a refused state directory succeeded")
			}
			if err := h.BeginStep(proto.ApplyParams{Step: sysctlStep("1"), Run: "r1", Seq: 1}); err == nil {
				t.Fatal("BeginStep in a refused state directory succeeded")
			}
			if after := listDir(t, dir); after != before {
				t.Errorf("the refused directory changed: %q -> %q", before, after)
			}
		})
	}

	t.Run("created 0700", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b", "state")
		if err := CheckStateDir(dir); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(dir)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v %v, want a directory of mode 0700", dir, fi.Mode(), err)
		}
		if err := CheckStateDir(dir); err != nil {
			t.Fatalf("the directory it made is refused: %v", err)
		}
	})
}

// listDir is what is in dir (or "" when dir is not a readable directory).
func listDir(t *testing.T, dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, ",")
}

// stateDir is a fresh state directory the agent accepts: t.TempDir()
// makes its directories 0777 minus umask, and the agent wants 0700.
func stateDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}
