package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab"
	"github.com/opsmigrate/migrate/lab/scenario"
	"github.com/opsmigrate/migrate/remote/sshconfig"
)

// newOpenSSHScenario is newScenario with the lab's OpenSSH extras: a
// bastion namespace with its own sshd and non-root users with and without
// passwordless sudo (see lab.Options.OpenSSH).
func newOpenSSHScenario(t *testing.T, ctx context.Context) *scenario.Scenario {
	t.Helper()
	l, err := lab.New(ctx, lab.Options{Prefix: "mgs", OpenSSH: true})
	if err != nil {
		t.Fatalf("build lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for role, p := range l.SSHDLog {
				if b, err := os.ReadFile(p); err == nil {
					t.Logf("sshd log %s:\n%s", role, b)
				}
			}
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	s, err := scenario.Setup(ctx, l)
	if err != nil {
		t.Fatalf("scenario: %v", err)
	}
	return s
}

// planBody is the lab plan's tunnel and service blocks.
func planBody(s *scenario.Scenario, stage string) string {
	text := s.PlanText(scenario.PlanOptions{Stage: stage})
	i := strings.Index(text, "# OLD's endpoint")
	if i < 0 {
		panic("lab plan layout changed")
	}
	return text[i:]
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func migrateEnv(t *testing.T, ctx context.Context, s *scenario.Scenario, env []string, wantCode int, args ...string) scenario.Result {
	t.Helper()
	r, err := s.MigrateEnv(ctx, env, args...)
	if err != nil {
		t.Fatalf("migrate %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, r.Stdout, r.Stderr)
	}
	if r.Code != wantCode {
		t.Fatalf("migrate %v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, r.Code, wantCode, r.Stdout, r.Stderr)
	}
	return r
}

// TestOpenSSHJumpSudo: the plan names ssh_config aliases; the hosts are
// reached as a non-root user with sudo = true, through a ProxyJump
// bastion, while OLD's and NEW's sshd refuse the admin namespace directly.
// plan, apply and rollback work, the service moves and comes back, and
// sshd on OLD saw migrate arrive from the bastion's address.
func TestOpenSSHJumpSudo(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	s := newOpenSSHScenario(t, ctx)
	l := s.Lab

	if err := l.DenySSHFromAdmin(ctx); err != nil {
		t.Fatal(err)
	}
	// Direct SSH from admin is refused: the jump is really needed.
	for _, ip := range []string{l.OldIP.String(), l.NewIP.String()} {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := l.Dial(dctx, lab.RoleAdmin, "tcp", ip+":22")
		dcancel()
		if err == nil {
			c.Close()
			t.Fatalf("admin still reaches %s:22 directly", ip)
		}
	}

	// The ssh_config lives in a fresh HOME's ~/.ssh/config (Include of a
	// relative file), with no keys under ~/.ssh: only IdentityFile gives one.
	home := filepath.Join(l.Dir, "ops-home")
	if err := os.MkdirAll(filepath.Join(home, ".ssh", "conf.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(home, ".ssh", "config"), `# operator's ssh config
Include conf.d/*.conf
Host old-srv new-srv
  User `+l.SudoUser+`
  ProxyJump bastion
Host *
  IdentityFile `+l.IdentityFile+`
  UserKnownHostsFile `+l.KnownHosts+`
`)
	writeFile(t, filepath.Join(home, ".ssh", "conf.d", "lab.conf"), `Host old-srv
  HostName `+l.OldIP.String()+`
Host new-srv
  HostName `+l.NewIP.String()+`
Host bastion
  HostName `+l.BastionIP.String()+`
  User `+l.SudoUser+`
Match host *
  User nobody-from-match
`)
	writeFile(t, s.PlanFile, `host "old" {
  ssh  = "old-srv"
  sudo = true
}

host "new" {
  ssh  = "new-srv"
  sudo = true
}

`+planBody(s, "new"))
	env := []string{"HOME=" + home}

	// The sudo user may run migrate's installed agents as root and
	// nothing else (lab: exactly remote.SudoersRule, as README gives it).
	// With no agent installed yet, it may not install one: the error
	// says what an administrator runs, and nothing is installed.
	self, err := os.ReadFile(s.MigrateBin)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256Hex(self)
	r := migrateEnv(t, ctx, s, env, 1, "plan", "-f", s.PlanFile)
	if want := "may not install it: its sudo rule allows only migrate's installed agents"; !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, "agent-install --sha256 "+hash) {
		t.Fatalf("plan with no agent installed, narrow sudo rule:\n%s\nwant %q and the agent-install command", r.Stderr, want)
	}
	t.Logf("no agent installed: %s", r.Stderr)
	for _, dir := range []string{l.OldStateDir, l.NewStateDir} {
		if ents, _ := filepath.Glob(filepath.Join(dir, "bin", "migrate-*")); len(ents) != 0 {
			t.Fatalf("a refused install left %v", ents)
		}
	}
	// The administrator installs it, as root on each host.
	for role, dir := range map[string]string{lab.RoleOld: l.OldStateDir, lab.RoleNew: l.NewStateDir} {
		out, err := l.Exec(ctx, role, "env", "MIGRATE_STATE_DIR="+dir, s.MigrateBin, "agent-install", "--sha256", hash)
		if err != nil || !strings.Contains(string(out), "installed "+filepath.Join(dir, "bin", "migrate-"+hash)) {
			t.Fatalf("agent-install on %s: %v: %s", role, err, out)
		}
	}

	// init takes the same aliases, through the same jump, and writes them
	// back as the operator wrote them.
	initFile := filepath.Join(l.Dir, "init.hcl")
	r = migrateEnv(t, ctx, s, env, 0, "init", "--old", "old-srv", "--new", "new-srv", "--sudo", "-o", initFile)
	b, err := os.ReadFile(initFile)
	if err != nil {
		t.Fatalf("init wrote nothing: %v\n%s", err, r.Stdout)
	}
	written := strings.Join(strings.Fields(string(b)), " ") // alignment aside
	for _, want := range []string{`host "old" { ssh = "old-srv"`, `host "new" { ssh = "new-srv"`, "sudo = true",
		fmt.Sprintf(`address = "%s" protocol = "tcp" ports = [%d`, l.OldIP, scenario.MigratedPort)} {
		if !strings.Contains(written, want) {
			t.Errorf("init through aliases: the plan lacks %q:\n%s", want, b)
		}
	}
	migrateEnv(t, ctx, s, env, 0, "validate", "-f", initFile)

	expectServed(t, ctx, s, scenario.MigratedPort, "old")
	r = migrateEnv(t, ctx, s, env, 2, "plan", "-f", s.PlanFile, "--detailed-exitcode")
	if !strings.Contains(r.Stdout, "Plan: ") {
		t.Fatalf("plan output:\n%s", r.Stdout)
	}
	r = migrateEnv(t, ctx, s, env, 0, "apply", "-f", s.PlanFile, "--auto-approve")
	t.Logf("apply:\n%s", r.Stdout)
	out := expectServed(t, ctx, s, scenario.MigratedPort, "new")
	if !strings.Contains(out, "peer="+l.ClientIP.String()+" ") {
		t.Errorf("NEW does not see the client's address: %q", out)
	}
	expectServed(t, ctx, s, scenario.StayPort, "old")

	// The state file keeps how the hosts were reached, jumps included.
	st, err := os.ReadFile(filepath.Join(l.Dir, "migration.state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(st), `"jumps"`) || !strings.Contains(string(st), l.BastionIP.String()) {
		t.Errorf("state file does not record the jump host:\n%s", st)
	}

	// sshd on OLD and NEW saw the non-root user arrive from the bastion.
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		b, _ := os.ReadFile(l.SSHDLog[role])
		want := fmt.Sprintf("Accepted publickey for %s from %s port", l.SudoUser, l.BastionIP)
		if !strings.Contains(string(b), want) {
			t.Errorf("sshd on %s did not log %q:\n%s", role, want, b)
		}
		if strings.Contains(string(b), "Accepted publickey for "+l.SudoUser+" from "+l.AdminIP.String()+" ") || strings.Contains(string(b), "Accepted publickey for root from ") {
			t.Errorf("sshd on %s accepted a login from admin or as root:\n%s", role, b)
		}
	}
	// The agent ran through sudo: what it installed belongs to root.
	for _, dir := range []string{l.OldStateDir, l.NewStateDir} {
		ents, err := filepath.Glob(filepath.Join(dir, "bin", "migrate-*"))
		if err != nil || len(ents) == 0 {
			t.Fatalf("no agent installed under %s (%v)", dir, err)
		}
		for _, p := range append(ents, filepath.Join(dir, "bin")) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
				t.Errorf("%s: owner uid %d mode %v; want root-owned, not group/world-writable", p, st.Uid, fi.Mode())
			}
		}
	}

	r = migrateEnv(t, ctx, s, env, 0, "rollback", "-f", s.PlanFile, "--auto-approve")
	t.Logf("rollback:\n%s", r.Stdout)
	expectServed(t, ctx, s, scenario.MigratedPort, "old")

	sudoRuleIsNarrow(t, ctx, s, hash)

	// An agent changed after it was installed is refused by the exec
	// that runs it, before it touches anything: here the file gets one
	// more byte (still a working migrate, whose check then fails).
	oldAgent := filepath.Join(l.OldStateDir, "bin", "migrate-"+hash)
	f, err := os.OpenFile(oldAgent, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r = migrateEnv(t, ctx, s, env, 1, "plan", "-f", s.PlanFile)
	if want := "host old: the agent refused to start: agent binary " + oldAgent + " has sha256 " + sha256Hex(append(self, 0)) + ", not " + hash; !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, "refusing to run") {
		t.Fatalf("swapped agent:\n%s\nwant %q", r.Stderr, want)
	}
	t.Logf("swapped agent: %s", r.Stderr)
	if _, err := os.Stat(filepath.Join(l.OldStateDir, "lock.json")); err == nil {
		t.Error("the refused agent took the host lock")
	}
	if out, err := l.Exec(ctx, lab.RoleOld, "env", "MIGRATE_STATE_DIR="+l.OldStateDir, s.MigrateBin, "agent-install", "--sha256", hash); err != nil {
		t.Fatalf("reinstall: %v: %s", err, out)
	}
	migrateEnv(t, ctx, s, env, 0, "plan", "-f", s.PlanFile)

	// The alias is resolved before the self-lockout check: moving OLD's
	// port 22 is refused although the plan only says "old-srv".
	writeFile(t, s.PlanFile, strings.Replace(readFile(t, s.PlanFile), "ports    = [8080]", "ports    = [8080, 22]", 1))
	r = migrateEnv(t, ctx, s, env, 1, "plan", "-f", s.PlanFile)
	if want := fmt.Sprintf("would migrate %s:22, where migrate reaches host \"old\" over SSH", l.OldIP); !strings.Contains(r.Stderr, want) {
		t.Errorf("self-lockout through an alias: %s\nwant %q", r.Stderr, want)
	}

	// The live check uses the address the connection really reached, also
	// through the jump host: written as ::ffff:198.51.100.10 the static
	// check cannot match it, the live one (the jump channel's own remote
	// address is 0.0.0.0) must.
	var oldKey string
	for _, line := range strings.Split(readFile(t, l.KnownHosts), "\n") {
		if strings.HasPrefix(line, l.OldIP.String()+" ") {
			oldKey = strings.TrimPrefix(line, l.OldIP.String()+" ")
		}
	}
	mappedKH := filepath.Join(home, "known_hosts.mapped")
	writeFile(t, mappedKH, readFile(t, l.KnownHosts)+"::ffff:"+l.OldIP.String()+" "+oldKey+"\n")
	writeFile(t, filepath.Join(home, ".ssh", "conf.d", "mapped.conf"), "Host old-mapped\n  HostName ::ffff:"+l.OldIP.String()+"\n  User "+l.SudoUser+"\n  ProxyJump bastion\n  UserKnownHostsFile "+mappedKH+"\n")
	writeFile(t, s.PlanFile, strings.Replace(readFile(t, s.PlanFile), `ssh  = "old-srv"`, `ssh  = "old-mapped"`, 1))
	r = migrateEnv(t, ctx, s, env, 1, "plan", "-f", s.PlanFile)
	if want := fmt.Sprintf("would move %s:22, the SSH port migrate reaches host old on", l.OldIP); !strings.Contains(r.Stderr, want) {
		t.Errorf("live self-lockout through the jump host: %s\nwant %q", r.Stderr, want)
	}
}

// TestOpenSSHChecks: hashed known_hosts with an ssh-agent key (no
// identity_file, no key files at all), the sudo password error, and an
// unknown jump host key, against one lab.
func TestOpenSSHChecks(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(4*time.Minute))
	defer cancel()
	s := newOpenSSHScenario(t, ctx)
	l := s.Lab
	body := planBody(s, "old")
	// The lab's users exist only inside its sshd's mount namespaces.
	if b := readFile(t, "/etc/passwd"); strings.Contains(b, l.SudoUser+":") || strings.Contains(b, l.PasswdUser+":") {
		t.Fatalf("lab users leaked into the machine's /etc/passwd")
	}
	emptyHome := filepath.Join(l.Dir, "empty-home")
	if err := os.MkdirAll(emptyHome, 0o700); err != nil {
		t.Fatal(err)
	}

	t.Run("hashed known_hosts and ssh-agent", func(t *testing.T) {
		hashed := filepath.Join(l.Dir, "known_hosts.hashed")
		kh, err := os.ReadFile(l.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, hashed, string(kh))
		if out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-H", "-f", hashed).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen -H: %v: %s", err, out)
		}
		os.Remove(hashed + ".old")
		b, _ := os.ReadFile(hashed)
		if strings.Contains(string(b), l.OldIP.String()) || !strings.Contains(string(b), "|1|") {
			t.Fatalf("known_hosts not hashed:\n%s", b)
		}
		sock := filepath.Join(l.Dir, "agent.sock")
		if _, err := l.Start(lab.RoleAdmin, "ssh-agent", "-D", "-a", sock); err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if i > 100 {
				t.Fatal("ssh-agent did not start")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if out, err := l.Exec(ctx, lab.RoleAdmin, "env", "SSH_AUTH_SOCK="+sock, "ssh-add", l.IdentityFile); err != nil {
			t.Fatalf("ssh-add: %v: %s", err, out)
		}
		writeFile(t, s.PlanFile, fmt.Sprintf(`host "old" {
  ssh         = "root@%s:22"
  known_hosts = %q
}

host "new" {
  ssh         = "root@%s"
  known_hosts = %q
}

`, l.OldIP, hashed, l.NewIP, hashed)+body)
		env := []string{"HOME=" + emptyHome, sshconfig.EnvPath + "=/nonexistent/ssh_config"}
		// Without the agent there is no key at all.
		r := migrateEnv(t, ctx, s, env, 1, "plan", "-f", s.PlanFile)
		if !strings.Contains(r.Stderr, "no SSH key to offer") {
			t.Errorf("without ssh-agent: %s", r.Stderr)
		}
		r = migrateEnv(t, ctx, s, append(env, "SSH_AUTH_SOCK="+sock), 0, "plan", "-f", s.PlanFile)
		if !strings.Contains(r.Stdout, "Plan: ") {
			t.Errorf("plan:\n%s", r.Stdout)
		}
	})

	t.Run("sudo needs a password", func(t *testing.T) {
		writeFile(t, s.PlanFile, sudoOldPlan(s, l.PasswdUser, l.OldIP.String())+body)
		r := migrateEnv(t, ctx, s, nil, 1, "plan", "-f", s.PlanFile)
		want := fmt.Sprintf("host old: user %s needs a password for sudo; migrate runs sudo -n (no prompt). Allow NOPASSWD for %s in /etc/sudoers.d", l.PasswdUser, l.PasswdUser)
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr:\n%s\nwant %q", r.Stderr, want)
		}
		t.Logf("sudo error: %s", strings.TrimSpace(r.Stderr))
		// And without sudo = true the same user is told it needs root.
		writeFile(t, s.PlanFile, strings.Replace(readFile(t, s.PlanFile), "  sudo          = true\n", "", 1))
		r = migrateEnv(t, ctx, s, nil, 1, "plan", "-f", s.PlanFile)
		if !strings.Contains(r.Stderr, fmt.Sprintf("host old: user %s is not root and the host block does not set sudo = true", l.PasswdUser)) {
			t.Errorf("without sudo:\n%s", r.Stderr)
		}
	})

	t.Run("broad sudo installs the agent", func(t *testing.T) {
		// With NOPASSWD: ALL, migrate installs the agent itself: the
		// upload, run through sudo as agent-install, copies itself
		// into the root-owned agent directory; no root shell.
		bin := filepath.Join(l.OldStateDir, "bin")
		if err := os.RemoveAll(bin); err != nil {
			t.Fatal(err)
		}
		writeFile(t, s.PlanFile, sudoOldPlan(s, l.SudoAllUser, l.OldIP.String())+body)
		r := migrateEnv(t, ctx, s, nil, 0, "plan", "-f", s.PlanFile)
		if !strings.Contains(r.Stdout, "Plan: ") {
			t.Errorf("plan:\n%s", r.Stdout)
		}
		self, err := os.ReadFile(s.MigrateBin)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(bin, "migrate-"+sha256Hex(self))
		for _, f := range []string{bin, p} {
			fi, err := os.Lstat(f)
			if err != nil {
				t.Fatalf("not installed: %v", err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode().Perm() != 0o700 {
				t.Errorf("%s: uid %d mode %v, want root's 0700", f, st.Uid, fi.Mode())
			}
		}
		if got, _ := os.ReadFile(p); !bytes.Equal(got, self) {
			t.Errorf("%s is not the CLI's binary", p)
		}
		if b, _ := os.ReadFile(l.SSHDLog[lab.RoleOld]); !strings.Contains(string(b), "Accepted publickey for "+l.SudoAllUser+" ") {
			t.Errorf("sshd on old did not see %s log in", l.SudoAllUser)
		}
	})

	t.Run("sudo not installed", func(t *testing.T) {
		// The lab's bastion has no sudo; as "old" it fails right after the
		// login, before anything else runs.
		writeFile(t, s.PlanFile, sudoOldPlan(s, l.SudoUser, l.BastionIP.String())+body)
		r := migrateEnv(t, ctx, s, nil, 1, "plan", "-f", s.PlanFile)
		if want := "host old: sudo = true, but sudo is not installed on the host; install it, or connect as root and drop sudo = true"; !strings.Contains(r.Stderr, want) {
			t.Errorf("stderr:\n%s\nwant %q", r.Stderr, want)
		}
	})

	t.Run("unknown jump host key", func(t *testing.T) {
		// known_hosts without the bastion's line.
		var keep []string
		for _, line := range strings.Split(readFile(t, l.KnownHosts), "\n") {
			if line != "" && !strings.HasPrefix(line, l.BastionIP.String()+" ") {
				keep = append(keep, line)
			}
		}
		noBastion := filepath.Join(l.Dir, "known_hosts.nobastion")
		writeFile(t, noBastion, strings.Join(keep, "\n")+"\n")
		cfg := filepath.Join(l.Dir, "ssh_config.jump")
		writeFile(t, cfg, fmt.Sprintf("Host bastion\n  HostName %s\n  User %s\nHost old-srv\n  HostName %s\n  ProxyJump bastion\n", l.BastionIP, l.SudoUser, l.OldIP))
		writeFile(t, s.PlanFile, fmt.Sprintf(`host "old" {
  ssh           = "root@old-srv"
  identity_file = %q
  known_hosts   = %q
}

host "new" {
  ssh           = "root@%s"
  identity_file = %q
  known_hosts   = %q
}

`, l.IdentityFile, noBastion, l.NewIP, l.IdentityFile, l.KnownHosts)+body)
		r := migrateEnv(t, ctx, s, []string{sshconfig.EnvPath + "=" + cfg}, 1, "plan", "-f", s.PlanFile)
		want := fmt.Sprintf("host old: jump host bastion (%s:22): unknown host key ssh-ed25519 SHA256:", l.BastionIP)
		if !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, noBastion) {
			t.Errorf("stderr:\n%s\nwant %q", r.Stderr, want)
		}
		t.Logf("jump host key error: %s", strings.TrimSpace(r.Stderr))
	})

	t.Run("Match block named, not silently ignored", func(t *testing.T) {
		cfg := filepath.Join(l.Dir, "ssh_config.match")
		writeFile(t, cfg, fmt.Sprintf("Host old-srv\n  HostName %s\nMatch host old-srv\n  ProxyJump bastion\n", l.OldIP))
		writeFile(t, s.PlanFile, fmt.Sprintf(`host "old" {
  ssh           = "root@old-srv"
  identity_file = %q
  known_hosts   = %q
}

host "new" {
  ssh           = "root@%s"
  identity_file = %q
  known_hosts   = %q
}

`, l.IdentityFile, l.KnownHosts, l.NewIP, l.IdentityFile, l.KnownHosts)+body)
		for _, args := range [][]string{{"validate", "-f", s.PlanFile}, {"plan", "-f", s.PlanFile}} {
			r := migrateEnv(t, ctx, s, []string{sshconfig.EnvPath + "=" + cfg}, 0, args...)
			want := "Warning: " + cfg + ":3: Match host old-srv sets ProxyJump: migrate does not evaluate Match blocks"
			if !strings.Contains(r.Stderr, want) || strings.Contains(r.Stdout, "Warning") {
				t.Errorf("migrate %s: stderr:\n%s\nwant %q (and nothing on stdout)", args[0], r.Stderr, want)
			}
		}
	})
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sudoOldPlan is the host blocks of a plan that reaches "old" as user at
// addr with sudo = true, and "new" as root.
func sudoOldPlan(s *scenario.Scenario, user, addr string) string {
	l := s.Lab
	return fmt.Sprintf(`host "old" {
  ssh           = "%s@%s"
  identity_file = %q
  known_hosts   = %q
  sudo          = true
}

host "new" {
  ssh           = "root@%s"
  identity_file = %q
  known_hosts   = %q
}

`, user, addr, l.IdentityFile, l.KnownHosts, l.NewIP, l.IdentityFile, l.KnownHosts)
}

// sudoRuleIsNarrow: over SSH (from the bastion, as OLD allows), the lab's
// sudo user tries to use its sudoers rule, remote.SudoersRule, for
// anything but migrate's installed agent as migrate runs it: a shell, a
// command, a binary of its own named like an agent elsewhere or reached
// through "..", the agent with other arguments or another hash, and
// writing into the agent directory. Every attempt is refused, and
// nothing runs as root.
func sudoRuleIsNarrow(t *testing.T, ctx context.Context, s *scenario.Scenario, hash string) {
	t.Helper()
	l := s.Lab
	agentPath := filepath.Join(l.OldStateDir, "bin", "migrate-"+hash)
	home := filepath.Join(l.Dir, "home-"+l.SudoUser)
	asUser := func(cmd string) (string, error) {
		args := append([]string{"ssh"}, l.SSHArgs()...)
		args = append(args, l.SudoUser+"@"+l.OldIP.String(), cmd)
		out, err := l.Exec(ctx, lab.RoleBastion, args...)
		return string(out), err
	}
	// The rule works for what migrate runs (sudo -l, as migrate checks).
	if out, err := asUser("sudo -n -l " + agentPath + " agent --sha256 " + hash); err != nil {
		t.Fatalf("sudo -l for the agent as migrate runs it: %v\n%s", err, out)
	}
	evil := filepath.Join(home, "migrate-"+hash)
	for _, tc := range []struct{ what, cmd, want string }{
		{"a root shell", "sudo -n sh -c id", "a password is required"},
		{"any command", "sudo -n id", "a password is required"},
		{"sudo -s", "sudo -n -s id", "a password is required"},
		{"a binary of its own", "cp /bin/sh " + evil + " && sudo -n " + evil + " agent --sha256 " + hash, "a password is required"},
		{"its own binary through ..", "cp /bin/sh " + evil + " && sudo -n " + filepath.Join(l.OldStateDir, "bin") + "/../../home-" + l.SudoUser + "/migrate-" + hash + " agent --sha256 " + hash, "a password is required"},
		{"the agent as a CLI", "sudo -n " + agentPath + " init -o /etc/sudoers.d/x", "a password is required"},
		{"the agent installing", "sudo -n " + agentPath + " agent-install", "a password is required"},
		{"the agent with more arguments", "sudo -n " + agentPath + " agent --sha256 " + hash + " init -o /etc/sudoers.d/x", "usage: migrate agent --sha256 HASH"},
		{"the agent told another hash", "sudo -n " + agentPath + " agent --sha256 " + strings.Repeat("0", 64), "refusing to run"},
		{"writing an agent", "touch " + filepath.Join(l.OldStateDir, "bin", "migrate-x"), "Permission denied"},
	} {
		out, err := asUser(tc.cmd)
		t.Logf("%s: %s", tc.what, strings.TrimSpace(out))
		if err == nil || !strings.Contains(out, tc.want) || strings.Contains(out, "uid=0") {
			t.Errorf("%s (%s): %v\n%s\nwant refused with %q", tc.what, tc.cmd, err, out, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(l.OldStateDir, "bin", "migrate-x")); err == nil {
		t.Error("the sudo user wrote into the agent directory")
	}
}
