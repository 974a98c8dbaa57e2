//go:build linux

// Package proc identifies a process by its PID and its start time, so a
// recorded PID is never signalled once it belongs to another process, and
// a zombie counts as gone.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// ID is a process as recorded in a file: a PID alone can be reused by an
// unrelated process once the first one exited; the start time (clock
// ticks after boot, /proc/PID/stat field 22) cannot, within one boot.
type ID struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"pid_start,omitempty"`
}

// Self is the calling process.
func Self() ID {
	st, _ := stat(os.Getpid())
	return ID{PID: os.Getpid(), Start: st.start}
}

type procStat struct {
	state byte
	start uint64
}

func stat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// "PID (comm) S ..." where comm may hold spaces and parentheses: the
	// fields after comm start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := bytes.Fields(b[i+2:])
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	start, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat: %w", pid, err)
	}
	return procStat{state: f[0][0], start: start}, nil
}

// Alive reports whether id is still the same running process: it exists,
// is not a zombie (exited, not yet reaped), and started at the recorded
// time. An ID without a start time (an old record) is only checked for
// existence and zombies.
func (id ID) Alive() bool {
	if id.PID <= 0 {
		return false
	}
	st, err := stat(id.PID)
	if err != nil {
		return false
	}
	if st.state == 'Z' || st.state == 'X' {
		return false
	}
	return id.Start == 0 || st.start == id.Start
}

// ErrGone says the recorded process no longer runs (or the PID now
// belongs to another process): nothing was signalled.
var ErrGone = errors.New("the recorded process is gone")

// Kill sends SIGKILL to id only if it is still that process. The pidfd is
// opened before the check, so the PID cannot be reused between the check
// and the signal. A record without a start time is never signalled: it
// cannot be told apart from a reused PID.
func (id ID) Kill() error {
	if id.PID <= 0 || id.Start == 0 {
		return ErrGone
	}
	fd, err := unix.PidfdOpen(id.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return ErrGone
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", id.PID, err)
	}
	defer unix.Close(fd)
	if !id.Alive() {
		return ErrGone
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return ErrGone
		}
		return fmt.Errorf("signal %d: %w", id.PID, err)
	}
	return nil
}

// WaitGone polls until id no longer runs (a killed process may linger as a
// zombie until its parent reaps it: that counts as gone).
func (id ID) WaitGone(tries int, each func()) bool {
	for i := 0; i < tries; i++ {
		if !id.Alive() {
			return true
		}
		each()
	}
	return !id.Alive()
}

// Of identifies the running process pid (its start time read now). Use it
// right after starting the process, while it is known to be ours.
func Of(pid int) ID {
	st, _ := stat(pid)
	return ID{PID: pid, Start: st.start}
}
