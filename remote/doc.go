// Package remote connects to a host over SSH, installs a migrate agent
// there (by content hash): the linux agent a release CLI carries for the
// host's architecture, else this very binary (AgentFor), starts it as
// `migrate agent` and talks to it with package proto over the session's
// stdin/stdout. One SSH connection per host per command; host keys are
// always checked against known_hosts.
package remote
