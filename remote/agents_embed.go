//go:build embedagents

package remote

import _ "embed"

// The agents are not in the repository: scripts/release.sh builds them
// and maps these paths to its build directory with `go build -overlay`
// (or copy them here by hand to build with -tags embedagents yourself).

//go:embed agents/migrate-linux-amd64.gz
var agentAMD64 []byte

//go:embed agents/migrate-linux-amd64.sha256
var agentAMD64Sum string

//go:embed agents/migrate-linux-arm64.gz
var agentARM64 []byte

//go:embed agents/migrate-linux-arm64.sha256
var agentARM64Sum string

func embeddedBlobs() map[string]agentBlob {
	return map[string]agentBlob{
		"amd64": {gz: agentAMD64, sha256: agentAMD64Sum},
		"arm64": {gz: agentARM64, sha256: agentARM64Sum},
	}
}
