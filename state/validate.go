package state

// Validation: one rule per fact. Every state type that crosses the wire
// has a Validate method; the CLI (plan: before any host is touched), the
// agent (every request, before anything reaches the kernel) and the nft
// renderer call the same methods, so they cannot disagree. A value that
// passes is in range for every field the kernel code uses (names become
// /proc/sys paths, file names and netlink attributes). Each error names
// the field, says what is wrong and what is allowed.

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Limits on the sizes of values.
const (
	MaxListLen      = 1_000_000 // nft services, accounted, no-ARP, flows
	MaxFactsTables  = 64
	MaxFactsSysctls = 4096
	maxSysctlName   = 255
	maxSysctlValue  = 256
	maxIfname       = 15 // IFNAMSIZ - 1
	// MaxFileSize bounds a file object's content (and what the agent
	// reads at a file's path).
	MaxFileSize = 64 << 10
)

const (
	ifnameRule     = `must be 1..15 bytes without "/", ":", whitespace or control characters, and not "." or ".." (e.g. mig0)`
	sysctlNameRule = `must be dotted components of letters, digits, _ - * (e.g. net.ipv4.ip_forward)`
	nftNameRule    = `must be a letter followed by up to 31 letters, digits, _ or - (e.g. migrate)`
	ipRule         = `must be an IPv4 or IPv6 address without zone (e.g. 192.0.2.1 or 2001:db8::1)`
	prefixRule     = `must be an address with a prefix length (e.g. 192.0.2.0/24 or 2001:db8::/32)`
	u32Rule        = `1..4294967295`
)

var nftNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,31}$`)

// Validate checks a step and the objects in it. Host is not checked: the
// agent does not use it.
func (s Step) Validate() error {
	switch s.Action {
	case Create:
		if s.After == nil || s.Before != nil {
			return errors.New("a create step needs an object after and none before")
		}
		return s.After.Validate()
	case Delete:
		if s.Before == nil || s.After != nil {
			return errors.New("a delete step needs an object before and none after")
		}
		return s.Before.Validate()
	case Update:
		if s.Before == nil || s.After == nil {
			return errors.New("an update step needs an object before and after")
		}
		if err := s.Before.Validate(); err != nil {
			return fmt.Errorf("before: %w", err)
		}
		if err := s.After.Validate(); err != nil {
			return fmt.Errorf("after: %w", err)
		}
		if kb, ka := s.Before.Key(), s.After.Key(); kb != ka {
			return fmt.Errorf("an update must keep the object's key, but before is %s and after is %s", show(kb), show(ka))
		}
		return nil
	}
	return fmt.Errorf("action %s: must be create, update or delete", show(string(s.Action)))
}

// Validate checks that exactly one field is set, and that object.
func (o Object) Validate() error {
	var set []string
	for _, k := range []struct {
		name string
		set  bool
	}{
		{"link", o.Link != nil}, {"sysctl", o.Sysctl != nil}, {"rule", o.Rule != nil},
		{"addr", o.Addr != nil}, {"route", o.Route != nil}, {"nft", o.Nft != nil},
		{"file", o.File != nil},
	} {
		if k.set {
			set = append(set, k.name)
		}
	}
	switch len(set) {
	case 0:
		return errors.New("empty object: set exactly one of link, sysctl, rule, addr, route, nft, file")
	case 1:
	default:
		return fmt.Errorf("object sets %s: set exactly one of link, sysctl, rule, addr, route, nft, file", strings.Join(set, " and "))
	}
	switch {
	case o.Link != nil:
		return o.Link.Validate()
	case o.Sysctl != nil:
		return o.Sysctl.Validate()
	case o.Rule != nil:
		return o.Rule.Validate()
	case o.Addr != nil:
		return o.Addr.Validate()
	case o.Route != nil:
		return o.Route.Validate()
	case o.File != nil:
		return o.File.Validate()
	default:
		return o.Nft.Validate()
	}
}

// CheckIfname reports what is wrong with a Linux interface name, as the
// kernel's dev_valid_name sees it; control characters are refused too.
func CheckIfname(what, name string) error {
	bad := name == "" || len(name) > maxIfname || name == "." || name == ".."
	for i := 0; i < len(name) && !bad; i++ {
		c := name[i]
		bad = c == '/' || c == ':' || c <= ' ' || c == 0x7f
	}
	if bad {
		return fmt.Errorf("%s %s: %s", what, show(name), ifnameRule)
	}
	return nil
}

// ParseIP parses an address the way the kernel code will read it: no
// zone, and no IPv4-mapped IPv6 form (net.ParseIP would take it for
// IPv4). what names the field in the error.
func ParseIP(what, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s %s: %s", what, show(s), ipRule)
	}
	if err := CheckIP(what, a); err != nil {
		return netip.Addr{}, err
	}
	return a, nil
}

// CheckIP checks an address as the kernel code will use it: set (the zero
// Addr is what an empty string decodes to), without zone, and not in the
// IPv4-mapped IPv6 form (the kernel code would take it for IPv4). what
// names the field in the error.
func CheckIP(what string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%s \"\": %s", what, ipRule)
	case a.Zone() != "":
		return fmt.Errorf("%s %s: %s", what, show(a.String()), ipRule)
	case a.Is4In6():
		return fmt.Errorf("%s %s: IPv4-mapped IPv6 addresses are not allowed; write the IPv4 address (e.g. %s)", what, show(a.String()), a.Unmap())
	}
	return nil
}

// ipText is an address as written in errors: "" for none.
func ipText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// CheckPrefix checks an address with a prefix length, as CheckIP does an
// address (a zone cannot occur: a prefix with one does not parse).
func CheckPrefix(what string, p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return fmt.Errorf("%s \"\": %s", what, prefixRule)
	case p.Addr().Is4In6():
		return fmt.Errorf("%s %s: IPv4-mapped IPv6 prefixes are not allowed; write an IPv4 prefix", what, show(p.String()))
	}
	return nil
}

func famOf(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

func checkFamily(what string, f int) error {
	if f != 4 && f != 6 {
		return fmt.Errorf("%s family %d: must be 4 or 6", what, f)
	}
	return nil
}

// CheckU32 checks a table ID or similar: 1..2^32-1.
func CheckU32(what string, v int) error {
	if v < 1 || int64(v) > math.MaxUint32 {
		return fmt.Errorf("%s %d: must be %s", what, v, u32Rule)
	}
	return nil
}

func checkPrefixOfFamily(what string, p netip.Prefix, fam int) error {
	if err := CheckPrefix(what, p); err != nil {
		return err
	}
	if famOf(p.Addr()) != fam {
		return fmt.Errorf("%s %s: must be an IPv%d prefix, like the family of the object", what, show(p.String()), fam)
	}
	return nil
}

// Validate checks a tunnel link.
func (l Link) Validate() error {
	if err := CheckIfname("link name", l.Name); err != nil {
		return err
	}
	switch l.Type {
	case "vxlan", "gre", "ip6gre", "wireguard":
	default:
		return fmt.Errorf("link %s type %s: must be vxlan, gre, ip6gre or wireguard", l.Name, show(string(l.Type)))
	}
	if l.Type == WireGuard {
		return l.validateWG()
	}
	if l.PeerKey != "" || l.PublicKey != "" {
		return fmt.Errorf("link %s: peer_key and public_key are only for wireguard links", l.Name)
	}
	if err := CheckIP("link "+l.Name+" local", l.Local); err != nil {
		return err
	}
	if err := CheckIP("link "+l.Name+" remote", l.Remote); err != nil {
		return err
	}
	local, remote := l.Local, l.Remote
	if local.Is4() != remote.Is4() {
		return fmt.Errorf("link %s: local %s and remote %s must be of the same address family", l.Name, local, remote)
	}
	switch {
	case l.Type == GRE && !local.Is4():
		return fmt.Errorf("link %s: gre needs IPv4 local and remote addresses, not %s (use ip6gre for IPv6)", l.Name, local)
	case l.Type == IP6GRE && local.Is4():
		return fmt.Errorf("link %s: ip6gre needs IPv6 local and remote addresses, not %s (use gre for IPv4)", l.Name, local)
	}
	if l.Type == VXLAN && (l.VNI < 1 || l.VNI > 1<<24-1) {
		return fmt.Errorf("link %s vni %d: must be 1..16777215 for vxlan", l.Name, l.VNI)
	}
	if l.MAC != "" {
		mac, err := net.ParseMAC(l.MAC)
		if l.Type != VXLAN || err != nil || len(mac) != 6 || mac[0]&1 != 0 || mac[0]&2 == 0 || mac.String() != l.MAC {
			return fmt.Errorf("link %s address %s: only a vxlan link has one, a locally administered unicast MAC written like 02:6d:67:fe:2a:01", l.Name, show(l.MAC))
		}
	}
	// Port is a uint16: when set it is 1..65535.
	return l.validateMTU()
}

func (l Link) validateMTU() error {
	if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
		return fmt.Errorf("link %s mtu %d: must be 68..65535, or 0 to leave it to the kernel", l.Name, l.MTU)
	}
	return nil
}

// validateWG checks a wireguard link: a remote endpoint and no local one
// (the device listens on every address), a listen port, the peer's public
// key and, when given, this host's: base64 of 32 bytes.
func (l Link) validateWG() error {
	if l.Local.IsValid() {
		return fmt.Errorf("link %s: a wireguard link has no local address, not %s", l.Name, show(l.Local.String()))
	}
	if err := CheckIP("link "+l.Name+" remote", l.Remote); err != nil {
		return err
	}
	if l.Port == 0 {
		return fmt.Errorf("link %s: a wireguard link needs a port (1..65535)", l.Name)
	}
	if l.VNI != 0 || l.Key != 0 {
		return fmt.Errorf("link %s: vni and key are not for wireguard links", l.Name)
	}
	if err := checkWGKey("link "+l.Name+" peer_key", l.PeerKey); err != nil {
		return err
	}
	if l.PublicKey != "" {
		if err := checkWGKey("link "+l.Name+" public_key", l.PublicKey); err != nil {
			return err
		}
	}
	return l.validateMTU()
}

// checkWGKey checks a WireGuard public key: standard base64 of 32 bytes.
func checkWGKey(what, s string) error {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 || len(s) != 44 {
		return fmt.Errorf("%s %s: must be a WireGuard key, base64 of 32 bytes", what, show(s))
	}
	return nil
}

// CheckSysctlName checks a dotted sysctl name; it becomes a path under
// /proc/sys, so only net.ipv4 and net.ipv6 names of plain components pass:
// letters, digits, _ and -, no empty component (hence no ".."). With
// wildcard, a component may be "*" (facts requests only).
//
// The one exception is the device in net.ipv{4,6}.{conf,neigh}.DEV.NAME:
// interface names may hold "." (eth0.100), which sysctl(8) and the agent's
// kernel code write as "/" (net.ipv4.conf.eth0/100.rp_filter), and facts
// report them so. There, the component with each "/" read as "." must be a
// valid interface name: a single path component, never "." or "..", so
// the "/" can never separate path components.
func CheckSysctlName(name string, wildcard bool) error {
	if len(name) > maxSysctlName {
		return fmt.Errorf("sysctl name %s: must be at most %d bytes", show(name), maxSysctlName)
	}
	parts := strings.Split(name, ".")
	devAt := -1
	if len(parts) >= 5 && (parts[2] == "conf" || parts[2] == "neigh") {
		devAt = 3
	}
	for i, p := range parts {
		if p == "" {
			return fmt.Errorf("sysctl name %s: %s", show(name), sysctlNameRule)
		}
		if p == "*" {
			continue
		}
		if i == devAt && strings.Contains(p, "/") {
			if CheckIfname("", strings.ReplaceAll(p, "/", ".")) != nil {
				return fmt.Errorf("sysctl name %s: device %s: with each \"/\" read as \".\", %s", show(name), show(p), ifnameRule)
			}
			continue
		}
		for j := 0; j < len(p); j++ {
			if !IsWordByte(p[j]) {
				return fmt.Errorf("sysctl name %s: %s", show(name), sysctlNameRule)
			}
		}
	}
	// Beyond net.ipv4 and net.ipv6, exactly one name: the conntrack
	// limit, which apply may raise (and rollback restores).
	if name != ConntrackMax && (len(parts) < 3 || parts[0] != "net" || (parts[1] != "ipv4" && parts[1] != "ipv6")) {
		return fmt.Errorf("sysctl name %s: only net.ipv4.*, net.ipv6.* and %s are allowed (e.g. net.ipv4.ip_forward)", show(name), ConntrackMax)
	}
	if !wildcard {
		for _, p := range parts {
			if p == "*" {
				return fmt.Errorf("sysctl name %s: a step names one sysctl; \"*\" components are only allowed in facts requests", show(name))
			}
		}
	}
	return nil
}

// IsWordByte reports letters, digits, '_' and '-'.
func IsWordByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// Validate checks a sysctl of a step. The value is what is written to the
// file: printable ASCII, at most 256 bytes, no newline. Tabs are allowed,
// as the kernel separates multi-value sysctls (tcp_rmem) with them and a
// value read in facts must be restorable.
func (s Sysctl) Validate() error {
	if err := CheckSysctlName(s.Name, false); err != nil {
		return err
	}
	bad := len(s.Value) > maxSysctlValue
	for i := 0; i < len(s.Value) && !bad; i++ {
		c := s.Value[i]
		bad = (c < ' ' || c > '~') && c != '\t'
	}
	if bad {
		return fmt.Errorf("sysctl %s value %s: must be at most %d bytes of printable ASCII (tabs allowed, no newline)", s.Name, show(s.Value), maxSysctlValue)
	}
	return nil
}

// Validate checks a policy-routing rule.
func (r Rule) Validate() error {
	if err := checkFamily("rule", r.Family); err != nil {
		return err
	}
	if r.Priority < 0 || int64(r.Priority) > math.MaxUint32 {
		return fmt.Errorf("rule priority %d: must be 0..4294967295", r.Priority)
	}
	if r.Src.IsValid() {
		if err := checkPrefixOfFamily("rule src", r.Src, r.Family); err != nil {
			return err
		}
	}
	if r.Dst.IsValid() {
		if err := checkPrefixOfFamily("rule dst", r.Dst, r.Family); err != nil {
			return err
		}
	}
	if err := CheckU32("rule table", r.Table); err != nil {
		return err
	}
	if r.IifName != "" {
		if err := CheckIfname("rule iif", r.IifName); err != nil {
			return err
		}
	}
	if r.Mask == 0 && r.Mark != 0 {
		return fmt.Errorf("rule fwmark %#x with mask 0: a mark needs a non-zero mask (mask 0 means no fwmark match, and then mark must be 0)", r.Mark)
	}
	return nil
}

// Validate checks an address on a device.
func (a Addr) Validate() error {
	if err := CheckIfname("addr dev", a.Dev); err != nil {
		return err
	}
	return CheckPrefix("addr cidr", a.CIDR)
}

// Validate checks a route.
func (r Route) Validate() error {
	if err := checkFamily("route", r.Family); err != nil {
		return err
	}
	switch r.Type {
	case "unicast", "throw", "blackhole", "unreachable", "prohibit":
	default:
		return fmt.Errorf("route type %s: must be unicast, throw, blackhole, unreachable or prohibit", show(r.Type))
	}
	if err := checkPrefixOfFamily("route dst", r.Dst, r.Family); err != nil {
		return err
	}
	if r.Gw.IsValid() {
		if err := CheckIP("route gw", r.Gw); err != nil {
			return err
		}
		if famOf(r.Gw) != r.Family {
			return fmt.Errorf("route gw %s: must be an IPv%d address, like the route", r.Gw, r.Family)
		}
	}
	if r.Dev != "" {
		if err := CheckIfname("route dev", r.Dev); err != nil {
			return err
		}
	}
	return CheckU32("route table", r.Table)
}

// CheckNftName checks the name of an nft table.
func CheckNftName(name string) error {
	if !nftNameRE.MatchString(name) {
		return fmt.Errorf("nft table name %s: %s", show(name), nftNameRule)
	}
	return nil
}

// Validate checks migrate's nft table: family inet, a plain name, a
// valid spec.
func (t NftTable) Validate() error {
	if t.Family != "inet" {
		return fmt.Errorf("nft table family %s: must be inet", show(t.Family))
	}
	if err := CheckNftName(t.Name); err != nil {
		return err
	}
	return t.Spec.Validate()
}

// Validate checks a spec as the renderer needs it: every rule the
// renderer relies on is here, so a spec that passes renders.
//
// Percents: a service in Services is moved, in full (100) or as a canary
// (1..99), so its percent is 1..100; a 0 % service would render a canary
// chain that never takes a flow, and the renderer always refused it
// (the agent used to accept 0..100, so such a step failed in the kernel
// after passing the agent's checks). Accounted, UDPServices and forwards
// are not split: their percent is 0.
func (s NftSpec) Validate() error {
	if err := s.Role.Validate(); err != nil {
		return fmt.Errorf("nft %w", err)
	}
	// A host with forwards and no tunnel has neither a tunnel device nor
	// a tunnel mark.
	tunnel := s.TunnelDev != "" || len(s.Forwards) == 0 && s.ForwardMark == 0
	if tunnel {
		if err := CheckIfname("nft tunnel_dev", s.TunnelDev); err != nil {
			return err
		}
		if s.Mark == 0 {
			return errors.New("nft mark 0: must be a non-zero 32-bit mark")
		}
	}
	if len(s.Forwards) > MaxListLen {
		return fmt.Errorf("nft forwards: %d entries, at most %d allowed", len(s.Forwards), MaxListLen)
	}
	if len(s.Forwards) > 0 && s.ForwardMark == 0 {
		return errors.New("nft forward_mark 0: forwards need a non-zero 32-bit mark")
	}
	if s.TunnelDev != "" && s.ForwardMark&s.Mark != 0 {
		return fmt.Errorf("nft forward_mark %#x overlaps the tunnel mark %#x: they must share no bit", s.ForwardMark, s.Mark)
	}
	forwards := map[string]NftForward{}
	for _, f := range s.Forwards {
		if err := f.Validate(); err != nil {
			return err
		}
		k := f.service().Key()
		if prev, ok := forwards[k]; ok && (prev.To != f.To || prev.ToPort != f.ToPort) {
			return fmt.Errorf("nft forward %s goes to %s port %d and to %s port %d: a forward has one destination", k, prev.To, prev.ToPort, f.To, f.ToPort)
		}
		forwards[k] = f
	}
	if err := checkServices("nft services", s.Services, true); err != nil {
		return err
	}
	percentOf := map[string]int{}
	for _, sv := range s.Services {
		k := sv.Key()
		if p, ok := percentOf[k]; ok && p != sv.Percent {
			return fmt.Errorf("nft services %s: listed at %d %% and at %d %%: a service has one percent", k, p, sv.Percent)
		}
		percentOf[k] = sv.Percent
		if _, ok := forwards[k]; ok {
			return fmt.Errorf("nft services %s: also a forward: an address, protocol and port is a service or a forward, not both", k)
		}
	}
	if err := checkServices("nft accounted", s.Accounted, false); err != nil {
		return err
	}
	if err := checkServices("nft udp_services", s.UDPServices, false); err != nil {
		return err
	}
	for _, sv := range s.UDPServices {
		if sv.Proto != UDP {
			return fmt.Errorf("nft udp_services %s: must be udp, without a percent", sv.Key())
		}
	}
	if len(s.UDPServices) > 0 && (s.Role != RoleNew || s.TunnelDev == "") {
		return errors.New("nft udp_services: only for role new with a tunnel device")
	}
	if (len(s.Services) > 0 || len(s.Accounted) > 0) && (s.Role != RoleOld || s.TunnelDev == "") {
		return errors.New("nft services/accounted: only for role old with a tunnel device")
	}
	if u := s.Underlay; u != nil {
		if s.TunnelDev == "" {
			return errors.New("nft underlay: only with a tunnel device")
		}
		if err := u.Validate(); err != nil {
			return err
		}
	}
	// A guard drops every forwarded packet that is none of migrate's; with
	// nothing of migrate's to forward it would only cut the host's routing.
	if (s.Guard4 || s.Guard6) && !(s.Role == RoleOld && s.TunnelDev != "") && s.ForwardMark == 0 {
		return errors.New("nft guard4/guard6: a guard needs migrate's own forwarded flows to let through (a tunnel on role old, or a forward mark)")
	}
	if s.KeepDest && (s.Role != RoleOld || s.TunnelDev == "" || s.Mark == 0) {
		return errors.New("nft keep_dest: only for role old with a tunnel and a mark")
	}
	if s.DNATReplies && (s.Role != RoleNew || s.TunnelDev == "" || s.Mark == 0) {
		return errors.New("nft dnat_replies: only for role new with a tunnel and a mark")
	}
	if len(s.NoARP) > MaxListLen {
		return fmt.Errorf("nft no_arp: %d entries, at most %d allowed", len(s.NoARP), MaxListLen)
	}
	if len(s.NoARP) > 0 && s.Role != RoleNew {
		return errors.New("nft no_arp: only for role new")
	}
	for _, a := range s.NoARP {
		if err := CheckIP("nft no_arp", a); err != nil {
			return err
		}
		if !a.Is4() {
			return fmt.Errorf("nft no_arp %s: must be an IPv4 address (ARP is IPv4 only)", a)
		}
	}
	if len(s.PeerSrc) > 0 && (s.Role != RoleOld || s.TunnelDev == "") {
		return errors.New("nft peer_src: only for role old with a tunnel device (the segment of a direct tunnel)")
	}
	if len(s.PeerSrc) > MaxListLen {
		return fmt.Errorf("nft peer_src: %d entries, at most %d allowed", len(s.PeerSrc), MaxListLen)
	}
	for _, a := range s.PeerSrc {
		if err := CheckIP("nft peer_src", a); err != nil {
			return err
		}
	}
	if len(s.PeerDst) > 0 && !s.DNATReplies {
		return errors.New("nft peer_dst: only with dnat_replies (role new with a tunnel device: the segment of a direct tunnel)")
	}
	if len(s.PeerDst) > MaxListLen {
		return fmt.Errorf("nft peer_dst: %d entries, at most %d allowed", len(s.PeerDst), MaxListLen)
	}
	for _, a := range s.PeerDst {
		if err := CheckIP("nft peer_dst", a); err != nil {
			return err
		}
	}
	return nil
}

func (f NftForward) service() NftService {
	return NftService{Addr: f.Addr, Proto: f.Proto, Port: f.Port}
}

// Validate checks one forward: a service (without percent) and a
// destination of the same family on a non-zero port.
func (f NftForward) Validate() error {
	if err := f.service().validate("nft forwards", false); err != nil {
		return err
	}
	if err := CheckIP("nft forward to", f.To); err != nil {
		return err
	}
	if f.Addr.Is4() != f.To.Is4() {
		return fmt.Errorf("nft forward %s to %s: both must be of the same address family", f.Addr, f.To)
	}
	if f.ToPort == 0 {
		return fmt.Errorf("nft forward %s %s %d: to_port 0 must be 1..65535", f.Addr, f.Proto, f.Port)
	}
	return nil
}

// Validate checks the underlay filter: udp with a port, or gre without
// one; local and peer addresses of one family.
func (u NftUnderlay) Validate() error {
	switch u.Proto {
	case "udp":
		if u.Port == 0 {
			return errors.New("nft underlay udp port 0: must be 1..65535")
		}
	case "gre":
		if u.Port != 0 {
			return fmt.Errorf("nft underlay gre port %d: gre has no port, must be 0", u.Port)
		}
	default:
		return fmt.Errorf("nft underlay proto %s: must be udp or gre", show(u.Proto))
	}
	if err := CheckIP("nft underlay local", u.Local); err != nil {
		return err
	}
	if err := CheckIP("nft underlay peer", u.Peer); err != nil {
		return err
	}
	if u.Local.Is4() != u.Peer.Is4() {
		return fmt.Errorf("nft underlay: local %s and peer %s must be of the same address family", u.Local, u.Peer)
	}
	return nil
}

func checkServices(what string, svcs []NftService, split bool) error {
	if len(svcs) > MaxListLen {
		return fmt.Errorf("%s: %d entries, at most %d allowed", what, len(svcs), MaxListLen)
	}
	for _, sv := range svcs {
		if err := sv.validate(what, split); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks one (address, protocol, port) that is not split: its
// percent is 0 (Accounted, UDPServices, facts' Flows).
func (sv NftService) Validate() error { return sv.validate("service", false) }

// ValidateMoved checks one service of NftSpec.Services: its percent is
// 1..100 (100: every new flow moves; below: a canary).
func (sv NftService) ValidateMoved() error { return sv.validate("service", true) }

func (sv NftService) validate(what string, split bool) error {
	if err := CheckIP(what+" addr", sv.Addr); err != nil {
		return err
	}
	if err := sv.Proto.Validate(); err != nil {
		return fmt.Errorf("%s %s %w", what, sv.Addr, err)
	}
	if sv.Port == 0 {
		return fmt.Errorf("%s %s %s port 0: must be 1..65535", what, sv.Addr, sv.Proto)
	}
	switch {
	case split && (sv.Percent < 1 || sv.Percent > 100):
		return fmt.Errorf("%s %s: percent %d must be 1..100 (100: every new flow moves; 1..99: a canary)", what, sv.Key(), sv.Percent)
	case !split && sv.Percent != 0:
		return fmt.Errorf("%s %s: percent %d must be 0 (only moved services have one)", what, sv.Key(), sv.Percent)
	}
	return nil
}

// Validate checks a facts request. Sysctl names may have "*" components
// here.
func (r FactsRequest) Validate() error {
	if len(r.Tables) > MaxFactsTables {
		return fmt.Errorf("%d tables: at most %d allowed", len(r.Tables), MaxFactsTables)
	}
	for _, t := range r.Tables {
		if err := CheckU32("table", t); err != nil {
			return err
		}
	}
	if len(r.Sysctls) > MaxFactsSysctls {
		return fmt.Errorf("%d sysctls: at most %d allowed", len(r.Sysctls), MaxFactsSysctls)
	}
	for _, name := range r.Sysctls {
		if err := CheckSysctlName(name, true); err != nil {
			return err
		}
	}
	if r.NftTable != "" {
		if err := CheckNftName(r.NftTable); err != nil {
			return err
		}
	}
	if r.Sockets && len(r.Flows) == 0 {
		return fmt.Errorf("sockets without flows: sockets are counted for the flows' services only")
	}
	return checkServices("flows", r.Flows, false)
}

// Validate checks a networkd report as the agent sends it.
func (n Networkd) Validate() error {
	switch {
	case n.PID < 0:
		return fmt.Errorf("networkd pid %d: must not be negative", n.PID)
	case !n.Running && (n.PID != 0 || n.ForeignRules || n.ForeignRoutes || len(n.Files) > 0):
		return fmt.Errorf("networkd: settings of a networkd that does not run")
	case n.Running && n.PID <= 0:
		return fmt.Errorf("networkd: running without a pid")
	case len(n.Files) > MaxNetworkdFiles:
		return fmt.Errorf("networkd: %d files, at most %d", len(n.Files), MaxNetworkdFiles)
	case len(n.Problems) > MaxNetworkdProblems:
		return fmt.Errorf("networkd: %d problems, at most %d", len(n.Problems), MaxNetworkdProblems)
	}
	for _, f := range n.Files {
		if !filepath.IsAbs(f) || filepath.Clean(f) != f || len(f) > 4096 || strings.ContainsRune(f, 0) {
			return fmt.Errorf("networkd file %s: must be an absolute, clean path", show(f))
		}
	}
	for _, p := range n.Problems {
		if len(p) > 1024 || strings.ContainsRune(p, 0) {
			return fmt.Errorf("networkd problem %s: longer than 1024 bytes or holds a NUL byte", show(p))
		}
	}
	return nil
}

// Validate checks a file object's shape. Which files the agent writes is
// its own rule (only the boot unit and its enable link).
func (f File) Validate() error {
	switch {
	case !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path || len(f.Path) > 4096:
		return fmt.Errorf("file path %s: must be an absolute, clean path", show(f.Path))
	case f.Link != "" && f.Content != "":
		return fmt.Errorf("file %s: set content or link, not both", show(f.Path))
	case len(f.Content) > MaxFileSize:
		return fmt.Errorf("file %s: content is %d bytes, more than %d", show(f.Path), len(f.Content), MaxFileSize)
	case strings.ContainsRune(f.Content, 0) || strings.ContainsRune(f.Link, 0):
		return fmt.Errorf("file %s: contains a NUL byte", show(f.Path))
	}
	return nil
}

// MaxFwRules bounds the rules the agent reports per firewall chain
// (Facts.FwRules): the first ones, in order, then one Opaque rule
// without verdict for the rest. MaxFwRulesTotal bounds them all: a
// chain past it gets that one rule only.
const (
	MaxFwRules      = 512
	MaxFwRulesTotal = 8192
	// MaxFwSetElements bounds a rule's set (L4Protos, Dports); a larger
	// one makes the rule Opaque.
	MaxFwSetElements = 64
)

// FwRuleChain says whether the agent reports the rules of this chain
// (Facts.FwRules), where ufw and firewalld keep what the operator
// allowed: ufw's user chains (ufw-user-input and ufw-user-forward in
// iptables-nft's table ip filter, ufw6-... in ip6 filter), and in
// firewalld 1.x's table inet firewalld the filter chains a packet goes
// through from its zone dispatch on (filter_INPUT_ZONES,
// filter_FORWARD_ZONES): the zones' and policies' chains.
//
// Also Docker's chains in iptables-nft's ip and ip6 filter tables
// (DockerFilterChains): FORWARD, whose policy Docker sets to drop, and
// the chains it jumps to, DOCKER-USER first. With them plan can tell
// whether what migrate forwards gets through, and status whether it
// certainly does not (DOCKER-USER emptied by hand or by configuration
// management). The rules of a base chain at the forward hook with policy
// drop are read in every table (FwRulesRead).
func FwRuleChain(family, table, chain string) bool {
	switch {
	case (family == "ip" || family == "ip6") && table == "filter" && DockerFilterChains[chain]:
		return true
	case family == "ip" && table == "filter":
		return chain == "ufw-user-input" || chain == "ufw-user-forward"
	case family == "ip6" && table == "filter":
		return chain == "ufw6-user-input" || chain == "ufw6-user-forward"
	case family == "inet" && table == "firewalld" && chain == "filter_PREROUTING":
		// Its IPv6 reverse-path filter, when IPv6_rpfilter is on.
		return true
	case family == "inet" && table == "firewalld":
		// 1.x's zone and policy chains, and before 0.9 (no
		// policies) the two forward dispatch chains and their zones'.
		for _, p := range []string{"filter_INPUT_ZONES", "filter_FORWARD_ZONES", "filter_INPUT_POLICIES_", "filter_FORWARD_POLICIES_", "filter_IN_", "filter_FWD_",
			"filter_FORWARD_IN_ZONES", "filter_FORWARD_OUT_ZONES", "filter_FWDI_", "filter_FWDO_"} {
			if strings.HasPrefix(chain, p) {
				return true
			}
		}
	}
	return false
}

// DockerFilterChains are the chains of Docker's iptables rules (20.10 to
// 28, iptables-nft) in table ip filter and ip6 filter that a forwarded
// packet can go through: FORWARD, DOCKER-USER (the operator's, first),
// Docker 28's DOCKER-FORWARD, -CT, -BRIDGE and -INTERNAL, the older
// DOCKER-ISOLATION-STAGE-1 and -2, and DOCKER.
var DockerFilterChains = map[string]bool{
	"FORWARD": true, "DOCKER-USER": true, "DOCKER-FORWARD": true, "DOCKER-CT": true, "DOCKER-BRIDGE": true,
	"DOCKER-INTERNAL": true, "DOCKER-ISOLATION-STAGE-1": true, "DOCKER-ISOLATION-STAGE-2": true, "DOCKER": true,
}

// FwRulesRead says whether the facts of a host whose chains are chains
// hold the rules of this chain: FwRuleChain names it, or it is a base
// chain at the forward or input hook with policy drop (any table: one of
// them drops what migrate forwards, or what arrives through the tunnel,
// unless its own rules accept it).
func FwRulesRead(chains []BaseChain, family, table, chain string) bool {
	if FwRuleChain(family, table, chain) {
		return true
	}
	for _, ch := range chains {
		if ch.Family == family && ch.Table == table && ch.Chain == chain {
			return ch.Filters() || (ch.Read && ch.Hook == "")
		}
	}
	return false
}

// Filters says whether ch is a base chain at the forward or input hook
// that can drop what migrate sends through: a filter chain, or one with
// policy drop. Its rules are read (FwRulesRead): with policy accept it
// still drops everything when one of its rules drops or rejects every
// packet (a final `counter drop`, iptables-services' `-A INPUT -j REJECT
// --reject-with icmp-host-prohibited`).
func (ch BaseChain) Filters() bool {
	return (ch.Hook == "forward" || ch.Hook == "input") && (ch.Type == "filter" || ch.Policy == "drop")
}

// ForwardDrop says whether ch is a base chain at the forward hook with
// policy drop.
func (ch BaseChain) ForwardDrop() bool {
	return ch.Hook == "forward" && ch.Policy == "drop"
}

// InputDrop says whether ch is a base chain at the input hook with
// policy drop.
func (ch BaseChain) InputDrop() bool {
	return ch.Hook == "input" && ch.Policy == "drop"
}

// L4ProtoNames are the names FwRule.L4Proto uses for these protocol
// numbers; any other is written as its number.
var L4ProtoNames = map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp", 132: "sctp", 136: "udplite"}

// checkNftChainName checks a chain name as nft allows it: 1..256
// printable ASCII bytes without whitespace.
func checkNftChainName(what, name string) error {
	bad := name == "" || len(name) > 256
	for i := 0; i < len(name) && !bad; i++ {
		bad = name[i] <= ' ' || name[i] > '~'
	}
	if bad {
		return fmt.Errorf("%s %s: must be 1..256 printable ASCII bytes without whitespace", what, show(name))
	}
	return nil
}

// Validate checks a firewall rule as the agent reports it.
func (r FwRule) Validate() error {
	want := map[string]string{"ip": "ipv4", "ip6": "ipv6", "inet": r.NfProto}[r.Family]
	if r.Family != "ip" && r.Family != "ip6" && r.Family != "inet" {
		return fmt.Errorf("firewall rule family %s: must be ip, ip6 or inet", show(r.Family))
	}
	if err := checkNftChainName("firewall rule table", r.Table); err != nil {
		return err
	}
	if err := checkNftChainName("firewall rule chain", r.Chain); err != nil {
		return err
	}
	switch {
	case r.NfProto != "" && r.NfProto != "ipv4" && r.NfProto != "ipv6":
		return fmt.Errorf("firewall rule nfproto %s: must be ipv4 or ipv6", show(r.NfProto))
	case r.NfProto != "" && r.Family != "inet":
		return fmt.Errorf("firewall rule nfproto %s: only in an inet table", r.NfProto)
	}
	for _, n := range []struct{ what, name string }{{"iifname", r.IifName}, {"oifname", r.OifName}} {
		if n.name != "" {
			if err := CheckIfname("firewall rule "+n.what, n.name); err != nil {
				return err
			}
		}
	}
	if r.L4Proto != "" {
		ok := false
		for _, name := range L4ProtoNames {
			ok = ok || r.L4Proto == name
		}
		if n, err := strconv.Atoi(r.L4Proto); err == nil && n >= 0 && n <= 255 && L4ProtoNames[uint8(n)] == "" && r.L4Proto == strconv.Itoa(n) {
			ok = true
		}
		if !ok {
			return fmt.Errorf("firewall rule l4proto %s: must be a protocol name (tcp, udp, gre, ...) or a number 0..255 without one", show(r.L4Proto))
		}
	}
	for _, a := range []struct {
		what string
		addr netip.Addr
	}{{"saddr", r.Saddr}, {"daddr", r.Daddr}} {
		if !a.addr.IsValid() {
			continue
		}
		if err := CheckIP("firewall rule "+a.what, a.addr); err != nil {
			return err
		}
		if fam := map[bool]string{true: "ipv4", false: "ipv6"}[a.addr.Is4()]; fam != want {
			return fmt.Errorf("firewall rule %s %s: not an address of the rule's family (%s table, nfproto %s)", a.what, a.addr, r.Family, show(r.NfProto))
		}
	}
	for _, n := range []struct {
		what string
		net  netip.Prefix
		addr netip.Addr
	}{{"saddr_net", r.SaddrNet, r.Saddr}, {"daddr_net", r.DaddrNet, r.Daddr}} {
		if !n.net.IsValid() {
			continue
		}
		if fam := map[bool]string{true: "ipv4", false: "ipv6"}[n.net.Addr().Is4()]; fam != want {
			return fmt.Errorf("firewall rule %s %s: not a prefix of the rule's family (%s table, nfproto %s)", n.what, n.net, r.Family, show(r.NfProto))
		}
		if n.net != n.net.Masked() || n.net.Bits() == n.net.Addr().BitLen() || n.addr.IsValid() {
			return fmt.Errorf("firewall rule %s %s: must be a masked prefix shorter than an address, without an address too", n.what, n.net)
		}
	}
	for _, n := range []struct {
		what  string
		spans [][2]netip.Addr
		one   bool
	}{{"saddrs", r.Saddrs, r.Saddr.IsValid() || r.SaddrNet.IsValid()}, {"daddrs", r.Daddrs, r.Daddr.IsValid() || r.DaddrNet.IsValid()}} {
		if len(n.spans) == 0 {
			continue
		}
		if n.one || len(n.spans) > MaxFwSetElements {
			return fmt.Errorf("firewall rule %s: at most %d spans, without an address or prefix too", n.what, MaxFwSetElements)
		}
		for _, sp := range n.spans {
			fam := map[bool]string{true: "ipv4", false: "ipv6"}[sp[0].Is4()]
			if !sp[0].IsValid() || !sp[1].IsValid() || sp[0].Is4() != sp[1].Is4() || fam != want || sp[1].Less(sp[0]) {
				return fmt.Errorf("firewall rule %s %s-%s: not a span of addresses of the rule's family (%s table, nfproto %s)", n.what, sp[0], sp[1], r.Family, show(r.NfProto))
			}
		}
	}
	if r.Dport != 0 && r.L4Proto == "" {
		return fmt.Errorf("firewall rule dport %d: needs an l4proto", r.Dport)
	}
	if len(r.L4Protos) > MaxFwSetElements || len(r.Dports) > MaxFwSetElements {
		return fmt.Errorf("firewall rule set: more than %d elements", MaxFwSetElements)
	}
	if (len(r.L4Protos) > 0 && r.L4Proto != "") || (len(r.Dports) > 0 && r.Dport != 0) {
		return fmt.Errorf("firewall rule: a protocol or port both single and in a set")
	}
	for _, p := range r.L4Protos {
		if p == "" {
			return fmt.Errorf("firewall rule l4protos: an empty protocol")
		}
	}
	if len(r.Dports) > 0 && r.L4Proto == "" {
		return fmt.Errorf("firewall rule dports: needs an l4proto")
	}
	for _, d := range r.Dports {
		if d[0] > d[1] {
			return fmt.Errorf("firewall rule dports %d-%d: not a span", d[0], d[1])
		}
	}
	if max := len(CtStateBits) + len(CtNatStates); len(r.CtState) > max {
		return fmt.Errorf("firewall rule ct state: %d states, at most %d", len(r.CtState), max)
	}
	for _, st := range r.CtState {
		known := slices.Contains(CtNatStates, st)
		for _, b := range CtStateBits {
			known = known || b.Name == st
		}
		if !known {
			return fmt.Errorf("firewall rule ct state %s: must be invalid, established, related, new, untracked, snat or dnat", show(st))
		}
	}
	switch v, chain, _ := strings.Cut(r.Verdict, " "); v {
	case "", "accept", "drop", "reject", "return":
		if chain != "" {
			return fmt.Errorf("firewall rule verdict %s: %s takes no chain", show(r.Verdict), v)
		}
	case "jump", "goto":
		if err := checkNftChainName("firewall rule verdict "+v, chain); err != nil {
			return err
		}
	default:
		return fmt.Errorf("firewall rule verdict %s: must be accept, drop, reject, return, jump CHAIN, goto CHAIN or none", show(r.Verdict))
	}
	return nil
}
