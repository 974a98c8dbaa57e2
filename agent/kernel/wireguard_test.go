package kernel

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/state"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestWireGuardLink builds a WireGuard tunnel between the test's namespace
// and a peer namespace, both ends through Host.Apply with keys each Host
// made itself (WGKey), and pings through it, IPv4 and IPv6 underlay. Facts
// read the link back exactly as created; a changed peer key is an in-place
// update; deleting the link removes the key file.
//
// It needs the wireguard module: where the kernel lacks it, it is reported
// and skipped; the VM lane (scripts/vm-lane.sh) runs it under Debian's
// kernel, where a skip fails.
func TestWireGuardLink(t *testing.T) {
	if !inNetns(t) {
		return
	}
	if !kernelCanCreate(t, "wireguard") {
		t.Logf("TUNNEL wireguard: NOT RUN here: kernel %s lacks wireguard; runs in the VM lane", kernelRelease())
		t.Skip("kernel lacks wireguard")
	}
	t.Logf("TUNNEL wireguard: running on this kernel (%s)", kernelRelease())
	h := newHost(t)
	for _, tc := range []struct{ name, local, peer string }{
		{"v4", "192.0.2.1", "192.0.2.2"},
		{"v6", "2001:db8::1", "2001:db8::2"},
	} {
		t.Run(tc.name, func(t *testing.T) { wireguardLink(t, h, tc.local, tc.peer) })
	}
}

func wireguardLink(t *testing.T, h *Host, local, peer string) {
	peerNS := newChildNS(t)
	ch := vethTo(t, peerNS, "u0", "192.0.2.1/24", "eth0", "192.0.2.2/24")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", "u0").Run() })
	run(t, "ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "u0", "nodad")
	if err := inNS(peerNS, func() error {
		return exec.Command("ip", "-6", "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad").Run()
	}); err != nil {
		t.Fatal(err)
	}
	_ = ch
	ph := hostIn(t, peerNS)

	pub, err := h.WGKey("mig0")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := h.WGKey("mig0"); err != nil || again != pub {
		t.Fatalf("second WGKey: %q %v, want the same key %q", again, err, pub)
	}
	keyFile := WGKeyPath(h.StateDir, "mig0")
	st, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(keyFile)
	if strings.Contains(string(b), pub) {
		t.Fatalf("the key file holds the public key, not the private one")
	}
	ppub, err := ph.WGKey("mig0")
	if err != nil {
		t.Fatal(err)
	}

	const mtu = 1500 - 80
	mk := func(remote, own, peerKey string) state.Object {
		return state.Object{Link: &state.Link{Name: "mig0", Type: "wireguard", Remote: netip.MustParseAddr(remote), Port: 51820, PublicKey: own, PeerKey: peerKey, MTU: mtu, Up: true}}
	}
	mine, theirs := mk(peer, pub, ppub), mk(local, ppub, pub)
	apply(t, h, create(mine))
	t.Cleanup(func() { _ = h.Apply(del(mine)) })
	apply(t, ph, create(theirs))
	apply(t, h, create(mine)) // identical: nothing to do
	if got := find(facts(t, h, state.FactsRequest{}), mine); got == nil || !got.Equal(mine) {
		t.Fatalf("facts read the link back as %v, want %s", got, mine)
	}
	pf, err := ph.Facts(state.FactsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := find(pf, theirs); got == nil || !got.Equal(theirs) {
		t.Fatalf("peer: facts read the link back as %v, want %s", got, theirs)
	}
	t.Logf("%s", run(t, "ip", "-d", "link", "show", "mig0"))

	apply(t, h, create(state.Object{Addr: &state.Addr{Dev: "mig0", CIDR: netip.MustParsePrefix("169.254.42.1/30")}}))
	apply(t, ph, create(state.Object{Addr: &state.Addr{Dev: "mig0", CIDR: netip.MustParsePrefix("169.254.42.2/30")}}))
	if _, err := h.Ping("169.254.42.2", 3, 10*time.Second, 0); err != nil {
		t.Fatalf("ping through the wireguard tunnel: %v", err)
	}
	if _, err := ph.Ping("169.254.42.1", 3, 10*time.Second, 0); err != nil {
		t.Fatalf("ping back through the wireguard tunnel: %v", err)
	}
	t.Logf("wireguard over %s: ping through the tunnel both ways", local)

	// Another peer key: reconfigured in place, read back as such.
	other, _ := wgtypes.GeneratePrivateKey()
	changed := mk(peer, pub, other.PublicKey().String())
	apply(t, h, update(mine, changed))
	if got := find(facts(t, h, state.FactsRequest{}), changed); got == nil || !got.Equal(changed) {
		t.Fatalf("after update, facts read %v, want %s", got, changed)
	}

	apply(t, h, del(changed))
	if got := find(facts(t, h, state.FactsRequest{}), changed); got != nil {
		t.Fatalf("after delete, facts still show %s", got)
	}
	if _, err := os.Stat(keyFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after delete, the key file is still there (%v)", err)
	}
	apply(t, h, del(changed))
	apply(t, ph, del(theirs))
}
