package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/remote"
	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/views"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

type cli struct {
	in       io.Reader
	out, err io.Writer
	asJSON   bool
}

func newCLI(in io.Reader, out, errw io.Writer) *cli { return &cli{in: in, out: out, err: errw} }

func (c *cli) view() *views.View { return views.New(c.out, c.err, c.asJSON) }

func (c *cli) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "migrate",
		Short: "Move services from an OLD server to a NEW one, one IP:port at a time, keeping OLD's IP",
		Long: `migrate moves services from an OLD server to a NEW one through a tunnel.
Clients keep using OLD's IP; NEW sees their real addresses; NEW's traffic
from that IP leaves through OLD. Established connections drain on OLD.

  migrate plan      show what would change on both hosts
  migrate apply     make the changes, recording each in the state file
  migrate rollback  undo what apply recorded, exactly`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(c.in)
	root.SetOut(c.out)
	root.SetErr(c.err)
	root.PersistentFlags().BoolVar(&c.asJSON, "json", false, "machine-readable output (JSON lines with a schema_version)")
	root.PersistentFlags().DurationVar(&hostTimeout, "host-timeout", remote.DefaultTimeout, "give up on a host that stays silent this long (no answer to SSH keepalives or from its agent); the error says what each host does next")
	root.PersistentPreRunE = func(*cobra.Command, []string) error { return checkHostTimeout() }
	root.AddCommand(c.initCmd(), c.validateCmd(), c.fmtCmd(), c.planCmd(), c.applyCmd(), c.rollbackCmd(), c.forceUnlockCmd(), c.statusCmd(), c.stateCmd(), c.versionCmd(), c.agentCmd(), c.watchdogCmd(), c.bootRestoreCmd(), c.agentBinaryCmd())
	return root
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The platform too, as terraform prints it: which build of a
			// release is this. The protocol is the one this build's
			// agent and client speak (proto.Version).
			fmt.Fprintf(c.out, "migrate %s %s/%s (agent protocol %d)\n", Version, runtime.GOOS, runtime.GOARCH, proto.Version)
			return nil
		},
	}
}

// statePathFor is the state file beside the plan file.
func statePathFor(file, flag string) string {
	if flag != "" {
		return flag
	}
	return filepath.Join(filepath.Dir(file), "migration.state.json")
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func targetOf(name string, h *config.Host) remote.Target {
	t := remote.Target{Name: name, User: h.User, Address: h.Address, Port: h.Port,
		IdentityFile: h.IdentityFile, IdentityFiles: h.IdentityFiles, KnownHosts: h.KnownHosts, Sudo: h.Sudo, Timeout: hostTimeout}
	for _, j := range h.ProxyJump {
		t.Jumps = append(t.Jumps, targetOf(j.Name, j))
	}
	return t
}

func stateTarget(t remote.Target) state.Target {
	st := state.Target{User: t.User, Address: t.Address, Port: t.Port, IdentityFile: t.IdentityFile, IdentityFiles: t.IdentityFiles, KnownHosts: t.KnownHosts, Sudo: t.Sudo}
	for _, j := range t.Jumps {
		sj := stateTarget(j)
		sj.Name = j.Name
		st.Jumps = append(st.Jumps, sj)
	}
	return st
}

func fromStateTarget(name string, t state.Target) remote.Target {
	rt := remote.Target{Name: name, User: t.User, Address: t.Address, Port: t.Port, IdentityFile: t.IdentityFile, IdentityFiles: t.IdentityFiles, KnownHosts: t.KnownHosts, Sudo: t.Sudo, Timeout: hostTimeout}
	for _, j := range t.Jumps {
		rt.Jumps = append(rt.Jumps, fromStateTarget(j.Name, j))
	}
	return rt
}

// session is one command's connections: one SSH connection per host.
type session struct {
	clients map[string]*remote.Client
}

func (s *session) hosts() map[string]apply.Host {
	m := map[string]apply.Host{}
	for k, v := range s.clients {
		m[k] = v
	}
	return m
}

func (s *session) close() {
	for _, c := range s.clients {
		c.Close()
	}
}

// connect reaches both hosts in parallel.
func connect(ctx context.Context, targets map[string]remote.Target) (*session, error) {
	bin, err := remote.SelfBinary()
	if err != nil {
		return nil, err
	}
	// The first failure cancels the other host's connection attempt.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	s := &session{clients: map[string]*remote.Client{}}
	var errs []error
	for _, name := range []string{plan.Old, plan.New} {
		t, ok := targets[name]
		if !ok {
			return nil, fmt.Errorf("no SSH target for host %s", name)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := remote.Connect(ctx, t, bin)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				// Once one host failed, the other's attempt is cancelled:
				// its error is only that.
				if len(errs) == 0 || ctx.Err() == nil {
					errs = append(errs, err)
				}
				cancel()
				return
			}
			s.clients[name] = cl
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		s.close()
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func (s *session) facts(ctx context.Context, cfg *config.Config) (map[string]state.Facts, error) {
	out := map[string]state.Facts{}
	for name, cl := range s.clients {
		f, err := cl.Facts(ctx, plan.FactsRequest(cfg, name))
		if err != nil {
			return nil, fmt.Errorf("host %s: collect facts: %w", name, err)
		}
		out[name] = f
	}
	return out, nil
}

// wgKeys asks each host's agent for its WireGuard public key (made on
// first use; the private key never leaves the host) and puts it in the
// host's facts, where the desired model takes it. Not part of the facts
// digest.
func (s *session) wgKeys(ctx context.Context, cfg *config.Config, facts map[string]state.Facts) error {
	if cfg.Tunnel == nil || cfg.Tunnel.Type != "wireguard" {
		return nil
	}
	for name, cl := range s.clients {
		pub, err := cl.WGKey(ctx, cfg.Tunnel.Name)
		if err != nil {
			return fmt.Errorf("host %s: WireGuard key: %w", name, err)
		}
		f := facts[name]
		f.WGPublicKey = pub
		facts[name] = f
	}
	return nil
}

// peerRoutes asks each host that does not hold its tunnel endpoint (a host
// behind 1:1 NAT) for its source address towards the peer's endpoint
// (`ip route get`), and puts it in the host's facts (RouteSrc), where
// plan takes the address its tunnel binds. An old_bind/new_bind in the
// plan is used as it is. A failed lookup is left out: plan then says the
// host holds neither its endpoint nor a way to the peer.
func (s *session) peerRoutes(ctx context.Context, cfg *config.Config, facts map[string]state.Facts) error {
	t := cfg.Tunnel
	if t == nil {
		return nil
	}
	for _, h := range []struct {
		name     string
		ep, peer netip.Addr
		bind     netip.Addr
	}{{plan.Old, t.OldEndpoint, t.NewEndpoint, t.OldBind}, {plan.New, t.NewEndpoint, t.OldEndpoint, t.NewBind}} {
		f := facts[h.name]
		if h.bind.IsValid() || f.HasAddr(h.ep.String()) {
			continue
		}
		cl := s.clients[h.name]
		if cl == nil {
			continue
		}
		r, err := cl.RouteGet(ctx, h.peer.String())
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			continue
		}
		if r.Src != "" {
			f.RouteSrc = map[string]string{h.peer.String(): r.Src}
			facts[h.name] = f
		}
	}
	return nil
}

// prepared is a config, its journal and live connections.
type prepared struct {
	cfg       *config.Config
	statePath string
	journal   *state.Journal
	sess      *session
	facts     map[string]state.Facts
	targets   map[string]remote.Target
}

// loadConfig reads the plan file and prints its warnings (stderr: they
// must not break a --json stream or a redrawn status).
func (c *cli) loadConfig(file string) (*config.Config, error) {
	cfg, err := config.Load(file)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(c.err, "Warning: %s\n", w)
	}
	return cfg, nil
}

func (c *cli) prepare(ctx context.Context, file, stateFlag string) (*prepared, error) {
	cfg, err := c.loadConfig(file)
	if err != nil {
		return nil, err
	}
	sp := statePathFor(file, stateFlag)
	j, err := state.LoadJournal(sp)
	if err != nil {
		return nil, err
	}
	targets := map[string]remote.Target{}
	for name, h := range cfg.Hosts {
		targets[name] = targetOf(name, h)
	}
	sess, err := connect(ctx, targets)
	if err != nil {
		return nil, err
	}
	// The static check compares the configured address; this one the
	// address the connection really reached (a DNS name in the file).
	if err := plan.CheckSelfLockout(cfg, plan.Old, sess.clients[plan.Old].RemoteIP, sess.clients[plan.Old].RemotePort); err != nil {
		sess.close()
		return nil, err
	}
	notes, err := reconcile(ctx, sess, j, sp)
	if err != nil {
		sess.close()
		return nil, err
	}
	for _, n := range notes {
		c.view().Info("Note: %s", n)
	}
	facts, err := sess.facts(ctx, cfg)
	if err != nil {
		sess.close()
		return nil, err
	}
	if err := sess.wgKeys(ctx, cfg, facts); err != nil {
		sess.close()
		return nil, err
	}
	if err := sess.peerRoutes(ctx, cfg, facts); err != nil {
		sess.close()
		return nil, err
	}
	return &prepared{cfg: cfg, statePath: sp, journal: j, sess: sess, facts: facts, targets: targets}, nil
}

func (c *cli) planCmd() *cobra.Command {
	var file, stateFlag, out string
	var detailed bool
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show the changes apply would make on both hosts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			p, err := c.prepare(ctx, file, stateFlag)
			if err != nil {
				return err
			}
			defer p.sess.close()
			pl, err := plan.Make(p.cfg, p.facts, p.journal, time.Now())
			if err != nil {
				return err
			}
			c.view().Plan(pl)
			if out != "" {
				if err := pl.Save(out); err != nil {
					return fmt.Errorf("save plan: %w", err)
				}
				c.view().Info("Saved the plan to %s. Apply exactly it with: migrate apply %s", out, out)
			}
			if detailed && !pl.Empty() {
				return exitError{code: 2}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "migration.hcl", "plan file")
	cmd.Flags().StringVar(&stateFlag, "state", "", "state file (default: migration.state.json beside the plan file)")
	cmd.Flags().BoolVar(&detailed, "detailed-exitcode", false, "exit 0 when there are no changes, 1 on error, 2 when there are changes")
	cmd.Flags().StringVar(&out, "out", "", "save the plan to this file, for: migrate apply PLANFILE")
	return cmd
}

func (c *cli) confirm(question string) (bool, error) {
	if c.asJSON {
		// A prompt would corrupt the JSON stream (Terraform refuses too).
		return false, errors.New("--json output cannot ask for confirmation; add --auto-approve")
	}
	if _, isFile := c.in.(*os.File); isFile && !views.IsTerminal(c.in) {
		return false, errors.New("no terminal to ask for confirmation; run with --auto-approve to apply without asking")
	}
	fmt.Fprintf(c.out, "\n%s\n  Only 'yes' will be accepted.\n\n  Enter a value: ", question)
	line, err := bufio.NewReader(c.in).ReadString('\n')
	if err != nil && line == "" {
		return false, errors.New("no answer read; run with --auto-approve to apply without asking")
	}
	return strings.TrimSpace(line) == "yes", nil
}

func (c *cli) executor(p *prepared) *apply.Executor {
	v := c.view()
	return &apply.Executor{
		Hosts:     pauseHosts(p.sess.hosts()),
		Journal:   p.journal,
		StatePath: p.statePath,
		Progress:  v.Progress,
		Info:      v.Info,
	}
}

// DefaultConfirmTimeout is how long each host waits for the CLI's
// confirmation before it undoes an apply by itself.
const DefaultConfirmTimeout = 5 * time.Minute

func (c *cli) applyCmd() *cobra.Command {
	var file, stateFlag string
	var auto bool
	var confirmTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "apply [PLANFILE]",
		Short: "Apply the plan: NEW first, verify the tunnel, then OLD; confirm or each host reverts",
		Long: `Apply the plan: NEW first, then OLD's tunnel, a check of the tunnel in both
directions, then what diverts clients on OLD. Every step is recorded in the
state file and in each host's own journal before the next one starts.

Before changing anything, apply arms a revert timer on each host
(--confirm-timeout). After the change is verified, migrate confirms over a
fresh SSH connection, in two phases (prepare both, then confirm NEW, then
OLD); each host decides once, under a lock, against its own revert timer,
and apply reports what each host decided. If the confirmation never
arrives (the change cut the admin off, or migrate died), a host that was
not confirmed undoes this apply by itself; if OLD reverts after NEW was
confirmed, migrate aborts NEW too.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			var saved *plan.Plan
			if len(args) == 1 {
				var err error
				if saved, err = plan.Load(args[0]); err != nil {
					return err
				}
				if !cmd.Flags().Changed("file") {
					file = saved.ConfigPath
				}
			}
			sp := statePathFor(file, stateFlag)
			lock, err := acquireLocalLock(sp, "apply")
			if err != nil {
				return err
			}
			defer lock.release()
			p, err := c.prepare(ctx, file, stateFlag)
			if err != nil {
				return err
			}
			defer p.sess.close()
			if err := p.sess.lockHosts(ctx, lock.info); err != nil {
				return err
			}
			v := c.view()
			ex := c.executor(p)
			var pl *plan.Plan
			if saved != nil {
				// prepare just collected the facts: compare, no second dump.
				reqs := map[string]state.FactsRequest{}
				for name := range p.facts {
					reqs[name] = plan.FactsRequest(p.cfg, name)
				}
				if err := apply.CheckFresh(saved, p.facts, reqs); err != nil {
					return err
				}
				pl = saved
			} else {
				if pl, err = plan.Make(p.cfg, p.facts, p.journal, time.Now()); err != nil {
					return err
				}
			}
			v.Plan(pl)
			if pl.Empty() {
				return nil
			}
			ex.Intent = pl.Intent
			if err := plan.UnreadyError(plan.CheckReadiness(p.cfg, p.facts[plan.New])); err != nil {
				return fmt.Errorf("%w; nothing was changed", err)
			}
			if err := plan.ConntrackError(p.cfg, p.facts[plan.Old]); err != nil {
				return fmt.Errorf("%w; nothing was changed", err)
			}
			if !auto && saved == nil {
				ok, err := c.confirm("Do you want to perform these actions on both hosts?")
				if err != nil {
					return err
				}
				if !ok {
					return errors.New("apply cancelled; nothing was changed")
				}
			}
			if p.journal.Targets == nil {
				p.journal.Targets = map[string]state.Target{}
			}
			for name, cl := range p.sess.clients {
				p.journal.Targets[name] = stateTarget(cl.Target)
			}
			ex.Run = state.NewID()
			ex.BeforeStep = faultHook(p.sess)
			ex.PostCheck = probeServices(p.cfg, p.sess.clients[plan.Old], v)
			var deadline time.Time
			if confirmTimeout > 0 {
				deadline = time.Now().Add(confirmTimeout)
				for _, name := range p.sess.names() {
					if err := p.sess.clients[name].Arm(ctx, ex.Run, confirmTimeout); err != nil {
						return fmt.Errorf("host %s: arm the revert timer: %w; nothing was changed", name, err)
					}
				}
				v.Info("Revert timers armed on both hosts: without confirmation they undo this apply %s from now (about %s here; each host measures the time on its own clock).", confirmTimeout, deadline.Local().Format(time.TimeOnly))
			}
			if err := ex.Apply(ctx, pl); err != nil {
				// A host that stopped answering: say what each host
				// still holds and what undoes it.
				return deadLinkApplyError(err, p.sess, p.journal, ex.Run, deadline, lock.info.ID)
			}
			if confirmTimeout > 0 {
				v.Info("Confirming over fresh SSH connections...")
				msg, err := confirmRun(ctx, p.targets, ex.Run, confirmTimeout)
				if err != nil {
					return fmt.Errorf("the change is applied and verified, but not confirmed on both hosts: %w", err)
				}
				v.Info("%s", msg)
			}
			// Every run is now confirmed or undone.
			for _, n := range pruneJournals(ctx, p.sess, p.journal, p.statePath) {
				v.Info("Note: %s", n)
			}
			add, change, destroy := pl.Counts()
			v.Info("\nApply complete! Resources: %d added, %d changed, %d destroyed. State: %s", add, change, destroy, p.statePath)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "migration.hcl", "plan file")
	cmd.Flags().StringVar(&stateFlag, "state", "", "state file (default: migration.state.json beside the plan file)")
	cmd.Flags().BoolVar(&auto, "auto-approve", false, "apply without asking for confirmation")
	cmd.Flags().DurationVar(&confirmTimeout, "confirm-timeout", DefaultConfirmTimeout, "each host undoes the apply by itself unless migrate confirms it within this time over a fresh SSH connection (0 disables)")
	return cmd
}

func (c *cli) rollbackCmd() *cobra.Command {
	var file, stateFlag string
	var auto, all bool
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Undo the last change (or --all), restoring what was there",
		Long: `Undo the last change (or, with --all, everything migrate ever applied): both
hosts end up as the previous change left them (as before migrate, with --all),
whatever was edited by hand since. A change is an apply that changed what the
hosts should look like, with the applies after it that only repaired drift.
rollback shows what it will do and asks, unless --auto-approve.

The record comes from the state file and from each host's own journal. If the
state file is lost, give the plan file with -f: migrate reaches the hosts it
names, reads their journals and rolls back from those.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			sp := statePathFor(file, stateFlag)
			_, statErr := os.Stat(sp)
			lost := errors.Is(statErr, fs.ErrNotExist)
			lock, err := acquireLocalLock(sp, "rollback")
			if err != nil {
				return err
			}
			defer lock.release()
			j, err := state.LoadJournal(sp)
			if err != nil {
				return err
			}
			targets := map[string]remote.Target{}
			for name, t := range j.Targets {
				targets[name] = fromStateTarget(name, t)
			}
			if len(targets) < 2 {
				cfg, err := config.Load(file)
				if err != nil {
					return fmt.Errorf("state %s does not say how to reach the hosts, and the plan file cannot either: %w", sp, err)
				}
				for name, h := range cfg.Hosts {
					targets[name] = targetOf(name, h)
				}
			}
			v := c.view()
			sess, err := connect(ctx, targets)
			if err != nil {
				return err
			}
			defer sess.close()
			if err := sess.lockHosts(ctx, lock.info); err != nil {
				return err
			}
			notes, err := reconcile(ctx, sess, j, sp)
			if err != nil {
				return err
			}
			if lost && len(j.Active()) > 0 {
				v.Info("Note: the state file %s was missing; it was rebuilt from the hosts' own journals.", sp)
			} else {
				for _, n := range notes {
					v.Info("Note: %s", n)
				}
			}
			if len(j.Active()) == 0 {
				v.Info("Nothing to roll back: neither %s nor the hosts' journals record applied steps.", sp)
				return nil
			}
			what := "the last change"
			if all {
				what = "everything migrate applied"
			}
			ex := &apply.Executor{Hosts: pauseHosts(sess.hosts()), Journal: j, StatePath: sp, Progress: v.Progress, Info: v.Info}
			rp, err := ex.PlanRollback(ctx, all)
			if err != nil {
				return err
			}
			v.RollbackPlan(rp, what)
			n, _ := rp.Count()
			if !auto {
				ok, err := c.confirm("Do you want to roll back on both hosts?")
				if err != nil {
					return err
				}
				if !ok {
					return errors.New("rollback cancelled; nothing was changed")
				}
			}
			if err := ex.Undo(ctx, rp.Steps); err != nil {
				return deadLinkRollbackError(err, sess, rp.Steps, all, lock.info.ID)
			}
			for _, n := range pruneJournals(ctx, sess, j, sp) {
				v.Info("Note: %s", n)
			}
			v.Info("\nRollback complete! %d step(s) undone. State: %s", n, sp)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "migration.hcl", "plan file (its directory holds the state file)")
	cmd.Flags().StringVar(&stateFlag, "state", "", "state file (default: migration.state.json beside the plan file)")
	cmd.Flags().BoolVar(&auto, "auto-approve", false, "roll back without asking for confirmation")
	cmd.Flags().BoolVar(&all, "all", false, "undo everything migrate ever applied, not only the last apply")
	return cmd
}

func (c *cli) forceUnlockCmd() *cobra.Command {
	var file, stateFlag string
	cmd := &cobra.Command{
		Use:   "force-unlock LOCK_ID",
		Short: "Remove a lock left by a migrate that is gone (local and on both hosts)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			id := args[0]
			sp := statePathFor(file, stateFlag)
			lp := sp + ".lock"
			var held lockFile
			removed := false
			if b, err := os.ReadFile(lp); err == nil && json.Unmarshal(b, &held) == nil {
				if held.ID != id {
					return fmt.Errorf("the local lock %s has ID %s, not %s; nothing was changed", lp, held.ID, id)
				}
				if err := os.Remove(lp); err != nil {
					return err
				}
				removed = true
				c.view().Info("Removed the local lock %s (held by %s for %s since %s).", lp, held.Holder, held.Operation, held.Started.Format(time.RFC3339))
			}
			targets := map[string]remote.Target{}
			if j, err := state.LoadJournal(sp); err == nil {
				for name, t := range j.Targets {
					targets[name] = fromStateTarget(name, t)
				}
			}
			if len(targets) < 2 {
				if cfg, err := config.Load(file); err == nil {
					for name, h := range cfg.Hosts {
						targets[name] = targetOf(name, h)
					}
				}
			}
			if len(targets) < 2 {
				if removed {
					return nil
				}
				return fmt.Errorf("no local lock %s, and no way to reach the hosts (give -f PLANFILE)", id)
			}
			sess, err := connect(ctx, targets)
			if err != nil {
				return err
			}
			defer sess.close()
			for _, name := range sess.names() {
				if err := sess.clients[name].ForceUnlock(ctx, id); err != nil {
					c.view().Info("host %s: %v", name, err)
					continue
				}
				c.view().Info("host %s: lock %s removed.", name, id)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "migration.hcl", "plan file")
	cmd.Flags().StringVar(&stateFlag, "state", "", "state file (default: migration.state.json beside the plan file)")
	return cmd
}
