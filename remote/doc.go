// Package remote connects to a host over SSH, installs migrate's own binary
// there (by content hash), starts it as `migrate agent` and talks to it with
// package proto over the session's stdin/stdout. One SSH connection per host
// per command (plus one per ProxyJump hop); host keys, the hops' included,
// are always checked against known_hosts. With sudo, every command runs as
// `sudo -n sh -c ...`, after a `sudo -n true` that turns sudo's complaints
// into advice.
package remote
