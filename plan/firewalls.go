package plan

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// ufwActive says whether ufw's rules are loaded on the host: its chains
// in table ip filter (ufw drives iptables; with iptables-nft they are nft
// chains like any other).
func ufwActive(f state.Facts) bool {
	for _, ch := range f.Chains {
		if ch.Family == "ip" && ch.Table == "filter" && ch.Chain == "ufw-user-input" {
			return true
		}
	}
	return false
}

// policyDrop names the base chain of table family/table at hook with
// policy drop ("" when there is none).
func policyDrop(f state.Facts, family, table, hook string) string {
	for _, ch := range f.Chains {
		if ch.Family == family && ch.Table == table && ch.Hook == hook && ch.Policy == "drop" {
			return ch.Chain
		}
	}
	return ""
}

// underlayFrom is what host receives from its peer through the underlay:
// the peer's endpoint (its 1:1 NAT, if any, rewrote the source to it) to
// the address host's tunnel binds, or, for WireGuard, to any address.
func underlayFrom(c *config.Config, facts map[string]state.Facts, host string) (from, to netip.Addr) {
	t := c.Tunnel
	from, to = t.NewEndpoint, t.OldEndpoint
	if host == New {
		from, to = t.OldEndpoint, t.NewEndpoint
	}
	if b, err := Bindings(c, facts); err == nil && b[host].Addr.IsValid() {
		to = b[host].Addr
	}
	return from, to
}

// ufwCommands are the ufw commands that let migrate's traffic through
// ufw's default policies on host (deny incoming, deny routed): the
// tunnel's outer packets from the peer; on OLD the flows it forwards
// between clients and the tunnel, both ways; on NEW what arrives through
// the tunnel for the services.
func ufwCommands(c *config.Config, facts map[string]state.Facts, host string) []string {
	t := c.Tunnel
	from, to := underlayFrom(c, facts, host)
	var out []string
	switch t.Type {
	case "vxlan":
		out = append(out, fmt.Sprintf("ufw allow proto udp from %s to %s port %d", from, to, t.Port))
	case "wireguard":
		out = append(out, fmt.Sprintf("ufw allow proto udp from %s to any port %d", from, t.ListenPort))
	default: // gre, ip6gre
		out = append(out, fmt.Sprintf("ufw allow proto gre from %s to %s", from, to))
	}
	if host == Old {
		return append(out, "ufw route allow in on "+t.Name, "ufw route allow out on "+t.Name)
	}
	return append(out, "ufw allow in on "+t.Name)
}

// ufwWarning is plan's warning for a host where ufw is active, naming the
// base chains whose policy drops migrate's traffic and the commands that
// allow it. ufw's rules themselves migrate never changes.
func ufwWarning(c *config.Config, facts map[string]state.Facts, host string) string {
	f := facts[host]
	var drops []string
	if ch := policyDrop(f, "ip", "filter", "input"); ch != "" {
		drops = append(drops, fmt.Sprintf("chain %s (hook input) has policy drop: it drops the tunnel's packets from the peer", ch))
	}
	if ch := policyDrop(f, "ip", "filter", "forward"); ch != "" && host == Old {
		drops = append(drops, fmt.Sprintf("chain %s (hook forward) has policy drop: it drops the flows OLD forwards to and from %s", ch, c.Tunnel.Name))
	}
	if host == New {
		drops = append(drops, fmt.Sprintf("what arrives through %s for the services passes only if ufw allows their ports", c.Tunnel.Name))
	}
	cmds := ufwCommands(c, facts, host)
	return fmt.Sprintf("WARNING host %s: ufw is active (table ip filter): %s. Allow migrate's traffic (before migrate apply): `%s`", host, strings.Join(drops, "; "), strings.Join(cmds, "` and `"))
}
