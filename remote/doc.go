// Package remote connects to a host over SSH (through ProxyJump hops when
// ssh_config says so), installs a migrate agent there (by content hash): the
// linux agent a release CLI carries for the host's architecture, else this
// very binary (AgentFor), starts it as `migrate agent` and talks to it with
// package proto over the session's stdin/stdout. One SSH connection per
// host per command (plus one per hop); host keys, the hops' included, are
// always checked against known_hosts. With sudo, every command runs as
// `sudo -n sh -c ...`, after a `sudo -n true` that turns sudo's complaints
// into advice.
package remote
