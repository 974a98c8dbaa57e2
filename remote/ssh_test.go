package remote

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostKeyAlgorithms learns the key types from known_hosts with a dummy
// key: it must see hashed entries and [host]:port entries too.
func TestHostKeyAlgorithmsHashedAndPort(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, line string
		target     Target
	}{
		{"plain", knownhosts.Line([]string{"198.51.100.10"}, k), Target{Address: "198.51.100.10", Port: 22}},
		{"hashed", knownhosts.Line([]string{knownhosts.HashHostname("198.51.100.10")}, k), Target{Address: "198.51.100.10", Port: 22}},
		{"hashed port", knownhosts.Line([]string{knownhosts.HashHostname(knownhosts.Normalize("198.51.100.10:2222"))}, k), Target{Address: "198.51.100.10", Port: 2222}},
		{"port", knownhosts.Line([]string{knownhosts.Normalize("old.example:2222")}, k), Target{Address: "old.example", Port: 2222}},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cb, err := knownhosts.New(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := hostKeyAlgorithms(cb, tc.target); !reflect.DeepEqual(got, []string{ssh.KeyAlgoED25519}) {
			t.Errorf("%s: algorithms %v", tc.name, got)
		}
		// The entry is for that port only.
		other := tc.target
		other.Port = 2200
		if got := hostKeyAlgorithms(cb, other); got != nil {
			t.Errorf("%s: port 2200 algorithms %v", tc.name, got)
		}
	}
}

func TestSudoErrors(t *testing.T) {
	tg := Target{Name: "old", User: "deploy"}
	exit := errors.New("Process exited with status 1")
	for _, tc := range []struct{ stderr, want string }{
		{"sudo: a password is required\n", `host old: user deploy needs a password for sudo; migrate runs sudo -n (no prompt). Allow NOPASSWD for deploy in /etc/sudoers.d`},
		{"sudo: a terminal is required to read the password; either use the -S option to read from standard input or configure an askpass helper\n", "needs a password for sudo"},
		{"migrate: sudo: not found\n", "host old: sudo = true, but sudo is not installed on the host"},
		{"deploy is not in the sudoers file.  This incident will be reported.\n", "host old: user deploy may not use sudo"},
		{"", "sudo -n failed for user deploy: Process exited with status 1"},
	} {
		if got := sudoError(tg, tc.stderr, exit).Error(); !strings.Contains(got, tc.want) {
			t.Errorf("stderr %q: %s\nwant %s", tc.stderr, got, tc.want)
		}
	}
}

func TestWhat(t *testing.T) {
	if got := (Target{Name: "old"}).what(); got != "host old" {
		t.Error(got)
	}
	e := &HostKeyError{Target: Target{Name: "bastion", label: "host old: jump host bastion", Address: "192.0.2.80", Port: 22, KnownHosts: "/kh"}, Key: dummyPub(t)}
	if got := e.Error(); !strings.HasPrefix(got, "host old: jump host bastion (192.0.2.80:22): unknown host key ssh-ed25519") {
		t.Error(got)
	}
}

func dummyPub(t *testing.T) ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// README gives the sudoers rule the sudo e2e test uses (SudoersRule, for
// the default state directory), word for word.
func TestREADMEQuotesSudoersRule(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rule := SudoersRule("deploy", DefaultStateDir)
	if !strings.Contains(string(b), "\n  "+rule+"\n") {
		t.Errorf("README does not quote the sudoers rule %q", rule)
	}
}
