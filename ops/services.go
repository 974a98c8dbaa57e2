package ops

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// PublicAddrs are a host's addresses a client could reach: not loopback,
// not link-local.
func PublicAddrs(f state.Facts) []netip.Addr {
	var out []netip.Addr
	for _, a := range f.Addrs {
		p := a.CIDR
		if !p.IsValid() || a.Dev == "lo" {
			continue
		}
		ip := p.Addr()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		out = append(out, ip)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// InitServices is what `migrate init` writes about OLD's listeners.
type InitServices struct {
	// Services, one per process, protocol and address, ordered so; each
	// at stage "old". The SSH service migrate itself uses is among them
	// and named in CommentedOut.
	Services []*config.Service
	// ServiceComments and CommentedOut are for config.RenderOptions.
	ServiceComments map[string]string
	CommentedOut    map[string]string
	// Summary says what was found and what was left out, for the
	// operator.
	Summary []string
}

// GroupListeners groups OLD's listeners into services: one per process,
// protocol and address, with the ports it listens on. A wildcard bind is
// expanded to OLD's public addresses (an IPv6 one without V6Only to the
// IPv4 ones too); loopback-only listeners are left out, link-local ones
// skipped. The port migrate reaches OLD's sshd on (sshIP, sshPort) gets a
// service of its own, commented out: moving it would cut migrate's own
// connection. Pure: the same listeners give the same services.
func GroupListeners(listeners []state.Listener, public []netip.Addr, sshIP netip.Addr, sshPort uint16) InitServices {
	type key struct {
		proc  string
		proto state.Proto
		addr  netip.Addr
	}
	groups := map[key]map[uint16]bool{}
	wild := map[key]bool{}
	var skipped []string
	for _, l := range listeners {
		a, err := netip.ParseAddr(l.Addr)
		if err != nil {
			continue
		}
		proc := l.Process
		if proc == "" {
			proc = "unknown"
		}
		var addrs []netip.Addr
		switch {
		case a.IsLoopback():
			skipped = append(skipped, fmt.Sprintf("%s %s:%d (%s): loopback only", l.Proto, l.Addr, l.Port, proc))
			continue
		case a.IsUnspecified():
			for _, p := range public {
				if p.Is4() == a.Is4() || (a.Is6() && !l.V6Only) {
					addrs = append(addrs, p)
				}
			}
		case a.IsLinkLocalUnicast():
			continue
		default:
			addrs = []netip.Addr{a}
		}
		for _, ad := range addrs {
			k := key{proc, l.Proto, ad}
			if groups[k] == nil {
				groups[k] = map[uint16]bool{}
			}
			groups[k][l.Port] = true
			if a.IsUnspecified() {
				wild[k] = true
			}
		}
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.proc != b.proc {
			return a.proc < b.proc
		}
		if a.proto != b.proto {
			return a.proto < b.proto
		}
		return a.addr.Less(b.addr)
	})
	out := InitServices{ServiceComments: map[string]string{}, CommentedOut: map[string]string{}}
	used := map[string]int{}
	name := func(proc string, proto state.Proto) string {
		base := sanitizeName(proc) + "-" + string(proto)
		used[base]++
		if used[base] == 1 {
			return base
		}
		return fmt.Sprintf("%s-%d", base, used[base])
	}
	for _, k := range keys {
		var ports []uint16
		for p := range groups[k] {
			ports = append(ports, p)
		}
		sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
		var keep, ssh []config.PortRange
		for _, p := range ports {
			if k.proto == state.TCP && k.addr == sshIP && p == sshPort {
				ssh = append(ssh, config.PortRange{From: p, To: p})
				continue
			}
			keep = append(keep, config.PortRange{From: p, To: p})
		}
		how := "bound to this address"
		if wild[k] {
			how = "a wildcard bind, expanded to this OLD address"
		}
		if len(keep) > 0 {
			n := name(k.proc, k.proto)
			out.Services = append(out.Services, &config.Service{Name: n, Address: k.addr, Protocol: k.proto, Ports: keep, Stage: "old"})
			out.ServiceComments[n] = fmt.Sprintf("process %s (%s)", k.proc, how)
			out.Summary = append(out.Summary, fmt.Sprintf("service %q: %s %s ports %s (process %s)", n, k.proto, k.addr, portsText(keep), k.proc))
		}
		if len(ssh) > 0 {
			n := name(k.proc, "ssh")
			out.Services = append(out.Services, &config.Service{Name: n, Address: k.addr, Protocol: k.proto, Ports: ssh, Stage: "old"})
			out.CommentedOut[n] = fmt.Sprintf("process %s: migrate reaches OLD over SSH on %s port %d; moving it would cut migrate's own connection, so it stays on OLD", k.proc, k.addr, sshPort)
			out.Summary = append(out.Summary, fmt.Sprintf("service %q: commented out: it is the SSH port migrate uses", n))
		}
	}
	for _, s := range skipped {
		out.Summary = append(out.Summary, "left out: "+s)
	}
	return out
}

func portsText(rs []config.PortRange) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.String())
	}
	return strings.Join(s, ", ")
}

func sanitizeName(s string) string {
	out := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, s)
	if out == "" || !(out[0] >= 'a' && out[0] <= 'z' || out[0] >= 'A' && out[0] <= 'Z') {
		out = "svc-" + out
	}
	return out
}
