//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/opsmigrate/migrate/agent"
	"github.com/opsmigrate/migrate/agent/kernel"
)

// The agent and its watchdog talk to the local kernel (netlink, nftables):
// they exist only in linux builds. agent_other.go has the stubs for the
// CLI built for other systems (macOS), which installs a linux agent on the
// hosts instead (remote.AgentFor).

func (c *cli) watchdogCmd() *cobra.Command {
	var run string
	cmd := &cobra.Command{
		Use:    agent.WatchdogCommand,
		Short:  "Host-side revert timer (started by the agent)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			return agent.Serve(os.Stdin, os.Stdout, k, &agent.HostFiles{Dir: agent.StateDir()})
		},
	}
}

// bootRestoreCmd is what the boot unit runs (agent.UnitText): it restores
// this host's part of the last confirmed apply and records the outcome in
// STATE/boot.json. The directories come from the unit's command line, not
// the environment: systemd starts it with an empty one.
func (c *cli) bootRestoreCmd() *cobra.Command {
	var stateDir, unitDir string
	cmd := &cobra.Command{
		Use:    agent.BootRestoreCommand,
		Short:  "Restore this host's part of the last confirmed apply (run by the boot unit)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stateDir == "" || unitDir == "" {
				return errors.New("--state-dir and --unit-dir are required")
			}
			// The agent code reads both from the environment.
			os.Setenv("MIGRATE_STATE_DIR", stateDir)
			os.Setenv("MIGRATE_SYSTEMD_DIR", unitDir)
			k, err := kernel.New(stateDir)
			if err != nil {
				return err
			}
			rec, err := agent.BootRestore(&agent.HostFiles{Dir: stateDir}, k)
			fmt.Fprintf(c.out, "migrate boot restore: %s (%d step(s), %d ms)\n", rec.Outcome, rec.Steps, rec.TookMS)
			for _, r := range rec.RevertedRuns {
				fmt.Fprintf(c.out, "run %s was not confirmed before the reboot: reverted, not restored\n", r)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "the agent's state directory")
	cmd.Flags().StringVar(&unitDir, "unit-dir", "", "the systemd unit directory the unit is installed in")
	return cmd
}
