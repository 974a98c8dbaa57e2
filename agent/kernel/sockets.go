package kernel

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// TCP states of sock_diag (include/net/tcp_states.h).
const (
	tcpStEstablished = 1
	tcpStSynRecv     = 3
	tcpStFinWait1    = 4
	tcpStCloseWait   = 8
)

// connectedStates are the TCP states in which a connection can still
// carry data between the host and its client: the host's daemon holds it
// (ESTABLISHED, CLOSE-WAIT: the client closed, the daemon may still
// write), it is being accepted (SYN-RECV), or the kernel still sends
// what the daemon wrote before closing (FIN-WAIT-1). TIME-WAIT,
// FIN-WAIT-2, LAST-ACK and CLOSING carry no more data from the daemon.
const connectedStates = 1<<tcpStEstablished | 1<<tcpStSynRecv | 1<<tcpStFinWait1 | 1<<tcpStCloseWait

// Socket is one socket as sock_diag reports it, its addresses unmapped.
type Socket struct {
	State         uint8
	Local, Remote netip.AddrPort
	Inode         uint32
}

// inetDiagReq is struct inet_diag_req_v2 with an empty socket id (dump
// every socket of the family, protocol and states) and no extensions
// (netlink.SocketDiagTCP asks for every state and each socket's
// tcp_info: on a busy server, every connection copied out).
type inetDiagReq struct {
	family, protocol uint8
	states           uint32
}

func (r inetDiagReq) Len() int { return 56 }

func (r inetDiagReq) Serialize() []byte {
	b := make([]byte, 56)
	b[0], b[1] = r.family, r.protocol
	nl.NativeEndian().PutUint32(b[4:8], r.states)
	return b
}

// parseInetDiagMsg reads struct inet_diag_msg: family, state, timer,
// retrans; the id (sport, dport big-endian, src and dst 16 bytes each,
// if, cookie); expires, rqueue, wqueue, uid, inode (host order).
func parseInetDiagMsg(msg []byte) (Socket, bool) {
	var e Socket
	if len(msg) < 72 {
		return e, false
	}
	n := 16
	switch msg[0] {
	case unix.AF_INET:
		n = 4
	case unix.AF_INET6:
	default:
		return e, false
	}
	src, ok1 := netip.AddrFromSlice(msg[8 : 8+n])
	dst, ok2 := netip.AddrFromSlice(msg[24 : 24+n])
	if !ok1 || !ok2 {
		return e, false
	}
	e.State = msg[1]
	e.Local = netip.AddrPortFrom(src.Unmap(), binary.BigEndian.Uint16(msg[4:6]))
	e.Remote = netip.AddrPortFrom(dst.Unmap(), binary.BigEndian.Uint16(msg[6:8]))
	e.Inode = nl.NativeEndian().Uint32(msg[68:72])
	return e, true
}

// DumpSockets dumps the sockets of one family and protocol in the given
// states (a bit per state; the kernel filters) in the calling thread's
// network namespace. A host without IPv6 has no AF_INET6 sockets: none,
// no error.
func DumpSockets(family, protocol uint8, states uint32) ([]Socket, error) {
	out, err := retryDump("list sockets", func() ([]Socket, error) {
		var out []Socket
		req := nl.NewNetlinkRequest(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
		req.AddData(inetDiagReq{family: family, protocol: protocol, states: states})
		err := req.ExecuteIter(unix.NETLINK_SOCK_DIAG, unix.SOCK_DIAG_BY_FAMILY, func(msg []byte) bool {
			if e, ok := parseInetDiagMsg(msg); ok {
				out = append(out, e)
			}
			return true
		})
		return out, err
	})
	if errors.Is(err, unix.ENOENT) && family == unix.AF_INET6 {
		return nil, nil
	}
	return out, err
}

// socketList dumps the host's sockets of one family and protocol in the
// given states (a bit per state; the kernel filters) and returns those
// keep accepts.
func (h *Host) socketList(family, protocol uint8, states uint32, keep func(Socket) bool) ([]Socket, error) {
	return retryDump("list sockets", func() ([]Socket, error) {
		var out []Socket
		req := nl.NewNetlinkRequest(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_DUMP)
		req.AddData(inetDiagReq{family: family, protocol: protocol, states: states})
		err := h.nlDump(unix.NETLINK_SOCK_DIAG, req, func(msg []byte) {
			if e, ok := parseInetDiagMsg(msg); ok && keep(e) {
				out = append(out, e)
			}
		})
		return out, err
	})
}
