package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/agent"
	"github.com/opsmigrate/migrate/agent/kernel"
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
	root.AddCommand(c.planCmd(), c.applyCmd(), c.rollbackCmd(), c.versionCmd(), c.agentCmd())
	return root
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(c.out, "migrate %s (agent protocol %d)\n", Version, 1)
			return nil
		},
	}
}

func (c *cli) agentCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "agent",
		Short:  "Run as the host-side agent (started by migrate over SSH)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := kernel.New(agent.StateDir())
			if err != nil {
				return err
			}
			return agent.Serve(os.Stdin, os.Stdout, k)
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
	return remote.Target{Name: name, User: h.User, Address: h.Address, Port: h.Port,
		IdentityFile: h.IdentityFile, KnownHosts: h.KnownHosts, Sudo: h.Sudo}
}

func stateTarget(t remote.Target) state.Target {
	return state.Target{User: t.User, Address: t.Address, Port: t.Port, IdentityFile: t.IdentityFile, KnownHosts: t.KnownHosts, Sudo: t.Sudo}
}

func fromStateTarget(name string, t state.Target) remote.Target {
	return remote.Target{Name: name, User: t.User, Address: t.Address, Port: t.Port, IdentityFile: t.IdentityFile, KnownHosts: t.KnownHosts, Sudo: t.Sudo}
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
				if !(errors.Is(err, context.Canceled) && len(errs) > 0) {
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

// prepared is a config, its journal and live connections.
type prepared struct {
	cfg       *config.Config
	statePath string
	journal   *state.Journal
	sess      *session
	facts     map[string]state.Facts
}

func (c *cli) prepare(ctx context.Context, file, stateFlag string) (*prepared, error) {
	cfg, err := config.Load(file)
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
	if err := plan.CheckSelfLockout(cfg, plan.Old, sess.clients[plan.Old].RemoteIP, cfg.Hosts[plan.Old].Port); err != nil {
		sess.close()
		return nil, err
	}
	facts, err := sess.facts(ctx, cfg)
	if err != nil {
		sess.close()
		return nil, err
	}
	return &prepared{cfg: cfg, statePath: sp, journal: j, sess: sess, facts: facts}, nil
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
	cmd.Flags().StringVar(&out, "out", "", "save the plan to this file, for `migrate apply PLANFILE`")
	return cmd
}

func (c *cli) confirm(question string) (bool, error) {
	if f, ok := c.in.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice == 0 {
			return false, errors.New("no terminal to ask for confirmation; run with --auto-approve to apply without asking")
		}
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
		Hosts:     p.sess.hosts(),
		Journal:   p.journal,
		StatePath: p.statePath,
		Progress:  v.Progress,
		Info:      v.Info,
	}
}

func (c *cli) applyCmd() *cobra.Command {
	var file, stateFlag string
	var auto bool
	cmd := &cobra.Command{
		Use:   "apply [PLANFILE]",
		Short: "Apply the plan: NEW first, verify the tunnel, then OLD",
		Args:  cobra.MaximumNArgs(1),
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
			p, err := c.prepare(ctx, file, stateFlag)
			if err != nil {
				return err
			}
			defer p.sess.close()
			v := c.view()
			ex := c.executor(p)
			var pl *plan.Plan
			if saved != nil {
				if err := ex.CheckFresh(ctx, saved); err != nil {
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
			if err := ex.Apply(ctx, pl); err != nil {
				return err
			}
			add, change, destroy := pl.Counts()
			v.Info("\nApply complete! Resources: %d added, %d changed, %d destroyed. State: %s", add, change, destroy, p.statePath)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "migration.hcl", "plan file")
	cmd.Flags().StringVar(&stateFlag, "state", "", "state file (default: migration.state.json beside the plan file)")
	cmd.Flags().BoolVar(&auto, "auto-approve", false, "apply without asking for confirmation")
	return cmd
}

func (c *cli) rollbackCmd() *cobra.Command {
	var file, stateFlag string
	var auto, all bool
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Undo the last apply (or --all applies) from the state file, restoring what was there",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			sp := statePathFor(file, stateFlag)
			j, err := state.LoadJournal(sp)
			if err != nil {
				return err
			}
			if len(j.Active()) == 0 {
				c.view().Info("Nothing to roll back: %s records no applied steps.", sp)
				return nil
			}
			targets := map[string]remote.Target{}
			for name, t := range j.Targets {
				targets[name] = fromStateTarget(name, t)
			}
			if len(targets) < 2 {
				return fmt.Errorf("state %s does not record how to reach both hosts", sp)
			}
			sess, err := connect(ctx, targets)
			if err != nil {
				return err
			}
			defer sess.close()
			v := c.view()
			n := 0
			last := j.LastRun()
			for _, e := range j.Active() {
				if all || e.Run == last {
					n++
				}
			}
			what := "the last apply"
			if all {
				what = "everything migrate applied"
			}
			v.Info("Rolling back %s: %d step(s), newest first.", what, n)
			if !auto {
				ok, err := c.confirm("Do you want to roll back on both hosts?")
				if err != nil {
					return err
				}
				if !ok {
					return errors.New("rollback cancelled; nothing was changed")
				}
			}
			ex := &apply.Executor{Hosts: sess.hosts(), Journal: j, StatePath: sp, Progress: v.Progress, Info: v.Info}
			if err := ex.Rollback(ctx, all); err != nil {
				return err
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
