package state

import (
	"net/netip"
	"testing"
)

func TestLinkChangesInPlace(t *testing.T) {
	base := Link{Name: "mig0", Type: VXLAN, Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("192.0.2.2"), VNI: 4242, Port: 4789, MAC: "02:00:00:00:00:01", MTU: 1450, Up: true}
	for _, tc := range []struct {
		name    string
		change  func(*Link)
		inPlace bool
	}{
		{"nothing", func(*Link) {}, true},
		{"mtu, up and address", func(l *Link) { l.MTU, l.Up, l.MAC = 1400, false, "02:00:00:00:00:02" }, true},
		{"vni", func(l *Link) { l.VNI = 7 }, false},
		{"port", func(l *Link) { l.Port = 4790 }, false},
		{"remote", func(l *Link) { l.Remote = netip.MustParseAddr("192.0.2.3") }, false},
		{"type", func(l *Link) { l.Type, l.VNI, l.Port = GRE, 0, 0 }, false},
		{"name", func(l *Link) { l.Name = "mig1" }, false},
	} {
		to := base
		tc.change(&to)
		if got := base.ChangesInPlace(to); got != tc.inPlace {
			t.Errorf("%s: ChangesInPlace = %v, want %v", tc.name, got, tc.inPlace)
		}
	}
	wg := Link{Name: "mig0", Type: WireGuard, Remote: netip.MustParseAddr("192.0.2.2"), Port: 51820, PeerKey: "a", MTU: 1420}
	wg2 := wg
	wg2.Port, wg2.PeerKey, wg2.Remote = 51821, "b", netip.MustParseAddr("192.0.2.9")
	if !wg.ChangesInPlace(wg2) {
		t.Error("a WireGuard device's port, peer and endpoint change in place")
	}
}
