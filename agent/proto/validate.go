package proto

// Validation of request parameters: one Validate method per params type,
// which the agent runs on every request it decodes (agent/validate.go)
// and a client may run before sending. The state objects in a request are
// checked by their own Validate methods (package state). Each error says
// which request, what is wrong and what is allowed.

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/opsmigrate/migrate/state"
)

// maxRunID bounds a run or lock ID (it becomes part of file names).
const maxRunID = 64

const runIDRule = `must be 1..64 letters, digits, _ or - (e.g. 3f2a9c01d4e5b6a7)`

// Validate checks an apply request: its step, and the run it belongs
// to when set.
func (p ApplyParams) Validate() error {
	if err := p.Step.Validate(); err != nil {
		return fmt.Errorf("bad step: %w", err)
	}
	if p.Run != "" {
		if err := checkRunID(p.Run); err != nil {
			return fmt.Errorf("bad apply request: run %w", err)
		}
	}
	if p.Seq < 0 {
		return fmt.Errorf("bad apply request: seq %d: must be 0 or more", p.Seq)
	}
	return nil
}

// checkRunID checks an identifier that may become part of a file name (a
// run ID, a lock ID).
func checkRunID(id string) error {
	if id == "" || len(id) > maxRunID {
		return fmt.Errorf("%s: %s", state.Show(id), runIDRule)
	}
	for i := 0; i < len(id); i++ {
		if !state.IsWordByte(id[i]) {
			return fmt.Errorf("%s: %s", state.Show(id), runIDRule)
		}
	}
	return nil
}

// Validate checks a lock request. The ID names the lock in messages
// and in `migrate force-unlock`; holder and operation are shown to other
// admins, so they must be short, printable text.
func (p LockInfo) Validate() error {
	if err := checkRunID(p.ID); err != nil {
		return fmt.Errorf("bad lock request: id %w", err)
	}
	if err := checkText(p.Holder, 256); err != nil {
		return fmt.Errorf("bad lock request: holder %w", err)
	}
	if p.Operation == "" || len(p.Operation) > 32 || strings.IndexFunc(p.Operation, func(r rune) bool { return r >= utf8.RuneSelf || !state.IsWordByte(byte(r)) }) >= 0 {
		return fmt.Errorf("bad lock request: operation %s: must be 1..32 letters, digits, _ or - (e.g. apply)", state.Show(p.Operation))
	}
	return nil
}

// Validate checks a force-unlock request.
func (p ForceUnlockParams) Validate() error {
	if err := checkRunID(p.ID); err != nil {
		return fmt.Errorf("bad force-unlock request: id %w", err)
	}
	return nil
}

// Validate checks an arm request. The run ID becomes part of file names
// (watchdog-RUN.log) and of the watchdog's command line.
func (p ArmParams) Validate() error {
	if err := checkRunID(p.Run); err != nil {
		return fmt.Errorf("bad arm request: run %w", err)
	}
	if p.TimeoutMS <= 0 || p.TimeoutMS > maxTimerMS {
		return fmt.Errorf("bad arm request: timeout_ms %d: must be between 1 and %d", p.TimeoutMS, maxTimerMS)
	}
	return nil
}

// maxTimerMS bounds a revert timer or confirm grace: one day.
const maxTimerMS = 24 * 3600 * 1000

// Validate checks a prepare request.
func (p PrepareParams) Validate() error {
	if err := checkRunID(p.Run); err != nil {
		return fmt.Errorf("bad prepare request: run %w", err)
	}
	if p.GraceMS <= 0 || p.GraceMS > maxTimerMS {
		return fmt.Errorf("bad prepare request: grace_ms %d: must be between 1 and %d", p.GraceMS, maxTimerMS)
	}
	return nil
}

// Validate checks a prune request: run IDs as everywhere.
func (p PruneParams) Validate() error {
	for _, e := range p.Entries {
		if err := checkRunID(e.Run); err != nil {
			return fmt.Errorf("bad prune request: run %w", err)
		}
		if e.Seq <= 0 {
			return fmt.Errorf("bad prune request: seq %d", e.Seq)
		}
	}
	return nil
}

// Validate checks a journal-page request.
func (p JournalPageParams) Validate() error {
	if p.From < 0 {
		return fmt.Errorf("bad journal-page request: from %d", p.From)
	}
	return nil
}

// Validate checks a confirm request. The run ID becomes part of a
// file name (confirmed-RUN).
func (p ConfirmParams) Validate() error {
	if err := checkRunID(p.Run); err != nil {
		return fmt.Errorf("bad confirm request: run %w", err)
	}
	return nil
}

// checkText checks free text shown to humans: valid UTF-8 without control
// characters, at most max bytes.
func checkText(s string, max int) error {
	if s == "" || len(s) > max || !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) }) >= 0 {
		return fmt.Errorf("%s: must be 1..%d bytes of printable UTF-8 text", state.Show(s), max)
	}
	return nil
}

// Validate checks a probe request.
func (p ProbeParams) Validate() error {
	if _, err := state.ParseIP("addr", p.Addr); err != nil {
		return fmt.Errorf("bad probe request: %w", err)
	}
	if p.Port == 0 {
		return fmt.Errorf("bad probe request: port 0: must be 1..65535")
	}
	if p.TimeoutMS < 1 || p.TimeoutMS > 60000 {
		return fmt.Errorf("bad probe request: timeout_ms %d: must be 1..60000", p.TimeoutMS)
	}
	return nil
}

// Validate checks a route-get request.
func (p RouteGetParams) Validate() error {
	if _, err := state.ParseIP("addr", p.Addr); err != nil {
		return fmt.Errorf("bad route-get request: %w", err)
	}
	return nil
}

// Validate checks a wg-key request.
func (p WGKeyParams) Validate() error {
	if err := state.CheckIfname("tunnel name", p.Name); err != nil {
		return fmt.Errorf("bad wg-key request: %w", err)
	}
	return nil
}

// Validate checks a ping request.
func (p PingParams) Validate() error {
	if _, err := state.ParseIP("addr", p.Addr); err != nil {
		return fmt.Errorf("bad ping request: %w", err)
	}
	if p.Count < 1 || p.Count > 100 {
		return fmt.Errorf("bad ping request: count %d: must be 1..100", p.Count)
	}
	if p.TimeoutMS < 1 || p.TimeoutMS > 60000 {
		return fmt.Errorf("bad ping request: timeout_ms %d: must be 1..60000", p.TimeoutMS)
	}
	if p.Size != 0 && (p.Size < 68 || p.Size > 65535) {
		return fmt.Errorf("bad ping request: size %d: must be 0 or 68..65535", p.Size)
	}
	return nil
}
