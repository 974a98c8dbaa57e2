//go:build linux

package main

import (
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
func (c *cli) agentCmd() *cobra.Command {
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

// agentInstallCmd copies this binary into the host's agent directory
// (agent.InstallSelf). The CLI runs it, as root or through sudo, from the
// file it uploaded; an administrator can run it by hand, as root, on a
// host whose sudoers allows only the installed agents (README).
func (c *cli) agentInstallCmd() *cobra.Command {
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
			fmt.Fprintf(c.out, "installed %s\n", p)
			return nil
		},
	}
	cmd.Flags().StringVar(&want, "sha256", "", "refuse unless this binary has this sha256")
	return cmd
}
