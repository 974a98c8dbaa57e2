package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// WireGuard: the agent makes the host's key pair on the first wg-key call
// for a tunnel name and keeps the private key in the state directory
// (wg-NAME.key, mode 0600). Only the public key ever leaves the host. The
// device is created over rtnetlink (netlink.Wireguard) and configured over
// the WireGuard generic-netlink family (wgctrl): private key from the key
// file, listen port, one peer (its public key, endpoint Remote:Port, all
// addresses allowed, keepalive 25 s). Deleting the link removes the key.

// WGKeepalive is the peer's persistent keepalive.
const WGKeepalive = 25 * time.Second

// wgAllowed are the peer's allowed IPs: everything; migrate's routes and
// rules decide what enters the tunnel.
var wgAllowed = []net.IPNet{
	{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
	{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
}

// WGKeyPath is the private key file of tunnel name in dir.
func WGKeyPath(dir, name string) string { return filepath.Join(dir, "wg-"+name+".key") }

// WGKey returns the host's WireGuard public key for tunnel name, making
// the key pair first if there is none.
func (h *Host) WGKey(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return "", fmt.Errorf("invalid tunnel name %q", name)
	}
	k, err := h.wgPrivateKey(name)
	if err == nil {
		return k.PublicKey().String(), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	k, err = wgtypes.GeneratePrivateKey()
	if err != nil {
		return "", fmt.Errorf("generate WireGuard key: %w", err)
	}
	if err := os.MkdirAll(h.StateDir, 0o700); err != nil {
		return "", err
	}
	path := WGKeyPath(h.StateDir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, os.ErrExist) {
		// Another agent made it meanwhile: use that one.
		if k, err = h.wgPrivateKey(name); err != nil {
			return "", err
		}
		return k.PublicKey().String(), nil
	}
	if err != nil {
		return "", fmt.Errorf("write WireGuard key: %w", err)
	}
	_, err = f.WriteString(k.String() + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("write WireGuard key %s: %w", path, err)
	}
	return k.PublicKey().String(), nil
}

// wgPrivateKey reads the key file; a missing file is os.ErrNotExist.
func (h *Host) wgPrivateKey(name string) (wgtypes.Key, error) {
	path := WGKeyPath(h.StateDir, name)
	b, err := readNoFollow(path)
	if err != nil {
		return wgtypes.Key{}, err
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key file %s: %w", path, err)
	}
	return k, nil
}

// withWG runs f with a wgctrl client whose netlink socket is in the host's
// namespace: it is opened on a thread switched into that namespace (the
// thread is never switched back; it exits with its goroutine).
func (h *Host) withWG(f func(c *wgctrl.Client) error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(h.ns); err != nil {
			done <- fmt.Errorf("enter the host's namespace: %w", err)
			return
		}
		c, err := wgctrl.New()
		if err != nil {
			done <- fmt.Errorf("open WireGuard netlink: %w", err)
			return
		}
		defer c.Close()
		done <- f(c)
	}()
	return <-done
}

// wgFill sets l's WireGuard fields from the device as the kernel has it:
// listen port, own public key, and the peer's key and endpoint. A peer
// set-up other than migrate's (more peers, other allowed IPs or keepalive,
// an endpoint port other than the listen port) shows in PeerKey or Remote,
// so that it differs from the desired link.
func wgFill(l *state.Link, d *wgtypes.Device) {
	l.Local, l.Remote, l.PeerKey, l.PublicKey = netip.Addr{}, netip.Addr{}, "", ""
	l.Port = uint16(d.ListenPort)
	if d.PrivateKey != (wgtypes.Key{}) {
		l.PublicKey = d.PublicKey.String()
	}
	switch len(d.Peers) {
	case 0:
	case 1:
		p := d.Peers[0]
		l.PeerKey = p.PublicKey.String()
		if p.Endpoint != nil {
			l.Remote = addrOf(p.Endpoint.IP)
		}
		if !wgPeerAsBuilt(p) {
			l.PeerKey += fmt.Sprintf(" (allowed-ips %v, keepalive %s)", p.AllowedIPs, p.PersistentKeepaliveInterval)
		}
		if p.Endpoint != nil && p.Endpoint.Port != d.ListenPort {
			// Remote holds an address only: the other port shows
			// in the peer, as another set-up does.
			l.PeerKey += fmt.Sprintf(" (endpoint port %d)", p.Endpoint.Port)
		}
	default:
		l.PeerKey = fmt.Sprintf("(%d peers)", len(d.Peers))
	}
}

func wgPeerAsBuilt(p wgtypes.Peer) bool {
	if p.PersistentKeepaliveInterval != WGKeepalive || len(p.AllowedIPs) != len(wgAllowed) {
		return false
	}
	var have, want []string
	for _, n := range p.AllowedIPs {
		have = append(have, n.String())
	}
	for _, n := range wgAllowed {
		want = append(want, n.String())
	}
	sort.Strings(have)
	sort.Strings(want)
	return strings.Join(have, ",") == strings.Join(want, ",")
}

// wgFacts fills the WireGuard fields of the wireguard links in links.
func (h *Host) wgFacts(links []state.Link) error {
	var idx []int
	for i := range links {
		if links[i].Type == state.WireGuard {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	return h.withWG(func(c *wgctrl.Client) error {
		for _, i := range idx {
			d, err := c.Device(links[i].Name)
			if errors.Is(err, os.ErrNotExist) {
				continue // gone meanwhile
			}
			if err != nil {
				return fmt.Errorf("read WireGuard device %s: %w", links[i].Name, err)
			}
			wgFill(&links[i], d)
		}
		return nil
	})
}

// linkFactsOf is linkFacts with a WireGuard device's configuration.
func (h *Host) linkFactsOf(l netlink.Link) (state.Link, error) {
	out := []state.Link{linkFacts(l)}
	err := h.wgFacts(out)
	return out[0], err
}

// configureWG gives want's device its private key (from the key file,
// which must be the one whose public key the plan carries), listen port
// and its one peer.
func (h *Host) configureWG(want state.Link) error {
	key, err := h.wgPrivateKey(want.Name)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no WireGuard key for %s on this host (%s): run migrate plan again", want.Name, WGKeyPath(h.StateDir, want.Name))
	}
	if err != nil {
		return err
	}
	if pub := key.PublicKey().String(); want.PublicKey != "" && pub != want.PublicKey {
		return fmt.Errorf("the WireGuard key of %s on this host has public key %s, the plan %s: run migrate plan again", want.Name, pub, want.PublicKey)
	}
	peer, err := wgtypes.ParseKey(want.PeerKey)
	if err != nil {
		return fmt.Errorf("peer key of %s: %w", want.Name, err)
	}
	remote := netIP(want.Remote)
	if remote == nil {
		return fmt.Errorf("remote %q of %s is not an IP address", want.Remote, want.Name)
	}
	if want.Port == 0 {
		return fmt.Errorf("wireguard link %s needs a port", want.Name)
	}
	port, ka := int(want.Port), WGKeepalive
	cfg := wgtypes.Config{
		PrivateKey:   &key,
		ListenPort:   &port,
		ReplacePeers: true,
		Peers: []wgtypes.PeerConfig{{
			PublicKey:                   peer,
			Endpoint:                    &net.UDPAddr{IP: remote, Port: port},
			PersistentKeepaliveInterval: &ka,
			ReplaceAllowedIPs:           true,
			AllowedIPs:                  wgAllowed,
		}},
	}
	return h.withWG(func(c *wgctrl.Client) error {
		if err := c.ConfigureDevice(want.Name, cfg); err != nil {
			return fmt.Errorf("configure WireGuard device %s: %w", want.Name, err)
		}
		return nil
	})
}

// removeWGKey deletes the key file of tunnel name: rollback removes the
// keys migrate made.
func (h *Host) removeWGKey(name string) error {
	if err := os.Remove(WGKeyPath(h.StateDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove WireGuard key: %w", err)
	}
	return nil
}
