package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Kind is the kind of a managed object. Its numeric order is the order in
// which creates and updates run on the way up; deletes run in reverse.
//
// Rules come before addresses on purpose: on NEW the "to ADDR iif lo lookup
// main" rule and the local-rule move must exist before ADDR becomes local,
// or NEW's own traffic to ADDR (the tunnel underlay among it) would loop back
// for a moment.
type Kind int

const (
	KindLink Kind = iota + 1
	KindSysctl
	KindRule
	KindAddr
	KindRoute
	KindNft
	// KindFile is last: the boot unit goes in once everything it
	// restores is applied, and is the first thing a rollback removes.
	KindFile
)

func (k Kind) String() string {
	switch k {
	case KindLink:
		return "link"
	case KindSysctl:
		return "sysctl"
	case KindRule:
		return "rule"
	case KindAddr:
		return "addr"
	case KindRoute:
		return "route"
	case KindNft:
		return "nft"
	case KindFile:
		return "file"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Object is one kernel object. Exactly one field is set.
type Object struct {
	Link   *Link     `json:"link,omitempty"`
	Sysctl *Sysctl   `json:"sysctl,omitempty"`
	Rule   *Rule     `json:"rule,omitempty"`
	Addr   *Addr     `json:"addr,omitempty"`
	Route  *Route    `json:"route,omitempty"`
	Nft    *NftTable `json:"nft,omitempty"`
	File   *File     `json:"file,omitempty"`
}

// Kind reports which field is set.
func (o Object) Kind() Kind {
	switch {
	case o.Link != nil:
		return KindLink
	case o.Sysctl != nil:
		return KindSysctl
	case o.Rule != nil:
		return KindRule
	case o.Addr != nil:
		return KindAddr
	case o.Route != nil:
		return KindRoute
	case o.Nft != nil:
		return KindNft
	case o.File != nil:
		return KindFile
	}
	return 0
}

// Key identifies the object on its host. Two objects with the same key are
// the same kernel object in two versions; an update replaces one by the other.
func (o Object) Key() string {
	switch {
	case o.Link != nil:
		return "link " + o.Link.Name
	case o.Sysctl != nil:
		return "sysctl " + o.Sysctl.Name
	case o.Rule != nil:
		return "rule " + o.Rule.selector()
	case o.Addr != nil:
		return "addr " + o.Addr.Dev + " " + o.Addr.CIDR.String()
	case o.Route != nil:
		r := o.Route
		return fmt.Sprintf("route v%d table %s %s %s", r.Family, TableName(r.Table), r.Type, r.Dst)
	case o.Nft != nil:
		return "nft table " + o.Nft.Family + " " + o.Nft.Name
	case o.File != nil:
		return "file " + o.File.Path
	}
	return "empty"
}

// String is the one-line human description used in plans and journals.
func (o Object) String() string {
	switch {
	case o.Link != nil:
		return o.Link.String()
	case o.Sysctl != nil:
		return o.Sysctl.Name + " = " + o.Sysctl.Value
	case o.Rule != nil:
		return o.Rule.String()
	case o.Addr != nil:
		s := o.Addr.CIDR.String() + " dev " + o.Addr.Dev
		if o.Addr.NoDAD {
			s += " nodad"
		}
		if o.Addr.NoPrefixRoute {
			s += " noprefixroute"
		}
		return s
	case o.Route != nil:
		return o.Route.String()
	case o.Nft != nil:
		return o.Nft.String()
	case o.File != nil:
		return o.File.String()
	}
	return "empty"
}

// Equal compares two objects by canonical JSON.
func (o Object) Equal(p Object) bool {
	a, _ := json.Marshal(o)
	b, _ := json.Marshal(p)
	return bytes.Equal(a, b)
}

// Link is a tunnel device migrate owns.
type Link struct {
	Name   string     `json:"name"`
	Type   TunnelType `json:"type"`           // vxlan | gre | ip6gre | wireguard (never direct)
	Local  netip.Addr `json:"local"`          // none ("") for wireguard (it listens on every address)
	Remote netip.Addr `json:"remote"`         // wireguard: the peer's endpoint address
	VNI    uint32     `json:"vni,omitempty"`  // vxlan
	Port   uint16     `json:"port,omitempty"` // vxlan UDP destination port; wireguard listen (and peer) port
	Key    uint32     `json:"key,omitempty"`  // gre
	// WireGuard: the peer's and this end's public keys (base64). The
	// private key stays in the agent's state directory on the host.
	PeerKey   string `json:"peer_key,omitempty"`
	PublicKey string `json:"public_key,omitempty"`
	// MAC is a vxlan device's Ethernet address, fixed by migrate: a
	// device made again (a reboot, a repair) keeps it, so the peer's
	// neighbour entry for it stays right instead of pointing at a MAC
	// that is gone until it expires.
	MAC string `json:"mac,omitempty"`
	MTU int    `json:"mtu"`
	Up  bool   `json:"up"`
}

// ChangesInPlace reports whether device l can become to without being
// made again: its MTU, up flag and Ethernet address change in place, and
// so do a WireGuard device's keys, port and peer. Anything else (the
// type, the endpoints, a VXLAN's VNI or port, a GRE key) needs a new
// device, which the agent makes keeping the old one's addresses, routes
// and sysctls.
func (l Link) ChangesInPlace(to Link) bool {
	if l.Name != to.Name {
		return false
	}
	if l.Type == WireGuard && to.Type == WireGuard {
		return true
	}
	l.MTU, to.MTU, l.Up, to.Up, l.MAC, to.MAC = 0, 0, false, false, "", ""
	return l == to
}

func (l Link) String() string {
	s := fmt.Sprintf("%s type %s local %s remote %s", l.Name, l.Type, ipText(l.Local), ipText(l.Remote))
	if l.Type == WireGuard {
		s = fmt.Sprintf("%s type wireguard listen-port %d public-key %s peer %s endpoint %s", l.Name, l.Port, l.PublicKey, l.PeerKey, net.JoinHostPort(ipText(l.Remote), fmt.Sprint(l.Port)))
	}
	if l.Type == VXLAN {
		s += fmt.Sprintf(" vni %d dstport %d", l.VNI, l.Port)
		if l.MAC != "" {
			s += " address " + l.MAC
		}
	}
	if l.Key != 0 {
		s += fmt.Sprintf(" key %d", l.Key)
	}
	s += fmt.Sprintf(" mtu %d", l.MTU)
	if l.Up {
		s += " up"
	}
	return s
}

// Sysctl is one value under /proc/sys, named with dots
// (net.ipv4.conf.mig0.rp_filter).
type Sysctl struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Well-known routing tables.
const (
	TableLocal = 255
	TableMain  = 254
)

// TableName renders a table id the way `ip rule` does.
func TableName(t int) string {
	switch t {
	case TableLocal:
		return "local"
	case TableMain:
		return "main"
	case 253:
		return "default"
	}
	return fmt.Sprint(t)
}

// Rule is one policy-routing rule. Every field but Protocol is part of its
// identity.
type Rule struct {
	Family   int          `json:"family"` // 4 or 6
	Priority int          `json:"priority"`
	Src      netip.Prefix `json:"src,omitzero"` // none: from all
	Dst      netip.Prefix `json:"dst,omitzero"` // none: to all
	IifName  string       `json:"iif,omitempty"`
	Mark     uint32       `json:"mark,omitempty"`
	Mask     uint32       `json:"mask,omitempty"` // 0: no fwmark match
	Table    int          `json:"table"`
	Protocol uint8        `json:"protocol,omitempty"`
}

// Bare reports a rule without selector: from all, to all, any interface,
// no fwmark.
func (r Rule) Bare() bool {
	return !r.Src.IsValid() && !r.Dst.IsValid() && r.IifName == "" && r.Mark == 0 && r.Mask == 0
}

func (r Rule) selector() string {
	var b strings.Builder
	fmt.Fprintf(&b, "v%d pref %d", r.Family, r.Priority)
	if r.Src.IsValid() {
		b.WriteString(" from " + r.Src.String())
	}
	if r.Dst.IsValid() {
		b.WriteString(" to " + r.Dst.String())
	}
	if r.IifName != "" {
		b.WriteString(" iif " + r.IifName)
	}
	if r.Mask != 0 {
		fmt.Fprintf(&b, " fwmark %#x/%#x", r.Mark, r.Mask)
	}
	b.WriteString(" lookup " + TableName(r.Table))
	return b.String()
}

// String is the selector plus the protocol tag. The protocol is not part of
// the key: re-creating the kernel's own local rule must carry its original
// protocol, but it is still the same rule.
func (r Rule) String() string {
	if r.Protocol != 0 {
		return fmt.Sprintf("%s proto %d", r.selector(), r.Protocol)
	}
	return r.selector()
}

// Addr is one address on a device.
type Addr struct {
	Dev   string       `json:"dev"`
	CIDR  netip.Prefix `json:"cidr"` // the address with its prefix length: 192.0.2.1/24
	NoDAD bool         `json:"nodad,omitempty"`
	// NoPrefixRoute: no connected route in main for the prefix. An IPv6
	// /128 on lo otherwise gets "ADDR dev lo" in main, which would catch
	// NEW's own traffic to the address after "to ADDR iif lo lookup main".
	NoPrefixRoute bool `json:"noprefixroute,omitempty"`
}

// Route is one route in a table migrate owns.
type Route struct {
	Family   int          `json:"family"`
	Table    int          `json:"table"`
	Type     string       `json:"type"` // unicast | throw
	Dst      netip.Prefix `json:"dst"`  // 0.0.0.0/0 or ::/0 for default
	Dev      string       `json:"dev,omitempty"`
	Gw       netip.Addr   `json:"gw,omitzero"`
	Protocol uint8        `json:"protocol,omitempty"`
}

func (r Route) String() string {
	s := fmt.Sprintf("table %s", TableName(r.Table))
	if r.Type != "unicast" {
		s += " " + r.Type
	}
	s += " " + r.Dst.String()
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s
}

// File is a file migrate installs outside its state directory: the
// systemd unit that restores the host's part at boot, its enable link
// (BootUnitFiles), and the drop-ins that restore it after a service undid
// part of it (BootDropInPath, DropInServices). Content is a regular file's text,
// Link a symlink's target; one of them is set.
type File struct {
	Path    string `json:"path"`
	Content string `json:"content,omitempty"`
	Link    string `json:"link,omitempty"`
}

func (f File) String() string {
	if f.Link != "" {
		return f.Path + " -> " + f.Link
	}
	sum := sha256.Sum256([]byte(f.Content))
	return fmt.Sprintf("%s (%d bytes, sha256 %x)", f.Path, len(f.Content), sum[:6])
}
