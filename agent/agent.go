// Package agent is the host side of migrate: `migrate agent` reads framed
// JSON requests on stdin and answers on stdout, one at a time. The kernel
// work is done by package agent/kernel; this package only dispatches.
package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// Kernel is what the agent does on its host.
type Kernel interface {
	Facts(req state.FactsRequest) (state.Facts, error)
	Apply(step state.Step) error
	Ping(addr string, count int, timeout time.Duration) error
}

// StateDir is where the agent keeps its files on the host.
func StateDir() string {
	if d := os.Getenv("MIGRATE_STATE_DIR"); d != "" {
		return d
	}
	return "/var/lib/migrate"
}

// Serve answers requests until r reaches EOF.
func Serve(r io.Reader, w io.Writer, k Kernel) error {
	for {
		var req proto.Request
		if err := proto.ReadFrame(r, &req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		resp := proto.Response{ID: req.ID}
		result, err := dispatch(req, k)
		if err != nil {
			resp.Error = &proto.Error{Message: err.Error()}
		} else if result != nil {
			b, err := json.Marshal(result)
			if err != nil {
				resp.Error = &proto.Error{Message: err.Error()}
			}
			resp.Result = b
		}
		if err := proto.WriteFrame(w, resp); err != nil {
			return err
		}
	}
}

func dispatch(req proto.Request, k Kernel) (any, error) {
	switch req.Method {
	case proto.MethodHello:
		h, _ := os.Hostname()
		return proto.Hello{Version: proto.Version, Hostname: h, UID: os.Geteuid()}, nil
	case proto.MethodFacts:
		var p state.FactsRequest
		if err := json.Unmarshal(req.Params, &p); err != nil {
			return nil, fmt.Errorf("bad facts request: %w", err)
		}
		return k.Facts(p)
	case proto.MethodApply:
		var p proto.ApplyParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			return nil, fmt.Errorf("bad apply request: %w", err)
		}
		return nil, k.Apply(p.Step)
	case proto.MethodPing:
		var p proto.PingParams
		if err := json.Unmarshal(req.Params, &p); err != nil {
			return nil, fmt.Errorf("bad ping request: %w", err)
		}
		return nil, k.Ping(p.Addr, p.Count, time.Duration(p.TimeoutMS)*time.Millisecond)
	}
	return nil, fmt.Errorf("unknown method %q", req.Method)
}
