package sshconfig

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse(src, "config")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func lookup(t *testing.T, c *Config, name string) Host {
	t.Helper()
	h, err := c.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestPatterns(t *testing.T) {
	for _, tc := range []struct {
		pat, s string
		want   bool
	}{
		{"*", "anything", true},
		{"old-*", "old-srv", true},
		{"old-*", "new-srv", false},
		{"old-?", "old-1", true},
		{"old-?", "old-12", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "example.com", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"198.51.100.*", "198.51.100.10", true},
		{"", "", true},
	} {
		if got := matchPattern(tc.pat, tc.s); got != tc.want {
			t.Errorf("matchPattern(%q, %q) = %v", tc.pat, tc.s, got)
		}
	}
	c := cond{patterns: []string{"*.lab", "!secret.lab", "Bastion"}}
	for s, want := range map[string]bool{"old.lab": true, "secret.lab": false, "bastion": true, "other": false} {
		if got := c.matches(s); got != want {
			t.Errorf("Host *.lab !secret.lab Bastion vs %s = %v", s, got)
		}
	}
	// A line with only a negation matches nothing.
	if (cond{patterns: []string{"!x"}}).matches("y") {
		t.Error("Host !x matched y")
	}
}

func TestFirstValueWins(t *testing.T) {
	c := mustParse(t, `
# comment
Host old-srv
    HostName 198.51.100.10
    User deploy
    IdentityFile ~/.ssh/old_key
Host old-* !old-skip
  Port=2222
  User other
  IdentityFile "/keys/with space"
Host *
  User = fallback
  Port 22
  HostName %h.example.com
  UserKnownHostsFile ~/.ssh/kh1 ~/.ssh/kh2
  IdentityFile %d/.ssh/id_%r
`)
	h := lookup(t, c, "old-srv")
	if h.HostName != "198.51.100.10" || h.User != "deploy" || h.Port != 2222 {
		t.Errorf("old-srv: %+v", h)
	}
	if want := []string{"~/.ssh/old_key", "/keys/with space", "%d/.ssh/id_%r"}; !reflect.DeepEqual(h.IdentityFiles, want) {
		t.Errorf("identity files %q, want %q", h.IdentityFiles, want)
	}
	if h.UserKnownHostsFile != "~/.ssh/kh1" {
		t.Errorf("known hosts %q", h.UserKnownHostsFile)
	}
	if h.Sources["user"] != "config:5" || h.Sources["port"] != "config:8" {
		t.Errorf("sources %v", h.Sources)
	}
	h = lookup(t, c, "old-skip")
	if h.User != "fallback" || h.Port != 22 || h.HostName != "old-skip.example.com" {
		t.Errorf("old-skip: %+v", h)
	}
	h = lookup(t, c, "OLD-SRV") // names match case-insensitively
	if h.User != "deploy" {
		t.Errorf("OLD-SRV: %+v", h)
	}
}

func TestMatchIgnoredAndProxyCommand(t *testing.T) {
	c := mustParse(t, `
Match host old-srv
  User frommatch
Host old-srv
  HostName 198.51.100.10
Host pc
  ProxyCommand nc %h %p
Host pcnone
  ProxyCommand none
Host other
  ProxyCommand ssh -W %h:%p gw
`)
	h := lookup(t, c, "old-srv")
	if h.User != "" {
		t.Errorf("Match block applied: %+v", h)
	}
	// Not silently: the block that sets something migrate reads is named.
	if got := c.Unevaluated(); len(got) != 1 || got[0] != "config:2: Match host old-srv sets User" {
		t.Errorf("Unevaluated() = %q", got)
	}
	if _, err := c.Lookup("pc"); err == nil || !strings.Contains(err.Error(), "config:7: ProxyCommand applies to host pc") {
		t.Errorf("ProxyCommand error: %v", err)
	}
	if _, err := c.Lookup("pcnone"); err != nil {
		t.Errorf("ProxyCommand none: %v", err)
	}
	if _, err := c.Lookup("other"); err == nil {
		t.Error("Host * ProxyCommand not refused")
	}
}

func TestProxyJump(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []Hop
		err  string
	}{
		{"bastion", []Hop{{Host: "bastion"}}, ""},
		{"ops@bastion:2222,root@[2001:db8::1]:22,192.0.2.80", []Hop{{User: "ops", Host: "bastion", Port: 2222}, {User: "root", Host: "2001:db8::1", Port: 22}, {Host: "192.0.2.80"}}, ""},
		{"none", []Hop{}, ""},
		{"a,,b", nil, "empty hop"},
		{"a:0", nil, "invalid port"},
		{"ssh://a", nil, "not supported"},
		{"@a", nil, "empty user"},
	} {
		got, err := ParseJump(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseJump(%q) err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseJump(%q) = %+v, %v", tc.in, got, err)
		}
	}
	c := mustParse(t, "Host direct\n  ProxyJump none\nHost *\n  ProxyJump gw1,ops@gw2:2200\n")
	if h := lookup(t, c, "direct"); h.ProxyJump == nil || len(h.ProxyJump) != 0 {
		t.Errorf("ProxyJump none: %+v", h.ProxyJump)
	}
	if h := lookup(t, c, "x"); len(h.ProxyJump) != 2 || h.ProxyJump[1].String() != "ops@gw2:2200" {
		t.Errorf("ProxyJump list: %+v", h.ProxyJump)
	}
	if h := lookup(t, mustParse(t, ""), "x"); h.ProxyJump != nil {
		t.Errorf("no ProxyJump: %+v", h.ProxyJump)
	}
}

func TestInclude(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.MkdirAll(filepath.Join(home, ".ssh", "conf.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(home, ".ssh", "conf.d", "a.conf"), "Host a\n  User ua\nHost *\n  Port 2201\n")
	write(filepath.Join(home, ".ssh", "conf.d", "b.conf"), "Host b\n  User ub\n")
	abs := filepath.Join(t.TempDir(), "abs.conf")
	write(abs, "User fromabs\n")
	main := filepath.Join(home, "main")
	write(main, "Include conf.d/*.conf\nHost x\n  Include "+abs+"\nHost y\n  HostName yy\nInclude conf.d/b.conf\nHost *\n  User last\n")
	c, err := ParseFile(main)
	if err != nil {
		t.Fatal(err)
	}
	if h := lookup(t, c, "a"); h.User != "ua" || h.Port != 2201 {
		t.Errorf("a: %+v", h)
	}
	if h := lookup(t, c, "b"); h.User != "ub" || h.Port != 2201 {
		t.Errorf("b: %+v", h)
	}
	// An Include inside a Host block only applies to that block's hosts.
	if h := lookup(t, c, "x"); h.User != "fromabs" {
		t.Errorf("x: %+v", h)
	}
	// The Include after "Host y" belongs to the y block: its "Host b"
	// is a further condition that y never meets.
	if h := lookup(t, c, "y"); h.HostName != "yy" || h.User != "last" || h.Port != 2201 {
		t.Errorf("y: %+v", h)
	}
	// Including itself forever stops.
	loop := filepath.Join(home, "loop")
	write(loop, "Include "+loop+"\n")
	if _, err := ParseFile(loop); err == nil || !strings.Contains(err.Error(), "nested") {
		t.Errorf("include loop: %v", err)
	}
	// A missing top file is no configuration; Load uses the env variable.
	t.Setenv(EnvPath, filepath.Join(home, "missing"))
	if c, err := Load(); err != nil || len(c.directives) != 0 {
		t.Errorf("missing: %v", err)
	}
	t.Setenv(EnvPath, main)
	if c, err := Load(); err != nil || lookup(t, c, "a").User != "ua" {
		t.Errorf("Load: %v", err)
	}
}

func TestTokens(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	got, err := ExpandPath("%d/.ssh/%h_%r_%u%%", "198.51.100.10", "deploy")
	if err != nil {
		t.Fatal(err)
	}
	if want := home + "/.ssh/198.51.100.10_deploy_" + LocalUser() + "%"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, _ := ExpandPath("~/.ssh/id", "h", "u"); got != home+"/.ssh/id" {
		t.Errorf("~: %q", got)
	}
	if _, err := ExpandPath("%p", "h", "u"); err == nil {
		t.Error("token p accepted")
	}
	if _, err := ExpandPath("~bob/x", "h", "u"); err == nil {
		t.Error("~bob accepted")
	}
	c := mustParse(t, "Host *\n  HostName %h.lab\n")
	if h := lookup(t, c, "old"); h.HostName != "old.lab" {
		t.Errorf("HostName %%h: %q", h.HostName)
	}
}

func TestSyntaxErrors(t *testing.T) {
	for src, want := range map[string]string{
		"Host\n":                  "config:1: Host needs at least one pattern",
		"Host a\n  User \"x\n":    "config:2: unterminated quote",
		"Host a\n  Port 99999\n":  "config:2: invalid Port",
		"Host a\n ProxyJump a,\n": "config:2: empty hop",
	} {
		c, err := Parse(src, "config")
		if err == nil {
			_, err = c.Lookup("a")
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", src, err, want)
		}
	}
}

// Only Match blocks that set keywords migrate reads are reported, each
// once, with each keyword once.
func TestUnevaluatedMatchBlocks(t *testing.T) {
	c := mustParse(t, `
Match exec "true"
  ForwardAgent yes
  ServerAliveInterval 30
Match host *.corp user admin
  User deploy
  ProxyJump gw
  IdentityFile ~/.ssh/a
  IdentityFile ~/.ssh/b
Host x
  User plain
`)
	got := c.Unevaluated()
	if len(got) != 1 || got[0] != "config:5: Match host *.corp user admin sets User, ProxyJump, IdentityFile" {
		t.Errorf("Unevaluated() = %q", got)
	}
	if u := lookup(t, c, "x").User; u != "plain" {
		t.Errorf("Host block after Match: user %q", u)
	}
}
