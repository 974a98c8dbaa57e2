package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/opsmigrate/migrate/state"
)

// parseSSH splits "user@host[:port]". host may be an IPv4 address, a DNS
// name, or an IPv6 address in brackets. The returned host has no brackets.
func parseSSH(s string) (user, host string, port int, reason string) {
	user, host, port, _, reason = parseSSHParts(s)
	if reason == "" && user == "" {
		return "", "", 0, "missing user"
	}
	return user, host, port, reason
}

// parseSSHParts is parseSSH with the user optional ("" when not given),
// for names that ~/.ssh/config completes. hasPort reports an explicit port.
func parseSSHParts(s string) (user, host string, port int, hasPort bool, reason string) {
	port = DefaultSSHPort
	if strings.Contains(s, "://") {
		return "", "", 0, false, "no URL scheme"
	}
	user, rest, found := strings.Cut(s, "@")
	if !found {
		user, rest = "", s
	}
	switch {
	case found && user == "":
		return "", "", 0, false, "empty user"
	case strings.IndexFunc(user, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return "", "", 0, false, "the user contains whitespace"
	case strings.Contains(rest, "@"):
		return "", "", 0, false, "more than one @"
	case rest == "":
		return "", "", 0, false, "missing host"
	}

	portStr := ""
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 {
			return "", "", 0, false, `missing "]"`
		}
		host = rest[1:end]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Is4In6() {
			return "", "", 0, false, "brackets are only for IPv6 addresses"
		}
		if a.IsUnspecified() || a.IsMulticast() {
			return "", "", 0, false, "not a host address"
		}
		after := rest[end+1:]
		if after != "" {
			if after[0] != ':' {
				return "", "", 0, false, `unexpected text after "]"`
			}
			portStr, hasPort = after[1:], true
		}
	} else {
		if strings.Count(rest, ":") > 1 {
			return "", "", 0, false, "IPv6 addresses must be in brackets"
		}
		host, portStr, hasPort = strings.Cut(rest, ":")
		if r := checkHostname(host); r != "" {
			return "", "", 0, false, r
		}
	}
	if hasPort {
		n, err := strconv.Atoi(portStr)
		if !isDigits(portStr) || err != nil || n < 1 || n > 65535 {
			return "", "", 0, false, fmt.Sprintf("invalid port %q", portStr)
		}
		port = n
	}
	return user, host, port, hasPort, ""
}

// checkHostname accepts an IPv4 address or a DNS name.
func checkHostname(h string) string {
	if h == "" {
		return "missing host"
	}
	if strings.Trim(h, "0123456789.") == "" {
		a, err := netip.ParseAddr(h)
		if err != nil {
			return fmt.Sprintf("%q is not a valid IPv4 address", h)
		}
		if a.IsUnspecified() || a.IsMulticast() {
			return "not a host address"
		}
		return ""
	}
	if len(h) > 253 {
		return "host name longer than 253 characters"
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Sprintf("%q is not a valid host name", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Sprintf("%q is not a valid host name", h)
			}
		}
	}
	return ""
}

// parseAddr parses a unicast IP address that can be routed: a service
// address or a tunnel endpoint.
func parseAddr(s string) (netip.Addr, string) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, "not an IP address"
	case a.Zone() != "":
		return a, "zones are not allowed"
	case a.Is4In6():
		return a, fmt.Sprintf("an IPv4-mapped IPv6 address (that is %s)", a.Unmap())
	case a.IsUnspecified():
		return a, "the unspecified address"
	case a.IsLoopback():
		return a, "a loopback address"
	case a.IsMulticast():
		return a, "a multicast address"
	}
	return a, ""
}

// parseInner parses an inner tunnel address with its prefix length.
func parseInner(s string) (netip.Prefix, string) {
	if !strings.Contains(s, "/") {
		return netip.Prefix{}, "missing prefix length"
	}
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return p, "not an address/prefix"
	case p.Addr().Is4In6():
		return p, "an IPv4-mapped IPv6 address"
	case p.Addr().IsUnspecified() || p.Addr().IsLoopback() || p.Addr().IsMulticast():
		return p, "not a unicast host address"
	}
	return p, ""
}

// innerHostReason rejects the network and broadcast addresses of a prefix
// that has room for others.
func innerHostReason(p netip.Prefix) string {
	a, bits := p.Addr(), p.Bits()
	if a.Is4() && bits <= 30 {
		if a == p.Masked().Addr() {
			return "the network address of its prefix"
		}
		if a == lastAddr(p) {
			return "the broadcast address of its prefix"
		}
	}
	if a.Is6() && bits <= 126 && a == p.Masked().Addr() {
		return "the subnet-router anycast address of its prefix"
	}
	return ""
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// checkIfname mirrors the kernel's dev_valid_name, restricted to printable
// ASCII.
func checkIfname(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > 15:
		return "longer than 15 characters"
	case s == "." || s == "..":
		return "not a usable name"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == ':' {
			return fmt.Sprintf("%q is not allowed", c)
		}
	}
	return ""
}

// expandHome expands a leading "~" or "~/".
func expandHome(path string) (string, string) {
	if path != "~" && !strings.HasPrefix(path, "~/") {
		if strings.HasPrefix(path, "~") {
			return "", `only "~/" is expanded, not ~user`
		}
		return path, ""
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", "cannot expand ~: the home directory is unknown ($HOME is not set)"
	}
	return filepath.Join(home, path[1:]), ""
}

type portElem struct {
	v   cty.Value
	rng hcl.Range
}

// portsArg reads the ports argument: a non-empty list of numbers and
// strings "N" or "N-M". It returns the ranges, each element's source range
// and the range of the whole expression.
func (p *parser) portsArg(a *attrSet) ([]PortRange, []hcl.Range, hcl.Range) {
	const example = `ports = [25, 465, "10000-10100"]`
	attr, ok := a.attrs["ports"]
	if !ok {
		a.missing("ports", example)
		return nil, nil, hcl.Range{}
	}
	whole := attr.Expr.Range()

	var elems []portElem
	if tup, ok := attr.Expr.(*hclsyntax.TupleConsExpr); ok {
		// Evaluate element by element so that errors point at the element.
		for _, e := range tup.Exprs {
			v, diags := e.Value(nil)
			if diags.HasErrors() {
				p.diags = append(p.diags, diags...)
				continue
			}
			elems = append(elems, portElem{v, e.Range()})
		}
		if len(tup.Exprs) == 0 {
			p.add(whole, fmt.Sprintf("empty ports in %s", a.ctx), "list at least one port, e.g. "+example)
			return nil, nil, whole
		}
	} else {
		v, _, ok := a.value("ports")
		if !ok {
			a.required("ports", example)
			return nil, nil, whole
		}
		t := v.Type()
		if !t.IsTupleType() && !t.IsListType() && !t.IsSetType() {
			p.add(whole, fmt.Sprintf("ports in %s must be a list, not %s", a.ctx, t.FriendlyName()),
				"write "+example)
			return nil, nil, whole
		}
		if v.LengthInt() == 0 {
			p.add(whole, fmt.Sprintf("empty ports in %s", a.ctx), "list at least one port, e.g. "+example)
			return nil, nil, whole
		}
		for it := v.ElementIterator(); it.Next(); {
			_, ev := it.Element()
			elems = append(elems, portElem{ev, whole})
		}
	}

	var out []PortRange
	var rngs []hcl.Range
	for _, e := range elems {
		r, summary, detail := parsePortValue(e.v)
		if summary != "" {
			p.add(e.rng, summary, detail)
			continue
		}
		out = append(out, r)
		rngs = append(rngs, e.rng)
	}
	return out, rngs, whole
}

// parsePortValue parses one ports element. On failure it returns the
// summary and detail of the problem.
func parsePortValue(v cty.Value) (PortRange, string, string) {
	v, _ = v.Unmark()
	switch {
	case v.IsNull():
		return PortRange{}, "invalid port null", portRule
	case v.Type() == cty.Number:
		n, ok := wholeNumber(v.AsBigFloat(), 1, 65535)
		if !ok {
			return PortRange{}, "invalid port " + numText(v.AsBigFloat()), portRule
		}
		return PortRange{uint16(n), uint16(n)}, "", ""
	case v.Type() == cty.String:
		return parsePortString(v.AsString())
	default:
		return PortRange{}, "invalid port of type " + v.Type().FriendlyName(), portRule
	}
}

func parsePortString(s string) (PortRange, string, string) {
	one := func(x string) (uint16, bool) {
		if !isDigits(x) || len(x) > 5 {
			return 0, false
		}
		n, _ := strconv.Atoi(x)
		return uint16(n), n >= 1 && n <= 65535
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		n, ok := one(s)
		if !ok {
			return PortRange{}, fmt.Sprintf("invalid port %q", s), portRule
		}
		return PortRange{n, n}, "", ""
	}
	from, ok1 := one(lo)
	to, ok2 := one(hi)
	switch {
	case !ok1 || !ok2:
		return PortRange{}, fmt.Sprintf("invalid port range %q", s), portRule
	case from > to:
		return PortRange{}, fmt.Sprintf("invalid port range %q: the first port is greater than the last", s),
			fmt.Sprintf("write the lower port first, e.g. \"%d-%d\"", to, from)
	}
	return PortRange{from, to}, "", ""
}

// claim is an address, protocol and ports that a service or forward block
// takes for itself: what the overlap check compares.
type claim struct {
	kind       string // "service" | "forward"
	name       string
	addr       netip.Addr
	proto      state.Proto
	ports      []PortRange
	portRanges []hcl.Range // parallel to ports
	order      int         // file order among services and forwards
}

func (c *claim) String() string { return blockName(c.kind, c.name) }

type portEntry struct {
	c   *claim
	idx int // into c.ports
}

func (e portEntry) r() PortRange   { return e.c.ports[e.idx] }
func (e portEntry) rng() hcl.Range { return e.c.portRanges[e.idx] }
func (e portEntry) before(o portEntry) bool {
	if e.c.order != o.c.order {
		return e.c.order < o.c.order
	}
	return e.idx < o.idx
}

// claims lists the services and forwards whose address, protocol and ports
// are valid.
func (st *fileState) claims() []*claim {
	var out []*claim
	for _, si := range st.services {
		s := si.svc
		out = append(out, &claim{"service", s.Name, s.Address, s.Protocol, s.Ports, si.portRanges, si.order})
	}
	for _, fi := range st.forwards {
		f := fi.fwd
		out = append(out, &claim{"forward", f.Name, f.Address, f.Protocol, f.Ports, fi.portRanges, fi.order})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].order < out[j].order })
	return out
}

// checkOverlaps reports ports claimed twice for one address and protocol,
// within a service or forward, or across services and forwards, at the
// later of the two. Which host a forward is on does not matter: NEW holds
// the service addresses too.
func (p *parser) checkOverlaps(st *fileState) {
	type key struct {
		addr  netip.Addr
		proto state.Proto
	}
	groups := map[key][]portEntry{}
	var keys []key
	for _, c := range st.claims() {
		if !c.addr.IsValid() || c.proto == "" || len(c.ports) == 0 {
			continue
		}
		k := key{c.addr, c.proto}
		if _, seen := groups[k]; !seen {
			keys = append(keys, k)
		}
		for i := range c.ports {
			groups[k] = append(groups[k], portEntry{c, i})
		}
	}
	for _, k := range keys {
		es := groups[k]
		sort.SliceStable(es, func(i, j int) bool {
			if es[i].r().From != es[j].r().From {
				return es[i].r().From < es[j].r().From
			}
			return es[i].before(es[j])
		})
		reported := map[portEntry]bool{}
		reach := es[0] // the entry reaching furthest so far
		for _, cur := range es[1:] {
			if cur.r().From <= reach.r().To {
				later, first := cur, reach
				if !reach.before(cur) {
					later, first = reach, cur
				}
				if !reported[later] {
					reported[later] = true
					p.overlap(later, first)
				}
			}
			if cur.r().To > reach.r().To {
				reach = cur
			}
		}
	}
}

func (p *parser) overlap(later, first portEntry) {
	if later.c == first.c {
		p.add(later.rng(),
			fmt.Sprintf("port %s overlaps %s earlier in %s", later.r(), first.r(), later.c),
			"list each port once")
		return
	}
	c := later.c
	detail := fmt.Sprintf("a port of %s/%s belongs to one %s only", c.addr, c.proto, c.kind)
	if c.kind != first.c.kind {
		detail = fmt.Sprintf("%s/%s port %s is either a service or a forward, not both", c.addr, c.proto, later.r())
	}
	p.add(later.rng(),
		fmt.Sprintf("port %s of %s overlaps port %s of %s", later.r(), c, first.r(), first.c),
		fmt.Sprintf("%s; %s has it at %s", detail, first.c, pos(first.rng())))
}

// checkSelfCut refuses to migrate the address and port migrate reaches OLD
// on over SSH, and the tunnel's own VXLAN port on OLD's endpoint: either
// would send migrate's own traffic into the tunnel. Likewise a forward must
// not take the SSH address and port, or the VXLAN port, of the host it is
// on.
func (p *parser) checkSelfCut(st *fileState) {
	type cut struct {
		ssh   netip.AddrPort // valid when the host's SSH address is an IP
		vxlan netip.AddrPort // valid with a vxlan or wireguard tunnel
		what  string         // "VXLAN" or "WireGuard"
	}
	cuts := map[string]cut{}
	for _, r := range state.Roles {
		name := string(r)
		var c cut
		if h := st.hosts[name]; h != nil && h.Address != "" {
			if a, err := netip.ParseAddr(h.Address); err == nil && h.Port > 0 && h.Port <= 65535 {
				c.ssh = netip.AddrPortFrom(a.WithZone(""), uint16(h.Port))
			}
		}
		if t := st.tunnel; t != nil && (t.Type == state.VXLAN || t.Type == state.WireGuard) {
			port, what := t.Port, "VXLAN"
			if t.Type == state.WireGuard {
				port, what = t.ListenPort, "WireGuard"
			}
			// The tunnel's socket is on the bind address when the host
			// is behind NAT: that is what its kernel sees.
			ep := t.OldEndpoint
			if t.OldBind.IsValid() {
				ep = t.OldBind
			}
			if name == string(state.RoleNew) {
				ep = t.NewEndpoint
				if t.NewBind.IsValid() {
					ep = t.NewBind
				}
			}
			if ep.IsValid() && port > 0 && port <= 65535 {
				c.vxlan, c.what = netip.AddrPortFrom(ep, uint16(port)), what
			}
		}
		cuts[name] = c
	}
	hits := func(ap netip.AddrPort, addr netip.Addr, r PortRange) bool {
		return ap.IsValid() && ap.Addr() == addr && inRange(r, int(ap.Port()))
	}

	old := cuts[string(state.RoleOld)]
	for _, si := range st.services {
		s := si.svc
		if s.Stage != "canary" && s.Stage != "new" {
			continue
		}
		for i, r := range s.Ports {
			switch {
			case s.Protocol == state.TCP && hits(old.ssh, s.Address, r) && !s.AllowSSHMove:
				p.add(si.portRanges[i],
					fmt.Sprintf("service %q would migrate %s, where migrate reaches host \"old\" over SSH", s.Name, old.ssh),
					"migrate would cut its own connection; reach OLD on another address or port, leave this port out, or, if moving sshd is the point, set allow_ssh_move = true in this service")
			case s.Protocol == state.UDP && hits(old.vxlan, s.Address, r):
				p.add(si.portRanges[i],
					fmt.Sprintf("service %q would migrate %s/udp, the tunnel's own %s port", s.Name, old.vxlan, old.what),
					"the tunnel's packets would be sent into the tunnel; set another tunnel port or leave this port out")
			}
		}
	}

	// ip6gre drops, on the sending side, every IPv6 packet whose source is
	// the tunnel's remote address (a loop guard in ip6gre_xmit_ipv6). NEW
	// answers an IPv6 service from the service address, and NEW's remote
	// is old_endpoint: with both the same address, no IPv6 answer would
	// ever leave NEW.
	if t := st.tunnel; t != nil && t.Type == state.IP6GRE && t.OldEndpoint.IsValid() {
		for _, si := range st.services {
			if s := si.svc; s.Address == t.OldEndpoint {
				p.add(s.Range,
					fmt.Sprintf("service %q uses %s, the tunnel's old_endpoint, over an ip6gre tunnel", s.Name, s.Address),
					"the kernel's ip6gre drops every packet whose source is its remote endpoint, so NEW's answers from that address would never leave; use another of OLD's addresses as old_endpoint, or type = \"vxlan\"")
			}
		}
	}

	for _, fi := range st.forwards {
		f := fi.fwd
		if f.On == "" {
			continue
		}
		c := cuts[string(f.On)]
		for i, r := range f.Ports {
			switch {
			case f.Protocol == state.TCP && hits(c.ssh, f.Address, r):
				p.add(fi.portRanges[i],
					fmt.Sprintf("forward %q would forward %s away, where migrate reaches host %q over SSH", f.Name, c.ssh, f.On),
					fmt.Sprintf("migrate would cut its own connection; reach %s on another address or port, or leave this port out", strings.ToUpper(string(f.On))))
			case f.Protocol == state.UDP && hits(c.vxlan, f.Address, r):
				p.add(fi.portRanges[i],
					fmt.Sprintf("forward %q would forward %s/udp away, the tunnel's own %s port on host %q", f.Name, c.vxlan, c.what, f.On),
					"the tunnel's packets would be forwarded away; set another tunnel port or leave this port out")
			}
		}
	}
}

// checkNATService refuses a service at OLD's public address when the plan
// says OLD is behind NAT (old_bind): OLD's kernel never sees that address,
// the NAT rewrites it to the one OLD holds, so nothing could be marked.
// plan makes the same check against the live host when old_bind is left
// out.
func (p *parser) checkNATService(st *fileState) {
	t := st.tunnel
	if t == nil || !t.OldBind.IsValid() || !t.OldEndpoint.IsValid() {
		return
	}
	for _, si := range st.services {
		if si.svc.Address == t.OldEndpoint {
			p.add(si.defRange, fmt.Sprintf("service %q: address %s is OLD's public address (old_endpoint), but OLD is behind NAT and holds %s (old_bind)", si.svc.Name, si.svc.Address, t.OldBind),
				fmt.Sprintf("a service address is the one OLD's kernel sees: the NAT rewrites %s to %s before OLD receives a packet; write address = %q", t.OldEndpoint, t.OldBind, t.OldBind.String()))
		}
	}
}

func inRange(r PortRange, port int) bool {
	return port >= int(r.From) && port <= int(r.To)
}

// ParseSSH parses "user@host[:port]" as the ssh argument of a host block.
func ParseSSH(s string) (user, host string, port int, err error) {
	user, host, port, reason := parseSSH(s)
	if reason != "" {
		return "", "", 0, fmt.Errorf("invalid %q: %s; %s", s, reason, sshRule)
	}
	return user, host, port, nil
}
