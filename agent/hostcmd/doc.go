// Package hostcmd is the host side's entry into the migrate binary: the
// hidden subcommands the CLI starts on a host over SSH (agent), that the
// agent starts itself (agent-watchdog), that the boot unit runs
// (agent-boot-restore), and that installs the binary as the agent
// (agent-install). It wires package agent to the real kernel
// (agent/kernel); the CLI only adds Commands to its root. On systems other
// than linux each command says it runs on linux only: a CLI built for
// macOS installs a linux agent on the hosts instead (remote.AgentFor).
package hostcmd
