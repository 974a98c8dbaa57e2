package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab/scenario"
)

// CIS-hardened hosts mount /tmp, /var/tmp and /dev/shm (sometimes /home,
// rarely /var) with noexec. The mounts here are made in the mount
// namespace of OLD's sshd (`ip netns exec` gave it one; its sessions and
// agents share it), never on the machine itself, and go with it.

// mountNoexec mounts a fresh noexec tmpfs (with extra options) over dir
// in OLD's sshd's mount namespace. keep, when under dir (the lab's own
// directory under /tmp: sshd's keys, the users' homes, the state
// directories), stays reachable: it is opened before the mount and bound
// back at its path inside the new tmpfs.
func mountNoexec(t *testing.T, inOld func(string) string, dir, extra, keep string) {
	t.Helper()
	mnt := fmt.Sprintf("mount -t tmpfs -o noexec,nosuid,nodev,%s migrate-noexec %s", extra, dir)
	if keep != "" && strings.HasPrefix(keep, dir+"/") {
		mnt = fmt.Sprintf("exec 3<%[1]s && %[2]s && mkdir -p %[1]s && mount -c --bind /proc/self/fd/3 %[1]s", keep, mnt)
	}
	inOld(mnt)
	// The mount really refuses exec, as root too.
	if out := inOld(fmt.Sprintf("d=$(mktemp -d %s/x.XXXXXX) && cp /bin/true $d/t && { $d/t 2>&1 && echo RAN; rm -rf $d; } || true", dir)); strings.Contains(out, "RAN") || !strings.Contains(out, "Permission denied") {
		t.Fatalf("%s in OLD's mount namespace still executes files: %q", dir, out)
	}
}

// TestNoexecTmpSudoInstall: a non-root user with a broad sudo rule
// (NOPASSWD: ALL), on a host whose /tmp, /var/tmp and /dev/shm are
// noexec. Before, the install's upload into mktemp -d under /tmp could
// not run (Permission denied) and plan failed. Now:
//   - with the user's home noexec too, plan fails with the directories
//     tried and their mounts, and nothing is installed or changed;
//   - with the home allowing exec, the upload runs from there: plan,
//     apply (the client is served by NEW with its own address) and
//     rollback --all (exact) succeed, no upload left behind.
//
// Then OLD's state directory on a noexec tmpfs, through sudo: plan says
// so (TestNoexecStateDir does the root login).
func TestNoexecTmpSudoInstall(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newOpenSSHScenario(t, ctx)
	l := s.Lab
	inOld := oldMountNS(t, ctx, l)
	home := filepath.Join(l.Dir, "home-"+l.SudoAllUser)
	fi, err := os.Stat(home)
	if err != nil {
		t.Fatal(err)
	}
	uid := fi.Sys().(*syscall.Stat_t).Uid
	for _, d := range []string{"/tmp", "/var/tmp", "/dev/shm"} {
		mountNoexec(t, inOld, d, "mode=1777", l.Dir)
	}
	mountNoexec(t, inOld, home, fmt.Sprintf("mode=0755,uid=%d,gid=%d", uid, uid), "")
	writeFile(t, s.PlanFile, sudoOldPlan(s, l.SudoAllUser, l.OldIP.String())+planBody(s, "new"))
	agentBin := filepath.Join(l.OldStateDir, "bin")
	if err := os.RemoveAll(agentBin); err != nil {
		t.Fatal(err)
	}
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	noUploadLeft := func(what string) {
		t.Helper()
		if out := inOld("ls -d /tmp/migrate.* /var/tmp/migrate.* /dev/shm/migrate.* " + home + "/migrate.* 2>/dev/null || true"); strings.TrimSpace(out) != "" {
			t.Errorf("%s: uploads left behind: %s", what, out)
		}
	}

	// 1. No directory the user may write lets a file execute.
	r := migrateEnv(t, ctx, s, nil, 1, "plan", "-f", s.PlanFile)
	t.Logf("every upload directory noexec: %s", r.Stderr)
	for _, want := range []string{
		"host old: cannot install migrate's agent: it is uploaded as user " + l.SudoAllUser,
		"/tmp: mounted noexec (mount point /tmp, options rw,nosuid,nodev,noexec",
		"/var/tmp: mounted noexec (mount point /var/tmp, options rw,nosuid,nodev,noexec",
		"/dev/shm: mounted noexec (mount point /dev/shm, options rw,nosuid,nodev,noexec",
		home + ": mounted noexec (mount point " + home + ", options rw,nosuid,nodev,noexec",
		"Set TMPDIR for the SSH session to a directory",
		"install the agent as root by hand",
	} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("plan with every upload directory noexec lacks %q:\n%s", want, r.Stderr)
		}
	}
	if ents, _ := filepath.Glob(filepath.Join(agentBin, "migrate-*")); len(ents) != 0 {
		t.Errorf("the refused install left %v", ents)
	}
	noUploadLeft("refused install")
	expectSnap(t, ctx, s, "the refused install", before)

	// 2. The home allows exec: the upload runs from there.
	inOld("umount " + home)
	r = migrateEnv(t, ctx, s, nil, 0, "plan", "-f", s.PlanFile)
	if !strings.Contains(r.Stdout, "Plan: ") {
		t.Fatalf("plan:\n%s", r.Stdout)
	}
	self, err := os.ReadFile(s.MigrateBin)
	if err != nil {
		t.Fatal(err)
	}
	installed := filepath.Join(agentBin, "migrate-"+sha256Hex(self))
	if fi, err := os.Stat(installed); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("agent not installed as root's: %v", err)
	}
	noUploadLeft("install")
	migrateEnv(t, ctx, s, nil, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	if out := expectServed(t, ctx, s, scenario.MigratedPort, "new"); !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW does not see the client's address: %q", out)
	}
	expectServed(t, ctx, s, scenario.StayPort, "old")
	migrateEnv(t, ctx, s, nil, 0, "rollback", "-f", s.PlanFile, "--auto-approve", "--all")
	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	expectSnap(t, ctx, s, "rollback --all", before)

	// 3. OLD's state directory on a noexec file system, through sudo.
	mountNoexec(t, inOld, l.OldStateDir, "mode=0700", "")
	before, err = s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r = migrateEnv(t, ctx, s, nil, 1, "plan", "-f", s.PlanFile)
	t.Logf("state directory noexec, sudo: %s", r.Stderr)
	expectStateDirNoexec(t, r.Stderr, l.OldStateDir)
	expectSnap(t, ctx, s, "plan with the state directory noexec", before)
}

// expectStateDirNoexec checks the error for an agent state directory dir
// on a noexec mount of its own.
func expectStateDirNoexec(t *testing.T, stderr, dir string) {
	t.Helper()
	for _, want := range []string{
		"host old: the agent's state directory " + dir + " is on a file system mounted noexec (mount point " + dir + ", options rw,nosuid,nodev,noexec",
		"and the agent runs from there (" + dir + "/bin/migrate-",
		"remount that file system with exec",
		"or set MIGRATE_STATE_DIR for the SSH session to a root-owned directory of mode 0700 on a file system that allows exec",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("state directory noexec: the error lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "agent did not answer") {
		t.Errorf("state directory noexec: still the bare connection error:\n%s", stderr)
	}
}

// TestNoexecStateDir: a root login, /tmp noexec: the agent is installed
// from /var/tmp. Then OLD's state directory (MIGRATE_STATE_DIR) on a file
// system mounted noexec. Before, plan failed with "agent did
// not answer: agent connection: EOF (agent stderr: bash: ...: Permission
// denied)"; now it names the mount and the fix, and no host changes.
func TestNoexecStateDir(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
	defer cancel()
	s := newScenario(t, ctx)
	l := s.Lab
	if err := writeTunnelPlan(s, tunnelCase{Type: "vxlan"}, "new"); err != nil {
		t.Fatal(err)
	}
	inOld := oldMountNS(t, ctx, l)

	// The root login installs the agent the same way: with /tmp noexec
	// it uploads into the next directory that allows exec (here /var/tmp,
	// a tmpfs of the namespace's own) and leaves nothing there.
	mountNoexec(t, inOld, "/tmp", "mode=1777", l.Dir)
	inOld("mount -t tmpfs -o mode=1777 migrate-exec /var/tmp")
	mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
	if out := inOld("ls -A /var/tmp /tmp"); strings.Join(strings.Fields(out), " ") != "/tmp: "+filepath.Base(l.Dir)+" /var/tmp:" {
		t.Errorf("after the install, /tmp and /var/tmp hold:\n%s", out)
	}

	mountNoexec(t, inOld, l.OldStateDir, "mode=0700", "")
	t.Cleanup(func() { _ = exec.Command("nsenter", "-t", oldSSHDPid(t, l), "-m", "umount", "-l", l.OldStateDir).Run() })
	before, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := mustMigrate(t, ctx, s, 1, "plan", "-f", s.PlanFile)
	t.Logf("state directory noexec: %s", r.Stderr)
	expectStateDirNoexec(t, r.Stderr, l.OldStateDir)
	r = mustMigrate(t, ctx, s, 1, "apply", "--auto-approve", "-f", s.PlanFile)
	expectStateDirNoexec(t, r.Stderr, l.OldStateDir)
	expectSnap(t, ctx, s, "plan and apply with the state directory noexec", before)
	// Nothing but the agent's own copy in OLD's state directory: no lock,
	// no journal.
	if out := inOld("cd " + l.OldStateDir + " && find . -mindepth 1 | sort"); strings.Join(strings.Fields(out), " ") != "./bin ./bin/migrate-"+sha256Hex(mustRead(t, s.MigrateBin)) {
		t.Errorf("OLD's state directory after the refused plan and apply:\n%s", out)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
