package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// NftTable is migrate's own nftables table on one host. The agent renders
// Spec into chains, sets and rules in one transaction; Digest is a hash of
// Spec stored in every rule's userdata, so facts can tell whether the kernel
// still holds what migrate wrote without decoding every expression.
type NftTable struct {
	Family string  `json:"family"` // inet
	Name   string  `json:"name"`
	Spec   NftSpec `json:"spec"`
}

// NftSpec is everything the agent needs to render the table. It is a plain
// value: equal specs render to equal rulesets.
type NftSpec struct {
	Role      string `json:"role"`       // "old": marks flows for the tunnel
	TunnelDev string `json:"tunnel_dev"` // flows arriving here are NEW's
	Mark      uint32 `json:"mark"`
	// Services are sorted by address, protocol, port. Each element is one
	// (address, protocol, port) whose new flows go into the tunnel.
	Services []NftService `json:"services,omitempty"`
}

// NftService is one (address, protocol, port) that is moved to NEW.
type NftService struct {
	Addr  string `json:"addr"`
	Proto string `json:"proto"` // tcp | udp
	Port  uint16 `json:"port"`
}

// Digest is a short hash of the spec, stable across runs.
func (s NftSpec) Digest() string {
	b, _ := json.Marshal(s)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

func (t NftTable) String() string {
	return fmt.Sprintf("table %s %s (role %s, %d service ports, mark %#x, digest %s)",
		t.Family, t.Name, t.Spec.Role, len(t.Spec.Services), t.Spec.Mark, t.Spec.Digest())
}
