package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// FactsRequest says what the planner needs to know about a host beyond the
// always-collected links, addresses and rules.
type FactsRequest struct {
	Tables   []int    `json:"tables,omitempty"`  // routing tables whose routes to dump
	Sysctls  []string `json:"sysctls,omitempty"` // dotted names
	NftTable string   `json:"nft_table"`         // name of migrate's inet table
}

// Facts is what an agent reports about its host. It is a plain value.
type Facts struct {
	Hostname string            `json:"hostname"`
	Kernel   string            `json:"kernel"`
	Links    []Link            `json:"links"` // all links; tunnel attributes only for vxlan/gre
	Addrs    []Addr            `json:"addrs"`
	Rules    []Rule            `json:"rules"`
	Routes   []Route           `json:"routes"` // routes in the requested tables only
	Sysctls  map[string]string `json:"sysctls"`
	// Nft is migrate's table when present and verified against the
	// digest in its rules. NftDrift explains a table that is present but
	// does not match what migrate last wrote.
	Nft      *NftTable `json:"nft,omitempty"`
	NftDrift string    `json:"nft_drift,omitempty"`
}

// Digest hashes the facts, so a saved plan can be checked for staleness.
func (f Facts) Digest() string {
	b, _ := json.Marshal(f)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:12])
}

// HasAddr reports whether any device holds ip (without prefix).
func (f Facts) HasAddr(ip string) bool {
	for _, a := range f.Addrs {
		if AddrIP(a.CIDR) == ip {
			return true
		}
	}
	return false
}

// AddrIP strips the prefix length from a CIDR.
func AddrIP(cidr string) string {
	for i := 0; i < len(cidr); i++ {
		if cidr[i] == '/' {
			return cidr[:i]
		}
	}
	return cidr
}
