package config

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/opsmigrate/migrate/state"
)

const (
	sshExample   = `ssh = "root@198.51.100.10:22"`
	sshRule      = `write it as user@host[:port], e.g. "root@198.51.100.10:22" or "admin@[2001:db8::1]:22"`
	addrRule     = `write an IPv4 or IPv6 address, e.g. "198.51.100.10" or "2001:db8::10"`
	portRule     = `ports are 1..65535, written as 25 or "10000-10100"`
	hostNameRule = `host blocks are named "old" or "new", e.g. host "old" { ... }`
)

func (p *parser) hostBlock(st *fileState, blk *hclsyntax.Block) {
	name := ""
	switch len(blk.Labels) {
	case 0:
		p.add(blk.TypeRange, "host block without a name", hostNameRule)
	case 1:
		name = blk.Labels[0]
	default:
		name = blk.Labels[0]
		p.add(blk.LabelRanges[1], "host block with more than one name", hostNameRule)
	}
	keep := state.Role(name).Validate() == nil
	if name != "" && !keep {
		p.add(blk.LabelRanges[0], fmt.Sprintf("invalid host name %q", name), hostNameRule)
	}
	if keep {
		if first := st.hostBlocks[name]; first != nil {
			p.add(blk.LabelRanges[0],
				fmt.Sprintf("duplicate host %q block", name),
				fmt.Sprintf("there is exactly one host %q; the first is at %s", name, pos(first.DefRange())))
			return // its contents would only add noise
		}
		st.hostBlocks[name] = blk
	}
	ctx := "host"
	if name != "" {
		ctx = fmt.Sprintf("host %q", name)
	}

	a := p.attrSet(blk, ctx, hostArgs)
	h := &Host{Name: name, Port: DefaultSSHPort, Range: blk.Range()}

	sshArg, sshRange, sshOK := a.str("ssh", sshExample)
	var hasPort bool
	if sshOK {
		user, addr, port, explicitPort, reason := parseSSHParts(sshArg)
		if reason != "" {
			p.add(sshRange, fmt.Sprintf("invalid ssh %q in %s: %s", sshArg, ctx, reason), sshRule)
			sshOK = false
		} else {
			h.User, h.Address, h.Port, hasPort = user, addr, port, explicitPort
		}
	} else {
		a.required("ssh", sshExample)
	}

	if s, rng, ok := a.str("identity_file", `identity_file = "~/.ssh/id_ed25519"`); ok {
		if s == "" {
			p.add(rng, fmt.Sprintf("empty identity_file in %s", ctx),
				"give a key file, e.g. \"~/.ssh/id_ed25519\", or leave identity_file out to use ssh-agent")
		} else if path, reason := expandHome(s); reason != "" {
			p.add(rng, fmt.Sprintf("invalid identity_file %q in %s: %s", s, ctx, reason), "write a full path or one starting with ~/")
		} else {
			h.IdentityFile = path
		}
	}

	knownHosts, khRange, khSet := DefaultKnownHosts, blk.DefRange(), false
	if s, rng, ok := a.str("known_hosts", `known_hosts = "~/.ssh/known_hosts"`); ok {
		knownHosts, khRange, khSet = s, rng, true
		if s == "" {
			p.add(rng, fmt.Sprintf("empty known_hosts in %s", ctx),
				"give a known_hosts file, or leave known_hosts out for ~/.ssh/known_hosts; host keys are always verified")
			knownHosts = ""
		}
	}
	if knownHosts != "" {
		if path, reason := expandHome(knownHosts); reason != "" {
			p.add(khRange, fmt.Sprintf("invalid known_hosts %q in %s: %s", knownHosts, ctx, reason), "set known_hosts to a full path")
		} else {
			h.KnownHosts = path
		}
	}

	if b, _, ok := a.boolean("sudo"); ok {
		h.Sudo = b
	}

	if sshOK && keep {
		p.applySSHConfig(h, ctx, sshArg, sshRange, hasPort, khSet)
	}

	if keep {
		st.hosts[name] = h
	}
}

func (p *parser) tunnelBlock(st *fileState, blk *hclsyntax.Block) {
	if len(blk.Labels) > 0 {
		p.add(blk.LabelRanges[0], "tunnel block with a name", "write tunnel { ... } without a name")
	}
	if first := st.tunnelBlock; first != nil {
		p.add(blk.TypeRange, "duplicate tunnel block",
			fmt.Sprintf("only one tunnel is allowed; the first is at %s", pos(first.DefRange())))
		return // its contents would only add noise
	}
	st.tunnelBlock = blk

	a := p.attrSet(blk, "tunnel", tunnelArgs)
	t := &Tunnel{
		Name:     DefaultTunnelName,
		OldInner: DefaultOldInner,
		NewInner: DefaultNewInner,
		Mark:     DefaultMark,
		Table:    DefaultTable,
		Range:    blk.Range(),
	}

	const typeExample = `type = "vxlan"`
	typ, typeRange, typeOK := a.str("type", typeExample)
	if typeOK {
		if tt := state.TunnelType(typ); tt.Validate() == nil {
			t.Type = tt
		} else {
			p.add(typeRange, fmt.Sprintf("invalid tunnel type %q", typ), "use vxlan, gre, ip6gre, wireguard or direct (hosts on one segment)")
		}
	} else {
		a.required("type", typeExample)
	}

	oldEP, _, oldOK := p.addrArg(a, "old_endpoint", `old_endpoint = "198.51.100.10"`)
	newEP, newRange, newOK := p.addrArg(a, "new_endpoint", `new_endpoint = "203.0.113.20"`)
	if oldOK {
		t.OldEndpoint = oldEP
	}
	if oldOK && newOK {
		switch {
		case oldEP.Is4() != newEP.Is4():
			p.add(newRange,
				fmt.Sprintf("new_endpoint %s is %s but old_endpoint %s is %s", newEP, family(newEP), oldEP, family(oldEP)),
				"both tunnel endpoints must be of the same address family")
		case oldEP == newEP:
			p.add(newRange, fmt.Sprintf("new_endpoint %s is the same as old_endpoint", newEP),
				"the endpoints are the outer addresses of OLD and NEW and must differ")
		default:
			t.NewEndpoint = newEP
		}
	}
	ep := t.OldEndpoint
	if !ep.IsValid() && newOK {
		ep = newEP
	}
	if t.Type == state.Direct {
		// No device, no encapsulation: the packets cross the shared
		// segment as they are, so nothing of a tunnel device applies.
		for _, name := range []string{"old_bind", "new_bind", "name", "mtu", "vni", "port", "key", "listen_port", "old_inner", "new_inner"} {
			if a.has(name) {
				p.add(a.nameRange(name), fmt.Sprintf("%s is not valid for direct tunnels", name),
					"remove it; a direct tunnel has no device: the endpoints are the two hosts' addresses on their shared segment, and it may set mark and table")
			}
		}
		t.Name, t.OldInner, t.NewInner = "", netip.Prefix{}, netip.Prefix{}
		p.tunnelMarkTable(a, t)
		st.tunnel = t
		return
	}
	p.bindArgs(a, t, ep)
	switch {
	case t.Type == state.GRE && ep.IsValid() && ep.Is6():
		p.add(typeRange, "gre tunnels need IPv4 endpoints",
			`use type = "ip6gre" (or "vxlan") for IPv6 endpoints`)
	case t.Type == state.IP6GRE && ep.IsValid() && ep.Is4():
		p.add(typeRange, "ip6gre tunnels need IPv6 endpoints",
			`use type = "gre" (or "vxlan") for IPv4 endpoints`)
	}

	if s, rng, ok := a.str("name", `name = "mig0"`); ok {
		if reason := checkIfname(s); reason != "" {
			p.add(rng, fmt.Sprintf("invalid tunnel name %q: %s", s, reason),
				`interface names are 1..15 characters without "/", ":" or whitespace, e.g. "mig0"`)
		} else {
			t.Name = s
		}
	}

	if a.has("mtu") {
		lo, fam := int64(576), "IPv4"
		if ep.IsValid() && ep.Is6() {
			lo, fam = 1280, "IPv6"
		}
		rule := fmt.Sprintf("the MTU is %d..9000 with %s endpoints; leave mtu out to derive it from the underlay", lo, fam)
		if n, _, ok := a.intIn("mtu", lo, 9000, rule); ok {
			t.MTU = int(n)
		}
	}

	const vniRule = "a VNI is 1..16777215"
	const vxPortRule = "the VXLAN UDP port is 1..65535; the default is 4789"
	const keyRule = `a GRE key is a 32-bit number, e.g. 42 or "0x2a"; 0 means no key`
	const wgPortRule = "the WireGuard listen port is 1..65535; the default is 51820"
	if t.Type != state.WireGuard && a.has("listen_port") {
		p.add(a.nameRange("listen_port"), "listen_port is only valid for wireguard tunnels",
			`remove it, or set type = "wireguard"`)
	}
	switch t.Type {
	case "wireguard":
		t.ListenPort = DefaultWGPort
		if n, _, ok := a.intIn("listen_port", 1, 65535, wgPortRule); ok {
			t.ListenPort = int(n)
		}
		for _, name := range []string{"vni", "port", "key"} {
			if a.has(name) {
				p.add(a.nameRange(name), fmt.Sprintf("%s is not valid for wireguard tunnels", name),
					"remove it; wireguard tunnels may set listen_port")
			}
		}
	case "vxlan":
		t.VNI, t.Port = DefaultVNI, DefaultVXLANPort
		if n, _, ok := a.intIn("vni", 1, 1<<24-1, vniRule); ok {
			t.VNI = uint32(n)
		}
		if n, _, ok := a.intIn("port", 1, 65535, vxPortRule); ok {
			t.Port = int(n)
		}
		if a.has("key") {
			p.add(a.nameRange("key"), "key is only valid for gre and ip6gre tunnels", "remove it; vxlan tunnels use vni")
		}
	case "gre", "ip6gre":
		for _, name := range []string{"vni", "port"} {
			if a.has(name) {
				p.add(a.nameRange(name), fmt.Sprintf("%s is only valid for vxlan tunnels", name),
					fmt.Sprintf(`remove it, or set type = "vxlan"; %s tunnels may set key`, t.Type))
			}
		}
		if n, _, ok := a.uint32Arg("key", 0, keyRule); ok {
			t.Key = n
		}
	default:
		// Type unknown: still check the values themselves.
		a.intIn("vni", 1, 1<<24-1, vniRule)
		a.intIn("port", 1, 65535, vxPortRule)
		a.uint32Arg("key", 0, keyRule)
		a.intIn("listen_port", 1, 65535, wgPortRule)
	}

	p.innerArgs(a, t)
	p.tunnelMarkTable(a, t)
	st.tunnel = t
}

// tunnelMarkTable reads the tunnel's mark and routing table.
func (p *parser) tunnelMarkTable(a *attrSet, t *Tunnel) {
	if n, _, ok := a.uint32Arg("mark", 1, `the mark is a nonzero 32-bit number, e.g. 131072 or "0x20000"`); ok {
		t.Mark = n
	}

	const tableRule = "routing table IDs are 1..2147483647 except 253 (default), 254 (main) and 255 (local), e.g. 4242"
	if n, rng, ok := a.intIn("table", 1, 1<<31-1, tableRule); ok {
		if n >= 253 && n <= 255 {
			p.add(rng, fmt.Sprintf("routing table %d is reserved", n), tableRule)
		} else {
			t.Table = int(n)
		}
	}
}

// bindArgs reads the optional old_bind and new_bind: the address a host
// behind a 1:1 NAT holds, that its tunnel binds, while the peer sends to
// its endpoint. ep is an endpoint, for the family (invalid: unknown).
func (p *parser) bindArgs(a *attrSet, t *Tunnel, ep netip.Addr) {
	for _, b := range []struct {
		name, example, host string
		endpoint            netip.Addr
		dst                 *netip.Addr
	}{
		{"old_bind", `old_bind = "198.18.1.10"`, "OLD", t.OldEndpoint, &t.OldBind},
		{"new_bind", `new_bind = "198.18.0.20"`, "NEW", t.NewEndpoint, &t.NewBind},
	} {
		if !a.has(b.name) {
			continue
		}
		s, rng, ok := a.str(b.name, b.example)
		if !ok {
			continue
		}
		addr, reason := parseAddr(s)
		switch {
		case reason != "":
			p.add(rng, fmt.Sprintf("invalid %s %q in tunnel: %s", b.name, s, reason),
				fmt.Sprintf("write the address %s itself holds behind its NAT, e.g. %s; or leave %s out and plan finds it", b.host, b.example, b.name))
		case ep.IsValid() && addr.Is4() != ep.Is4():
			p.add(rng, fmt.Sprintf("%s %s is %s but the tunnel endpoints are %s", b.name, addr, family(addr), family(ep)),
				"a bind address is of the endpoints' family: the NAT maps one onto the other")
		case addr == t.OldEndpoint || addr == t.NewEndpoint:
			p.add(rng, fmt.Sprintf("%s %s is a tunnel endpoint", b.name, addr),
				fmt.Sprintf("%s is for a host behind NAT: the private address it holds, while its peer sends to the endpoint; leave it out when %s holds its endpoint", b.name, b.host))
		default:
			*b.dst = addr
		}
	}
	if t.OldBind.IsValid() && t.OldBind == t.NewBind {
		p.add(a.nameRange("new_bind"), fmt.Sprintf("new_bind %s is the same as old_bind", t.NewBind),
			"the two hosts bind different addresses")
		t.NewBind = netip.Addr{}
	}
}

// innerArgs reads and checks old_inner and new_inner.
func (p *parser) innerArgs(a *attrSet, t *Tunnel) {
	read := func(name, example string) (netip.Prefix, hcl.Range, bool) {
		s, rng, ok := a.str(name, example)
		if !ok {
			return netip.Prefix{}, rng, false
		}
		pfx, reason := parseInner(s)
		if reason != "" {
			p.add(rng, fmt.Sprintf("invalid %s %q: %s", name, s, reason),
				fmt.Sprintf("write an address with its prefix length, e.g. %s", example[len(name)+3:]))
			return netip.Prefix{}, rng, false
		}
		return pfx, rng, true
	}
	oldP, oldRange, oldOK := read("old_inner", `old_inner = "169.254.42.1/30"`)
	newP, newRange, newOK := read("new_inner", `new_inner = "169.254.42.2/30"`)
	if a.has("old_inner") && !oldOK || a.has("new_inner") && !newOK {
		return // already reported, or null: do not guess
	}
	if oldOK {
		t.OldInner = oldP
	}
	if newOK {
		t.NewInner = newP
	}
	if !oldOK && !newOK {
		return // defaults
	}
	// Report at the argument the user wrote, new_inner when both are.
	at := newRange
	if !newOK {
		at = oldRange
	}
	o, n := t.OldInner, t.NewInner
	switch {
	case o.Addr().Is4() != n.Addr().Is4() || o.Bits() != n.Bits() || o.Masked() != n.Masked():
		p.add(at, fmt.Sprintf("old_inner %s and new_inner %s are not in the same prefix", o, n),
			"give both inner addresses in one prefix, e.g. 169.254.42.1/30 and 169.254.42.2/30; set both when you change one")
	case o.Addr() == n.Addr():
		p.add(at, fmt.Sprintf("old_inner and new_inner are both %s", o.Addr()),
			"the two ends need different addresses in one prefix, e.g. 169.254.42.1/30 and 169.254.42.2/30")
	default:
		for _, x := range []struct {
			name string
			pfx  netip.Prefix
			rng  hcl.Range
			set  bool
		}{{"old_inner", o, oldRange, oldOK}, {"new_inner", n, newRange, newOK}} {
			if reason := innerHostReason(x.pfx); reason != "" {
				r := at
				if x.set {
					r = x.rng
				}
				p.add(r, fmt.Sprintf("%s %s is %s", x.name, x.pfx, reason),
					"use a host address of the prefix, e.g. 169.254.42.1/30 and 169.254.42.2/30")
			}
		}
	}
}

func (p *parser) serviceBlock(st *fileState, blk *hclsyntax.Block) {
	const nameRule = `name each service once with letters, digits, "-", "_" or ".", e.g. service "smtp" { ... }`
	name := ""
	switch len(blk.Labels) {
	case 0:
		p.add(blk.TypeRange, "service block without a name", nameRule)
	default:
		if len(blk.Labels) > 1 {
			p.add(blk.LabelRanges[1], "service block with more than one name", nameRule)
		}
		name = blk.Labels[0]
		if reason := checkServiceName(name); reason != "" {
			p.add(blk.LabelRanges[0], fmt.Sprintf("invalid service name %q: %s", name, reason), nameRule)
		} else if first := st.byName[name]; first != nil {
			p.add(blk.LabelRanges[0], fmt.Sprintf("duplicate service %q", name),
				fmt.Sprintf("service names must be unique; the first is at %s", pos(first.svc.Range)))
		}
	}
	ctx := "service"
	if name != "" {
		ctx = fmt.Sprintf("service %q", name)
	}

	a := p.attrSet(blk, ctx, serviceArgs)
	s := &Service{Name: name, Range: blk.Range()}
	si := &serviceInfo{svc: s, order: st.claimBlocks, defRange: blk.DefRange()}
	st.claimBlocks++
	st.services = append(st.services, si)
	if _, dup := st.byName[name]; !dup && name != "" {
		st.byName[name] = si
	}

	if addr, _, ok := p.addrArg(a, "address", `address = "198.51.100.10"`); ok {
		s.Address = addr
	}

	s.Protocol = p.protocolArg(a)

	s.Ports, si.portRanges, s.PortsRange = p.portsArg(a)

	const stageExample = `stage = "old"`
	stage, stageRange, stageOK := a.str("stage", stageExample)
	if stageOK {
		switch stage {
		case "old", "canary", "new":
			s.Stage = stage
		default:
			p.add(stageRange, fmt.Sprintf("invalid stage %q in %s", stage, ctx), `use "old", "canary" or "new"`)
		}
	} else {
		a.required("stage", stageExample)
	}

	const pctRule = "canary_percent is 1..99, the share of new connections sent to NEW"
	pct, pctRange, pctOK := a.intIn("canary_percent", 1, 99, pctRule)
	switch {
	case s.Stage == "canary" && pctOK:
		s.CanaryPercent = int(pct)
	case s.Stage == "canary" && a.absent("canary_percent"):
		p.add(stageRange, fmt.Sprintf("%s has stage \"canary\" but no canary_percent", ctx),
			"add canary_percent = 10 (1..99)")
	case s.Stage != "" && s.Stage != "canary" && pctOK:
		p.add(pctRange, fmt.Sprintf("canary_percent is set but %s has stage %q", ctx, s.Stage),
			`canary_percent is only valid with stage = "canary"; remove it or set the stage to "canary"`)
	}

	if b, _, ok := a.boolean("allow_ssh_move"); ok {
		s.AllowSSHMove = b
	}
	if b, _, ok := a.boolean("allow_unready"); ok {
		s.AllowUnready = b
	}
}

// protocolArg reads the required protocol argument of a service or forward;
// it returns "" when it is missing or invalid.
func (p *parser) protocolArg(a *attrSet) state.Proto {
	const protoExample = `protocol = "tcp"`
	v, rng, ok := a.str("protocol", protoExample)
	if !ok {
		a.required("protocol", protoExample)
		return ""
	}
	if state.Proto(v).Validate() != nil {
		p.add(rng, fmt.Sprintf("invalid protocol %q in %s", v, a.ctx), `use "tcp" or "udp"`)
		return ""
	}
	return state.Proto(v)
}

func (p *parser) forwardBlock(st *fileState, blk *hclsyntax.Block) {
	const nameRule = `name each forward once with letters, digits, "-", "_" or ".", e.g. forward "web-bounce" { ... }`
	name := ""
	switch len(blk.Labels) {
	case 0:
		p.add(blk.TypeRange, "forward block without a name", nameRule)
	default:
		if len(blk.Labels) > 1 {
			p.add(blk.LabelRanges[1], "forward block with more than one name", nameRule)
		}
		name = blk.Labels[0]
		if reason := checkServiceName(name); reason != "" {
			p.add(blk.LabelRanges[0], fmt.Sprintf("invalid forward name %q: %s", name, reason), nameRule)
		} else if first := st.forwardByName[name]; first != nil {
			p.add(blk.LabelRanges[0], fmt.Sprintf("duplicate forward %q", name),
				fmt.Sprintf("forward names must be unique; the first is at %s", pos(first.fwd.Range)))
		}
	}
	ctx := blockName("forward", name)

	a := p.attrSet(blk, ctx, forwardArgs)
	f := &Forward{Name: name, Range: blk.Range()}
	fi := &forwardInfo{fwd: f, order: st.claimBlocks}
	st.claimBlocks++
	st.forwards = append(st.forwards, fi)
	if _, dup := st.forwardByName[name]; !dup && name != "" {
		st.forwardByName[name] = fi
	}

	const onExample = `on = "old"`
	if v, rng, ok := a.str("on", onExample); ok {
		if state.Role(v).Validate() == nil {
			f.On = state.Role(v)
		} else {
			p.add(rng, fmt.Sprintf("invalid on %q in %s", v, ctx),
				`use "old" or "new": the managed host that receives the traffic and forwards it`)
		}
	} else {
		a.required("on", onExample)
	}

	addr, _, addrOK := p.addrArg(a, "address", `address = "198.51.100.10"`)
	if addrOK {
		f.Address = addr
	}

	f.Protocol = p.protocolArg(a)

	before := len(p.diags)
	f.Ports, fi.portRanges, f.PortsRange = p.portsArg(a)
	portsOK := len(p.diags) == before && len(f.Ports) > 0

	to, toRange, toOK := p.addrArg(a, "to", `to = "203.0.113.20"`)
	if toOK && addrOK && to.Is4() != addr.Is4() {
		p.add(toRange,
			fmt.Sprintf("to %s is %s but address %s is %s in %s", to, family(to), addr, family(addr), ctx),
			"a forward cannot change the address family; give to an address of the same family as address")
		toOK = false
	}
	if toOK {
		f.To = to
	}

	const toPortRule = "to_port is 1..65535, the port on to that the single port in ports is sent to; leave it out to keep the same port"
	toPort, toPortRange, toPortOK := a.intIn("to_port", 1, 65535, toPortRule)
	if toPortOK && portsOK {
		if r := f.Ports[0]; len(f.Ports) != 1 || r.From != r.To {
			what := fmt.Sprintf("%d ports", len(f.Ports))
			if len(f.Ports) == 1 {
				what = fmt.Sprintf("the range %s", r)
			}
			p.add(toPortRange,
				fmt.Sprintf("to_port needs exactly one port in ports, but %s has %s", ctx, what),
				"leave to_port out to keep each port as it is, or write one forward per port")
			toPortOK = false
		}
	}
	if toPortOK {
		f.ToPort = uint16(toPort)
	}

	// A forward to its own address and port would loop. With to_port set to
	// another port it is a port redirect on one address, which is fine.
	if f.To.IsValid() && f.To == f.Address && portsOK && a.absent("to_port") ||
		f.To.IsValid() && f.To == f.Address && toPortOK && f.ToPort == f.Ports[0].From {
		p.add(toRange, fmt.Sprintf("to %s is the same as address in %s", to, ctx),
			"traffic would be forwarded to itself; give to another address, or set to_port to another port")
	}
}

// addrArg reads a required IP address argument of a host-facing kind
// (service address or tunnel endpoint).
func (p *parser) addrArg(a *attrSet, name, example string) (netip.Addr, hcl.Range, bool) {
	s, rng, ok := a.str(name, example)
	if !ok {
		a.required(name, example)
		return netip.Addr{}, rng, false
	}
	addr, reason := parseAddr(s)
	if reason != "" {
		p.add(rng, fmt.Sprintf("invalid %s %q in %s: %s", name, s, a.ctx, reason), addrRule)
		return netip.Addr{}, rng, false
	}
	return addr, rng, true
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func checkServiceName(name string) string {
	if name == "" {
		return "empty"
	}
	if len(name) > 64 {
		return "longer than 64 characters"
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.", c)) {
			return fmt.Sprintf("%q is not allowed", c)
		}
	}
	return ""
}
