// Package proto is the wire protocol between the migrate CLI and its agent:
// length-prefixed JSON frames over the SSH session's stdin/stdout. Each
// request gets exactly one response with the same ID.
package proto

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/opsmigrate/migrate/state"
)

// Version is bumped on any incompatible change.
//
// 2: typed state. Addresses are checked when a request is decoded (an
// address that does not parse fails there), and the one rule per fact of
// the state types' Validate methods applies, e.g. a moved service's
// percent is 1..100 and no_arp is for role new only.
const Version = 2

// MaxFrame bounds one message (facts of a big host fit easily).
const MaxFrame = 64 << 20

// Methods.
const (
	MethodHello = "hello"
	MethodFacts = "facts"
	MethodApply = "apply" // one step
	MethodPing  = "ping"  // ICMP echo from the host to an address
	// MethodJournal returns the host's own journal (state.Journal).
	MethodJournal = "journal"
	// MethodLock takes the host lock for this agent session; it is held
	// until the agent exits.
	MethodLock = "lock"
	// MethodForceUnlock clears a host lock record by ID.
	MethodForceUnlock = "force-unlock"
	// MethodArm starts the host's revert timer for a run.
	MethodArm = "arm"
	// MethodPrepare is the first phase of a two-host confirm: an armed
	// run becomes prepared and its revert deadline becomes GraceMS from
	// now; it still reverts unless a confirm follows in time.
	MethodPrepare = "prepare"
	// MethodConfirm decides to keep the run (armed or prepared ->
	// confirmed), unless the revert timer decided first; its result is
	// the host's decision (RunStatus).
	MethodConfirm = "confirm"
	// MethodAbort decides to revert the run now (armed, prepared or
	// confirmed -> reverting); the revert timer undoes it.
	MethodAbort = "abort"
	// MethodRunStatus returns what the host decided for a run.
	MethodRunStatus = "run-status"
	// MethodProbe opens a TCP connection from the host with a socket
	// mark, so that it takes migrate's policy route (through the tunnel).
	MethodProbe = "probe"
	// MethodRouteGet asks which source address the host uses towards an
	// address (ip route get).
	MethodRouteGet = "route-get"
	// MethodWGKey returns the host's WireGuard public key for a tunnel,
	// making the key pair on first use. The private key stays on the host.
	MethodWGKey = "wg-key"
	// MethodPrune drops entries from the host journal that rollback no
	// longer needs (PruneParams); the CLI drops the same ones from the
	// state file.
	MethodPrune = "prune"
	// MethodJournalPage returns part of the host's journal
	// (JournalPageParams, JournalPage): the entries from From on, as many
	// as fit in about JournalPageBytes, so that a journal of any size is
	// read in frames below MaxFrame. FetchJournal reads them all.
	MethodJournalPage = "journal-page"
)

// JournalPageBytes is about the most one journal page holds (a page
// holds at least one entry; one entry is two objects, far below MaxFrame
// in the compact encoding).
const JournalPageBytes = 16 << 20

// JournalPageParams asks for the entries from index From on.
type JournalPageParams struct {
	From int `json:"from"`
}

// JournalPage is a journal holding some of the entries (the targets only
// in the first page), and the index of the next page's first entry (0:
// this was the last page).
type JournalPage struct {
	Journal *state.Journal `json:"journal"`
	Next    int            `json:"next"`
}

// FetchJournal reads a whole journal page by page through call.
func FetchJournal(call func(JournalPageParams, *JournalPage) error) (*state.Journal, error) {
	var out *state.Journal
	from := 0
	for {
		var pg JournalPage
		if err := call(JournalPageParams{From: from}, &pg); err != nil {
			return nil, err
		}
		if pg.Journal == nil {
			return nil, fmt.Errorf("journal page from entry %d: no journal in the answer", from)
		}
		if out == nil {
			out = pg.Journal
		} else {
			out.Entries = append(out.Entries, pg.Journal.Entries...)
			for _, r := range pg.Journal.Runs {
				out.NoteRun(r.ID, r.Intent, r.Time)
			}
		}
		if pg.Next == 0 {
			return out, nil
		}
		if pg.Next <= from {
			return nil, fmt.Errorf("journal page from entry %d: next page at %d", from, pg.Next)
		}
		from = pg.Next
	}
}

// PruneParams names the host journal entries to drop.
type PruneParams struct {
	Entries []state.EntryID `json:"entries"`
}

// PruneResult is what the host dropped: the named entries it has, but
// never an entry of a run whose revert timer may still replay it, nor one
// still pending.
type PruneResult struct {
	Dropped []state.EntryID `json:"dropped"`
}

// WGKeyParams names the tunnel (its interface name).
type WGKeyParams struct {
	Name string `json:"name"`
}

// WGKeyResult is the host's public key, base64.
type WGKeyResult struct {
	PublicKey string `json:"public_key"`
}

// ProbeParams is a marked TCP connect.
type ProbeParams struct {
	Addr      string `json:"addr"`
	Port      uint16 `json:"port"`
	Mark      uint32 `json:"mark"`
	TimeoutMS int    `json:"timeout_ms"`
}

// RouteGetParams asks for the route to Addr. With Neigh, and when the
// route has no gateway (Addr is on a link of the host), the agent also
// sends Addr one UDP datagram (discard port 9), which makes the kernel
// resolve its link-layer address, and reports the neighbour entry: a
// direct tunnel's check that the peer is on the same segment.
type RouteGetParams struct {
	Addr  string `json:"addr"`
	Neigh bool   `json:"neigh,omitempty"`
}

// RouteGetResult is the chosen source address and device, the gateway
// ("" when Addr is on the link), and with Neigh the state of the
// neighbour entry for Addr on Dev after the probe ("reachable", "stale",
// "delay", "probe", "permanent", "incomplete", "failed", or "none").
type RouteGetResult struct {
	Src   string `json:"src"`
	Dev   string `json:"dev"`
	Gw    string `json:"gw,omitempty"`
	Neigh string `json:"neigh,omitempty"`
	// LLAddr is the neighbour's link-layer address, when resolved.
	LLAddr string `json:"lladdr,omitempty"`
	// LinkLocal (with Neigh) is this host's own IPv6 link-local address
	// on Dev: a direct tunnel's peer routes IPv6 to it when no global
	// address fits (facts leave out the link-locals the kernel made).
	LinkLocal string `json:"link_local,omitempty"`
}

// Request is one call.
type Request struct {
	ID     uint64          `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
	// Timings asks the agent to say where the request's time went
	// (internal/timing; MIGRATE_TIMINGS in the CLI).
	Timings bool `json:"timings,omitempty"`
}

// Response answers a Request.
type Response struct {
	ID     uint64          `json:"id"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
	// Timings: microseconds per phase, when the request asked.
	Timings map[string]int64 `json:"timings,omitempty"`
}

// Error is an agent-side failure.
type Error struct {
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Hello is the agent's greeting result.
type Hello struct {
	Version  int    `json:"version"`
	Hostname string `json:"hostname"`
	UID      int    `json:"uid"`
	PID      int    `json:"pid"`
}

// ApplyParams carries one step. With Run set, the host records it in its
// own journal: a forward step as entry Seq, an undo (Undo true) by marking
// entry Seq rolled back.
type ApplyParams struct {
	Step state.Step `json:"step"`
	Run  string     `json:"run,omitempty"`
	Seq  int        `json:"seq,omitempty"`
	Undo bool       `json:"undo,omitempty"`
}

// LockInfo names the holder of a lock.
type LockInfo struct {
	ID        string    `json:"id"`
	Holder    string    `json:"holder"`    // user@machine of the admin
	Operation string    `json:"operation"` // apply | rollback
	Started   time.Time `json:"started"`
}

// ArmParams starts a revert timer: unless the run is confirmed within
// TimeoutMS, the host undoes the run's steps by itself. It is a duration,
// measured on the host's own monotonic clock from the moment it arms: no
// wall time of either machine is involved.
type ArmParams struct {
	Run       string `json:"run"`
	TimeoutMS int64  `json:"timeout_ms"`
}

// PrepareParams is the first phase of a confirm: the run's deadline
// becomes GraceMS from now on the host's monotonic clock.
type PrepareParams struct {
	Run     string `json:"run"`
	GraceMS int64  `json:"grace_ms"`
}

// ConfirmParams keeps a run; also the params of abort and run-status.
type ConfirmParams struct {
	Run string `json:"run"`
}

// Run states on a host. A run goes armed -> (prepared ->) confirmed, or
// armed/prepared -> reverting -> reverted; confirmed -> reverting only by
// an explicit abort (the CLI undoing a host whose peer reverted).
const (
	RunArmed     = "armed"
	RunPrepared  = "prepared"
	RunConfirmed = "confirmed"
	RunReverting = "reverting"
	RunReverted  = "reverted"
)

// RunStatus is what a host decided for a run.
type RunStatus struct {
	Run   string `json:"run"`
	State string `json:"state"`
	// RemainingMS is the time left before the revert timer decides, for
	// an armed or prepared run.
	RemainingMS int64 `json:"remaining_ms,omitempty"`
	// Reason says why the run is reverting or reverted.
	Reason string `json:"reason,omitempty"`
}

// ForceUnlockParams clears the lock record with this ID.
type ForceUnlockParams struct {
	ID string `json:"id"`
}

// PingParams asks the agent to send ICMP echo requests to Addr.
type PingParams struct {
	Addr      string `json:"addr"`
	Count     int    `json:"count"`
	TimeoutMS int    `json:"timeout_ms"`
	// Size > 0: each request is an IP packet of exactly Size bytes,
	// not fragmented (apply's full-size tunnel check).
	Size int `json:"size,omitempty"`
}

// PingResult is the round-trip time of the first echo reply.
type PingResult struct {
	RTTMicros int64 `json:"rtt_us"`
}

// WriteFrame writes v as one frame.
func WriteFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(b), MaxFrame)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(append(hdr[:], b...)); err != nil {
		return err
	}
	return nil
}

// ReadFrame reads one frame into v.
func ReadFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", n, MaxFrame)
	}
	// Grow with what arrives instead of trusting the header: a 4-byte
	// header must not cost MaxFrame of memory.
	b, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return err
	}
	if len(b) < int(n) {
		return io.ErrUnexpectedEOF
	}
	return json.Unmarshal(b, v)
}
