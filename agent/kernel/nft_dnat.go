package kernel

import (
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Chains for hosts where another table DNATs (Docker's published ports).
const (
	nftKeepDest   = "keep_dest"     // OLD: moved flows keep their destination
	nftKeepDestO  = "keep_dest_out" // OLD: so do its own probes through the tunnel
	nftDNATMark   = "dnat_mark"     // NEW: flows from the tunnel, and their answers
	nftPeerDst4   = "peerdst4"      // NEW, direct tunnel: the migrated addresses, OLD's flows' destinations
	nftPeerDst6   = "peerdst6"      //
	keepDestPrio  = -101            // just before dstnat (-100): Docker's nat PREROUTING
	ctDirReply    = 1               // IP_CT_DIR_REPLY
	metaMarkBytes = 4
)

// metaMarkHas is `meta mark & m == m`.
func metaMarkHas(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: metaMarkBytes, Mask: native32(m), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: native32(m)},
	}
}

// ctReply is `ct direction reply`.
func ctReply() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{ctDirReply}},
	}
}

// sameDest is `dnat ipX to ipX daddr`: a DNAT to the address the packet
// already has, so the flow's destination binding is made (and unchanged).
func sameDest(v6 bool) []expr.Any {
	family, off, n := uint32(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if v6 {
		family, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	return join(nfproto(v6), []expr.Any{
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: family, RegAddrMin: reg1, RegAddrMax: reg1},
	})
}
