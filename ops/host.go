package ops

import (
	"context"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/remote"
	"github.com/opsmigrate/migrate/state"
)

// Host is a connected host as the operations use it: *remote.Client (SSH
// and the agent) is the real one; tests use a fake.
type Host interface {
	Conn
	apply.Host
	StatusConn
	// Reached is the host's own address and port the connection reached.
	Reached() (ip string, port int)
	// Err is why the link was given up (a *remote.DeadLinkError), nil
	// while it is alive.
	Err() error
	Journal(ctx context.Context) (*state.Journal, error)
	Prune(ctx context.Context, ids []state.EntryID) ([]state.EntryID, error)
	Lock(ctx context.Context, info proto.LockInfo) error
	ForceUnlock(ctx context.Context, id string) error
	Arm(ctx context.Context, run string, timeout time.Duration) error
	Prepare(ctx context.Context, run string, grace time.Duration) (proto.RunStatus, error)
	Confirm(ctx context.Context, run string) (proto.RunStatus, error)
	Abort(ctx context.Context, run string) (proto.RunStatus, error)
	RunStatus(ctx context.Context, run string) (proto.RunStatus, error)
	Probe(ctx context.Context, addr string, port uint16, mark uint32) error
	RouteGet(ctx context.Context, addr string) (proto.RouteGetResult, error)
	// RouteGetNeigh is RouteGet plus the neighbour entry after a probe
	// (direct tunnels: are both hosts on one link?).
	RouteGetNeigh(ctx context.Context, addr string) (proto.RouteGetResult, error)
	WGKey(ctx context.Context, name string) (string, error)
}

var _ Host = (*remote.Client)(nil)

// ApplyHosts are the session's hosts as apply.Executor takes them.
func ApplyHosts[H Host](s *Session[H]) map[string]apply.Host {
	m := map[string]apply.Host{}
	for k, v := range s.Clients {
		m[k] = v
	}
	return m
}
