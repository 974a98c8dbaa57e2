package agent

// Validation of request parameters. The agent runs as root and its input
// comes over a pipe, so every request is checked here, as a plain value,
// before anything reaches the Kernel: a request that passes is in range for
// every field the kernel code uses (names become /proc/sys paths, file names
// and netlink attributes). The checks are pure functions; each error says
// what is wrong and what is allowed. The state objects in a request are
// checked by their own Validate methods (package state), the one rule per
// fact that the CLI and the nft renderer use too.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// maxRunID bounds a run or lock ID (it becomes part of file names).
const maxRunID = 64

const runIDRule = `must be 1..64 letters, digits, _ or - (e.g. 3f2a9c01d4e5b6a7)`

// show quotes a user-supplied string for an error message, cut short when
// it is long: a hostile request must not make the answer huge.
func show(s string) string {
	const max = 64
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:max], len(s))
}

// params decodes the params of req (a method dispatch knows) strictly and
// checks them with check. Unknown fields are an error: a field this agent
// does not know (a typo, or a newer CLI) is never silently ignored on a
// root-owned host. Missing params are an error too.
func params[T any](req proto.Request, check func(T) error) (T, error) {
	var p T
	if len(req.Params) == 0 {
		return p, fmt.Errorf("bad %s request: params missing", req.Method)
	}
	if err := decodeStrict(req.Params, &p); err != nil {
		return p, fmt.Errorf("bad %s request: %w", req.Method, err)
	}
	return p, check(p)
}

// noParams checks that a method without parameters got none: absent, null
// or {}.
func noParams(req proto.Request) error {
	if len(req.Params) == 0 {
		return nil
	}
	var p struct{}
	if err := decodeStrict(req.Params, &p); err != nil {
		return fmt.Errorf("bad %s request: it takes no params: %w", req.Method, err)
	}
	return nil
}

func decodeStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return clip(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("unexpected data after the params object")
	}
	return nil
}

// clip cuts short the message of a JSON decoding error: an unknown field's
// name, or the text of a number that does not fit, is quoted in it and can
// be megabytes long.
func clip(err error) error {
	const max = 512
	if msg := err.Error(); len(msg) > max {
		return fmt.Errorf("%s... (error of %d bytes cut short)", msg[:max], len(msg))
	}
	return err
}

// validateApply checks an apply request: its step, and the run it belongs
// to when set.
func validateApply(p proto.ApplyParams) error {
	if err := validateStep(p.Step); err != nil {
		return err
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
		return fmt.Errorf("%s: %s", show(id), runIDRule)
	}
	for i := 0; i < len(id); i++ {
		if !state.IsWordByte(id[i]) {
			return fmt.Errorf("%s: %s", show(id), runIDRule)
		}
	}
	return nil
}

// validateLock checks a lock request. The ID names the lock in messages
// and in `migrate force-unlock`; holder and operation are shown to other
// admins, so they must be short, printable text.
func validateLock(p proto.LockInfo) error {
	if err := checkRunID(p.ID); err != nil {
		return fmt.Errorf("bad lock request: id %w", err)
	}
	if err := checkText(p.Holder, 256); err != nil {
		return fmt.Errorf("bad lock request: holder %w", err)
	}
	if p.Operation == "" || len(p.Operation) > 32 || strings.IndexFunc(p.Operation, func(r rune) bool { return r >= utf8.RuneSelf || !state.IsWordByte(byte(r)) }) >= 0 {
		return fmt.Errorf("bad lock request: operation %s: must be 1..32 letters, digits, _ or - (e.g. apply)", show(p.Operation))
	}
	return nil
}

// validateForceUnlock checks a force-unlock request.
func validateForceUnlock(p proto.ForceUnlockParams) error {
	if err := checkRunID(p.ID); err != nil {
		return fmt.Errorf("bad force-unlock request: id %w", err)
	}
	return nil
}

// validateArm checks an arm request. The run ID becomes part of file names
// (watchdog-RUN.log) and of the watchdog's command line.
func validateArm(p proto.ArmParams) error {
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

// validatePrepare checks a prepare request.
func validatePrepare(p proto.PrepareParams) error {
	if err := checkRunID(p.Run); err != nil {
		return fmt.Errorf("bad prepare request: run %w", err)
	}
	if p.GraceMS <= 0 || p.GraceMS > maxTimerMS {
		return fmt.Errorf("bad prepare request: grace_ms %d: must be between 1 and %d", p.GraceMS, maxTimerMS)
	}
	return nil
}

// validatePrune checks a prune request: run IDs as everywhere.
func validatePrune(p proto.PruneParams) error {
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

func validateJournalPage(p proto.JournalPageParams) error {
	if p.From < 0 {
		return fmt.Errorf("bad journal-page request: from %d", p.From)
	}
	return nil
}

// validateConfirm checks a confirm request. The run ID becomes part of a
// file name (confirmed-RUN).
func validateConfirm(p proto.ConfirmParams) error {
	if err := checkRunID(p.Run); err != nil {
		return fmt.Errorf("bad confirm request: run %w", err)
	}
	return nil
}

// checkText checks free text shown to humans: valid UTF-8 without control
// characters, at most max bytes.
func checkText(s string, max int) error {
	if s == "" || len(s) > max || !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) }) >= 0 {
		return fmt.Errorf("%s: must be 1..%d bytes of printable UTF-8 text", show(s), max)
	}
	return nil
}

// validateStep checks one step and the objects in it (state.Step.Validate:
// the same rules the CLI and the renderer use). Host is not checked: the
// agent does not use it.
func validateStep(s state.Step) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("bad step: %w", err)
	}
	return nil
}

// validateFactsRequest checks a facts request. Sysctl names may have "*"
// components here.
func validateFactsRequest(r state.FactsRequest) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("bad facts request: %w", err)
	}
	return nil
}

// validatePing checks a ping request.
func validateProbe(p proto.ProbeParams) error {
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

func validateRouteGet(p proto.RouteGetParams) error {
	if _, err := state.ParseIP("addr", p.Addr); err != nil {
		return fmt.Errorf("bad route-get request: %w", err)
	}
	return nil
}

func validateWGKey(p proto.WGKeyParams) error {
	if err := state.CheckIfname("tunnel name", p.Name); err != nil {
		return fmt.Errorf("bad wg-key request: %w", err)
	}
	return nil
}

func validatePing(p proto.PingParams) error {
	if _, err := state.ParseIP("addr", p.Addr); err != nil {
		return fmt.Errorf("bad ping request: %w", err)
	}
	if p.Count < 1 || p.Count > 100 {
		return fmt.Errorf("bad ping request: count %d: must be 1..100", p.Count)
	}
	if p.TimeoutMS < 1 || p.TimeoutMS > 60000 {
		return fmt.Errorf("bad ping request: timeout_ms %d: must be 1..60000", p.TimeoutMS)
	}
	return nil
}
