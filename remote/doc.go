// Package remote connects to a host over SSH, installs migrate's own binary
// there (by content hash), starts it as `migrate agent` and talks to it with
// package proto over the session's stdin/stdout. One SSH connection per host
// per command; host keys are always checked against known_hosts.
package remote
