package main

import (
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
)

// ctfill inserts N conntrack entries into the namespace it runs in, the
// way conntrack -I does (ctnetlink): unreplied UDP flows from
// 10.99.0.0/16 to 192.0.2.99 with distinct ports, each living -timeout.
// They fill the table of a lab host as a busy server's flows would,
// without the traffic. They go with the namespace.
//
//	labtool ctfill -n N [-timeout 10m]
func ctfill(args []string) error {
	fs := flag.NewFlagSet("ctfill", flag.ExitOnError)
	n := fs.Int("n", 0, "entries to insert")
	timeout := fs.Duration("timeout", 10*time.Minute, "lifetime of each entry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n <= 0 || *n > 1<<22 {
		return fmt.Errorf("-n %d: must be 1..%d", *n, 1<<22)
	}
	h, err := netlink.NewHandle(netlink.FAMILY_ALL)
	if err != nil {
		return err
	}
	defer h.Close()
	dst := net.IPv4(192, 0, 2, 99).To4()
	start := time.Now()
	for i := 0; i < *n; i++ {
		// 65536 addresses x 60000 ports: distinct tuples.
		src := net.IPv4(10, 99, byte(i>>8), byte(i)).To4()
		sport := uint16(1024 + (i>>16)%60000)
		f := &netlink.ConntrackFlow{
			FamilyType: netlink.FAMILY_V4,
			Forward:    netlink.IPTuple{SrcIP: src, DstIP: dst, Protocol: 17, SrcPort: sport, DstPort: 9},
			Reverse:    netlink.IPTuple{SrcIP: dst, DstIP: src, Protocol: 17, SrcPort: 9, DstPort: sport},
			TimeOut:    uint32(timeout.Seconds()),
		}
		if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.FAMILY_V4, f); err != nil {
			return fmt.Errorf("entry %d of %d: %w", i+1, *n, err)
		}
	}
	fmt.Printf("ctfill: %d entries in %s\n", *n, time.Since(start).Round(time.Millisecond))
	return nil
}
