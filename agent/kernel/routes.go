package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var routeTypes = map[int]string{
	unix.RTN_UNICAST:     "unicast",
	unix.RTN_LOCAL:       "local",
	unix.RTN_BROADCAST:   "broadcast",
	unix.RTN_ANYCAST:     "anycast",
	unix.RTN_MULTICAST:   "multicast",
	unix.RTN_BLACKHOLE:   "blackhole",
	unix.RTN_UNREACHABLE: "unreachable",
	unix.RTN_PROHIBIT:    "prohibit",
	unix.RTN_THROW:       "throw",
	unix.RTN_NAT:         "nat",
}

func routeTypeName(t int) string {
	if s, ok := routeTypes[t]; ok {
		return s
	}
	return fmt.Sprintf("type%d", t)
}

func routeTypeNum(s string) (int, error) {
	if s == "" {
		return unix.RTN_UNICAST, nil
	}
	for n, name := range routeTypes {
		if name == s {
			return n, nil
		}
	}
	return 0, fmt.Errorf("unknown route type %q", s)
}

func (h *Host) routeFacts(tables []int, names map[int]string) ([]state.Route, error) {
	out := []state.Route{}
	for _, table := range tables {
		if table <= 0 {
			return nil, fmt.Errorf("invalid routing table %d", table)
		}
		for _, af := range []int{unix.AF_INET, unix.AF_INET6} {
			routes, err := retryDump("list routes", func() ([]netlink.Route, error) {
				return h.nl.RouteListFiltered(af, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
			})
			if err != nil {
				return nil, fmt.Errorf("list v%d routes of table %d: %w", familyOf(af), table, err)
			}
			for _, r := range routes {
				out = append(out, routeFacts(af, r, names))
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Family != b.Family {
			return a.Family < b.Family
		}
		if a.Table != b.Table {
			return a.Table < b.Table
		}
		if a.Dst != b.Dst {
			return a.Dst.String() < b.Dst.String() // as when they were strings
		}
		return a.Type < b.Type
	})
	return out, nil
}

func routeFacts(af int, r netlink.Route, names map[int]string) state.Route {
	out := state.Route{
		Family:   familyOf(af),
		Table:    r.Table,
		Type:     routeTypeName(r.Type),
		Gw:       addrOf(r.Gw),
		Protocol: uint8(r.Protocol),
	}
	if r.Dst != nil && r.Dst.IP != nil {
		out.Dst = prefixOf(r.Dst)
	} else if out.Family == 6 {
		out.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	} else {
		out.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	switch r.Type {
	case unix.RTN_THROW, unix.RTN_BLACKHOLE, unix.RTN_UNREACHABLE, unix.RTN_PROHIBIT:
		// IPv6 reports these on lo; they have no device.
	default:
		if r.LinkIndex == 0 {
			break
		}
		out.Dev = names[r.LinkIndex]
		if out.Dev == "" {
			out.Dev = fmt.Sprintf("if%d", r.LinkIndex)
		}
	}
	return out
}

// buildRoute turns a state.Route into a netlink route. It resolves Dev; a
// missing device is reported as a LinkNotFoundError.
func (h *Host) buildRoute(r state.Route) (*netlink.Route, error) {
	af, err := family(r.Family)
	if err != nil {
		return nil, err
	}
	if r.Table <= 0 {
		return nil, fmt.Errorf("route table %d is invalid", r.Table)
	}
	typ, err := routeTypeNum(r.Type)
	if err != nil {
		return nil, err
	}
	dst, err := ipNet(r.Dst, r.Family)
	if err != nil {
		return nil, fmt.Errorf("route dst: %w", err)
	}
	if dst == nil {
		return nil, fmt.Errorf("route has no destination")
	}
	nr := &netlink.Route{
		Family:   af,
		Table:    r.Table,
		Type:     typ,
		Dst:      dst,
		Protocol: netlink.RouteProtocol(r.Protocol),
	}
	if r.Gw.IsValid() {
		if r.Gw.Is4() != (r.Family == 4) {
			return nil, fmt.Errorf("route gateway %s is not an IPv%d address", r.Gw, r.Family)
		}
		nr.Gw = net.IP(r.Gw.AsSlice())
	}
	if r.Dev != "" {
		link, err := h.nl.LinkByName(r.Dev)
		if err != nil {
			return nil, err
		}
		nr.LinkIndex = link.Attrs().Index
	}
	if typ == unix.RTN_UNICAST && r.Dev == "" && !r.Gw.IsValid() {
		return nil, fmt.Errorf("unicast route needs a device or a gateway")
	}
	return nr, nil
}

func (h *Host) applyRoute(step state.Step) error {
	switch step.Action {
	case state.Create:
		return h.replaceRoute(*step.After.Route)
	case state.Delete:
		return h.delRoute(*step.Before.Route)
	}
	// Same key (family, table, type, dst): replace in place. The key
	// could still differ if the planner pairs two different routes.
	if err := h.replaceRoute(*step.After.Route); err != nil {
		return err
	}
	if (state.Object{Route: step.Before.Route}).Key() != (state.Object{Route: step.After.Route}).Key() {
		return h.delRoute(*step.Before.Route)
	}
	return nil
}

func (h *Host) replaceRoute(r state.Route) error {
	nr, err := h.buildRoute(r)
	if err != nil {
		return err
	}
	err = h.nl.RouteReplace(nr)
	if err != nil && nr.Gw != nil && nr.LinkIndex != 0 && errors.Is(err, unix.ENETUNREACH) {
		// The gateway is not on a connected prefix of Dev: it is
		// reachable on the link all the same (point-to-point tunnel).
		nr.Flags |= int(netlink.FLAG_ONLINK)
		err = h.nl.RouteReplace(nr)
	}
	if err != nil {
		return fmt.Errorf("replace route: %w", err)
	}
	return nil
}

func (h *Host) delRoute(r state.Route) error {
	nr, err := h.buildRoute(r)
	if isLinkNotFound(err) {
		return nil // the route went with its device
	}
	if err != nil {
		return err
	}
	if err := h.nl.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete route: %w", err)
	}
	return nil
}
