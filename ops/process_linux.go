//go:build linux

package ops

import "github.com/opsmigrate/migrate/internal/proc"

// processGone reports whether no process pid runs on this machine. A
// zombie (exited, not yet reaped by its parent) is gone: kill(pid, 0)
// still succeeds on it, so /proc/PID/stat's state is read instead.
func processGone(pid int) bool {
	return !proc.ID{PID: pid}.Alive()
}
