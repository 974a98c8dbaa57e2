//go:build linux

package main

import (
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
