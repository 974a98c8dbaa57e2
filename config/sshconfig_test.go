package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/remote/sshconfig"
)

func withSSHConfig(t *testing.T, text string) string {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	p := filepath.Join(home, "ssh_config")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(sshconfig.EnvPath, p)
	return home
}

const sshCfgTunnel = `tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
`

func TestSSHConfigAlias(t *testing.T) {
	home := withSSHConfig(t, `
Host old-srv
  HostName 198.51.100.10
  User deploy
  Port 2222
  IdentityFile ~/.ssh/old_%r
  IdentityFile %d/.ssh/second
  ProxyJump bastion,ops@gw2:2200
  UserKnownHostsFile ~/.ssh/kh_old %d/ignored
Host bastion
  HostName 192.0.2.80
  User jump
  IdentityFile ~/.ssh/jump_key
  UserKnownHostsFile ~/.ssh/kh_jump
Host *
  User fallback
  Port 2200
`)
	cfg := mustParse(t, `host "old" {
  ssh  = "old-srv"
  sudo = true
}
host "new" {
  ssh           = "root@203.0.113.20:22"
  identity_file = "~/.ssh/new_key"
  known_hosts   = "~/kh"
}
`+sshCfgTunnel)
	old := cfg.Hosts["old"]
	if old.User != "deploy" || old.Address != "198.51.100.10" || old.Port != 2222 || old.SSH != "old-srv" || !old.Sudo {
		t.Errorf("old: %+v", old)
	}
	if want := []string{home + "/.ssh/old_deploy", home + "/.ssh/second"}; strings.Join(old.IdentityFiles, " ") != strings.Join(want, " ") {
		t.Errorf("identity files %q, want %q", old.IdentityFiles, want)
	}
	if old.KnownHosts != home+"/.ssh/kh_old" {
		t.Errorf("known hosts %q", old.KnownHosts)
	}
	if len(old.ProxyJump) != 2 {
		t.Fatalf("jumps %+v", old.ProxyJump)
	}
	b, g := old.ProxyJump[0], old.ProxyJump[1]
	if b.Name != "bastion" || b.User != "jump" || b.Address != "192.0.2.80" || b.Port != 2200 ||
		strings.Join(b.IdentityFiles, " ") != home+"/.ssh/jump_key" || b.KnownHosts != home+"/.ssh/kh_jump" {
		t.Errorf("bastion hop: %+v", b)
	}
	// gw2: user and port from ProxyJump win; the rest falls back to old's.
	if g.User != "ops" || g.Address != "gw2" || g.Port != 2200 || g.KnownHosts != old.KnownHosts || len(g.IdentityFiles) != 2 {
		t.Errorf("gw2 hop: %+v", g)
	}
	// The plan's own values win over ssh_config: user, port, known_hosts;
	// "Host *" still adds nothing that the plan set.
	nw := cfg.Hosts["new"]
	if nw.User != "root" || nw.Port != 22 || nw.KnownHosts != home+"/kh" || nw.IdentityFile != home+"/.ssh/new_key" || nw.SSH != "root@203.0.113.20:22" {
		t.Errorf("new: %+v", nw)
	}
	// Render keeps the alias as written.
	if out := string(Render(cfg)); !strings.Contains(out, `= "old-srv"`) {
		t.Errorf("render:\n%s", out)
	}
}

func TestSSHConfigPlanWins(t *testing.T) {
	withSSHConfig(t, "Host old-srv\n  HostName 198.51.100.10\n  User deploy\n  Port 2222\n")
	cfg := mustParse(t, `host "old" {
  ssh = "admin@old-srv:22"
}
host "new" {
  ssh = "root@203.0.113.20"
}
`+sshCfgTunnel)
	old := cfg.Hosts["old"]
	if old.User != "admin" || old.Port != 22 || old.Address != "198.51.100.10" {
		t.Errorf("old: %+v", old)
	}
	// A host ssh_config does not mention is as before.
	if nw := cfg.Hosts["new"]; nw.SSH != "" || nw.IdentityFiles != nil || nw.ProxyJump != nil {
		t.Errorf("new: %+v", nw)
	}
}

func TestSSHConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, sshcfg, ssh, want string
	}{
		{"no user anywhere", "Host old-srv\n  HostName 198.51.100.10\n", "old-srv",
			`migration.hcl:2:9: invalid ssh "old-srv" in host "old": missing user; write it as user@host[:port]`},
		{"jump without user", "Host old-srv\n  User deploy\n  ProxyJump bastion\n", "old-srv",
			`ProxyJump (`},
		{"proxycommand", "Host old-srv\n  User deploy\n  ProxyCommand nc %h %p\n", "old-srv",
			`migrate does not run ProxyCommand`},
		{"bad hostname", "Host old-srv\n  User deploy\n  HostName bad_host!\n", "old-srv",
			`HostName "bad_host!"`},
		{"bad syntax", "Host old-srv\n  Port x\n", "root@old-srv",
			`invalid Port "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withSSHConfig(t, tc.sshcfg)
			_, err := Parse([]byte(`host "old" {
  ssh = "`+tc.ssh+`"
}
host "new" {
  ssh = "root@203.0.113.20"
}
`+sshCfgTunnel), "migration.hcl")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// A Match block that sets what migrate reads becomes a warning naming its
// place; the plan still parses. Without one, no warning.
func TestSSHConfigMatchWarning(t *testing.T) {
	home := withSSHConfig(t, `
Host old-srv
  HostName 198.51.100.10
Match host old-srv
  User deploy
`)
	src := `host "old" {
  ssh = "root@old-srv"
}
host "new" {
  ssh = "root@203.0.113.20"
}
` + sshCfgTunnel
	cfg, err := Parse([]byte(src), "m.hcl")
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(home, "ssh_config") + ":4: Match host old-srv sets User: migrate does not evaluate Match blocks"
	if len(cfg.Warnings) != 1 || !strings.HasPrefix(cfg.Warnings[0], want) {
		t.Fatalf("warnings %q, want one starting %q", cfg.Warnings, want)
	}
	withSSHConfig(t, "Host old-srv\n  HostName 198.51.100.10\n")
	if cfg, err := Parse([]byte(src), "m.hcl"); err != nil || len(cfg.Warnings) != 0 {
		t.Fatalf("without Match: %v %q", err, cfg.Warnings)
	}
}
