package kernel

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nftStamp names the nftables ruleset that migrate's own last transaction
// on a table left behind: the ruleset generation that transaction
// produced, in which network namespace (its cookie, never reused within
// a boot, unlike an inode number), in which boot. nf_tables moves a
// namespace's generation by one on every committed transaction, by any
// process, whatever table it touches; so while all three are the same,
// no transaction has run since migrate's, and the namespace's ruleset
// (migrate's table included) is exactly what that transaction left: the
// rendering of the agent's record. Facts then skip listing and comparing
// the table (nftRead). Anything else (another process changed any table,
// a reboot, another namespace, a kernel without SO_NETNS_COOKIE) falls
// back to the full comparison.
type nftStamp struct {
	BootID string `json:"boot_id"`
	Netns  uint64 `json:"netns_cookie"`
	Gen    uint32 `json:"gen"`
}

// nftRecord is the agent's record file nft-NAME.json: the table migrate
// last wrote (its fields at the top level, as before stamps) and, when
// known, the stamp of the transaction that wrote it. A record without a
// stamp (an older agent's, or a transaction whose generation could not
// be attributed to it) is always compared in full.
type nftRecord struct {
	state.NftTable
	Written *nftStamp `json:"written,omitempty"`
	// Layout is the layout of the rules that agent wrote (nftLayout);
	// 0 (absent): layoutV1, from an agent before layouts.
	Layout nftLayout `json:"layout,omitempty"`
}

// nftWhere is the boot and the network namespace of h's nftables
// connections, read once; ok is false when either cannot be read (then
// no stamp is written or trusted).
func (h *Host) nftWhere() (bootID string, cookie uint64, ok bool) {
	if !h.whereRead {
		h.whereRead = true
		h.bootID, h.netnsCookie, h.whereErr = readNftWhere(h.ns)
	}
	return h.bootID, h.netnsCookie, h.whereErr == nil
}

func readNftWhere(ns netns.NsHandle) (string, uint64, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", 0, err
	}
	boot := strings.TrimSpace(string(b))
	if boot == "" {
		return "", 0, fmt.Errorf("empty boot_id")
	}
	if !ns.IsOpen() {
		return "", 0, fmt.Errorf("no network namespace handle")
	}
	// A socket opened in the namespace names it: SO_NETNS_COOKIE (Linux
	// 5.14) is the cookie of the socket's namespace.
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return "", 0, err
	}
	defer s.Close()
	cookie, err := unix.GetsockoptUint64(s.GetFd(), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return "", 0, fmt.Errorf("SO_NETNS_COOKIE: %w", err)
	}
	if cookie == 0 {
		return "", 0, fmt.Errorf("netns cookie 0")
	}
	return boot, cookie, nil
}

// nextGen is the generation a committed transaction turns gen into
// (nf_tables skips 0 when it wraps).
func nextGen(gen uint32) uint32 {
	if gen++; gen == 0 {
		gen = 1
	}
	return gen
}

// nftGenReader reads the ruleset generation (an *nftables.Conn).
type nftGenReader interface {
	GetGen() (*nftables.Gen, error)
}

// stampAfter is the stamp of a transaction that committed non-empty with
// generation gen: the commit moved the generation to nextGen(gen) under
// nf_tables' commit mutex, and a read right after that finds exactly
// that value only if no other transaction committed since. Any other
// value (someone else committed in between) gives no stamp: the next
// facts compare the table in full.
func (h *Host) stampAfter(cc nftGenReader, gen uint32) *nftStamp {
	boot, cookie, ok := h.nftWhere()
	if !ok {
		return nil
	}
	after, err := cc.GetGen()
	if err != nil || after.ID != nextGen(gen) {
		return nil
	}
	return &nftStamp{BootID: boot, Netns: cookie, Gen: after.ID}
}

// stampMatches tells whether s names the ruleset of this boot and namespace
// at generation gen.
func (h *Host) stampMatches(s *nftStamp, gen uint32) bool {
	if s == nil {
		return false
	}
	boot, cookie, ok := h.nftWhere()
	return ok && s.BootID == boot && s.Netns == cookie && s.Gen == gen
}
