// Package proto is the wire protocol between the migrate CLI and its agent:
// length-prefixed JSON frames over the SSH session's stdin/stdout. Each
// request gets exactly one response with the same ID.
package proto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/opsmigrate/migrate/state"
)

// Version is bumped on any incompatible change.
const Version = 1

// MaxFrame bounds one message (facts of a big host fit easily).
const MaxFrame = 64 << 20

// Methods.
const (
	MethodHello = "hello"
	MethodFacts = "facts"
	MethodApply = "apply" // one step
	MethodPing  = "ping"  // ICMP echo from the host to an address
)

// Request is one call.
type Request struct {
	ID     uint64          `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Response answers a Request.
type Response struct {
	ID     uint64          `json:"id"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
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
}

// ApplyParams carries one step.
type ApplyParams struct {
	Step state.Step `json:"step"`
}

// PingParams asks the agent to send ICMP echo requests to Addr.
type PingParams struct {
	Addr      string `json:"addr"`
	Count     int    `json:"count"`
	TimeoutMS int    `json:"timeout_ms"`
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
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return json.Unmarshal(b, v)
}
