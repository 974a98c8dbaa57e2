// Package remote connects to a host over SSH (through ProxyJump hops when
// ssh_config says so), installs a migrate agent there (by content hash): the
// linux agent a release CLI carries for the host's architecture, else this
// very binary (AgentFor), starts it as `migrate agent --sha256 HASH` and talks to it with
// package proto over the session's stdin/stdout. One SSH connection per
// host per command (plus one per hop); host keys, the hops' included, are
// always checked against known_hosts. As root the agent is exec'd
// directly; with sudo as `sudo -n <agent> agent --sha256 HASH`, never a
// root shell, after a `sudo -n -l` for that exact command that turns
// sudo's complaints into advice (SudoersRule is the narrow rule that
// allows it). The agent checks its own hash in that exec.
package remote
