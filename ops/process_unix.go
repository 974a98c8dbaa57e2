//go:build unix && !linux

package ops

import (
	"errors"
	"syscall"
)

// processGone reports whether no process pid exists on this machine.
// Signal 0 asks the kernel without sending anything; EPERM means it exists
// under another user. (Not /proc: a CLI on macOS has none, and a missing
// /proc/PID there made every held lock look stale.)
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
