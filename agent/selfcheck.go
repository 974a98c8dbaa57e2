package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// How the CLI knows that the agent running on a host is the binary it
// meant, with no window between the check and the exec:
//
// The CLI starts `<state dir>/bin/migrate-<sha256> agent --sha256 <sha256>`,
// and the agent, before it reads a request or touches its state
// directory, hashes /proc/self/exe and refuses to run unless it is the
// sha256 it was given (VerifySelf). /proc/self/exe is not the path: it
// opens the very inode the kernel is executing, and while a file is being
// executed nobody can write to it (ETXTBSY), so the bytes hashed are the
// bytes running. Checking in one SSH session and exec'ing by path in a
// later one, as migrate used to, left the path free to name another file
// in between.
//
// Why not check before the exec instead: a shell that hashes the file and
// then execs its path races the same way; a shell that opens the file,
// hashes the open descriptor and execs /proc/self/fd/N does not, but it
// needs `sh` as root, which under sudo is as good as ALL (the narrow
// sudoers rule in README allows only the agent binaries). sudo can do that
// check itself when sudoers pins the digest (`sha256:...` with fdexec),
// which ties sudoers to one release: README gives it as an option.
//
// The limit of a self-check: it binds only binaries that make it. Any
// other program put at that path would not check itself. So who can write
// there is what keeps foreign code from running as root: the bin
// directory and the state directory above it are root's, 0700, checked
// (statedir.go) by InstallSelf and by every agent, and only root can put a
// file there. The self-check then catches what root's own mistakes and
// accidents can do: a half-written upload, a corrupted file, another build
// at that path.

// hashRE is a sha256 in hex, as the CLI passes it.
var hashRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidHash reports whether s is a lowercase hex sha256.
func ValidHash(s string) bool { return hashRE.MatchString(s) }

// SelfHash is the hex sha256 of the executable this process runs.
func SelfHash() (string, error) {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return "", fmt.Errorf("open own executable: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read own executable: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// VerifySelf refuses to go on unless this process runs the binary whose
// sha256 is want.
func VerifySelf(want string) error {
	if !ValidHash(want) {
		return fmt.Errorf("agent: --sha256 %q is not a sha256 in hex", want)
	}
	got, err := SelfHash()
	if err != nil {
		return err
	}
	if got != want {
		exe, _ := os.Readlink("/proc/self/exe")
		return fmt.Errorf("agent binary %s has sha256 %s, not %s as migrate installed it: it is not the file migrate checked (changed or replaced since); refusing to run. As root, remove it: the next migrate installs it again (where sudo allows only installed agents, an administrator runs agent-install, see README)", exe, got, want)
	}
	return nil
}

// BinDir is where the agent binaries live under the state directory;
// the narrow sudoers rule allows exactly BinDir/migrate-*.
func BinDir(stateDir string) string { return filepath.Join(stateDir, "bin") }

// InstallSelf copies the executable this process runs into
// BinDir(stateDir)/migrate-<its sha256> and returns that path. When want
// is set, the executable must be that sha256 (the CLI names the binary it
// uploaded). The copy is hashed as it is written, from /proc/self/exe (the
// running inode), into a new file (O_EXCL) in the checked, root-owned bin
// directory, fsynced and renamed into place: a running agent keeps its
// old file, and nothing half-written ever has the final name.
func InstallSelf(stateDir, want string) (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("agent-install runs as root (it installs the agent root runs); run it through sudo or as root")
	}
	if want != "" {
		if err := VerifySelf(want); err != nil {
			return "", err
		}
	}
	if err := CheckStateDir(stateDir); err != nil {
		return "", err
	}
	bin := BinDir(stateDir)
	if err := os.Mkdir(bin, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("create %s: %w", bin, err)
	}
	if err := checkPrivateDir(bin, os.Geteuid(), "agent directory"); err != nil {
		return "", err
	}
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return "", fmt.Errorf("open own executable: %w", err)
	}
	defer src.Close()
	dst, err := os.CreateTemp(bin, ".install-*.tmp")
	if err != nil {
		return "", err
	}
	tmp := dst.Name()
	defer os.Remove(tmp)
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(dst, h), src)
	if err == nil {
		err = dst.Chmod(0o700)
	}
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("install agent: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		return "", fmt.Errorf("install agent: copied %s, expected %s (the executable changed while it was copied)", sum, want)
	}
	final := filepath.Join(bin, "migrate-"+sum)
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("install agent: %w", err)
	}
	d, err := os.Open(bin)
	if err != nil {
		return "", err
	}
	defer d.Close()
	return final, d.Sync()
}
