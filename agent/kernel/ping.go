package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Ping sends up to count ICMP echo requests to addr (IPv4 or IPv6), waiting
// up to timeout for a reply after each. It succeeds as soon as one reply
// arrives, and returns that reply's round-trip time.
func (h *Host) Ping(addr string, count int, timeout time.Duration) (time.Duration, error) {
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

	id := uint16(os.Getpid()) ^ uint16(time.Now().UnixNano())
	buf := make([]byte, 1500)
	for seq := 1; seq <= count; seq++ {
		msg := make([]byte, 8, 8+16)
		msg[0] = reqType
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], uint16(seq))
		msg = append(msg, []byte("migrate-ping-001")...)
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
