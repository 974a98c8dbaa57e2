// Package kernel is the agent's host-side code: it reads the facts of the
// network namespace it was created in and applies single steps (state.Step)
// to it, using rtnetlink (vishvananda/netlink), nf_tables (google/nftables)
// and /proc/sys.
//
// Every Apply is idempotent: deleting something already absent succeeds, and
// creating something that already exists identically succeeds.
package kernel

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/google/nftables"
	"github.com/opsmigrate/migrate/internal/timing"
	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host operates on one network namespace: the one of the calling thread at
// New. The netlink handle and the nftables connections are pinned to it.
type Host struct {
	nl *netlink.Handle
	ns netns.NsHandle
	// NewNft opens an nftables connection to the host's namespace.
	NewNft func() (*nftables.Conn, error)
	// SysctlRoot is where sysctls live, normally /proc/sys.
	SysctlRoot string
	// ProcNet is the namespace's /proc/net (sockstat), normally
	// /proc/thread-self/net: the calling thread's namespace, as for
	// /proc/sys.
	ProcNet string
	// StateDir is where the agent keeps the last applied nft table
	// (nft-<name>.json).
	StateDir string
	// NoUDPWarmup: the boot restore. After a reboot no UDP session is
	// older than migrate's table, so OLD's table goes in at once
	// (warmUDP would only delay the boot).
	NoUDPWarmup bool

	// verified is the last nft table found to be exactly what migrate
	// wrote, with the ruleset generation it was read at (nftRead): an
	// apply right after the facts need not list it again while the
	// generation is the same (any change to any table bumps it).
	verified *verifiedNft

	// The boot and the namespace cookie that stamp migrate's nft
	// transactions (nftWhere), read once.
	whereRead   bool
	bootID      string
	netnsCookie uint64
	whereErr    error
}

// New returns a Host for the network namespace of the calling thread.
func New(stateDir string) (*Host, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open current network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	fd := int(ns)
	return &Host{
		nl: h,
		ns: ns,
		NewNft: func() (*nftables.Conn, error) {
			return nftables.New(nftables.WithNetNSFd(fd))
		},
		SysctlRoot: "/proc/sys",
		ProcNet:    "/proc/thread-self/net",
		StateDir:   stateDir,
	}, nil
}

// Close releases the netlink handle and the namespace reference.
func (h *Host) Close() error {
	if h.nl != nil {
		h.nl.Close()
		h.nl = nil
	}
	if h.ns.IsOpen() {
		return h.ns.Close()
	}
	return nil
}

// dumpRetries bounds retries of netlink dumps interrupted by concurrent
// changes (NLM_F_DUMP_INTR).
const dumpRetries = 5

func retryDump[T any](what string, f func() (T, error)) (T, error) {
	var v T
	var err error
	for i := 0; i < dumpRetries; i++ {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, fmt.Errorf("%s: dump interrupted %d times in a row: %w", what, dumpRetries, err)
}

// Facts reports the host's links, addresses, rules, the routes of the
// requested tables, the requested sysctls, migrate's nft tables and, in
// Stats, their live counters and the conntrack counts of req.Flows.
func (h *Host) Facts(req state.FactsRequest) (state.Facts, error) {
	var f state.Facts
	t0 := time.Now()
	f.Hostname, _ = os.Hostname()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		f.Kernel = unix.ByteSliceToString(uts.Release[:])
	}

	links, err := retryDump("list links", h.nl.LinkList)
	if err != nil {
		return f, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
		f.Links = append(f.Links, linkFacts(l))
	}
	sort.Slice(f.Links, func(i, j int) bool { return f.Links[i].Name < f.Links[j].Name })
	if err := h.wgFacts(f.Links); err != nil {
		return f, err
	}

	if f.Addrs, err = h.addrFacts(names); err != nil {
		return f, err
	}
	if f.Rules, err = h.ruleFacts(); err != nil {
		return f, err
	}
	if f.Routes, err = h.routeFacts(req.Tables, names); err != nil {
		return f, err
	}

	f.Sysctls = map[string]string{}
	if err := h.sysctlFacts(req.Sysctls, f.Sysctls); err != nil {
		return f, err
	}

	timing.Agent.Since("facts: links, addresses, rules, routes, sysctls", t0)
	if req.NftTable != "" {
		t0 := time.Now()
		f.Nft, f.NftDrift, f.Stats, err = h.nftFacts(req.NftTable, !req.NoCounters)
		if err != nil {
			return f, err
		}
		if f.Nft == nil {
			_, err := os.Lstat(h.nftStatePath(req.NftTable))
			f.NftRemoved = err == nil
		}
		timing.Agent.Since("facts: nft table and counters", t0)
	}
	if req.Conntrack {
		t0 := time.Now()
		if f.Conntrack, err = h.conntrackFacts(); err != nil {
			return f, err
		}
		timing.Agent.Since("facts: conntrack fill", t0)
	}
	// The live table's services count too when the request leaves them
	// out: a service taken out of the plan may still have connections
	// going through the tunnel, which plan warns about before they are cut.
	want := req.Flows
	if f.Nft != nil && req.Mark != 0 {
		asked := map[string]bool{}
		for _, s := range req.Flows {
			asked[s.Key()] = true
		}
		for _, s := range f.Nft.Spec.Plumbed() {
			if !asked[s.Key()] {
				want = append(want, s)
			}
		}
	}
	if len(want) > 0 {
		t0 := time.Now()
		flows, err := h.flowCounts(want, req.Mark, req.Sockets)
		timing.Agent.Since("facts: flow counts (conntrack, sockets)", t0)
		if err != nil {
			return f, err
		}
		if f.Stats == nil {
			f.Stats = &state.Stats{}
		}
		f.Stats.Flows = flows
	}
	if v := h.verified; v != nil && req.NftTable != "" && req.ForUpdate {
		v.renderLater()
	}
	return f, nil
}

// Apply performs one step on the host.
func (h *Host) Apply(step state.Step) error {
	obj := step.Object()
	switch step.Action {
	case state.Create:
		if step.After == nil {
			return fmt.Errorf("create step without an object")
		}
	case state.Delete:
		if step.Before == nil {
			return fmt.Errorf("delete step without an object")
		}
	case state.Update:
		if step.Before == nil || step.After == nil {
			return fmt.Errorf("update step needs both the old and the new object")
		}
		if step.Before.Kind() != step.After.Kind() {
			return fmt.Errorf("update step changes the kind of object from %s to %s", step.Before.Kind(), step.After.Kind())
		}
	default:
		return fmt.Errorf("unknown action %q", step.Action)
	}
	var err error
	switch obj.Kind() {
	case state.KindLink:
		err = h.applyLink(step)
	case state.KindSysctl:
		err = h.applySysctl(step)
	case state.KindRule:
		err = h.applyRule(step)
	case state.KindAddr:
		err = h.applyAddr(step)
	case state.KindRoute:
		err = h.applyRoute(step)
	case state.KindNft:
		err = h.applyNft(step)
	case state.KindFile:
		err = h.applyFile(step)
	default:
		return fmt.Errorf("step has no object")
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", step.Action, obj.Key(), err)
	}
	return nil
}

// family maps 4/6 to the netlink address family.
func family(f int) (int, error) {
	switch f {
	case 4:
		return unix.AF_INET, nil
	case 6:
		return unix.AF_INET6, nil
	}
	return 0, fmt.Errorf("family must be 4 or 6, not %d", f)
}

func familyOf(af int) int {
	if af == unix.AF_INET6 {
		return 6
	}
	return 4
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// readNoFollow reads a file of the state directory without following a
// symbolic link in its last component: the agent checked the directory
// (agent.CheckStateDir), and a link planted in it is an error, never a
// way to make root read another file.
func readNoFollow(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link: the agent never follows links in its state directory; remove it", path)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
