package state

import "fmt"

// Role is the part a host plays: OLD hands its services over, NEW takes
// them. It is a string so that the JSON (plans, journals, the agent's
// wire) reads "old" and "new" as it always did.
type Role string

const (
	RoleOld Role = "old"
	RoleNew Role = "new"
)

// Roles are both roles, OLD first.
var Roles = []Role{RoleOld, RoleNew}

// Validate reports a role that is neither old nor new.
func (r Role) Validate() error {
	if r != RoleOld && r != RoleNew {
		return fmt.Errorf("role %s: must be old or new", show(string(r)))
	}
	return nil
}

// Proto is a transport protocol of a service or a forward.
type Proto string

const (
	TCP Proto = "tcp"
	UDP Proto = "udp"
)

// Validate reports a protocol that is neither tcp nor udp.
func (p Proto) Validate() error {
	if p != TCP && p != UDP {
		return fmt.Errorf("proto %s: must be tcp or udp", show(string(p)))
	}
	return nil
}

// TunnelType is the kind of tunnel between the hosts. Direct has no
// device (the hosts share a segment); the others are also Link types.
type TunnelType string

const (
	VXLAN     TunnelType = "vxlan"
	GRE       TunnelType = "gre"    // IPv4 endpoints
	IP6GRE    TunnelType = "ip6gre" // IPv6 endpoints
	WireGuard TunnelType = "wireguard"
	Direct    TunnelType = "direct" // one segment, no device
)

// Validate reports an unknown tunnel type.
func (t TunnelType) Validate() error {
	switch t {
	case VXLAN, GRE, IP6GRE, WireGuard, Direct:
		return nil
	}
	return fmt.Errorf("tunnel type %s: must be vxlan, gre, ip6gre, wireguard or direct", show(string(t)))
}

// IsLink reports whether the tunnel is a device migrate makes (a Link):
// every type but direct.
func (t TunnelType) IsLink() bool {
	switch t {
	case VXLAN, GRE, IP6GRE, WireGuard:
		return true
	}
	return false
}

// Show quotes a string for an error message, cut short when it is long:
// a hostile request must not make the answer huge.
func Show(s string) string {
	const max = 64
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:max], len(s))
}

func show(s string) string { return Show(s) }
