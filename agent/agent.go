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
	"github.com/opsmigrate/migrate/internal/timing"
	"github.com/opsmigrate/migrate/state"
)

// Kernel is what the agent does on its host.
type Kernel interface {
	Facts(req state.FactsRequest) (state.Facts, error)
	Apply(step state.Step) error
	Ping(addr string, count int, timeout time.Duration, size int) (time.Duration, error)
}

// WGKeyer makes and keeps the host's WireGuard key pair per tunnel name
// and returns only the public key (kernel.Host does).
type WGKeyer interface {
	WGKey(name string) (string, error)
}

// StateDir is where the agent keeps its files on the host.
func StateDir() string {
	if d := os.Getenv("MIGRATE_STATE_DIR"); d != "" {
		return d
	}
	return "/var/lib/migrate"
}

// Serve answers requests until r reaches EOF. hf holds the host's journal
// and locks; a lock taken in this session is released when Serve returns
// (and by the kernel if the process dies).
//
// Input is untrusted. Every request's params are decoded strictly and
// validated (validate.go) before anything touches the host. For broken
// frames the choice is:
//   - a frame whose length prefix is out of range, or that is cut short,
//     leaves the byte stream out of step: what follows cannot be trusted
//     to start a frame. Serve answers with an error (ID 0, best effort)
//     and ends the session with that error.
//   - a complete frame that is not valid JSON, or not a request object,
//     was read whole, so the stream is still in step. It gets an error
//     response with ID 0 (its ID could not be read) and Serve reads on:
//     one garbled request does not kill the session.
func Serve(r io.Reader, w io.Writer, k Kernel, hf *HostFiles) error {
	defer hf.Unlock()
	for {
		var raw json.RawMessage
		if err := proto.ReadFrame(r, &raw); err != nil {
			var syntax *json.SyntaxError
			switch {
			case errors.Is(err, io.EOF):
				return nil
			case errors.As(err, &syntax):
				// Unmarshalling into a RawMessage only checks the
				// syntax, after the whole frame was read.
				if err := writeError(w, fmt.Errorf("bad request: not valid JSON: %w", err)); err != nil {
					return err
				}
				continue
			default:
				err = fmt.Errorf("bad frame: %w; closing the session", err)
				_ = writeError(w, err)
				return err
			}
		}
		var req proto.Request
		if err := json.Unmarshal(raw, &req); err != nil {
			if err := writeError(w, fmt.Errorf("bad request: %w", clip(err))); err != nil {
				return err
			}
			continue
		}
		resp := proto.Response{ID: req.ID}
		timing.Agent = nil
		if req.Timings {
			timing.Agent = timing.New()
		}
		t0 := time.Now()
		result, err := dispatch(req, k, hf)
		if err != nil {
			resp.Error = &proto.Error{Message: err.Error()}
		} else if result != nil {
			b, err := json.Marshal(result)
			if err != nil {
				resp.Error = &proto.Error{Message: err.Error()}
			}
			resp.Result = b
		}
		if timing.Agent != nil {
			timing.Agent.Since(req.Method+" (whole request)", t0)
			resp.Timings = timing.Agent.Micros()
		}
		if err := proto.WriteFrame(w, resp); err != nil {
			return err
		}
	}
}

// writeError answers a request whose ID could not be read.
func writeError(w io.Writer, err error) error {
	return proto.WriteFrame(w, proto.Response{Error: &proto.Error{Message: err.Error()}})
}

// dispatch decodes and validates the params (params, noParams) before it
// calls the Kernel or touches a host file.
func dispatch(req proto.Request, k Kernel, hf *HostFiles) (any, error) {
	switch req.Method {
	case proto.MethodHello:
		if err := noParams(req); err != nil {
			return nil, err
		}
		h, _ := os.Hostname()
		return proto.Hello{Version: proto.Version, Hostname: h, UID: os.Geteuid(), PID: os.Getpid()}, nil
	case proto.MethodJournal:
		if err := noParams(req); err != nil {
			return nil, err
		}
		return hf.Journal()
	case proto.MethodJournalPage:
		p, err := params(req, validateJournalPage)
		if err != nil {
			return nil, err
		}
		// The first page reads the journal; the next ones page through
		// that same reading, so that a reader gets one consistent
		// journal, and a large one is decoded once.
		if p.From == 0 || hf.paging == nil {
			j, err := hf.Journal()
			if err != nil {
				return nil, err
			}
			hf.paging = j
		}
		page, next := hf.paging.Page(p.From, proto.JournalPageBytes)
		if next == 0 {
			hf.paging = nil
		}
		return proto.JournalPage{Journal: page, Next: next}, nil
	case proto.MethodLock:
		p, err := params(req, validateLock)
		if err != nil {
			return nil, err
		}
		return nil, hf.Lock(p)
	case proto.MethodForceUnlock:
		p, err := params(req, validateForceUnlock)
		if err != nil {
			return nil, err
		}
		return nil, hf.ForceUnlock(p.ID)
	case proto.MethodArm:
		p, err := params(req, validateArm)
		if err != nil {
			return nil, err
		}
		return nil, hf.Arm(p)
	case proto.MethodPrune:
		p, err := params(req, validatePrune)
		if err != nil {
			return nil, err
		}
		dropped, err := hf.Prune(p.Entries)
		return proto.PruneResult{Dropped: dropped}, err
	case proto.MethodConfirm:
		p, err := params(req, validateConfirm)
		if err != nil {
			return nil, err
		}
		return hf.Confirm(p.Run)
	case proto.MethodPrepare:
		p, err := params(req, validatePrepare)
		if err != nil {
			return nil, err
		}
		return hf.Prepare(p.Run, time.Duration(p.GraceMS)*time.Millisecond)
	case proto.MethodAbort:
		p, err := params(req, validateConfirm)
		if err != nil {
			return nil, err
		}
		return hf.Abort(p.Run, "aborted by migrate: the other host did not keep the change")
	case proto.MethodRunStatus:
		p, err := params(req, validateConfirm)
		if err != nil {
			return nil, err
		}
		return hf.RunStatus(p.Run)
	case proto.MethodFacts:
		p, err := params(req, validateFactsRequest)
		if err != nil {
			return nil, err
		}
		f, err := k.Facts(p)
		if err != nil {
			return f, err
		}
		f.Boot = BootFacts(hf)
		f.StateDir = hf.Space()
		f.SysctlConf = SysctlConf(os.DirFS("/"), p.Sysctls)
		f.NftConf = NftConf(os.DirFS("/"), ownNftTable)
		if p.Chains {
			t0 := time.Now()
			foreign, err := foreignFirewall(p.NftTable)
			if err != nil {
				return f, err
			}
			f.Chains, f.FwRules, f.RPFilter6 = foreign.Chains, foreign.FwRules, foreign.RPFilter6
			f.Legacy = LegacyFacts()
			timing.Agent.Since("facts: other tables' chains, ufw's and firewalld's rules", t0)
		}
		if p.Networkd {
			t0 := time.Now()
			if f.Networkd, err = NetworkdFacts(); err != nil {
				return f, err
			}
			timing.Agent.Since("facts: systemd-networkd", t0)
		}
		if p.Listeners {
			t0 := time.Now()
			if p.NoOwners {
				f.Listeners, err = ListenersNoOwners()
			} else {
				f.Listeners, err = Listeners()
			}
			timing.Agent.Since("facts: listeners", t0)
		}
		return f, err
	case proto.MethodProbe:
		p, err := params(req, validateProbe)
		if err != nil {
			return nil, err
		}
		return nil, Probe(p)
	case proto.MethodRouteGet:
		p, err := params(req, validateRouteGet)
		if err != nil {
			return nil, err
		}
		return RouteGetNeigh(p.Addr, p.Neigh)
	case proto.MethodWGKey:
		p, err := params(req, validateWGKey)
		if err != nil {
			return nil, err
		}
		wk, ok := k.(WGKeyer)
		if !ok {
			return nil, errors.New("this agent cannot make WireGuard keys")
		}
		pub, err := wk.WGKey(p.Name)
		if err != nil {
			return nil, err
		}
		return proto.WGKeyResult{PublicKey: pub}, nil
	case proto.MethodApply:
		p, err := params(req, validateApply)
		if err != nil {
			return nil, err
		}
		// Only what is migrate's, and only the object the step
		// records (owner.go): checked before the journal knows of it.
		if err := checkOwned(k, p.Step); err != nil {
			return nil, err
		}
		// Write-ahead: the host journal knows of the step before the
		// kernel does, so a revert timer can undo it even if this agent
		// dies in the middle.
		t0 := time.Now()
		if err := hf.BeginStep(p); err != nil {
			return nil, fmt.Errorf("record step in the host journal: %w", err)
		}
		timing.Agent.Since("apply: host journal", t0)
		t0 = time.Now()
		err = k.Apply(p.Step)
		timing.Agent.Since("apply: kernel, "+p.Step.Object().Kind().String(), t0)
		t0 = time.Now()
		jerr := hf.EndStep(p, err)
		timing.Agent.Since("apply: host journal", t0)
		if jerr != nil && err == nil {
			err = fmt.Errorf("step applied, but the host journal could not record it: %w", jerr)
		}
		return nil, err
	case proto.MethodPing:
		p, err := params(req, validatePing)
		if err != nil {
			return nil, err
		}
		rtt, err := k.Ping(p.Addr, p.Count, time.Duration(p.TimeoutMS)*time.Millisecond, p.Size)
		if err != nil {
			return nil, err
		}
		return proto.PingResult{RTTMicros: rtt.Microseconds()}, nil
	}
	return nil, fmt.Errorf("unknown method %s", show(req.Method))
}
