package agent

// Validation of request parameters. The agent runs as root and its input
// comes over a pipe, so every request is checked here, as a plain value,
// before anything reaches the Kernel: a request that passes is in range for
// every field the kernel code uses (names become /proc/sys paths, file names
// and netlink attributes). The checks are pure functions; each error says
// what is wrong and what is allowed.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// Limits on the sizes of lists in requests.
const (
	maxListLen      = 1_000_000 // nft services, accounted, no-ARP, flows
	maxFactsTables  = 64
	maxFactsSysctls = 4096
	maxSysctlName   = 255
	maxSysctlValue  = 256
	maxIfname       = 15 // IFNAMSIZ - 1
	maxRunID        = 64
)

const (
	ifnameRule     = `must be 1..15 bytes without "/", ":", whitespace or control characters, and not "." or ".." (e.g. mig0)`
	sysctlNameRule = `must be dotted components of letters, digits, _ - * (e.g. net.ipv4.ip_forward)`
	nftNameRule    = `must be a letter followed by up to 31 letters, digits, _ or - (e.g. migrate)`
	ipRule         = `must be an IPv4 or IPv6 address without zone (e.g. 192.0.2.1 or 2001:db8::1)`
	prefixRule     = `must be an address with a prefix length (e.g. 192.0.2.0/24 or 2001:db8::/32)`
	u32Rule        = `1..4294967295`
	runIDRule      = `must be 1..64 letters, digits, _ or - (e.g. 3f2a9c01d4e5b6a7)`
)

var nftNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,31}$`)

// show quotes a user-supplied string for an error message, cut short when
// it is long: a hostile request must not make the answer huge.
func show(s string) string {
	const max = 64
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:max], len(s))
}

// params decodes the params of req (a method dispatch knows) strictly and
// checks them with check. Unknown fields are an error: a field this agent
// does not know (a typo, or a newer CLI) is never silently ignored on a
// root-owned host. Missing params are an error too.
func params[T any](req proto.Request, check func(T) error) (T, error) {
	var p T
	if len(req.Params) == 0 {
		return p, fmt.Errorf("bad %s request: params missing", req.Method)
	}
	if err := decodeStrict(req.Params, &p); err != nil {
		return p, fmt.Errorf("bad %s request: %w", req.Method, err)
	}
	return p, check(p)
}

// noParams checks that a method without parameters got none: absent, null
// or {}.
func noParams(req proto.Request) error {
	if len(req.Params) == 0 {
		return nil
	}
	var p struct{}
	if err := decodeStrict(req.Params, &p); err != nil {
		return fmt.Errorf("bad %s request: it takes no params: %w", req.Method, err)
	}
	return nil
}

func decodeStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return clip(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the params object")
	}
	return nil
}

// clip cuts short the message of a JSON decoding error: an unknown field's
// name, or the text of a number that does not fit, is quoted in it and can
// be megabytes long.
func clip(err error) error {
	const max = 512
	if msg := err.Error(); len(msg) > max {
		return fmt.Errorf("%s... (error of %d bytes cut short)", msg[:max], len(msg))
	}
	return err
}

// validateApply checks an apply request: its step, and the run it belongs
// to when set.
func validateApply(p proto.ApplyParams) error {
	if err := validateStep(p.Step); err != nil {
		return err
	}
	if p.Run != "" {
		if err := checkRunID(p.Run); err != nil {
			return fmt.Errorf("bad apply request: run %w", err)
		}
	}
	if p.Seq < 0 {
		return fmt.Errorf("bad apply request: seq %d: must be 0 or more", p.Seq)
	}
	return nil
}

// checkRunID checks an identifier that may become part of a file name (a
// run ID, a lock ID).
func checkRunID(id string) error {
	if id == "" || len(id) > maxRunID {
		return fmt.Errorf("%s: %s", show(id), runIDRule)
	}
	for i := 0; i < len(id); i++ {
		if !isWordByte(id[i]) {
			return fmt.Errorf("%s: %s", show(id), runIDRule)
		}
	}
	return nil
}

// validateLock checks a lock request. The ID names the lock in messages
// and in `migrate force-unlock`; holder and operation are shown to other
// admins, so they must be short, printable text.
func validateLock(p proto.LockInfo) error {
	if err := checkRunID(p.ID); err != nil {
		return fmt.Errorf("bad lock request: id %w", err)
	}
	if err := checkText(p.Holder, 256); err != nil {
		return fmt.Errorf("bad lock request: holder %w", err)
	}
	if p.Operation == "" || len(p.Operation) > 32 || strings.IndexFunc(p.Operation, func(r rune) bool { return r >= utf8.RuneSelf || !isWordByte(byte(r)) }) >= 0 {
		return fmt.Errorf("bad lock request: operation %s: must be 1..32 letters, digits, _ or - (e.g. apply)", show(p.Operation))
	}
	return nil
}

// validateForceUnlock checks a force-unlock request.
func validateForceUnlock(p proto.ForceUnlockParams) error {
	if err := checkRunID(p.ID); err != nil {
		return fmt.Errorf("bad force-unlock request: id %w", err)
	}
	return nil
}

// validateArm checks an arm request. The run ID becomes part of file names
// (watchdog-RUN.log) and of the watchdog's command line.
func validateArm(p proto.ArmParams) error {
	if err := checkRunID(p.Run); err != nil {
		return fmt.Errorf("bad arm request: run %w", err)
	}
	if p.TimeoutMS <= 0 || p.TimeoutMS > maxTimerMS {
		return fmt.Errorf("bad arm request: timeout_ms %d: must be between 1 and %d", p.TimeoutMS, maxTimerMS)
	}
	return nil
}

// maxTimerMS bounds a revert timer or confirm grace: one day.
const maxTimerMS = 24 * 3600 * 1000

// validatePrepare checks a prepare request.
func validatePrepare(p proto.PrepareParams) error {
	if err := checkRunID(p.Run); err != nil {
		return fmt.Errorf("bad prepare request: run %w", err)
	}
	if p.GraceMS <= 0 || p.GraceMS > maxTimerMS {
		return fmt.Errorf("bad prepare request: grace_ms %d: must be between 1 and %d", p.GraceMS, maxTimerMS)
	}
	return nil
}

// validatePrune checks a prune request: run IDs as everywhere.
func validatePrune(p proto.PruneParams) error {
	for _, e := range p.Entries {
		if err := checkRunID(e.Run); err != nil {
			return fmt.Errorf("bad prune request: run %w", err)
		}
		if e.Seq <= 0 {
			return fmt.Errorf("bad prune request: seq %d", e.Seq)
		}
	}
	return nil
}

func validateJournalPage(p proto.JournalPageParams) error {
	if p.From < 0 {
		return fmt.Errorf("bad journal-page request: from %d", p.From)
	}
	return nil
}

// validateConfirm checks a confirm request. The run ID becomes part of a
// file name (confirmed-RUN).
func validateConfirm(p proto.ConfirmParams) error {
	if err := checkRunID(p.Run); err != nil {
		return fmt.Errorf("bad confirm request: run %w", err)
	}
	return nil
}

// checkText checks free text shown to humans: valid UTF-8 without control
// characters, at most max bytes.
func checkText(s string, max int) error {
	if s == "" || len(s) > max || !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) }) >= 0 {
		return fmt.Errorf("%s: must be 1..%d bytes of printable UTF-8 text", show(s), max)
	}
	return nil
}

// validateStep checks one step and the objects in it. Host is not checked:
// the agent does not use it.
func validateStep(s state.Step) error {
	if err := checkStep(s); err != nil {
		return fmt.Errorf("bad step: %w", err)
	}
	return nil
}

func checkStep(s state.Step) error {
	switch s.Action {
	case state.Create:
		if s.After == nil || s.Before != nil {
			return errors.New("a create step needs an object after and none before")
		}
		return checkObject(*s.After)
	case state.Delete:
		if s.Before == nil || s.After != nil {
			return errors.New("a delete step needs an object before and none after")
		}
		return checkObject(*s.Before)
	case state.Update:
		if s.Before == nil || s.After == nil {
			return errors.New("an update step needs an object before and after")
		}
		if err := checkObject(*s.Before); err != nil {
			return fmt.Errorf("before: %w", err)
		}
		if err := checkObject(*s.After); err != nil {
			return fmt.Errorf("after: %w", err)
		}
		if kb, ka := s.Before.Key(), s.After.Key(); kb != ka {
			return fmt.Errorf("an update must keep the object's key, but before is %s and after is %s", show(kb), show(ka))
		}
		return nil
	}
	return fmt.Errorf("action %s: must be create, update or delete", show(string(s.Action)))
}

func checkObject(o state.Object) error {
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
		return checkLink(*o.Link)
	case o.Sysctl != nil:
		return checkSysctl(*o.Sysctl)
	case o.Rule != nil:
		return checkRule(*o.Rule)
	case o.Addr != nil:
		return checkAddr(*o.Addr)
	case o.Route != nil:
		return checkRoute(*o.Route)
	case o.File != nil:
		return checkFile(*o.File)
	default:
		return checkNftTable(*o.Nft)
	}
}

// checkIfname reports what is wrong with a Linux interface name, as the
// kernel's dev_valid_name sees it; control characters are refused too.
func checkIfname(what, name string) error {
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

// parseIP parses an address the way the kernel code will read it: no zone,
// and no IPv4-mapped IPv6 form (net.ParseIP would take it for IPv4).
func parseIP(what, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%s %s: %s", what, show(s), ipRule)
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("%s %s: IPv4-mapped IPv6 addresses are not allowed; write the IPv4 address (e.g. %s)", what, show(s), a.Unmap())
	}
	return a, nil
}

func parsePrefix(what, s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s %s: %s", what, show(s), prefixRule)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%s %s: IPv4-mapped IPv6 prefixes are not allowed; write an IPv4 prefix", what, show(s))
	}
	return p, nil
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

// checkU32 checks a table ID or similar: 1..2^32-1.
func checkU32(what string, v int) error {
	if v < 1 || int64(v) > math.MaxUint32 {
		return fmt.Errorf("%s %d: must be %s", what, v, u32Rule)
	}
	return nil
}

func checkPrefixOfFamily(what, s string, fam int) error {
	p, err := parsePrefix(what, s)
	if err != nil {
		return err
	}
	if famOf(p.Addr()) != fam {
		return fmt.Errorf("%s %s: must be an IPv%d prefix, like the family of the object", what, show(s), fam)
	}
	return nil
}

func checkLink(l state.Link) error {
	if err := checkIfname("link name", l.Name); err != nil {
		return err
	}
	switch l.Type {
	case "vxlan", "gre", "ip6gre", "wireguard":
	default:
		return fmt.Errorf("link %s type %s: must be vxlan, gre, ip6gre or wireguard", l.Name, show(l.Type))
	}
	if l.Type == "wireguard" {
		return checkWGLink(l)
	}
	if l.PeerKey != "" || l.PublicKey != "" {
		return fmt.Errorf("link %s: peer_key and public_key are only for wireguard links", l.Name)
	}
	local, err := parseIP("link "+l.Name+" local", l.Local)
	if err != nil {
		return err
	}
	remote, err := parseIP("link "+l.Name+" remote", l.Remote)
	if err != nil {
		return err
	}
	if local.Is4() != remote.Is4() {
		return fmt.Errorf("link %s: local %s and remote %s must be of the same address family", l.Name, local, remote)
	}
	switch {
	case l.Type == "gre" && !local.Is4():
		return fmt.Errorf("link %s: gre needs IPv4 local and remote addresses, not %s (use ip6gre for IPv6)", l.Name, local)
	case l.Type == "ip6gre" && local.Is4():
		return fmt.Errorf("link %s: ip6gre needs IPv6 local and remote addresses, not %s (use gre for IPv4)", l.Name, local)
	}
	if l.Type == "vxlan" && (l.VNI < 1 || l.VNI > 1<<24-1) {
		return fmt.Errorf("link %s vni %d: must be 1..16777215 for vxlan", l.Name, l.VNI)
	}
	if l.MAC != "" {
		mac, err := net.ParseMAC(l.MAC)
		if l.Type != "vxlan" || err != nil || len(mac) != 6 || mac[0]&1 != 0 || mac[0]&2 == 0 || mac.String() != l.MAC {
			return fmt.Errorf("link %s address %s: only a vxlan link has one, a locally administered unicast MAC written like 02:6d:67:fe:2a:01", l.Name, show(l.MAC))
		}
	}
	// Port is a uint16: when set it is 1..65535.
	if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
		return fmt.Errorf("link %s mtu %d: must be 68..65535, or 0 to leave it to the kernel", l.Name, l.MTU)
	}
	return nil
}

// checkWGLink checks a wireguard link: a remote endpoint and no local one
// (the device listens on every address), a listen port, the peer's public
// key and, when given, this host's: base64 of 32 bytes.
func checkWGLink(l state.Link) error {
	if l.Local != "" {
		return fmt.Errorf("link %s: a wireguard link has no local address, not %s", l.Name, show(l.Local))
	}
	if _, err := parseIP("link "+l.Name+" remote", l.Remote); err != nil {
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
	if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
		return fmt.Errorf("link %s mtu %d: must be 68..65535, or 0 to leave it to the kernel", l.Name, l.MTU)
	}
	return nil
}

// checkWGKey checks a WireGuard public key: standard base64 of 32 bytes.
func checkWGKey(what, s string) error {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 || len(s) != 44 {
		return fmt.Errorf("%s %s: must be a WireGuard key, base64 of 32 bytes", what, show(s))
	}
	return nil
}

// checkSysctlName checks a dotted sysctl name; it becomes a path under
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
func checkSysctlName(name string, wildcard bool) error {
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
			if checkIfname("", strings.ReplaceAll(p, "/", ".")) != nil {
				return fmt.Errorf("sysctl name %s: device %s: with each \"/\" read as \".\", %s", show(name), show(p), ifnameRule)
			}
			continue
		}
		for j := 0; j < len(p); j++ {
			if !isWordByte(p[j]) {
				return fmt.Errorf("sysctl name %s: %s", show(name), sysctlNameRule)
			}
		}
	}
	// Beyond net.ipv4 and net.ipv6, exactly one name: the conntrack
	// limit, which apply may raise (and rollback restores).
	if name != state.ConntrackMax && (len(parts) < 3 || parts[0] != "net" || (parts[1] != "ipv4" && parts[1] != "ipv6")) {
		return fmt.Errorf("sysctl name %s: only net.ipv4.*, net.ipv6.* and %s are allowed (e.g. net.ipv4.ip_forward)", show(name), state.ConntrackMax)
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

// isWordByte reports letters, digits, '_' and '-'.
func isWordByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// checkSysctl checks a sysctl of a step. The value is what is written to
// the file: printable ASCII, at most 256 bytes, no newline. Tabs are
// allowed, as the kernel separates multi-value sysctls (tcp_rmem) with
// them and a value read in facts must be restorable.
func checkSysctl(s state.Sysctl) error {
	if err := checkSysctlName(s.Name, false); err != nil {
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

func checkRule(r state.Rule) error {
	if err := checkFamily("rule", r.Family); err != nil {
		return err
	}
	if r.Priority < 0 || int64(r.Priority) > math.MaxUint32 {
		return fmt.Errorf("rule priority %d: must be 0..4294967295", r.Priority)
	}
	if r.Src != "" {
		if err := checkPrefixOfFamily("rule src", r.Src, r.Family); err != nil {
			return err
		}
	}
	if r.Dst != "" {
		if err := checkPrefixOfFamily("rule dst", r.Dst, r.Family); err != nil {
			return err
		}
	}
	if err := checkU32("rule table", r.Table); err != nil {
		return err
	}
	if r.IifName != "" {
		if err := checkIfname("rule iif", r.IifName); err != nil {
			return err
		}
	}
	if r.Mask == 0 && r.Mark != 0 {
		return fmt.Errorf("rule fwmark %#x with mask 0: a mark needs a non-zero mask (mask 0 means no fwmark match, and then mark must be 0)", r.Mark)
	}
	return nil
}

func checkAddr(a state.Addr) error {
	if err := checkIfname("addr dev", a.Dev); err != nil {
		return err
	}
	_, err := parsePrefix("addr cidr", a.CIDR)
	return err
}

func checkRoute(r state.Route) error {
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
	if r.Gw != "" {
		gw, err := parseIP("route gw", r.Gw)
		if err != nil {
			return err
		}
		if famOf(gw) != r.Family {
			return fmt.Errorf("route gw %s: must be an IPv%d address, like the route", gw, r.Family)
		}
	}
	if r.Dev != "" {
		if err := checkIfname("route dev", r.Dev); err != nil {
			return err
		}
	}
	return checkU32("route table", r.Table)
}

func checkNftName(name string) error {
	if !nftNameRE.MatchString(name) {
		return fmt.Errorf("nft table name %s: %s", show(name), nftNameRule)
	}
	return nil
}

func checkNftTable(t state.NftTable) error {
	if t.Family != "inet" {
		return fmt.Errorf("nft table family %s: must be inet", show(t.Family))
	}
	if err := checkNftName(t.Name); err != nil {
		return err
	}
	s := t.Spec
	if s.Role != "old" && s.Role != "new" {
		return fmt.Errorf("nft role %s: must be old or new", show(s.Role))
	}
	// A host with forwards and no tunnel has neither a tunnel device nor
	// a tunnel mark.
	if s.TunnelDev != "" || len(s.Forwards) == 0 && s.ForwardMark == 0 {
		if err := checkIfname("nft tunnel_dev", s.TunnelDev); err != nil {
			return err
		}
		if s.Mark == 0 {
			return errors.New("nft mark 0: must be a non-zero 32-bit mark")
		}
	}
	if len(s.Forwards) > maxListLen {
		return fmt.Errorf("nft forwards: %d entries, at most %d allowed", len(s.Forwards), maxListLen)
	}
	if len(s.Forwards) > 0 && s.ForwardMark == 0 {
		return errors.New("nft forward_mark 0: forwards need a non-zero 32-bit mark")
	}
	for _, f := range s.Forwards {
		if err := checkService("nft forwards", state.NftService{Addr: f.Addr, Proto: f.Proto, Port: f.Port}); err != nil {
			return err
		}
		to, err := parseIP("nft forward to", f.To)
		if err != nil {
			return err
		}
		if from, _ := parseIP("", f.Addr); from.Is4() != to.Is4() {
			return fmt.Errorf("nft forward %s to %s: both must be of the same address family", f.Addr, f.To)
		}
		if f.ToPort == 0 {
			return fmt.Errorf("nft forward %s %s %d: to_port 0 must be 1..65535", f.Addr, f.Proto, f.Port)
		}
	}
	if err := checkServices("nft services", s.Services); err != nil {
		return err
	}
	if err := checkServices("nft accounted", s.Accounted); err != nil {
		return err
	}
	if err := checkServices("nft udp_services", s.UDPServices); err != nil {
		return err
	}
	for _, sv := range s.UDPServices {
		if sv.Proto != "udp" || sv.Percent != 0 {
			return fmt.Errorf("nft udp_services %s: must be udp, without a percent", sv.Key())
		}
	}
	if len(s.UDPServices) > 0 && (s.Role != "new" || s.TunnelDev == "") {
		return errors.New("nft udp_services: only for role new with a tunnel device")
	}
	if u := s.Underlay; u != nil {
		switch u.Proto {
		case "udp":
			if u.Port == 0 {
				return errors.New("nft underlay udp port 0: must be 1..65535")
			}
		case "gre":
		default:
			return fmt.Errorf("nft underlay proto %s: must be udp or gre", show(u.Proto))
		}
		local, err := parseIP("nft underlay local", u.Local)
		if err != nil {
			return err
		}
		peer, err := parseIP("nft underlay peer", u.Peer)
		if err != nil {
			return err
		}
		if local.Is4() != peer.Is4() {
			return fmt.Errorf("nft underlay: local %s and peer %s must be of the same address family", local, peer)
		}
	}
	// A guard drops every forwarded packet that is none of migrate's; with
	// nothing of migrate's to forward it would only cut the host's routing.
	if (s.Guard4 || s.Guard6) && !(s.Role == "old" && s.TunnelDev != "") && s.ForwardMark == 0 {
		return errors.New("nft guard4/guard6: a guard needs migrate's own forwarded flows to let through (a tunnel on role old, or a forward mark)")
	}
	if s.KeepDest && (s.Role != "old" || s.TunnelDev == "" || s.Mark == 0) {
		return errors.New("nft keep_dest: only for role old with a tunnel and a mark")
	}
	if s.DNATReplies && (s.Role != "new" || s.TunnelDev == "" || s.Mark == 0) {
		return errors.New("nft dnat_replies: only for role new with a tunnel and a mark")
	}
	if len(s.NoARP) > maxListLen {
		return fmt.Errorf("nft no_arp: %d entries, at most %d allowed", len(s.NoARP), maxListLen)
	}
	for _, a := range s.NoARP {
		ip, err := parseIP("nft no_arp", a)
		if err != nil {
			return err
		}
		if !ip.Is4() {
			return fmt.Errorf("nft no_arp %s: must be an IPv4 address (ARP is IPv4 only)", ip)
		}
	}
	if len(s.PeerSrc) > 0 && (s.Role != "old" || s.TunnelDev == "") {
		return errors.New("nft peer_src: only for role old with a tunnel device (the segment of a direct tunnel)")
	}
	if len(s.PeerSrc) > maxListLen {
		return fmt.Errorf("nft peer_src: %d entries, at most %d allowed", len(s.PeerSrc), maxListLen)
	}
	for _, a := range s.PeerSrc {
		if _, err := parseIP("nft peer_src", a); err != nil {
			return err
		}
	}
	if len(s.PeerDst) > 0 && !s.DNATReplies {
		return errors.New("nft peer_dst: only with dnat_replies (role new with a tunnel device: the segment of a direct tunnel)")
	}
	if len(s.PeerDst) > maxListLen {
		return fmt.Errorf("nft peer_dst: %d entries, at most %d allowed", len(s.PeerDst), maxListLen)
	}
	for _, a := range s.PeerDst {
		if _, err := parseIP("nft peer_dst", a); err != nil {
			return err
		}
	}
	return nil
}

func checkServices(what string, svcs []state.NftService) error {
	if len(svcs) > maxListLen {
		return fmt.Errorf("%s: %d entries, at most %d allowed", what, len(svcs), maxListLen)
	}
	for _, sv := range svcs {
		if err := checkService(what, sv); err != nil {
			return err
		}
	}
	return nil
}

func checkService(what string, sv state.NftService) error {
	if _, err := parseIP(what+" addr", sv.Addr); err != nil {
		return err
	}
	if sv.Proto != "tcp" && sv.Proto != "udp" {
		return fmt.Errorf("%s %s proto %s: must be tcp or udp", what, sv.Addr, show(sv.Proto))
	}
	if sv.Port == 0 {
		return fmt.Errorf("%s %s %s port 0: must be 1..65535", what, sv.Addr, sv.Proto)
	}
	if sv.Percent < 0 || sv.Percent > 100 {
		return fmt.Errorf("%s %s: percent %d must be 0..100", what, sv.Key(), sv.Percent)
	}
	return nil
}

// validateFactsRequest checks a facts request. Sysctl names may have "*"
// components here.
func validateFactsRequest(r state.FactsRequest) error {
	if err := checkFactsRequest(r); err != nil {
		return fmt.Errorf("bad facts request: %w", err)
	}
	return nil
}

func checkFactsRequest(r state.FactsRequest) error {
	if len(r.Tables) > maxFactsTables {
		return fmt.Errorf("%d tables: at most %d allowed", len(r.Tables), maxFactsTables)
	}
	for _, t := range r.Tables {
		if err := checkU32("table", t); err != nil {
			return err
		}
	}
	if len(r.Sysctls) > maxFactsSysctls {
		return fmt.Errorf("%d sysctls: at most %d allowed", len(r.Sysctls), maxFactsSysctls)
	}
	for _, name := range r.Sysctls {
		if err := checkSysctlName(name, true); err != nil {
			return err
		}
	}
	if r.NftTable != "" {
		if err := checkNftName(r.NftTable); err != nil {
			return err
		}
	}
	if r.Sockets && len(r.Flows) == 0 {
		return fmt.Errorf("sockets without flows: sockets are counted for the flows' services only")
	}
	return checkServices("flows", r.Flows)
}

// validatePing checks a ping request.
func validateProbe(p proto.ProbeParams) error {
	if _, err := parseIP("addr", p.Addr); err != nil {
		return fmt.Errorf("bad probe request: %w", err)
	}
	if p.Port == 0 {
		return fmt.Errorf("bad probe request: port 0: must be 1..65535")
	}
	if p.TimeoutMS < 1 || p.TimeoutMS > 60000 {
		return fmt.Errorf("bad probe request: timeout_ms %d: must be 1..60000", p.TimeoutMS)
	}
	return nil
}

func validateRouteGet(p proto.RouteGetParams) error {
	if _, err := parseIP("addr", p.Addr); err != nil {
		return fmt.Errorf("bad route-get request: %w", err)
	}
	return nil
}

func validateWGKey(p proto.WGKeyParams) error {
	if err := checkIfname("tunnel name", p.Name); err != nil {
		return fmt.Errorf("bad wg-key request: %w", err)
	}
	return nil
}

func validatePing(p proto.PingParams) error {
	if _, err := parseIP("addr", p.Addr); err != nil {
		return fmt.Errorf("bad ping request: %w", err)
	}
	if p.Count < 1 || p.Count > 100 {
		return fmt.Errorf("bad ping request: count %d: must be 1..100", p.Count)
	}
	if p.TimeoutMS < 1 || p.TimeoutMS > 60000 {
		return fmt.Errorf("bad ping request: timeout_ms %d: must be 1..60000", p.TimeoutMS)
	}
	return nil
}

// checkFile checks a file object's shape (which files: checkOwnedFile).
func checkFile(f state.File) error {
	switch {
	case !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path || len(f.Path) > 4096:
		return fmt.Errorf("file path %s: must be an absolute, clean path", show(f.Path))
	case f.Link != "" && f.Content != "":
		return fmt.Errorf("file %s: set content or link, not both", show(f.Path))
	case len(f.Content) > maxUnitSize:
		return fmt.Errorf("file %s: content is %d bytes, more than %d", show(f.Path), len(f.Content), maxUnitSize)
	case strings.ContainsRune(f.Content, 0) || strings.ContainsRune(f.Link, 0):
		return fmt.Errorf("file %s: contains a NUL byte", show(f.Path))
	}
	return nil
}
