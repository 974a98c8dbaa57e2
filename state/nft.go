package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
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
	Role      Role   `json:"role"`
	TunnelDev string `json:"tunnel_dev"` // flows arriving here are NEW's
	Mark      uint32 `json:"mark"`
	// Services are sorted by address, protocol, port. Each element is one
	// (address, protocol, port) whose new flows go into the tunnel:
	// all of them at Percent 100, a random Percent of them (canary)
	// below. Role "old" only.
	Services []NftService `json:"services,omitempty"`
	// Accounted are the (address, protocol, port) triples whose traffic
	// to NEW is counted: every service migrate has plumbed, whatever its
	// stage, so draining flows are counted too. Role "old" only.
	Accounted []NftService `json:"accounted,omitempty"`
	// Underlay, when set, makes the table drop encapsulated packets that
	// do not come from the peer's endpoint: GRE and VXLAN carry no
	// authentication.
	Underlay *NftUnderlay `json:"underlay,omitempty"`
	// NoARP lists IPv4 addresses migrate made local on NEW (on lo) that
	// must not be answered for in ARP on any interface. Role "new" only.
	NoARP []netip.Addr `json:"no_arp,omitempty"`
	// Forwards are in-kernel port bouncers on this host (either role):
	// new flows to (Addr, Proto, Port) are DNATed to (To, ToPort) and
	// masqueraded, marked with ForwardMark in conntrack so that only
	// they are masqueraded. Like services, a TCP flow is only taken when
	// its first packet is a bare SYN.
	Forwards    []NftForward `json:"forwards,omitempty"`
	ForwardMark uint32       `json:"forward_mark,omitempty"`
	// Guard4 and Guard6: the host did not forward IPv4 (IPv6) before
	// migrate switched forwarding on, so it must not become a router for
	// anyone else. Chain guard (hook forward) then accepts only migrate's
	// flows (role old: packets from the tunnel, and conntrack mark Mark:
	// flows to and from the tunnel; mark ForwardMark: forwards) and
	// counts and drops every other forwarded
	// packet of that family. A drop there is final whatever other tables
	// say.
	Guard4 bool `json:"guard4,omitempty"`
	Guard6 bool `json:"guard6,omitempty"`
	// PeerSrc is set for a direct tunnel on role old: TunnelDev is then
	// the shared segment's interface, which carries other hosts' traffic
	// too (the router's, clients'), so only packets arriving there with
	// one of these source addresses (the migrated addresses, local on
	// OLD: only NEW sends from them) count as NEW's. Empty: everything
	// from TunnelDev is NEW's (a tunnel device).
	PeerSrc []netip.Addr `json:"peer_src,omitempty"`
	// UDPServices are the UDP (address, protocol, port) triples of the
	// plan, on NEW: a datagram from the tunnel to one of them records
	// its client, and NEW's answers to that client leave from the
	// service address whatever the daemon bound (a wildcard socket lets
	// the kernel pick NEW's own address). Role "new" only.
	UDPServices []NftService `json:"udp_services,omitempty"`
	// KeepDest: another table DNATs in prerouting on this host (Docker's
	// published ports). Moved flows then get an identity DNAT just before
	// it, so they reach NEW with their own destination. Role "old" only.
	KeepDest bool `json:"keep_dest,omitempty"`
	// DNATReplies: another table DNATs in prerouting on this host. Flows
	// from the tunnel get conntrack mark Mark, and their answers arriving
	// on another interface (a container's) the packet mark, so that the
	// fwmark rule routes them back into the tunnel. Role "new" only.
	DNATReplies bool `json:"dnat_replies,omitempty"`
	// PeerDst is set with DNATReplies for a direct tunnel on role new:
	// TunnelDev is then the shared segment's interface, which carries
	// other hosts' flows too (to NEW's own published ports), so only
	// flows arriving there to one of these addresses get the mark: the
	// migrated addresses, local on NEW's lo, which NEW answers neither
	// ARP nor NDP for, so only OLD forwards flows to them through NEW's
	// segment interface. Empty: every new flow from TunnelDev is OLD's
	// (a tunnel device).
	PeerDst []netip.Addr `json:"peer_dst,omitempty"`
}

// NftForward is one forwarded (address, protocol, port).
type NftForward struct {
	Addr   netip.Addr `json:"addr"`
	Proto  Proto      `json:"proto"`
	Port   uint16     `json:"port"`
	To     netip.Addr `json:"to"`
	ToPort uint16     `json:"to_port"`
}

// NftService is one (address, protocol, port).
type NftService struct {
	Addr    netip.Addr `json:"addr"`
	Proto   Proto      `json:"proto"`
	Port    uint16     `json:"port"`
	Percent int        `json:"percent,omitempty"` // 1..100 in Services; 0 in Accounted
}

// Plumbed is every (address, protocol, port) of the spec's services,
// moved or only accounted, each once and without its percent: what a
// service left connections of on NEW could be.
func (s NftSpec) Plumbed() []NftService {
	seen := map[string]bool{}
	var out []NftService
	for _, l := range [][]NftService{s.Accounted, s.Services} {
		for _, e := range l {
			e.Percent = 0
			if !seen[e.Key()] {
				seen[e.Key()] = true
				out = append(out, e)
			}
		}
	}
	return out
}

// Key is "addr proto port", the key of counters and flow counts.
func (s NftService) Key() string { return fmt.Sprintf("%s %s %d", s.Addr, s.Proto, s.Port) }

// NftUnderlay describes the tunnel's outer packets on this host.
type NftUnderlay struct {
	Proto string     `json:"proto"`          // "udp" (vxlan) or "gre"
	Port  uint16     `json:"port,omitempty"` // udp destination port
	Local netip.Addr `json:"local"`          // this host's endpoint
	Peer  netip.Addr `json:"peer"`           // the only accepted source
}

// Digest is a short hash of the spec, stable across runs.
func (s NftSpec) Digest() string {
	b, _ := json.Marshal(plainSpec(s)) // the per-port form, as ever
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

func (t NftTable) String() string {
	s := t.Spec
	var parts []string
	if s.Role == RoleOld && s.TunnelDev != "" {
		full, canary := 0, 0
		for _, sv := range s.Services {
			if sv.Percent >= 100 {
				full++
			} else {
				canary++
			}
		}
		parts = append(parts, fmt.Sprintf("%d port(s) to NEW", full))
		if canary > 0 {
			parts = append(parts, fmt.Sprintf("%d canary port(s)", canary))
		}
		parts = append(parts, fmt.Sprintf("%d counted", len(s.Accounted)))
	}
	if len(s.Forwards) > 0 {
		parts = append(parts, fmt.Sprintf("%d forwarded port(s)", len(s.Forwards)))
	}
	if s.Guard4 || s.Guard6 {
		var fams []string
		if s.Guard4 {
			fams = append(fams, "ipv4")
		}
		if s.Guard6 {
			fams = append(fams, "ipv6")
		}
		parts = append(parts, fmt.Sprintf("forwards only its own %s", strings.Join(fams, "/")))
	}
	if len(s.PeerSrc) > 0 {
		parts = append(parts, fmt.Sprintf("NEW's packets: from %s on %s", joinAddrs(s.PeerSrc), s.TunnelDev))
	}
	if len(s.NoARP) > 0 {
		parts = append(parts, fmt.Sprintf("no ARP for %s", joinAddrs(s.NoARP)))
	}
	if len(s.UDPServices) > 0 {
		parts = append(parts, fmt.Sprintf("udp answers from the service address for %d port(s)", len(s.UDPServices)))
	}
	if s.KeepDest {
		parts = append(parts, "moved flows keep their destination (another table DNATs)")
	}
	if s.DNATReplies {
		parts = append(parts, "answers of flows another table DNATs go back to the tunnel")
	}
	if u := s.Underlay; u != nil {
		what := "gre"
		if u.Proto == "udp" {
			what = fmt.Sprintf("udp/%d", u.Port)
		}
		parts = append(parts, fmt.Sprintf("%s to %s only from %s", what, u.Local, u.Peer))
	}
	return fmt.Sprintf("table %s %s: role %s, mark %#x, %s (digest %s)", t.Family, t.Name, s.Role, s.Mark, strings.Join(parts, ", "), s.Digest())
}

func joinAddrs(l []netip.Addr) string {
	s := make([]string, len(l))
	for i, a := range l {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
