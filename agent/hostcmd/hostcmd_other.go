//go:build !linux

package hostcmd

import (
	"errors"
	"io"

	"github.com/spf13/cobra"
)

// errLinuxOnly: the agent needs the linux kernel's netlink and nftables. A
// CLI built for macOS never runs it locally; it installs a linux agent on
// each host (see remote.AgentFor).
// Commands are the host-side subcommands; on this system each only says
// that it runs on linux.
func Commands(io.Writer) []*cobra.Command {
	return []*cobra.Command{agentCmd(), watchdogCmd(), agentInstallCmd(), bootRestoreCmd()}
}

var errLinuxOnly = errors.New("the agent runs on linux hosts only")

func agentCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "agent",
		Short:              "Run as the host-side agent (linux only)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errLinuxOnly },
	}
}

func watchdogCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "agent-watchdog", // agent.WatchdogCommand: package agent builds on linux only
		Short:              "Host-side revert timer (linux only)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errLinuxOnly },
	}
}

func bootRestoreCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "agent-boot-restore", // agent.BootRestoreCommand: package agent builds on linux only
		Short:              "Restore at boot (linux only)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errLinuxOnly },
	}
}

func agentInstallCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "agent-install",
		Short:              "Install this binary as migrate's agent (linux only)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return errLinuxOnly },
	}
}
