package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkConfig is what lives on a device and goes with it when it is
// deleted: its addresses, the routes through it (every table), and its
// per-device sysctls. Some tunnel settings (a VXLAN's VNI or port, a
// tunnel's type) cannot change in place, so a changed tunnel block makes
// the device again; the plan shows those objects as unchanged, so the
// step that makes the device again must put them back itself, and so must
// its undo. Without this the new device came up bare: no inner address,
// no route into it, and the apply's tunnel check failed and its undo left
// the old device bare too.
type linkConfig struct {
	addrs   []state.Addr
	routes  []state.Route
	sysctls map[string]string // net.ipvN.conf.DEV.x -> value
}

// sysctlsNotKept are per-device sysctls that follow the device itself
// (mtu), or that flush or regenerate its addresses when written.
var sysctlsNotKept = map[string]bool{"mtu": true, "disable_ipv6": true, "addr_gen_mode": true, "stable_secret": true}

// readLinkConfig reads the configuration living on cur.
func (h *Host) readLinkConfig(cur netlink.Link) (linkConfig, error) {
	name, idx := cur.Attrs().Name, cur.Attrs().Index
	names := map[int]string{idx: name}
	var c linkConfig
	addrs, err := h.addrFacts(names)
	if err != nil {
		return c, err
	}
	for _, a := range addrs {
		if a.Dev == name {
			c.addrs = append(c.addrs, a)
		}
	}
	for _, af := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := retryDump("list routes", func() ([]netlink.Route, error) {
			return h.nl.RouteListFiltered(af, &netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return c, fmt.Errorf("list routes through %s: %w", name, err)
		}
		for _, r := range routes {
			// The kernel makes the local table's entries and the
			// connected and IPv6 link routes from the addresses.
			if r.Table == unix.RT_TABLE_LOCAL || r.Protocol == unix.RTPROT_KERNEL || len(r.MultiPath) > 0 {
				continue
			}
			c.routes = append(c.routes, routeFacts(af, r, names))
		}
	}
	c.sysctls = map[string]string{}
	for _, fam := range []string{"ipv4", "ipv6"} {
		dir := h.SysctlRoot + "/net/" + fam + "/conf/" + name
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return c, fmt.Errorf("read %s: %w", dir, err)
		}
		for _, e := range entries {
			if sysctlsNotKept[e.Name()] || !e.Type().IsRegular() {
				continue
			}
			if info, err := e.Info(); err != nil || info.Mode().Perm()&0o200 == 0 {
				continue // read-only
			}
			dotted := "net." + fam + ".conf." + dottedPart(name) + "." + dottedPart(e.Name())
			v, ok, err := h.readSysctl(dotted)
			if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) {
				continue // write-only or unreadable
			}
			if err != nil {
				return c, err
			}
			if ok {
				c.sysctls[dotted] = v
			}
		}
	}
	return c, nil
}

// restoreLinkConfig puts c back on the device of the same name, made
// again: sysctls first (some decide whether an address is accepted), then
// addresses, then the routes, which may need an address's prefix.
func (h *Host) restoreLinkConfig(c linkConfig) error {
	names := make([]string, 0, len(c.sysctls))
	for n := range c.sysctls {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		now, ok, err := h.readSysctl(n)
		if err != nil || !ok || now == c.sysctls[n] {
			continue
		}
		if err := h.writeSysctl(n, c.sysctls[n]); err != nil {
			return err
		}
	}
	for _, a := range c.addrs {
		if err := h.addAddr(a); err != nil {
			return fmt.Errorf("address %s: %w", a.CIDR, err)
		}
	}
	for _, r := range c.routes {
		if err := h.replaceRoute(r); err != nil {
			return fmt.Errorf("route %s: %w", r, err)
		}
	}
	return nil
}

func (c linkConfig) String() string {
	var parts []string
	for _, a := range c.addrs {
		parts = append(parts, a.CIDR.String())
	}
	for _, r := range c.routes {
		parts = append(parts, r.String())
	}
	return strings.Join(parts, ", ")
}

// holdRoutes adds, for each of migrate's routes through a device about to
// be made again, a blackhole route of the same destination in the same table at
// the lowest preference. While the device is gone, the kernel removes its
// routes, and a packet that policy routing sends to that table would fall
// through to the next rule: on OLD, a moved connection's packet then
// reaches OLD's own stack, which answers it with a reset (seen in
// TestTunnelChange). Held, it is dropped, and TCP sends it again once
// the new device carries the route. The returned routes are removed by
// releaseRoutes; one left behind (the agent killed in between) carries
// migrate's protocol, so the next plan removes it.
func (h *Host) holdRoutes(routes []state.Route) []*netlink.Route {
	var held []*netlink.Route
	for _, r := range routes {
		if r.Protocol != holdProto {
			continue // not migrate's: its table is not ours to add to
		}
		dst, err := ipNet(r.Dst, r.Family)
		if err != nil || dst == nil {
			continue
		}
		af, err := family(r.Family)
		if err != nil {
			continue
		}
		hold := &netlink.Route{Family: af, Table: r.Table, Dst: dst, Type: unix.RTN_BLACKHOLE,
			Priority: holdMetric, Protocol: netlink.RouteProtocol(holdProto)}
		if err := h.nl.RouteAdd(hold); err == nil {
			held = append(held, hold)
		}
	}
	return held
}

func (h *Host) releaseRoutes(held []*netlink.Route) {
	for _, r := range held {
		_ = h.nl.RouteDel(r)
	}
}

const (
	holdMetric = 0xffffffff
	holdProto  = 77 // plan.RouteProto: migrate's routes
)
