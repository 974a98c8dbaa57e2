package remote

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"sync"
)

// Binary is an agent binary that can be installed on a host: a static linux
// executable of migrate (CGO_ENABLED=0), either this process's own
// executable (SelfBinary) or one the CLI carries embedded (release builds,
// see agents_embed.go). Its bytes are read or decompressed only when a host
// needs them uploaded.
type Binary struct {
	Path string // the file, or "embedded" for an agent the CLI carries
	OS   string // GOOS it was built for
	Arch string // GOARCH it was built for

	known string // hex sha256 recorded at build time (embedded agents)
	read  func() ([]byte, error)

	once sync.Once
	data []byte
	sum  string
	err  error
}

// Hash is the hex sha256 of the (uncompressed) binary. For an embedded
// agent it is the one recorded at build time and costs nothing; for the
// executable itself it reads the file.
func (b *Binary) Hash() (string, error) {
	if b.known != "" {
		return b.known, nil
	}
	if _, err := b.Data(); err != nil {
		return "", err
	}
	return b.sum, nil
}

// Data returns the binary's bytes, read once. For an embedded agent it
// checks them against the recorded hash.
func (b *Binary) Data() ([]byte, error) {
	b.once.Do(func() {
		d, err := b.read()
		if err != nil {
			b.err = err
			return
		}
		h := sha256.Sum256(d)
		b.sum = hex.EncodeToString(h[:])
		if b.known != "" && b.known != b.sum {
			b.err = fmt.Errorf("embedded agent for %s/%s is damaged: sha256 %s, recorded %s", b.OS, b.Arch, b.sum, b.known)
			return
		}
		b.data = d
	})
	return b.data, b.err
}

func (b *Binary) String() string {
	if b.Path == "embedded" {
		return "embedded agent for " + b.OS + "/" + b.Arch
	}
	return b.Path + " (" + b.OS + "/" + b.Arch + ")"
}

var (
	selfOnce sync.Once
	self     *Binary
	selfErr  error
)

// SelfBinary is this process's own executable as an agent candidate. It is
// cheap: the file is read only when a host needs it (AgentFor chose it and
// its hash is not installed yet).
func SelfBinary() (*Binary, error) {
	selfOnce.Do(func() {
		p, err := os.Executable()
		if err != nil {
			selfErr = err
			return
		}
		self = &Binary{Path: p, OS: runtime.GOOS, Arch: runtime.GOARCH, read: func() ([]byte, error) {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("read own executable to install as agent: %w", err)
			}
			return b, nil
		}}
	})
	return self, selfErr
}

// supportedArchs are the host architectures migrate has agents for, as
// `uname -m` prints them and as GOARCH.
const supportedArchs = "x86_64 (linux/amd64) and aarch64 (linux/arm64)"

// unameToGOARCH maps a host's `uname -m` to the GOARCH of the agent it
// needs.
func unameToGOARCH(m string) (string, error) {
	switch m {
	case "x86_64", "amd64":
		return "amd64", nil
	case "aarch64", "arm64":
		return "arm64", nil
	}
	return "", fmt.Errorf("machine type %q (uname -m) is not supported: migrate runs its agent on %s hosts only", m, supportedArchs)
}

// AgentFor picks the agent for a host whose `uname -m` printed machine:
// the agent the CLI carries for that architecture, else the CLI's own
// executable (self, may be nil) when it is a linux build for it, else an
// error saying what to do.
//
// The embedded agent wins even when self would do (a release CLI on a
// linux host of the same architecture): a release then installs the same
// bytes from every laptop, macOS or linux, so a host keeps one agent per
// release whoever runs the next command; that agent is a third of the
// size of a CLI carrying two agents; and the path users run is the one
// the release tests exercise. Self is the fallback for dev builds
// (`go build`, `go test`), which carry no agents.
func AgentFor(host, machine string, embedded map[string]*Binary, self *Binary) (*Binary, error) {
	arch, err := unameToGOARCH(machine)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", host, err)
	}
	if b := embedded[arch]; b != nil {
		return b, nil
	}
	if self != nil && self.OS == "linux" && self.Arch == arch {
		return self, nil
	}
	return nil, fmt.Errorf("host %s is %s (linux/%s) but this migrate carries no agent for it: use a release build (make release) or run migrate built for linux/%s", host, machine, arch, arch)
}
