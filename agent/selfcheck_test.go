package agent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/internal/needroot"
)

// The agent runs only as the binary it was told it is: this test binary
// stands in for it.
func TestVerifySelf(t *testing.T) {
	sum, err := SelfHash()
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySelf(sum); err != nil {
		t.Fatalf("own hash refused: %v", err)
	}
	other := strings.Repeat("0", 64)
	err = VerifySelf(other)
	if err == nil || !strings.Contains(err.Error(), "has sha256 "+sum+", not "+other) || !strings.Contains(err.Error(), "refusing to run") {
		t.Fatalf("another hash: %v", err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("A", 64), sum + " --help"} {
		if err := VerifySelf(bad); err == nil || !strings.Contains(err.Error(), "is not a sha256") {
			t.Errorf("VerifySelf(%q): %v", bad, err)
		}
	}
}

// InstallSelf copies the running binary into a checked, root-owned agent
// directory under its own hash, and refuses when it is not the one named.
func TestInstallSelf(t *testing.T) {
	if os.Geteuid() != 0 {
		needroot.Skip(t, "installs as root")
	}
	sum, err := SelfHash()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "state")
	if _, err := InstallSelf(dir, strings.Repeat("1", 64)); err == nil || !strings.Contains(err.Error(), "refusing to run") {
		t.Fatalf("install under another hash: %v", err)
	}
	if _, err := os.Stat(BinDir(dir)); err == nil {
		t.Error("a refused install made the agent directory")
	}
	p, err := InstallSelf(dir, sum)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "bin", "migrate-"+sum); p != want {
		t.Fatalf("installed at %s, want %s", p, want)
	}
	got, _ := os.ReadFile(p)
	self, _ := os.ReadFile("/proc/self/exe")
	if !bytes.Equal(got, self) {
		t.Fatal("the installed file is not this binary")
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700}, {BinDir(dir), 0o700}, {p, 0o700}} {
		fi, err := os.Lstat(c.path)
		if err != nil || fi.Mode().Perm() != c.mode {
			t.Errorf("%s: mode %v (%v), want %v", c.path, fi.Mode(), err, c.mode)
		}
	}
	if ents, _ := os.ReadDir(BinDir(dir)); len(ents) != 1 {
		t.Errorf("agent directory holds %d files, want only the agent", len(ents))
	}
	// An agent directory others may write is refused, not used.
	if err := os.Chmod(BinDir(dir), 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := InstallSelf(dir, sum); err == nil || !strings.Contains(err.Error(), "agent directory") {
		t.Fatalf("world-writable agent directory: %v", err)
	}
}
