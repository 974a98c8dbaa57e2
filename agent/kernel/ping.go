package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Ping sends up to count ICMP echo requests to addr (IPv4 or IPv6), waiting
// up to timeout for a reply after each. It succeeds as soon as one reply
// arrives, and returns that reply's round-trip time.
//
// size > 0 makes each request an IP packet of exactly size bytes that may
// not be fragmented (DF, and IPV6_DONTFRAG), sent at that size whatever
// path MTU the kernel has learned: apply's full-size tunnel check. Its
// reply is as large, so a reply proves the size both ways.
func (h *Host) Ping(addr string, count int, timeout time.Duration, size int) (time.Duration, error) {
	ip := net.ParseIP(addr)
	if ip == nil {
		return 0, fmt.Errorf("ping: %q is not an IP address", addr)
	}
	if count <= 0 {
		count = 1
	}
	if timeout <= 0 {
		timeout = time.Second
	}
	network, laddr, reqType, replyType := "ip4:icmp", "0.0.0.0", byte(8), byte(0)
	if ip.To4() == nil {
		// The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets.
		network, laddr, reqType, replyType = "ip6:ipv6-icmp", "::", 128, 129
	} else {
		ip = ip.To4()
	}
	conn, err := net.ListenPacket(network, laddr)
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", addr, err)
	}
	defer conn.Close()
	header := 20
	if reqType != 8 {
		header = 40
	}
	payload := 16
	if size > 0 {
		if payload = size - header - 8; payload < 16 {
			return 0, fmt.Errorf("ping %s: size %d is too small", addr, size)
		}
		if err := dontFragment(conn, reqType == 8); err != nil {
			return 0, fmt.Errorf("ping %s: %w", addr, err)
		}
	}

	id := uint16(os.Getpid()) ^ uint16(time.Now().UnixNano())
	buf := make([]byte, max(1500, 8+payload+64))
	for seq := 1; seq <= count; seq++ {
		msg := make([]byte, 8, 8+payload)
		msg[0] = reqType
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], uint16(seq))
		for len(msg) < 8+payload {
			msg = append(msg, "migrate-ping-001"[(len(msg)-8)%16])
		}
		if reqType == 8 {
			binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		}
		if _, err := conn.WriteTo(msg, &net.IPAddr{IP: ip}); err != nil {
			return 0, fmt.Errorf("ping %s: send: %w", addr, err)
		}
		sent := time.Now()
		deadline := sent.Add(timeout)
		if err := conn.SetReadDeadline(deadline); err != nil {
			return 0, err
		}
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return 0, fmt.Errorf("ping %s: receive: %w", addr, err)
			}
			src, _ := from.(*net.IPAddr)
			if n < 8 || buf[0] != replyType || binary.BigEndian.Uint16(buf[4:]) != id {
				continue
			}
			if n != len(msg) {
				continue // not the whole echo: not proof of the size
			}
			if src != nil && !src.IP.Equal(ip) {
				continue
			}
			return time.Since(sent), nil
		}
	}
	return 0, fmt.Errorf("ping %s: no reply to %d echo requests (timeout %s each)", addr, count, timeout)
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// dontFragment makes the socket send with DF set (IPv6: never fragment)
// and at the size asked, even above a path MTU the kernel has learned
// (PMTUDISC_PROBE): the probe must cross the path as one packet or fail.
func dontFragment(conn net.PacketConn, v4 bool) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return fmt.Errorf("no socket to set DF on")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v4 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE); serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}
