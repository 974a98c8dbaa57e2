package ops

import (
	"net/netip"
	"testing"

	"github.com/opsmigrate/migrate/state"
)

// SharedSubnet decides whether init proposes a direct tunnel: only an
// address each host holds on an interface (not lo, not a host route, not
// link-local), in one subnet as both hosts see it, and the endpoints the
// operator named when there are any.
func TestSharedSubnet(t *testing.T) {
	addrs := func(cidrs ...string) state.Facts {
		var f state.Facts
		for _, c := range cidrs {
			dev := "eth0"
			if c[0] == '!' {
				dev, c = "lo", c[1:]
			}
			f.Addrs = append(f.Addrs, state.Addr{Dev: dev, CIDR: netip.MustParsePrefix(c)})
		}
		return f
	}
	a := netip.MustParseAddr
	none := netip.Addr{}
	for _, tc := range []struct {
		name           string
		old, new       state.Facts
		oe, ne         netip.Addr
		wantOld, wantN string // "" = no shared subnet
		wantPrefix     string
	}{
		{"same /24", addrs("198.51.100.10/24"), addrs("198.51.100.20/24"), none, none, "198.51.100.10", "198.51.100.20", "198.51.100.0/24"},
		{"different subnets", addrs("198.51.100.10/24"), addrs("203.0.113.20/24"), none, none, "", "", ""},
		// Each must see the other inside its own prefix: a /25 on NEW
		// that does not hold OLD's address is not one link.
		{"prefixes disagree", addrs("198.51.100.10/24"), addrs("198.51.100.200/25"), none, none, "", "", ""},
		{"host routes do not count", addrs("198.51.100.10/32"), addrs("198.51.100.20/32"), none, none, "", "", ""},
		{"lo does not count", addrs("!198.51.100.10/24"), addrs("198.51.100.20/24"), none, none, "", "", ""},
		{"link-local does not count", addrs("fe80::1/64"), addrs("fe80::2/64"), none, none, "", "", ""},
		{"second address shared", addrs("192.0.2.10/24", "198.51.100.10/24"), addrs("203.0.113.20/24", "198.51.100.20/24"), none, none, "198.51.100.10", "198.51.100.20", "198.51.100.0/24"},
		{"IPv4 before IPv6", addrs("2001:db8::10/64", "198.51.100.10/24"), addrs("2001:db8::20/64", "198.51.100.20/24"), none, none, "198.51.100.10", "198.51.100.20", "198.51.100.0/24"},
		{"IPv6 only", addrs("2001:db8::10/64"), addrs("2001:db8::20/64"), none, none, "2001:db8::10", "2001:db8::20", "2001:db8::/64"},
		{"named endpoints match", addrs("198.51.100.10/24"), addrs("198.51.100.20/24"), a("198.51.100.10"), a("198.51.100.20"), "198.51.100.10", "198.51.100.20", "198.51.100.0/24"},
		{"named old endpoint elsewhere", addrs("192.0.2.10/24", "198.51.100.10/24"), addrs("198.51.100.20/24"), a("192.0.2.10"), none, "", "", ""},
		{"named new endpoint elsewhere", addrs("198.51.100.10/24"), addrs("198.51.100.20/24", "203.0.113.20/24"), none, a("203.0.113.20"), "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, n, p, ok := SharedSubnet(tc.old, tc.new, tc.oe, tc.ne)
			if tc.wantOld == "" {
				if ok {
					t.Fatalf("shared subnet %s (%s, %s), want none", p, o, n)
				}
				return
			}
			if !ok || o.String() != tc.wantOld || n.String() != tc.wantN || p.String() != tc.wantPrefix {
				t.Fatalf("got %s %s %s %v, want %s %s %s", o, n, p, ok, tc.wantOld, tc.wantN, tc.wantPrefix)
			}
		})
	}
}
