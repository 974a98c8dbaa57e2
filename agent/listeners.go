package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/opsmigrate/migrate/agent/kernel"
	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// Socket states of sock_diag (include/net/tcp_states.h): a listening TCP
// socket, and TCP_CLOSE, the state of an unconnected UDP socket.
const (
	tcpListen = 10
	tcpClose  = 7
)

// Listeners returns the host's listening TCP and bound, unconnected UDP
// sockets from sock_diag (not by parsing ss), with the owning process.
func Listeners() ([]state.Listener, error) { return listeners(true) }

// ListenersNoOwners is Listeners without the processes: sock_diag only,
// no scan of every process's file descriptors.
func ListenersNoOwners() ([]state.Listener, error) { return listeners(false) }

func listeners(withOwners bool) ([]state.Listener, error) {
	owners := map[uint32]string{}
	if withOwners {
		owners = socketOwners()
	}
	var out []state.Listener
	seen := map[string]bool{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		// The kernel filters by state: a busy OLD's connections are not
		// copied out at every status reading.
		tcp, err := kernel.DumpSockets(fam, unix.IPPROTO_TCP, 1<<tcpListen)
		if err != nil {
			return nil, fmt.Errorf("sock_diag tcp: %w", err)
		}
		udp, err := kernel.DumpSockets(fam, unix.IPPROTO_UDP, 1<<tcpClose)
		if err != nil {
			return nil, fmt.Errorf("sock_diag udp: %w", err)
		}
		add := func(proto state.Proto, s kernel.Socket) {
			a := s.Local.Addr()
			if fam == unix.AF_INET6 && a.Is4() {
				return
			}
			l := state.Listener{Proto: proto, Addr: a.String(), Port: s.Local.Port(), Process: owners[s.Inode]}
			if a.IsUnspecified() && a.Is6() {
				l.V6Only = v6only()
			}
			k := fmt.Sprintf("%s %s %d", l.Proto, l.Addr, l.Port)
			if seen[k] {
				return
			}
			seen[k] = true
			out = append(out, l)
		}
		for _, s := range tcp {
			if s.State == tcpListen {
				add(state.TCP, s)
			}
		}
		for _, s := range udp {
			// Bound and not connected: a UDP server.
			if s.Local.Port() != 0 && s.Remote.Addr().IsUnspecified() && s.Remote.Port() == 0 {
				add(state.UDP, s)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.Addr < b.Addr
	})
	return out, nil
}

// v6only is the host default for :: sockets. A socket can override it;
// sock_diag reports that only in an attribute the library does not read,
// so the default is the best answer here.
func v6only() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/bindv6only")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// socketOwners maps socket inodes to the comm of a process holding them,
// made printable: any user names its own processes.
func socketOwners() map[uint32]string {
	out := map[uint32]string{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		fds, err := os.ReadDir(p + "/fd")
		if err != nil {
			continue
		}
		var comm string
		for _, fd := range fds {
			link, err := os.Readlink(p + "/fd/" + fd.Name())
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 32)
			if err != nil {
				continue
			}
			if _, ok := out[uint32(ino)]; ok {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(p + "/comm")
				comm = state.Printable(strings.TrimSuffix(string(b), "\n"))
			}
			out[uint32(ino)] = comm
		}
	}
	return out
}

// Probe connects to addr:port with SO_MARK set, so the connection takes
// the policy route for marked packets: on OLD, through the tunnel to NEW.
// It only needs the handshake to complete.
func Probe(p proto.ProbeParams) error {
	d := net.Dialer{
		Timeout: time.Duration(p.TimeoutMS) * time.Millisecond,
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(p.Mark))
			}); err != nil {
				return err
			}
			return serr
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.Timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(p.Addr, strconv.Itoa(int(p.Port))))
	if err != nil {
		return err
	}
	return c.Close()
}

// RouteGet is `ip route get addr`.
func RouteGet(addr string) (proto.RouteGetResult, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return proto.RouteGetResult{}, fmt.Errorf("bad address %q", addr)
	}
	routes, err := netlink.RouteGet(ip)
	if err != nil || len(routes) == 0 {
		return proto.RouteGetResult{}, fmt.Errorf("no route to %s: %v", addr, err)
	}
	r := routes[0]
	var res proto.RouteGetResult
	if r.Src != nil {
		res.Src = r.Src.String()
	}
	if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
		res.Dev = l.Attrs().Name
	}
	if r.Gw != nil {
		res.Gw = r.Gw.String()
	}
	return res, nil
}

// RouteGetNeigh is RouteGet, and with neigh, for an address on a link
// (no gateway), the neighbour entry after a probe: one UDP datagram to
// the discard port makes the kernel resolve the address (ARP or NDP);
// an answer within two seconds shows the peer is on that link.
func RouteGetNeigh(addr string, neigh bool) (proto.RouteGetResult, error) {
	res, err := RouteGet(addr)
	if err != nil || !neigh || res.Gw != "" || res.Dev == "" {
		return res, err
	}
	ip := net.ParseIP(addr)
	if c, err := net.Dial("udp", net.JoinHostPort(addr, "9")); err == nil {
		_, _ = c.Write([]byte{0})
		_ = c.Close()
	}
	res.Neigh = "none"
	l, err := netlink.LinkByName(res.Dev)
	if err != nil {
		return res, nil
	}
	if as, err := netlink.AddrList(l, netlink.FAMILY_V6); err == nil {
		for _, a := range as {
			if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				res.LinkLocal = a.IP.String()
				break
			}
		}
	}
	fam := netlink.FAMILY_V4
	if ip.To4() == nil {
		fam = netlink.FAMILY_V6
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ns, err := netlink.NeighList(l.Attrs().Index, fam)
		if err == nil {
			for _, n := range ns {
				if n.IP.Equal(ip) {
					res.Neigh = neighState(n.State)
					if n.HardwareAddr != nil {
						res.LLAddr = n.HardwareAddr.String()
					}
				}
			}
		}
		if res.Neigh != "none" && res.Neigh != "incomplete" || time.Now().After(deadline) {
			return res, nil
		}
	}
}

func neighState(s int) string {
	switch {
	case s&netlink.NUD_PERMANENT != 0:
		return "permanent"
	case s&netlink.NUD_REACHABLE != 0:
		return "reachable"
	case s&netlink.NUD_STALE != 0:
		return "stale"
	case s&netlink.NUD_DELAY != 0:
		return "delay"
	case s&netlink.NUD_PROBE != 0:
		return "probe"
	case s&netlink.NUD_FAILED != 0:
		return "failed"
	case s&netlink.NUD_INCOMPLETE != 0:
		return "incomplete"
	}
	return "none"
}
