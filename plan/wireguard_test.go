package plan_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// A WireGuard tunnel: the link carries the listen port and both public
// keys (each host's own and its peer's), the MTU is the underlay's less 60
// (IPv4) or 80 (IPv6), routes go by device without a gateway (L3), and no
// underlay filter is needed (WireGuard authenticates).
func TestWireGuardDesired(t *testing.T) {
	const oldKey, newKey = "T0xEb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2w=", "TkVXbmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmU="
	for _, tc := range []struct {
		name, oldEP, newEP, oldCIDR, newCIDR string
		wantMTU                              string
	}{
		{"v4", "198.51.100.10", "203.0.113.20", "198.51.100.10/24", "203.0.113.20/24", "mtu 1440"},
		{"v6", "2001:db8:100::10", "2001:db8:200::20", "2001:db8:100::10/64", "2001:db8:200::20/64", "mtu 1420"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := strings.Replace(src, `type         = "vxlan"`, `type         = "wireguard"
  listen_port  = 51999`, 1)
			s = strings.Replace(s, `old_endpoint = "198.51.100.10"`, `old_endpoint = "`+tc.oldEP+`"`, 1)
			s = strings.Replace(s, `new_endpoint = "203.0.113.20"`, `new_endpoint = "`+tc.newEP+`"`, 1)
			c := mustParse(t, s)
			fo, fn := facts("198.51.100.10/24", 1500), facts("203.0.113.20/24", 1500)
			fo.Addrs = append(fo.Addrs, state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix(tc.oldCIDR)})
			fn.Addrs = append(fn.Addrs, state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix(tc.newCIDR)})

			// Without the keys from the agents, no plan.
			if _, err := plan.Make(c, map[string]state.Facts{plan.Old: fo, plan.New: fn}, state.NewJournal(), time.Unix(0, 0)); err == nil || !strings.Contains(err.Error(), "WireGuard public key") {
				t.Fatalf("plan without public keys: err %v, want a missing-key error", err)
			}
			d0 := fo.Digest()
			fo.WGPublicKey, fn.WGPublicKey = oldKey, newKey
			if fo.Digest() != d0 {
				t.Errorf("WGPublicKey changes the facts digest: a saved plan would be stale at apply")
			}
			p, err := plan.Make(c, map[string]state.Facts{plan.Old: fo, plan.New: fn}, state.NewJournal(), time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			for _, hp := range p.Hosts {
				own, peer, remote := newKey, oldKey, tc.oldEP
				if hp.Host == plan.Old {
					own, peer, remote = oldKey, newKey, tc.newEP
				}
				var link *state.Link
				var nft *state.NftTable
				var def string
				for _, st := range hp.Steps {
					if st.After == nil {
						continue
					}
					switch {
					case st.After.Link != nil:
						link = st.After.Link
					case st.After.Nft != nil:
						nft = st.After.Nft
					case st.After.Route != nil && st.After.Route.Dst.String() == "0.0.0.0/0":
						def = st.After.String()
					}
				}
				if link == nil {
					t.Fatalf("%s: no link step in\n%s", hp.Host, lines(hp.Steps))
				}
				// wg_open turns all.send_redirects off: plan sets it
				// first, so the journal keeps the value rollback restores.
				if first := hp.Steps[0].After; first == nil || first.Sysctl == nil || first.Sysctl.Name != plan.SendRedirectsAll || first.Sysctl.Value != "0" {
					t.Errorf("%s: first step is not %s = 0, before the link:\n%s", hp.Host, plan.SendRedirectsAll, lines(hp.Steps))
				}
				want := state.Link{Name: "mig0", Type: "wireguard", Remote: netip.MustParseAddr(remote), Port: 51999, PublicKey: own, PeerKey: peer, MTU: link.MTU, Up: true}
				if *link != want {
					t.Errorf("%s: link %+v, want %+v", hp.Host, *link, want)
				}
				if !strings.Contains(link.String(), tc.wantMTU) || !strings.Contains(link.String(), "listen-port 51999") {
					t.Errorf("%s: link %q, want %s and listen-port 51999", hp.Host, link.String(), tc.wantMTU)
				}
				if def == "" || strings.Contains(def, " via ") || !strings.Contains(def, "dev mig0") {
					t.Errorf("%s: default route %q, want one by device mig0 without a gateway", hp.Host, def)
				}
				if nft == nil || nft.Spec.Underlay != nil {
					t.Errorf("%s: nft table %v: want one without an underlay filter", hp.Host, nft)
				}
			}
		})
	}
}

// A plan that would send an object the agent refuses is an error before
// any host is touched: here NEW's agent answered its WireGuard key with
// something that is not one, so OLD's link would carry a bad peer key
// (state.Link.Validate, the rule the agent applies to the step).
func TestPlanRefusesInvalidObject(t *testing.T) {
	s := strings.Replace(src, `type         = "vxlan"`, `type         = "wireguard"`, 1)
	c := mustParse(t, s)
	fo, fn := facts("198.51.100.10/24", 1500), facts("203.0.113.20/24", 1500)
	fo.WGPublicKey, fn.WGPublicKey = "T0xEb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xkb2w=", "not-a-key"
	_, err := plan.Make(c, map[string]state.Facts{plan.Old: fo, plan.New: fn}, state.NewJournal(), time.Unix(0, 0))
	want := `host old: the plan would make an invalid link mig0: link mig0 peer_key "not-a-key": must be a WireGuard key, base64 of 32 bytes`
	if err == nil || err.Error() != want {
		t.Fatalf("plan with a bad peer key: err %v\nwant %s", err, want)
	}
	for name, bad := range map[string]plan.HostDesired{
		"percent 0": {Objects: []state.Object{{Nft: &state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{Role: state.RoleOld, TunnelDev: "mig0", Mark: 1,
			Services: []state.NftService{{Addr: netip.MustParseAddr("198.51.100.10"), Proto: state.TCP, Port: 80}}}}}}},
		"no_arp on old": {Objects: []state.Object{{Nft: &state.NftTable{Family: "inet", Name: "migrate", Spec: state.NftSpec{Role: state.RoleOld, TunnelDev: "mig0", Mark: 1,
			NoARP: []netip.Addr{netip.MustParseAddr("198.51.100.10")}}}}}},
	} {
		err := plan.ValidateDesired(map[string]plan.HostDesired{plan.Old: bad})
		if err == nil || !strings.HasPrefix(err.Error(), "host old: the plan would make an invalid nft table inet migrate: nft ") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
