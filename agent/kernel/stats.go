package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nftStats reads the live counters of table inet t: per accounted service
// the packets and bytes sent to NEW (acct sets) and the new flows (flows
// sets), and the underlay filter's drops. Counters are keyed by
// NftService.Key(): the saved spec's spelling when the element is in it,
// else the one decoded from the element's key.
func nftStats(cc *nftReader, t *nftables.Table, saved *state.NftTable) (*state.Stats, error) {
	st := &state.Stats{}
	names := map[string]string{}
	if saved != nil {
		for _, s := range saved.Spec.Accounted {
			if k, _, err := serviceKey(s); err == nil {
				names[string(k)] = s.Key()
			}
		}
	}
	sets, err := cc.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list nft sets: %w", err)
	}
	for _, s := range sets {
		var flows bool
		switch s.Name {
		case nftAcct4, nftAcct6:
		case nftFlows4, nftFlows6:
			flows = true
		default:
			continue
		}
		elems, err := cc.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		for _, e := range elems {
			key, ok := names[string(e.Key)]
			if !ok {
				svc, ok := serviceOfKey(e.Key)
				if !ok {
					continue
				}
				key = svc.Key()
			}
			if st.Counters == nil {
				st.Counters = map[string]state.Counter{}
			}
			c := st.Counters[key]
			if e.Counter != nil {
				if flows {
					c.NewFlows = e.Counter.Packets
				} else {
					c.Packets, c.Bytes = e.Counter.Packets, e.Counter.Bytes
				}
			}
			st.Counters[key] = c
		}
	}
	chains, err := cc.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, fmt.Errorf("list nft chains: %w", err)
	}
	// The underlay filter is a rule of chain input (layoutV1, and NEW) or
	// the first of chain prerouting (OLD from layoutV2 on): found by what
	// it is, wherever it is.
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != t.Name || c.Hooknum == nil {
			continue
		}
		if h := *c.Hooknum; h != *nftables.ChainHookInput && h != *nftables.ChainHookPrerouting {
			continue
		}
		rules, err := cc.GetRules(t, c)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", c.Name, err)
		}
		for _, r := range rules {
			if ctr := underlayCounter(r.Exprs); ctr != nil {
				st.UnderlayDropped.Packets += ctr.Packets
				st.UnderlayDropped.Bytes += ctr.Bytes
			}
		}
	}
	return st, nil
}

// underlayCounter is the counter of the underlay filter's rule
// (underlayDrop: ... ip[6] saddr != PEER counter drop), nil for any other
// rule. No other rule of migrate's compares the source address with !=.
func underlayCounter(ex []expr.Any) *expr.Counter {
	n := len(ex)
	if n < 4 {
		return nil
	}
	v, ok := ex[n-1].(*expr.Verdict)
	if !ok || v.Kind != expr.VerdictDrop {
		return nil
	}
	ctr, ok := ex[n-2].(*expr.Counter)
	if !ok {
		return nil
	}
	cmp, ok := ex[n-3].(*expr.Cmp)
	if !ok || cmp.Op != expr.CmpOpNeq {
		return nil
	}
	p, ok := ex[n-4].(*expr.Payload)
	if !ok || p.OperationType != expr.PayloadLoad || p.Base != expr.PayloadBaseNetworkHeader ||
		!(p.Offset == 12 && p.Len == 4 || p.Offset == 8 && p.Len == 16) {
		return nil
	}
	return ctr
}

// nlDump runs one netlink dump in the host's namespace and calls f with
// the payload of each message (after the nlmsghdr).
func (h *Host) nlDump(proto int, req *nl.NetlinkRequest, f func(msg []byte)) error {
	s, err := nl.GetNetlinkSocketAt(h.ns, netns.None(), proto)
	if err != nil {
		return err
	}
	defer s.Close()
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	if err := s.SetReceiveTimeout(&tv); err != nil {
		return err
	}
	req.Sockets = map[int]*nl.SocketHandle{proto: {Socket: s}}
	return req.ExecuteIter(proto, 0, func(msg []byte) bool {
		f(msg)
		return true
	})
}

// Conntrack attributes and status bits (linux/netfilter/nfnetlink_conntrack.h,
// linux/netfilter/nf_conntrack_common.h).
const (
	ctaTupleOrig      = 1
	ctaStatus         = 3
	ctaProtoinfo      = 4
	ctaMark           = 8
	ctaTupleIP        = 1
	ctaTupleProto     = 2
	ctaIPv4Src        = 1
	ctaIPv4Dst        = 2
	ctaIPv6Src        = 3
	ctaIPv6Dst        = 4
	ctaProtoNum       = 1
	ctaProtoSrcPort   = 2
	ctaProtoDstPort   = 3
	ctaProtoinfoTCP   = 1
	ctaProtoinfoTCPSt = 1
	ipsSeenReply      = 1 << 1
	ipsAssured        = 1 << 2
	tcpCtEstablished  = 3
)

// ctEntry is what migrate needs of one conntrack entry.
type ctEntry struct {
	src, dst     netip.Addr // original direction
	proto        uint8
	sport, dport uint16
	status       uint32
	mark         uint32
	tcpState     uint8
}

// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from an
// attribute type.
const nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)

func attrsOf(b []byte) map[uint16][]byte {
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return nil
	}
	m := map[uint16][]byte{}
	for _, a := range attrs {
		m[a.Attr.Type&nlaTypeMask] = a.Value
	}
	return m
}

func be32(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func parseCtEntry(msg []byte) (ctEntry, bool) {
	var e ctEntry
	if len(msg) < 4 {
		return e, false
	}
	top := attrsOf(msg[4:]) // after struct nfgenmsg
	orig := attrsOf(top[ctaTupleOrig])
	ip := attrsOf(orig[ctaTupleIP])
	var ok bool
	if d := ip[ctaIPv4Dst]; d != nil {
		e.dst, ok = netip.AddrFromSlice(d)
	} else if d := ip[ctaIPv6Dst]; d != nil {
		e.dst, ok = netip.AddrFromSlice(d)
	}
	if !ok {
		return e, false
	}
	if d := ip[ctaIPv4Src]; d != nil {
		e.src, _ = netip.AddrFromSlice(d)
	} else if d := ip[ctaIPv6Src]; d != nil {
		e.src, _ = netip.AddrFromSlice(d)
	}
	pr := attrsOf(orig[ctaTupleProto])
	if p := pr[ctaProtoNum]; len(p) == 1 {
		e.proto = p[0]
	}
	if p := pr[ctaProtoSrcPort]; len(p) == 2 {
		e.sport = uint16(p[0])<<8 | uint16(p[1])
	}
	if p := pr[ctaProtoDstPort]; len(p) == 2 {
		e.dport = uint16(p[0])<<8 | uint16(p[1])
	}
	e.status = be32(top[ctaStatus])
	e.mark = be32(top[ctaMark])
	if tcp := attrsOf(attrsOf(top[ctaProtoinfo])[ctaProtoinfoTCP]); tcp != nil {
		if s := tcp[ctaProtoinfoTCPSt]; len(s) == 1 {
			e.tcpState = s[0]
		}
	}
	return e, true
}

// conntrackList dumps the conntrack table of one family (AF_INET or
// AF_INET6) and returns the entries keep accepts (a busy host has
// millions). vishvananda/netlink's ConntrackTableList is not used: its
// ConntrackFlow (v1.3.1) drops CTA_STATUS, and UDP "established" is the
// ASSURED status bit.
func (h *Host) conntrackList(family uint8, keep func(ctEntry) bool) ([]ctEntry, error) {
	return retryDump("list conntrack", func() ([]ctEntry, error) {
		var out []ctEntry
		req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_CTNETLINK<<8|nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
		req.AddData(&nl.Nfgenmsg{NfgenFamily: family, Version: nl.NFNETLINK_V0})
		err := h.nlDump(unix.NETLINK_NETFILTER, req, func(msg []byte) {
			if e, ok := parseCtEntry(msg); ok && keep(e) {
				out = append(out, e)
			}
		})
		return out, err
	})
}

// flowCounts counts the conntrack entries of each requested service:
// all entries whose original direction goes to its address, protocol and
// port; the established ones (TCP state ESTABLISHED, UDP: ASSURED); and
// those carrying mark (going to NEW). With sockets, it also counts the
// host's own connected sockets of the service (sock_diag), and those of
// them that no established unmarked conntrack entry stands for.
func (h *Host) flowCounts(services []state.NftService, mark uint32, sockets bool) (map[string]state.FlowCount, error) {
	type key struct {
		addr  netip.Addr
		proto uint8
		port  uint16
	}
	// conn is one connection: client and service address and port.
	type conn struct {
		proto          uint8
		client, server netip.AddrPort
	}
	onOld := map[conn]bool{}
	want := map[key]string{}
	out := map[string]state.FlowCount{}
	fams := map[uint8]bool{}
	protos := map[uint8]bool{}
	for _, s := range services {
		a := s.Addr.Unmap()
		var p uint8
		switch s.Proto {
		case "tcp":
			p = unix.IPPROTO_TCP
		case "udp":
			p = unix.IPPROTO_UDP
		default:
			return nil, fmt.Errorf("flows of %s: protocol %q is not tcp or udp", s.Key(), s.Proto)
		}
		want[key{a, p, s.Port}] = s.Key()
		protos[p] = true
		out[s.Key()] = state.FlowCount{}
		if a.Is4() {
			fams[unix.AF_INET] = true
		} else {
			fams[unix.AF_INET6] = true
		}
	}
	// Asking ctnetlink for a dump loads nf_conntrack when it is not
	// loaded yet: reading facts would change the host (a plan made
	// before apply would then look stale, the limit having appeared).
	// Without conntrack there are no flows to count.
	_, loaded, err := h.readSysctl(state.ConntrackMax)
	if err != nil {
		return nil, err
	}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if !fams[fam] || !loaded {
			continue
		}
		entries, err := h.conntrackList(fam, func(e ctEntry) bool {
			_, ok := want[key{e.dst.Unmap(), e.proto, e.dport}]
			return ok
		})
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPROTONOSUPPORT) {
			continue // no conntrack here: no flows
		}
		if err != nil {
			return nil, fmt.Errorf("list conntrack: %w", err)
		}
		for _, e := range entries {
			k, ok := want[key{e.dst.Unmap(), e.proto, e.dport}]
			if !ok {
				continue
			}
			c := out[k]
			c.Total++
			// A TCP entry that never saw an answer is no connection
			// anyone serves: conntrack picks up a stray mid-stream packet
			// (a client's last one after its socket is gone) as
			// "established" and keeps it for minutes. Real connections of
			// OLD that conntrack has not seen answered are in OLD's
			// sockets.
			established := (e.proto == unix.IPPROTO_TCP && e.tcpState == tcpCtEstablished && e.status&ipsSeenReply != 0) ||
				(e.proto != unix.IPPROTO_TCP && e.status&ipsAssured != 0)
			toNew := mark != 0 && e.mark&mark != 0
			if established {
				c.Established++
			}
			if toNew {
				c.ToNew++
			}
			if established && !toNew {
				c.OnOld++
				onOld[conn{e.proto, netip.AddrPortFrom(e.src.Unmap(), e.sport), netip.AddrPortFrom(e.dst.Unmap(), e.dport)}] = true
			}
			out[k] = c
		}
	}
	if !sockets {
		return out, nil
	}
	// Both families whatever the service's: a connection to an IPv4
	// address accepted by a dual-stack [::] listener is an AF_INET6
	// socket with a v4-mapped address.
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		for _, p := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			if !protos[p] {
				continue
			}
			// UDP sockets report TCP_ESTABLISHED when connected.
			states := uint32(connectedStates)
			if p == unix.IPPROTO_UDP {
				states = 1 << tcpStEstablished
			}
			socks, err := h.socketList(fam, p, states, func(e Socket) bool {
				_, ok := want[key{e.Local.Addr(), p, e.Local.Port()}]
				return ok
			})
			if errors.Is(err, unix.ENOENT) && fam == unix.AF_INET6 {
				continue // no IPv6 here: no IPv6 sockets
			}
			if err != nil {
				return nil, fmt.Errorf("list sockets: %w", err)
			}
			for _, e := range socks {
				k := want[key{e.Local.Addr(), p, e.Local.Port()}]
				c := out[k]
				c.Sockets++
				if !onOld[conn{p, e.Remote, e.Local}] {
					c.SocketsOnly++
				}
				out[k] = c
			}
		}
	}
	return out, nil
}
