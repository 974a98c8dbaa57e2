//go:build linux

package hostcmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/agent"
	"github.com/opsmigrate/migrate/agent/kernel"
	"github.com/opsmigrate/migrate/state"
)

// Commands are the hidden subcommands of the migrate binary that run on a
// host: agent, agent-watchdog, agent-install and agent-boot-restore. out
// is where the ones run by hand or by the boot unit print.
func Commands(out io.Writer) []*cobra.Command {
	return []*cobra.Command{agentCmd(), watchdogCmd(), agentInstallCmd(out), bootRestoreCmd(out)}
}

func watchdogCmd() *cobra.Command {
	var run string
	cmd := &cobra.Command{
		Use:    agent.WatchdogCommand,
		Short:  "Host-side revert timer (started by the agent)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := agent.CheckStateDir(agent.StateDir()); err != nil {
				return err
			}
			k, err := kernel.New(agent.StateDir())
			if err != nil {
				return err
			}
			return agent.RunWatchdog(&agent.HostFiles{Dir: agent.StateDir()}, k, run)
		},
	}
	cmd.Flags().StringVar(&run, "run", "", "run to revert")
	return cmd
}

// agentCmd is what the CLI runs on a host, as root or through
// `sudo -n`: exactly `agent --sha256 HASH`, nothing else. Its arguments
// are parsed by hand, not by cobra, so that the sudoers rule for the agent
// binaries (README, "sudo = true") allows no other flag or command of this
// binary as root: anything else is refused.
func agentCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "agent --sha256 HASH",
		Short:              "Run as the host-side agent (started by migrate over SSH)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 || args[0] != "--sha256" {
				return fmt.Errorf("usage: migrate agent --sha256 HASH (the sha256 of this binary, as the CLI installed it), not %q", args)
			}
			// Before anything else: this process runs the binary the
			// CLI means (agent/selfcheck.go), or nothing runs.
			if err := agent.VerifySelf(args[1]); err != nil {
				return err
			}
			dir := agent.StateDir()
			if err := agent.CheckStateDir(dir); err != nil {
				return err
			}
			k, err := kernel.New(dir)
			if err != nil {
				return err
			}
			return agent.Serve(os.Stdin, os.Stdout, k, &agent.HostFiles{Dir: dir})
		},
	}
}

// bootRestoreCmd is what the boot unit runs (agent.UnitText): it restores
// this host's part of the last confirmed apply and records the outcome in
// STATE/boot.json. The directories come from the unit's command line, not
// the environment: systemd starts it with an empty one.
func bootRestoreCmd(out io.Writer) *cobra.Command {
	var stateDir, unitDir, after, service string
	cmd := &cobra.Command{
		Use:    agent.BootRestoreCommand,
		Short:  "Restore this host's part of the last confirmed apply (run by the boot unit)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stateDir == "" || unitDir == "" {
				return errors.New("--state-dir and --unit-dir are required")
			}
			if after != "" && after != agent.AfterStart && after != agent.AfterReload {
				return fmt.Errorf("--after %q: want %s or %s (the service's event)", after, agent.AfterStart, agent.AfterReload)
			}
			if (after == "") != (service == "") || service != "" && !slices.Contains(state.DropInServices, service) {
				return fmt.Errorf("--after and --service go together, --service one of %v (not %q)", state.DropInServices, service)
			}
			// The same checks as the agent's: the state directory is
			// root's and private (agent/statedir.go), and an installed
			// agent (bin/migrate-SHA256) is the file its name says.
			if err := agent.CheckStateDir(stateDir); err != nil {
				return err
			}
			if exe, err := os.Readlink("/proc/self/exe"); err == nil {
				if h, ok := strings.CutPrefix(filepath.Base(exe), "migrate-"); ok && agent.ValidHash(h) {
					if err := agent.VerifySelf(h); err != nil {
						return err
					}
				}
			}
			// The agent code reads both from the environment.
			os.Setenv("MIGRATE_STATE_DIR", stateDir)
			os.Setenv("MIGRATE_SYSTEMD_DIR", unitDir)
			k, err := kernel.New(stateDir)
			if err != nil {
				return err
			}
			k.NoUDPWarmup = true
			h := &agent.HostFiles{Dir: stateDir}
			if after != "" {
				rec, ran, err := agent.AfterRestore(h, k, service, after)
				if !ran && err == nil {
					fmt.Fprintf(out, "migrate restore after %s %s: nothing to do before %s has run in this boot\n", service, after, state.BootUnitName)
					return nil
				}
				fmt.Fprintf(out, "migrate restore after %s %s: %s (%d step(s), %d ms)\n", service, after, rec.Outcome, rec.Steps, rec.TookMS)
				return err
			}
			rec, err := agent.BootRestore(h, k)
			fmt.Fprintf(out, "migrate boot restore: %s (%d step(s), %d ms)\n", rec.Outcome, rec.Steps, rec.TookMS)
			for _, r := range rec.RevertedRuns {
				fmt.Fprintf(out, "run %s was not confirmed before the reboot: reverted, not restored\n", r)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "the agent's state directory")
	cmd.Flags().StringVar(&unitDir, "unit-dir", "", "the systemd unit directory the unit is installed in")
	cmd.Flags().StringVar(&after, "after", "", "run by a drop-in after its service's start or reload (start, reload): restore only once the boot unit or an apply ran in this boot")
	cmd.Flags().StringVar(&service, "service", "", "with --after: the drop-in's service")
	return cmd
}

// agentInstallCmd copies this binary into the host's agent directory
// (agent.InstallSelf). The CLI runs it, as root or through sudo, from the
// file it uploaded; an administrator can run it by hand, as root, on a
// host whose sudoers allows only the installed agents (README).
func agentInstallCmd(out io.Writer) *cobra.Command {
	var want string
	cmd := &cobra.Command{
		Use:    "agent-install [--sha256 HASH]",
		Short:  "Install this binary as migrate's agent on this host (as root)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := agent.InstallSelf(agent.StateDir(), want)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "installed %s\n", p)
			return nil
		},
	}
	cmd.Flags().StringVar(&want, "sha256", "", "refuse unless this binary has this sha256")
	return cmd
}
