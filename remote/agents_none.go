//go:build !embedagents

package remote

// embeddedBlobs: a dev build (no embedagents tag) carries no agents; it
// installs itself on hosts of its own architecture (AgentFor). Release
// builds come from scripts/release.sh (make release).
func embeddedBlobs() map[string]agentBlob { return nil }
