package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/agent/hostcmd"
	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/internal/timing"
	"github.com/opsmigrate/migrate/ops"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/remote"
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

// view picks the command's view once: JSON for --json, else human. A
// command keeps it in the narrow interface it needs (views.Plan, ...).
func (c *cli) view() views.All { return views.For(c.out, c.err, c.asJSON) }

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
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		ops.PauseAgentStart()
		return checkHostTimeout()
	}
	root.AddCommand(c.initCmd(), c.validateCmd(), c.fmtCmd(), c.planCmd(), c.applyCmd(), c.rollbackCmd(), c.forceUnlockCmd(), c.statusCmd(), c.stateCmd(), c.versionCmd(), c.agentBinaryCmd())
	root.AddCommand(hostcmd.Commands(c.out)...)
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
			var v views.Version = c.view()
			v.Version(Version, runtime.GOOS, runtime.GOARCH, proto.Version)
			return nil
		},
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// loadConfig reads the plan file and prints its warnings (stderr: they
// must not break a --json stream or a redrawn status).
func (c *cli) loadConfig(file string) (*config.Config, error) {
	defer timing.CLI.Since("parse the plan file", time.Now())
	// A plan of 10 000 services allocates about 50 MB while it is parsed,
	// most of it kept (the AST, then the config): with the default GOGC
	// the collector runs again at every doubling of a heap that only
	// grows, and on a busy machine those cycles were most of the parse.
	// Fewer cycles while parsing; the default again after.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	cfg, err := config.Load(file)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(c.err, "Warning: %s\n", w)
	}
	return cfg, nil
}

// prepare loads the plan file, connects to both hosts and reads them
// (ops.Prepare).
func (c *cli) prepare(ctx context.Context, file, stateFlag string, purpose ops.Purpose) (*ops.Prepared[*remote.Client], error) {
	cfg, err := c.loadConfig(file)
	if err != nil {
		return nil, err
	}
	dial, err := ops.Dial()
	if err != nil {
		return nil, err
	}
	return ops.Prepare(ctx, cfg, ops.StatePath(file, stateFlag), dial, hostTimeout, purpose, c.view().Note)
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
			p, err := c.prepare(ctx, file, stateFlag, ops.ForPlan)
			if err != nil {
				return err
			}
			defer p.Session.Close()
			t0 := time.Now()
			pl, err := plan.Make(p.Config, p.Facts, p.Journal, time.Now())
			timing.CLI.Since("plan.Make", t0)
			if err != nil {
				return err
			}
			var v views.Plan = c.view()
			v.Plan(pl)
			if out != "" {
				if err := pl.Save(out); err != nil {
					return fmt.Errorf("save plan: %w", err)
				}
				v.Saved(out)
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
			sp := ops.StatePath(file, stateFlag)
			lock, err := ops.AcquireLocalLock(sp, "apply")
			if err != nil {
				return err
			}
			defer lock.Release()
			p, err := c.prepare(ctx, file, stateFlag, ops.ForApply)
			if err != nil {
				return err
			}
			defer p.Session.Close()
			o := ops.ApplyOptions{Saved: saved, ConfirmTimeout: confirmTimeout, Lock: lock.Info, Hooks: ops.FaultHooks(p.Session)}
			if !auto {
				o.Approve = func() (bool, error) { return c.confirm("Do you want to perform these actions on both hosts?") }
			}
			return ops.Apply(ctx, p, views.Apply(c.view()), o)
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
			sp := ops.StatePath(file, stateFlag)
			_, statErr := os.Stat(sp)
			lost := errors.Is(statErr, fs.ErrNotExist)
			lock, err := ops.AcquireLocalLock(sp, "rollback")
			if err != nil {
				return err
			}
			defer lock.Release()
			dial, err := ops.Dial()
			if err != nil {
				return err
			}
			o := ops.RollbackOptions{PlanFile: file, StatePath: sp, Lost: lost, All: all, Timeout: hostTimeout, Lock: lock.Info, Hooks: ops.FaultHooks[*remote.Client](nil)}
			if !auto {
				o.Approve = func() (bool, error) { return c.confirm("Do you want to roll back on both hosts?") }
			}
			return ops.Rollback(ctx, dial, views.Rollback(c.view()), o)
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
			dial, err := ops.Dial()
			if err != nil {
				return err
			}
			return ops.ForceUnlock(ctx, dial, ops.StatePath(file, stateFlag), file, id, hostTimeout, c.view())
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "migration.hcl", "plan file")
	cmd.Flags().StringVar(&stateFlag, "state", "", "state file (default: migration.state.json beside the plan file)")
	return cmd
}
