package remote

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestUnameToGOARCH(t *testing.T) {
	for in, want := range map[string]string{"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"} {
		got, err := unameToGOARCH(in)
		if err != nil || got != want {
			t.Errorf("unameToGOARCH(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"armv7l", "i686", "riscv64", "s390x", "ppc64le", ""} {
		_, err := unameToGOARCH(in)
		if err == nil {
			t.Errorf("unameToGOARCH(%q): no error", in)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, `"`+in+`"`) || !strings.Contains(msg, "linux/amd64") || !strings.Contains(msg, "linux/arm64") {
			t.Errorf("unameToGOARCH(%q): error does not name the machine and the supported ones: %s", in, msg)
		}
	}
}

func fakeBinary(path, goos, arch string) *Binary {
	return &Binary{Path: path, OS: goos, Arch: arch, read: func() ([]byte, error) { return []byte(path), nil }}
}

func TestAgentFor(t *testing.T) {
	embAMD := fakeBinary("embedded", "linux", "amd64")
	embARM := fakeBinary("embedded", "linux", "arm64")
	both := map[string]*Binary{"amd64": embAMD, "arm64": embARM}
	onlyAMD := map[string]*Binary{"amd64": embAMD}
	linuxAMD := fakeBinary("/usr/bin/migrate", "linux", "amd64")
	linuxARM := fakeBinary("/usr/bin/migrate", "linux", "arm64")
	darwinARM := fakeBinary("/opt/migrate", "darwin", "arm64")

	cases := []struct {
		name     string
		machine  string
		embedded map[string]*Binary
		self     *Binary
		want     *Binary
		wantErr  string
	}{
		{"release on linux/amd64 prefers its embedded agent", "x86_64", both, linuxAMD, embAMD, ""},
		{"release on darwin, arm64 host", "aarch64", both, darwinARM, embARM, ""},
		{"release on darwin, amd64 host", "x86_64", both, darwinARM, embAMD, ""},
		{"uname arm64 spelling", "arm64", both, nil, embARM, ""},
		{"dev build on linux/amd64, amd64 host: itself", "x86_64", nil, linuxAMD, linuxAMD, ""},
		{"dev build on linux/arm64, arm64 host: itself", "aarch64", nil, linuxARM, linuxARM, ""},
		{"partial table falls back to self", "aarch64", onlyAMD, linuxARM, linuxARM, ""},
		{"dev build, other arch", "aarch64", nil, linuxAMD, nil,
			"host old is aarch64 (linux/arm64) but this migrate carries no agent for it: use a release build (make release) or run migrate built for linux/arm64"},
		{"dev build on darwin never uploads itself", "aarch64", nil, darwinARM, nil, "carries no agent for it"},
		{"no self at all", "x86_64", nil, nil, nil, "run migrate built for linux/amd64"},
		{"unsupported machine", "armv7l", both, linuxAMD, nil, `host old: machine type "armv7l" (uname -m) is not supported`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := AgentFor("old", c.machine, c.embedded, c.self)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("picked %v, want %v", got, c.want)
			}
		})
	}
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func hexSum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestAgentTable(t *testing.T) {
	if m, err := agentTable(nil); m != nil || err != nil {
		t.Fatalf("no blobs: %v, %v", m, err)
	}
	amd, arm := []byte("\x7fELF amd64 agent"), []byte("\x7fELF arm64 agent")
	m, err := agentTable(map[string]agentBlob{
		"amd64": {gz: gz(t, amd), sha256: hexSum(amd) + "\n"},
		"arm64": {gz: gz(t, arm), sha256: hexSum(arm)},
	})
	if err != nil {
		t.Fatal(err)
	}
	b := m["arm64"]
	if b.OS != "linux" || b.Arch != "arm64" {
		t.Fatalf("arm64 entry is %s/%s", b.OS, b.Arch)
	}
	// The hash is known without decompressing.
	if h, err := b.Hash(); err != nil || h != hexSum(arm) {
		t.Fatalf("hash %q, %v", h, err)
	}
	if b.data != nil {
		t.Fatal("Hash decompressed the agent")
	}
	// Two hosts of the same arch may ask at once.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := b.Data()
			if err != nil || !bytes.Equal(d, arm) {
				t.Errorf("data %q, %v", d, err)
			}
		}()
	}
	wg.Wait()
	if d, _ := m["amd64"].Data(); !bytes.Equal(d, amd) {
		t.Fatalf("amd64 data %q", d)
	}

	// A blob that does not match its recorded hash is refused.
	m, err = agentTable(map[string]agentBlob{"arm64": {gz: gz(t, []byte("other")), sha256: hexSum(arm)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m["arm64"].Data(); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged agent: %v", err)
	}
	// Not gzip.
	m, _ = agentTable(map[string]agentBlob{"arm64": {gz: arm, sha256: hexSum(arm)}})
	if _, err := m["arm64"].Data(); err == nil {
		t.Fatal("non-gzip blob accepted")
	}
	// A bad recorded hash is a broken build.
	if _, err := agentTable(map[string]agentBlob{"arm64": {gz: gz(t, arm), sha256: "nope"}}); err == nil {
		t.Fatal("bad recorded sha256 accepted")
	}
}

func TestSelfBinary(t *testing.T) {
	b, err := SelfBinary()
	if err != nil {
		t.Fatal(err)
	}
	if b.OS != runtime.GOOS || b.Arch != runtime.GOARCH {
		t.Fatalf("self is %s/%s", b.OS, b.Arch)
	}
	h, err := b.Hash()
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	d, _ := os.ReadFile(exe)
	if h != hexSum(d) {
		t.Fatalf("hash %s, file %s", h, hexSum(d))
	}
}

// A test binary is a dev build: it carries no agents unless built with
// -tags embedagents (scripts/release.sh), and then carries both.
func TestEmbeddedAgents(t *testing.T) {
	m, err := EmbeddedAgents()
	if err != nil {
		t.Fatal(err)
	}
	if len(m) == 0 {
		t.Skip("dev build: no embedded agents")
	}
	for _, a := range EmbeddedArchs {
		b := m[a]
		if b == nil {
			t.Fatalf("no embedded agent for linux/%s", a)
		}
		d, err := b.Data()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(d, []byte("\x7fELF")) {
			t.Fatalf("embedded agent for linux/%s is not an ELF file", a)
		}
	}
}

// `migrate agent-binary` lists the agents sorted, with their hashes; a
// dev build carries none and says which build does, and writes none.
func TestEmbeddedAgentList(t *testing.T) {
	amd, arm := []byte("\x7fELF amd64 agent"), []byte("\x7fELF arm64 agent")
	lines, err := agentList(agentTable(map[string]agentBlob{
		"arm64": {gz: gz(t, arm), sha256: hexSum(arm)},
		"amd64": {gz: gz(t, amd), sha256: hexSum(amd)},
	}))
	if want := "linux/amd64 " + hexSum(amd) + "\nlinux/arm64 " + hexSum(arm); err != nil || strings.Join(lines, "\n") != want {
		t.Fatalf("list %q, %v; want %q", lines, err, want)
	}
	if m, _ := EmbeddedAgents(); len(m) > 0 {
		t.Skip("release build: carries agents")
	}
	out := t.TempDir() + "/agent"
	for _, err := range []error{func() error { _, err := EmbeddedAgentList(); return err }(), WriteEmbeddedAgent("linux/amd64", out)} {
		if err == nil || !strings.Contains(err.Error(), "carries no agents") || !strings.Contains(err.Error(), "make release") {
			t.Errorf("dev build: %v", err)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("dev build wrote an agent")
	}
}
