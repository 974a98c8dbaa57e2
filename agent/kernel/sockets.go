package kernel

import (
	"encoding/binary"
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

// sockEntry is one socket as sock_diag reports it.
type sockEntry struct {
	local, remote netip.AddrPort // addresses unmapped
	state         uint8
}

// inetDiagReq is struct inet_diag_req_v2 with an empty socket id (dump
// every socket of the family, protocol and states).
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
// retrans, then the id (sport, dport big-endian, src and dst 16 bytes).
func parseInetDiagMsg(msg []byte) (sockEntry, bool) {
	var e sockEntry
	if len(msg) < 40 {
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
	e.state = msg[1]
	e.local = netip.AddrPortFrom(src.Unmap(), binary.BigEndian.Uint16(msg[4:6]))
	e.remote = netip.AddrPortFrom(dst.Unmap(), binary.BigEndian.Uint16(msg[6:8]))
	return e, true
}

// socketList dumps the host's sockets of one family and protocol in the
// given states (a bit per state; the kernel filters) and returns those
// keep accepts.
func (h *Host) socketList(family, protocol uint8, states uint32, keep func(sockEntry) bool) ([]sockEntry, error) {
	return retryDump("list sockets", func() ([]sockEntry, error) {
		var out []sockEntry
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
