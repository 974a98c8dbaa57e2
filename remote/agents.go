package remote

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// The agents a release CLI carries: scripts/release.sh builds static
// linux/amd64 and linux/arm64 binaries of migrate, gzips them and records
// the sha256 of each uncompressed binary; agents_embed.go (build tag
// embedagents) embeds them. A plain `go build` carries none
// (agents_none.go) and falls back to installing itself (AgentFor).

// EmbeddedArchs are the GOARCHes of the linux agents a release CLI
// carries.
var EmbeddedArchs = []string{"amd64", "arm64"}

// embeddedAgents returns the agents this binary carries, by GOARCH; none
// in a dev build.
var embeddedAgents = sync.OnceValues(func() (map[string]*Binary, error) {
	return agentTable(embeddedBlobs())
})

// EmbeddedAgents lists the agents this binary carries, by GOARCH.
func EmbeddedAgents() (map[string]*Binary, error) { return embeddedAgents() }

// EmbeddedAgentList lists the agents this binary carries as
// "linux/ARCH SHA256", sorted (`migrate agent-binary`); a dev build
// carries none, and the error says which build does.
func EmbeddedAgentList() ([]string, error) {
	return agentList(embeddedAgents())
}

func agentList(agents map[string]*Binary, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	if len(agents) == 0 {
		return nil, errors.New("this migrate carries no agents (a dev build); a release build (make release) does")
	}
	var lines []string
	for a, b := range agents {
		h, _ := b.Hash()
		lines = append(lines, fmt.Sprintf("linux/%s %s", a, h))
	}
	sort.Strings(lines)
	return lines, nil
}

// WriteEmbeddedAgent writes the agent this binary carries for platform
// ("linux/ARCH") to file, executable: to check a release, or to install
// an agent by hand.
func WriteEmbeddedAgent(platform, file string) error {
	agents, err := embeddedAgents()
	if _, err := agentList(agents, err); err != nil {
		return err
	}
	b := agents[strings.TrimPrefix(platform, "linux/")]
	if b == nil || !strings.HasPrefix(platform, "linux/") {
		return fmt.Errorf("no embedded agent for %s", platform)
	}
	if file == "" {
		return errors.New("-o FILE is required")
	}
	data, err := b.Data()
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o755)
}

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// agentTable turns blobs (GOARCH → gzip data and recorded hex sha256) into
// lazily decompressed Binaries.
func agentTable(blobs map[string]agentBlob) (map[string]*Binary, error) {
	if len(blobs) == 0 {
		return nil, nil
	}
	m := map[string]*Binary{}
	for arch, bl := range blobs {
		sum := strings.TrimSpace(bl.sha256)
		if !hexSHA256.MatchString(sum) {
			return nil, fmt.Errorf("embedded agent for linux/%s: bad recorded sha256 %q (broken release build)", arch, sum)
		}
		gz := bl.gz
		m[arch] = &Binary{Path: "embedded", OS: "linux", Arch: arch, known: sum, read: func() ([]byte, error) {
			r, err := gzip.NewReader(bytes.NewReader(gz))
			if err != nil {
				return nil, fmt.Errorf("embedded agent for linux/%s: %w", arch, err)
			}
			d, err := io.ReadAll(r)
			if err != nil {
				return nil, fmt.Errorf("embedded agent for linux/%s: %w", arch, err)
			}
			return d, nil
		}}
	}
	return m, nil
}

type agentBlob struct {
	gz     []byte
	sha256 string
}
