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

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// show quotes a user-supplied string for an error message, cut short when
// it is long: a hostile request must not make the answer huge.
func show(s string) string { return state.Show(s) }

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

// The params checks are the params types' own (agent/proto/validate.go).
var (
	validateApply       = proto.ApplyParams.Validate
	validateLock        = proto.LockInfo.Validate
	validateForceUnlock = proto.ForceUnlockParams.Validate
	validateArm         = proto.ArmParams.Validate
	validatePrepare     = proto.PrepareParams.Validate
	validatePrune       = proto.PruneParams.Validate
	validateJournalPage = proto.JournalPageParams.Validate
	validateConfirm     = proto.ConfirmParams.Validate
	validateProbe       = proto.ProbeParams.Validate
	validateRouteGet    = proto.RouteGetParams.Validate
	validateWGKey       = proto.WGKeyParams.Validate
	validatePing        = proto.PingParams.Validate
)
