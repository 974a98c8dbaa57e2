package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/remote"
	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/views"
)

// localLock is the lock file beside the state file. It is created with
// O_EXCL and removed when the command ends; a migrate killed outright
// leaves it behind, and `force-unlock ID` removes it.
type localLock struct {
	path string
	info proto.LockInfo
}

type lockFile struct {
	proto.LockInfo
	PID int `json:"pid"`
}

func lockHolder() string {
	u := "unknown"
	if cu, err := user.Current(); err == nil {
		u = cu.Username
	}
	h, _ := os.Hostname()
	return u + "@" + h
}

func acquireLocalLock(statePath, op string) (*localLock, error) {
	l := &localLock{path: statePath + ".lock", info: proto.LockInfo{
		ID: state.NewID(), Holder: lockHolder(), Operation: op, Started: time.Now().UTC(),
	}}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, fs.ErrExist) && staleLocalLock(l.path) {
		// Its holder ran on this machine and is gone: nothing can be
		// holding it. Say so and take over.
		fmt.Fprintf(os.Stderr, "Note: removing the stale lock %s: the migrate that held it (on this machine) is no longer running.\n", l.path)
		os.Remove(l.path)
		f, err = os.OpenFile(l.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	}
	if errors.Is(err, fs.ErrExist) {
		var held lockFile
		b, _ := os.ReadFile(l.path)
		if json.Unmarshal(b, &held) == nil {
			alive := ""
			if h, _ := os.Hostname(); held.PID > 0 && strings.HasSuffix(held.Holder, "@"+h) {
				if processGone(held.PID) {
					alive = " (that process is no longer running)"
				}
			}
			return nil, fmt.Errorf("state %s is locked by %s for %s since %s, lock ID %s%s; wait for it, or if it is gone run `migrate force-unlock %s`",
				statePath, held.Holder, held.Operation, held.Started.Format(time.RFC3339), held.ID, alive, held.ID)
		}
		return nil, fmt.Errorf("state %s is locked (%s exists); if no migrate is running, remove it", statePath, l.path)
	}
	if err != nil {
		return nil, fmt.Errorf("lock state: %w", err)
	}
	b, _ := json.Marshal(lockFile{LockInfo: l.info, PID: os.Getpid()})
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(l.path)
		return nil, err
	}
	return l, nil
}

// staleLocalLock reports a lock whose holder ran on this machine and whose
// process no longer exists.
func staleLocalLock(path string) bool {
	var held lockFile
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &held) != nil || held.PID <= 0 {
		return false
	}
	h, _ := os.Hostname()
	if !strings.HasSuffix(held.Holder, "@"+h) {
		return false
	}
	return processGone(held.PID)
}

func (l *localLock) release() {
	if l == nil {
		return
	}
	var held lockFile
	if b, err := os.ReadFile(l.path); err == nil && json.Unmarshal(b, &held) == nil && held.ID == l.info.ID {
		os.Remove(l.path)
	}
}

// lockHosts takes the host lock on every host of the session, with the
// same ID as the local lock.
func (s *session) lockHosts(ctx context.Context, info proto.LockInfo) error {
	for _, name := range s.names() {
		if err := s.clients[name].Lock(ctx, info); err != nil {
			return fmt.Errorf("host %s: %w", name, err)
		}
	}
	return nil
}

func (s *session) names() []string {
	var out []string
	for n := range s.clients {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// reconcile brings the local journal in line with the hosts' own
// journals: steps a host recorded that the state file lacks (a migrate
// that died between the two writes, or a lost state file) are added, and
// steps a host's revert timer undid are marked rolled back. It returns a
// note for each change and saves the state file when it changed.
func reconcile(ctx context.Context, s *session, j *state.Journal, statePath string) ([]string, error) {
	var notes []string
	changed := false
	for _, name := range s.names() {
		hj, err := s.clients[name].Journal(ctx)
		if err != nil {
			return nil, fmt.Errorf("host %s: read its journal: %w", name, err)
		}
		adopted, reverted := 0, 0
		for _, he := range hj.Entries {
			le := j.Find(he.Run, he.Seq)
			if le == nil {
				if he.RolledBack != nil {
					continue
				}
				e := he
				e.Pending = false
				j.Entries = append(j.Entries, e)
				adopted++
				changed = true
				continue
			}
			if he.RolledBack != nil && le.RolledBack == nil {
				t := *he.RolledBack
				le.RolledBack = &t
				reverted++
				changed = true
			}
		}
		if adopted > 0 {
			notes = append(notes, fmt.Sprintf("host %s journal records %d applied step(s) that the state file %s did not; they were added to it", name, adopted, statePath))
		}
		if reverted > 0 {
			notes = append(notes, fmt.Sprintf("host %s undid %d step(s) by itself (never confirmed: its revert timer expired, or it rebooted inside the confirm window); the state file now says so", name, reverted))
		}
	}
	if !changed {
		return notes, nil
	}
	sort.SliceStable(j.Entries, func(a, b int) bool { return j.Entries[a].Seq < j.Entries[b].Seq })
	if j.Targets == nil {
		j.Targets = map[string]state.Target{}
	}
	for name, cl := range s.clients {
		if _, ok := j.Targets[name]; !ok {
			j.Targets[name] = stateTarget(cl.Target)
		}
	}
	return notes, j.Save(statePath)
}

// FaultEnv is a test-only switch: "die-at:N", "drop-ssh-at:N",
// "kill-agent-at:N" or "hang-at:N" makes apply fail just before its Nth
// step, the way a crash, a dropped connection or a killed agent would.
// The confirm has its own (confirm.go): "die-between-confirms-at:1"
// exits right after NEW confirmed, before OLD's confirm is sent;
// "delay-confirm-old-at:MS" waits MS milliseconds before it;
// "die-before-confirm" exits once every step is applied, before any host
// is confirmed (each reverts at its deadline, or at its next boot).
const FaultEnv = "MIGRATE_TEST_FAULT"

func faultHook(s *session) func(n int, st state.Step) error {
	spec := os.Getenv(FaultEnv)
	if spec == "" {
		return nil
	}
	kind, nstr, ok := strings.Cut(spec, "-at:")
	at, err := strconv.Atoi(nstr)
	if strings.HasSuffix(kind, "confirm-old") || strings.HasSuffix(kind, "between-confirms") || kind == "die-before-confirm" {
		return nil // confirmFault
	}
	if !ok || err != nil {
		fmt.Fprintf(os.Stderr, "ignoring malformed %s=%q\n", FaultEnv, spec)
		return nil
	}
	return func(n int, st state.Step) error {
		if n != at {
			return nil
		}
		switch kind {
		case "die":
			fmt.Fprintf(os.Stderr, "%s: dying before step %d\n", FaultEnv, n)
			os.Exit(3)
		case "drop-ssh":
			for _, c := range s.clients {
				c.DropConnection()
			}
		case "kill-agent":
			if c := s.clients[st.Host]; c != nil {
				if err := c.KillAgent(); err != nil {
					return err
				}
			}
		case "hang":
			fmt.Fprintf(os.Stderr, "%s: hanging before step %d\n", FaultEnv, n)
			select {}
		}
		return nil
	}
}

var _ apply.Host = (*remote.Client)(nil)

// probeServices returns apply's last check: for each TCP service whose
// new flows go to NEW, OLD opens a real connection to it with the
// tunnel's mark, which takes migrate's policy route through the tunnel to
// NEW. A service with allow_unready only gets a warning.
func probeServices(cfg *config.Config, old *remote.Client, v *views.View) func(ctx context.Context) error {
	if cfg.Tunnel == nil || old == nil {
		return nil
	}
	return func(ctx context.Context) error {
		for _, s := range cfg.Services {
			if s.Stage == "old" || s.Protocol != "tcp" || len(s.Ports) == 0 {
				continue
			}
			port := s.Ports[0].From
			err := old.Probe(ctx, s.Address.String(), port, cfg.Tunnel.Mark)
			switch {
			case err == nil:
				v.Info("probe: service %q: a connection from OLD through the tunnel to NEW's %s reached NEW", s.Name, netip.AddrPortFrom(s.Address, port))
			case s.AllowUnready:
				v.Info("probe: service %q: NEW did not accept a connection to %s through the tunnel (%v); kept because of allow_unready", s.Name, netip.AddrPortFrom(s.Address, port), err)
			default:
				return fmt.Errorf("probe: service %q: a connection from OLD through the tunnel to %s on NEW failed: %w", s.Name, netip.AddrPortFrom(s.Address, port), err)
			}
		}
		return nil
	}
}

// pruneJournals drops what no rollback needs (apply.Prunable) from each
// host's journal, then the same entries from the state file: a host first,
// so that reconcile never finds on a host an entry the state file dropped
// and adopts it again. A host refuses to drop entries its revert timer may
// still replay; the state file drops only what each host dropped. Pruning
// is housekeeping: a failure is a note, never a failed command.
func pruneJournals(ctx context.Context, s *session, j *state.Journal, statePath string) []string {
	ids := apply.Prunable(j, nil)
	if len(ids) == 0 {
		return nil
	}
	var notes []string
	var dropped []state.EntryID
	for _, name := range s.names() {
		if len(ids[name]) == 0 {
			continue
		}
		d, err := s.clients[name].Prune(ctx, ids[name])
		if err != nil {
			notes = append(notes, fmt.Sprintf("host %s: could not prune its journal (%v); it will be tried again next time", name, err))
			continue
		}
		dropped = append(dropped, d...)
	}
	if j.Drop(dropped) == 0 {
		return notes
	}
	if err := j.Save(statePath); err != nil {
		notes = append(notes, fmt.Sprintf("could not save the pruned state file %s (%v); the hosts' journals hold what it needs", statePath, err))
	}
	return notes
}
