//go:build !linux

package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// errLinuxOnly: the agent needs the linux kernel's netlink and nftables. A
// CLI built for macOS never runs it locally; it installs a linux agent on
// each host (see remote.AgentFor).
var errLinuxOnly = errors.New("the agent runs on linux hosts only")

func (c *cli) agentCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "agent",
		Short:              "Run as the host-side agent (linux only)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errLinuxOnly },
	}
}

func (c *cli) watchdogCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "agent-watchdog", // agent.WatchdogCommand, not importable here
		Short:              "Host-side revert timer (linux only)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errLinuxOnly },
	}
}

func (c *cli) bootRestoreCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "agent-boot-restore", // agent.BootRestoreCommand, not importable here
		Short:              "Restore at boot (linux only)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errLinuxOnly },
	}
}

func (c *cli) agentInstallCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "agent-install",
		Short:              "Install this binary as migrate's agent (linux only)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errLinuxOnly },
	}
}
