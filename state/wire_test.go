package state

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// The typed state is written as readable JSON, the same text as when
// roles, protocols and addresses were strings, and reads back equal.
func TestWireJSONReadable(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	spec := NftSpec{
		Role: RoleOld, TunnelDev: "mig0", Mark: 0x20000,
		Services: []NftService{
			{Addr: a("198.51.100.10"), Proto: TCP, Port: 80, Percent: 100},
			{Addr: a("198.51.100.10"), Proto: TCP, Port: 81, Percent: 100},
			{Addr: a("2001:db8::10"), Proto: UDP, Port: 53, Percent: 10},
		},
		Accounted:   []NftService{{Addr: a("198.51.100.10"), Proto: TCP, Port: 80}},
		Underlay:    &NftUnderlay{Proto: "udp", Port: 4789, Local: a("192.0.2.1"), Peer: a("203.0.113.2")},
		Forwards:    []NftForward{{Addr: a("198.51.100.11"), Proto: TCP, Port: 443, To: a("203.0.113.20"), ToPort: 8443}},
		ForwardMark: 0x40000,
		PeerSrc:     []netip.Addr{a("198.51.100.10")},
	}
	rule := Rule{Family: 6, Priority: 1100, Src: p("2001:db8::10/128"), Table: 4242, Protocol: 77}
	link := Link{Name: "wg0", Type: WireGuard, Remote: a("203.0.113.2"), Port: 51820, PeerKey: "TkVXbmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmU=", MTU: 1420, Up: true}
	route := Route{Family: 4, Table: 4242, Type: "throw", Dst: p("203.0.113.2/32"), Protocol: 77}
	for _, c := range []struct {
		name string
		v    any
		want string
	}{
		{"nft spec", spec, `{"role":"old","tunnel_dev":"mig0","mark":131072,"underlay":{"proto":"udp","port":4789,"local":"192.0.2.1","peer":"203.0.113.2"},"forward_mark":262144,` +
			`"peer_src":["198.51.100.10"],"services":[{"addr":"198.51.100.10","proto":"tcp","port":80,"through":81,"percent":100},{"addr":"2001:db8::10","proto":"udp","port":53,"percent":10}],` +
			`"accounted":[{"addr":"198.51.100.10","proto":"tcp","port":80}],"forwards":[{"addr":"198.51.100.11","proto":"tcp","port":443,"to":"203.0.113.20","to_port":8443}]}`},
		// No src: the field is left out (omitzero), as it was (omitempty).
		{"rule", rule, `{"family":6,"priority":1100,"src":"2001:db8::10/128","table":4242,"protocol":77}`},
		{"rule without src", Rule{Family: 4, Priority: 0, Table: 255, Protocol: 2}, `{"family":4,"priority":0,"table":255,"protocol":2}`},
		// A wireguard link has no local address: "" as before.
		{"wireguard link", link, `{"name":"wg0","type":"wireguard","local":"","remote":"203.0.113.2","port":51820,"peer_key":"TkVXbmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmU=","mtu":1420,"up":true}`},
		{"route without gw", route, `{"family":4,"table":4242,"type":"throw","dst":"203.0.113.2/32","protocol":77}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(b) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, b, c.want)
		}
		back := reflect.New(reflect.TypeOf(c.v))
		if err := json.Unmarshal(b, back.Interface()); err != nil {
			t.Fatalf("%s: read back: %v", c.name, err)
		}
		if !reflect.DeepEqual(back.Elem().Interface(), c.v) {
			t.Errorf("%s: read back %+v, want %+v", c.name, back.Elem().Interface(), c.v)
		}
	}

	// An address that does not parse fails at decode, naming it.
	for _, c := range []struct{ what, json, want string }{
		{"service", `{"role":"old","services":[{"addr":"198.51.100.300","proto":"tcp","port":80,"percent":100}]}`, `nft spec: ParseAddr("198.51.100.300")`},
		{"no_arp", `{"role":"new","no_arp":["x"]}`, `nft spec: ParseAddr("x")`},
		{"rule", `{"family":4,"priority":1,"dst":"198.51.100.10","table":1}`, `netip.ParsePrefix("198.51.100.10"): no '/'`},
	} {
		var err error
		if c.what == "rule" {
			var r Rule
			err = json.Unmarshal([]byte(c.json), &r)
		} else {
			var s NftSpec
			err = json.Unmarshal([]byte(c.json), &s)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.what, err, c.want)
		}
	}
}
