package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestRelease builds a release with scripts/release.sh (make release) into a
// temporary directory and checks it: the linux agents are static ELF files
// of the right machine, the darwin CLIs Mach-O of the right CPU, every CLI
// carries both agents, the arm64 agent taken out of a CLI runs (under
// qemu-aarch64-static, when installed: scripts/deps.sh installs it), and a
// release CLI installs its embedded agent, not itself, on the lab's hosts.
func TestRelease(t *testing.T) {
	if os.Getenv(scenario.BinDirEnv) != "" {
		t.Skip("prebuilt binaries (VM lane): release builds are checked on the host")
	}
	if testing.Short() {
		t.Skip("-short: the release build cross-compiles six binaries")
	}
	dist := t.TempDir()
	const version = "e2e-release-test"
	bctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(12*time.Minute))
	defer cancel()
	cmd := exec.CommandContext(bctx, "../scripts/release.sh")
	cmd.Env = append(os.Environ(), "DIST="+dist, "VERSION="+version)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/release.sh: %v\n%s", err, out)
	}
	t.Logf("release built in %s", time.Since(start).Round(time.Second))

	agents := map[string][]byte{}
	sums := map[string]string{}
	for _, arch := range []string{"amd64", "arm64"} {
		p := filepath.Join(dist, "agents", "migrate-linux-"+arch)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		agents[arch] = b
		sums[arch] = sha256Hex(b)
	}

	t.Run("artifacts", func(t *testing.T) {
		machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
		cpus := map[string]macho.Cpu{"amd64": macho.CpuAmd64, "arm64": macho.CpuArm64}
		for arch, m := range machines {
			checkStaticELF(t, filepath.Join(dist, "agents", "migrate-linux-"+arch), m)
			checkStaticELF(t, filepath.Join(dist, "migrate-linux-"+arch), m)
			p := filepath.Join(dist, "migrate-darwin-"+arch)
			f, err := macho.Open(p)
			if err != nil {
				t.Errorf("%s: not Mach-O: %v", p, err)
				continue
			}
			if f.Cpu != cpus[arch] || f.Type != macho.TypeExec {
				t.Errorf("%s: Mach-O cpu %v type %v, want %v executable", p, f.Cpu, f.Type, cpus[arch])
			}
			f.Close()
		}
		// Each CLI records both agents' hashes (they are embedded beside
		// the gzipped agents); the darwin ones cannot be run here.
		for _, name := range []string{"migrate-darwin-amd64", "migrate-darwin-arm64", "migrate-linux-amd64", "migrate-linux-arm64"} {
			b, err := os.ReadFile(filepath.Join(dist, name))
			if err != nil {
				t.Fatal(err)
			}
			for arch, sum := range sums {
				if !bytes.Contains(b, []byte(sum)) {
					t.Errorf("%s does not carry the linux/%s agent (sha256 %s)", name, arch, sum)
				}
			}
		}
		// SHA256SUMS covers every file.
		f, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		n := 0
		for sc := bufio.NewScanner(f); sc.Scan(); n++ {
			sum, name, ok := strings.Cut(sc.Text(), "  ")
			if !ok {
				t.Fatalf("SHA256SUMS line %q", sc.Text())
			}
			b, err := os.ReadFile(filepath.Join(dist, name))
			if err != nil {
				t.Fatal(err)
			}
			if sha256Hex(b) != sum {
				t.Errorf("SHA256SUMS: %s does not match", name)
			}
		}
		if n != 6 {
			t.Errorf("SHA256SUMS has %d lines, want 6", n)
		}
	})

	// The agents the linux/amd64 CLI carries are the ones built first,
	// byte for byte, and report the release's version.
	cli := filepath.Join(dist, "migrate-linux-amd64")
	extracted := map[string]string{}
	exdir := t.TempDir()
	t.Run("embedded", func(t *testing.T) {
		list, err := exec.Command(cli, "agent-binary").Output()
		if err != nil {
			t.Fatalf("agent-binary: %v", err)
		}
		want := "linux/amd64 " + sums["amd64"] + "\nlinux/arm64 " + sums["arm64"] + "\n"
		if string(list) != want {
			t.Errorf("agent-binary lists\n%s\nwant\n%s", list, want)
		}
		for arch, b := range agents {
			p := filepath.Join(exdir, "agent-"+arch)
			if out, err := exec.Command(cli, "agent-binary", "linux/"+arch, "-o", p).CombinedOutput(); err != nil {
				t.Fatalf("agent-binary linux/%s: %v: %s", arch, err, out)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, b) {
				t.Fatalf("the embedded linux/%s agent differs from dist/agents/migrate-linux-%s", arch, arch)
			}
			extracted[arch] = p
		}
		out, err := exec.Command(extracted["amd64"], "version").Output()
		if err != nil || !strings.Contains(string(out), "migrate "+version+" ") {
			t.Errorf("embedded amd64 agent version: %q, %v", out, err)
		}
	})

	t.Run("arm64-under-qemu", func(t *testing.T) {
		qemu, err := exec.LookPath("qemu-aarch64-static")
		if err != nil {
			t.Skip("qemu-aarch64-static not installed (scripts/deps.sh installs qemu-user-static)")
		}
		p := extracted["arm64"]
		if p == "" {
			t.Skip("no extracted arm64 agent")
		}
		ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(time.Minute))
		defer cancel()
		// Called explicitly: no binfmt_misc handler is registered. Only
		// `version` and the CLI side: `migrate agent` cannot start under
		// qemu-user 7.2, whose netlink emulation refuses the netfilter
		// family netlink.NewHandle opens ("protocol not supported").
		out, err := exec.CommandContext(ctx, qemu, p, "version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "migrate "+version+" ") {
			t.Fatalf("arm64 agent under qemu: %v: %s", err, out)
		}
		// The arm64 CLI runs too, and carries the same agents.
		out, err = exec.CommandContext(ctx, qemu, filepath.Join(dist, "migrate-linux-arm64"), "agent-binary").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "linux/arm64 "+sums["arm64"]) {
			t.Fatalf("arm64 CLI under qemu: %v: %s", err, out)
		}
	})

	// An arm64 laptop: the release linux/arm64 CLI, run under qemu-user,
	// drives the whole core scenario against the lab's amd64 hosts (it
	// installs its embedded amd64 agent there). The CLI side needs no
	// netfilter netlink, which qemu-user lacks.
	t.Run("arm64-cli-core-slice", func(t *testing.T) {
		needRoot(t)
		qemu, err := exec.LookPath("qemu-aarch64-static")
		if err != nil {
			t.Skip("qemu-aarch64-static not installed (scripts/deps.sh installs qemu-user-static)")
		}
		wrapper := filepath.Join(t.TempDir(), "migrate-arm64")
		script := "#!/bin/sh\nexec " + qemu + " " + filepath.Join(dist, "migrate-linux-arm64") + " \"$@\"\n"
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		coreSliceWith(t, tunnelCase{Name: "vxlan", Type: "vxlan"}, func(s *scenario.Scenario) {
			s.MigrateBin = wrapper
			// It really is the arm64 build that runs in the admin namespace.
			r := mustMigrate(t, context.Background(), s, 0, "version")
			if want := "migrate " + version + " linux/arm64 "; !strings.HasPrefix(r.Stdout, want) {
				t.Fatalf("wrapper runs %q, want %q...", r.Stdout, want)
			}
			t.Cleanup(func() {
				// The agent the arm64 CLI installed is its embedded amd64 one.
				for _, dir := range []string{s.Lab.OldStateDir, s.Lab.NewStateDir} {
					got, err := os.ReadFile(filepath.Join(dir, "bin", "migrate-"+sums["amd64"]))
					if err != nil || !bytes.Equal(got, agents["amd64"]) {
						t.Errorf("%s: the arm64 CLI did not install its embedded amd64 agent (%v)", dir, err)
					}
				}
			})
		})
	})

	t.Run("lab", func(t *testing.T) {
		needRoot(t)
		ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(3*time.Minute))
		defer cancel()
		s := newScenario(t, ctx)
		l := s.Lab
		cliBytes, err := os.ReadFile(cli)
		if err != nil {
			t.Fatal(err)
		}
		// The release CLI instead of the dev build.
		s.MigrateBin = cli
		if err := s.WritePlan(scenario.PlanOptions{Stage: "old"}); err != nil {
			t.Fatal(err)
		}
		mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
		var mtimes []time.Time
		for _, dir := range []string{l.OldStateDir, l.NewStateDir} {
			p := filepath.Join(dir, "bin", "migrate-"+sums["amd64"])
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatalf("embedded agent not installed at %s: %v", p, err)
			}
			got, _ := os.ReadFile(p)
			if !bytes.Equal(got, agents["amd64"]) {
				t.Fatalf("%s is not the embedded amd64 agent", p)
			}
			if _, err := os.Stat(filepath.Join(dir, "bin", "migrate-"+sha256Hex(cliBytes))); err == nil {
				t.Errorf("the release CLI installed itself in %s", dir)
			}
			mtimes = append(mtimes, fi.ModTime())
		}
		time.Sleep(20 * time.Millisecond)
		mustMigrate(t, ctx, s, 0, "plan", "-f", s.PlanFile)
		for i, dir := range []string{l.OldStateDir, l.NewStateDir} {
			fi, err := os.Stat(filepath.Join(dir, "bin", "migrate-"+sums["amd64"]))
			if err != nil || !fi.ModTime().Equal(mtimes[i]) {
				t.Errorf("agent in %s was uploaded again although its hash matched (%v)", dir, err)
			}
		}

	})
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// checkStaticELF: an executable for machine m with no interpreter and no
// shared libraries.
func checkStaticELF(t *testing.T, p string, m elf.Machine) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Errorf("%s: not ELF: %v", p, err)
		return
	}
	defer f.Close()
	if f.Machine != m || f.Type != elf.ET_EXEC || f.Class != elf.ELFCLASS64 {
		t.Errorf("%s: ELF %v %v %v, want %v ET_EXEC ELFCLASS64", p, f.Machine, f.Type, f.Class, m)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s: has an interpreter: not static", p)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s: needs shared libraries %v", p, libs)
	}
}
