package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/lab/scenario"
)

// TestReadmeGuide keeps the README's user guide true: it runs the demo
// (`sudo ./demo.sh`, whose output the guide quotes) and checks that every
// output line the guide shows comes out of today's commands, in the same
// order. Only what changes from run to run is masked: times, durations,
// digests, run IDs, round-trip times and temporary paths. Lines the guide
// cuts ("...") and the prompt (the demo runs with --auto-approve; the
// prompt is tested through a pseudo-terminal in TestTerraformHabits) are not
// compared.
func TestReadmeGuide(t *testing.T) {
	needRoot(t)
	if os.Getenv(scenario.BinDirEnv) != "" {
		t.Skip("prebuilt binaries (VM lane): the guide is checked on the host")
	}
	want, err := guideLines("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 60 {
		t.Fatalf("found only %d output lines in the README's user guide: has its layout changed?", len(want))
	}
	ctx, cancel := context.WithTimeout(context.Background(), scenario.Slow(5*time.Minute))
	defer cancel()
	demo := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", demo, "../examples/demo").CombinedOutput(); err != nil {
		t.Fatalf("build the demo: %v\n%s", err, out)
	}
	cmd := exec.CommandContext(ctx, demo)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var got []string
	for _, l := range strings.Split(stdout.String(), "\n") {
		got = append(got, normalizeGuideLine(l))
	}
	i := 0
	for _, w := range want {
		start := i
		for i < len(got) && !guideLineMatches(w.text, got[i]) {
			i++
		}
		if i == len(got) {
			t.Fatalf("README.md:%d: the guide shows\n  %s\nbut the demo prints no such line after its line %d. Demo output:\n%s", w.line, w.text, start+1, stdout.String())
		}
		i++
	}
	t.Logf("%d output lines of the README's user guide match the demo's output", len(want))
}

type guideLine struct {
	line int // in README.md
	text string
}

// guideLines returns the normalized output lines of the user guide's code
// blocks: the plan file (hcl) and the blocks that show a command's output.
func guideLines(path string) ([]guideLine, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []guideLine
	inGuide, inBlock, keep := false, false, false
	for n, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "## "):
			inGuide = strings.HasPrefix(l, "## User guide")
			continue
		case !inGuide:
			continue
		case strings.HasPrefix(l, "```"):
			if inBlock {
				inBlock = false
				continue
			}
			inBlock, keep = true, l == "```hcl" || l == "```"
			continue
		case !inBlock || !keep:
			continue
		}
		s := strings.TrimSpace(l)
		switch {
		case s == "", strings.HasPrefix(s, "$ "), strings.HasPrefix(s, "..."),
			strings.Contains(s, "Do you want to perform these actions"), strings.Contains(s, "Only 'yes' will be accepted"), strings.Contains(s, "Enter a value:"):
			continue
		}
		out = append(out, guideLine{line: n + 1, text: normalizeGuideLine(l)})
	}
	return out, nil
}

var guideMasks = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\[(<1ms|[0-9.]+(ns|µs|ms|s))\]`), "[DURATION]"},
	{regexp.MustCompile(`digest [0-9a-f]+`), "digest DIGEST"},
	{regexp.MustCompile(`run [0-9a-f]{16}`), "run RUN"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\dZ?`), "TIME"},
	{regexp.MustCompile(`\d\d:\d\d:\d\d`), "TIME"},
	{regexp.MustCompile(`rtt [0-9.]+ ms`), "rtt RTT"},
	// Byte counters count packets, and under load a client's TCP sends
	// an ACK more now and then (seen once in a full run: 320 B instead
	// of the guide's 268 B, one 52-byte ACK): the guide's figures are an
	// example, not a fixed value.
	{regexp.MustCompile(`\b[0-9]+(\.[0-9]+)? (B|KiB|MiB|GiB)\b`), "BYTES"},
	{regexp.MustCompile(`/\S*/(migration\.[a-z.]+|id_ed25519|known_hosts)\b`), "$1"},
	{regexp.MustCompile(`\s+`), " "},
}

func normalizeGuideLine(l string) string {
	for _, m := range guideMasks {
		l = m.re.ReplaceAllString(l, m.with)
	}
	return strings.TrimSpace(l)
}

// guideLineMatches: equal, where "..." in the guide's line stands for
// whatever the guide cut there.
func guideLineMatches(want, got string) bool {
	if !strings.Contains(want, "...") {
		return want == got
	}
	parts := strings.Split(want, "...")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$").MatchString(got)
}
