package remote

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A real /proc/self/mountinfo of a CIS-hardened host (trimmed), with an
// overmount of /tmp and a mount point with a space.
const hardenedMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
30 22 0:26 / /tmp rw,nosuid,nodev,relatime shared:7 - tmpfs tmpfs rw
31 30 0:27 / /tmp rw,nosuid,nodev,noexec,relatime shared:8 - tmpfs tmpfs rw,mode=1777
32 22 8:2 / /var rw,relatime shared:9 - ext4 /dev/sda2 rw
33 32 8:3 / /var/tmp rw,nosuid,nodev,noexec,relatime shared:10 - ext4 /dev/sda3 rw
34 22 0:28 / /dev/shm rw,nosuid,nodev,noexec shared:11 - tmpfs tmpfs rw
35 22 8:4 / /home rw,nodev,relatime shared:13 - ext4 /dev/sda4 rw
36 32 0:29 / /var/lib/my\040state rw,noexec - tmpfs tmpfs rw
`

func TestNoexecMountFor(t *testing.T) {
	ms := parseMountinfo(hardenedMountinfo)
	for _, c := range []struct {
		path, point string
		noexec      bool
	}{
		{"/tmp", "/tmp", true}, // the overmount, listed last
		{"/tmp/tmp.abc/migrate-x", "/tmp", true},
		{"/tmpfoo", "/", false}, // a prefix that is not a parent
		{"/var/tmp/x", "/var/tmp", true},
		{"/var/lib/migrate", "/var", false},
		{"/var/lib/my state/bin", "/var/lib/my state", true},
		{"/home/deploy", "/home", false},
		{"/dev/shm", "/dev/shm", true},
		{"/", "/", false},
	} {
		m, ok := mountFor(ms, c.path)
		if !ok || m.Point != c.point || m.noexec() != c.noexec {
			t.Errorf("mountFor(%q) = %+v, %v; want %s, noexec %v", c.path, m, ok, c.point, c.noexec)
		}
	}
	if _, ok := mountFor(nil, "/tmp"); ok {
		t.Error("mountFor without mounts found one")
	}
}

func TestNoexecUploadDirError(t *testing.T) {
	out := "tried\tnoexec\t/tmp\t/tmp\ntried\tnoexec\t/var/tmp\t/var/tmp\ntried\tnoexec\t/dev/shm\t/dev/shm\n" +
		"tried\tunwritable\t/home/deploy\t/home/deploy\nmountinfo\n" + hardenedMountinfo
	err := uploadDirError("old", "deploy", out, "install it by hand")
	msg := err.Error()
	for _, want := range []string{
		"host old: cannot install migrate's agent",
		"/tmp: mounted noexec (mount point /tmp, options rw,nosuid,nodev,noexec,relatime)",
		"/var/tmp: mounted noexec (mount point /var/tmp, options rw,nosuid,nodev,noexec,relatime)",
		"/dev/shm: mounted noexec (mount point /dev/shm, options rw,nosuid,nodev,noexec)",
		"/home/deploy: user deploy cannot create a directory there",
		"Set TMPDIR for the SSH session", "or install it by hand",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	// Exec refused without noexec (an LSM, say): said as it is.
	msg = uploadDirError("old", "deploy", "tried\tnoexec\t/home/deploy\t/home/deploy\nmountinfo\n"+hardenedMountinfo, "x").Error()
	if !strings.Contains(msg, "/home/deploy: a file there cannot be executed (mount point /home, options rw,nodev,relatime)") {
		t.Errorf("exec refused on an exec mount:\n%s", msg)
	}
}

func TestNoexecStateDir(t *testing.T) {
	dir, m, noexec := stateDirNoexec("/var/lib/my state\n/var/lib/my state\n" + hardenedMountinfo)
	if dir != "/var/lib/my state" || m.Point != "/var/lib/my state" || !noexec {
		t.Errorf("state dir on noexec: %q %+v %v", dir, m, noexec)
	}
	// A link to a noexec mount: the resolved path decides.
	if _, m, noexec := stateDirNoexec("/srv/migrate\n/tmp/migrate\n" + hardenedMountinfo); !noexec || m.Point != "/tmp" {
		t.Errorf("resolved state dir on noexec /tmp: %+v %v", m, noexec)
	}
	if _, _, noexec := stateDirNoexec("/var/lib/migrate\n/var/lib/migrate\n" + hardenedMountinfo); noexec {
		t.Error("/var/lib/migrate on an exec /var taken for noexec")
	}
	if _, _, noexec := stateDirNoexec(""); noexec {
		t.Error("no output taken for noexec")
	}
}

func TestNoexecExecDenied(t *testing.T) {
	for _, s := range []string{
		"bash: line 1: /var/lib/migrate/bin/migrate-ab: Permission denied\n",
		"bash: line 1: /x/migrate-ab: cannot execute: Permission denied",
		"sudo: unable to execute /var/lib/migrate/bin/migrate-ab: Permission denied",
	} {
		if !execDenied(s) {
			t.Errorf("execDenied(%q) = false", s)
		}
	}
	if execDenied("Error: state directory /x has mode 0755") {
		t.Error("a refusal taken for an exec failure")
	}
}

// TestNoexecInstallScript runs the install script with the real sh: the
// upload goes into $TMPDIR when a file executes there, runs as
// agent-install with the hash, and its directory is gone afterwards.
func TestNoexecInstallScript(t *testing.T) {
	tmp := t.TempDir()
	cmd := exec.Command("sh", "-c", installScript("abc123", ""))
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + tmp, "HOME=/nonexistent"}
	cmd.Stdin = strings.NewReader("#!/bin/sh\necho ran \"$0\" \"$@\"\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install script: %v: %s", err, out)
	}
	got := strings.TrimSpace(string(out))
	if !strings.HasPrefix(got, "ran "+tmp+"/migrate.") || !strings.HasSuffix(got, "/migrate-abc123 agent-install --sha256 abc123") {
		t.Errorf("install script ran %q; want the upload in %s as agent-install", got, tmp)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("install script left %v in %s", ents, tmp)
	}
}
