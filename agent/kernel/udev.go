package kernel

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// udevRun is udevd's runtime directory: its database (data/n<ifindex> for a
// network interface) and the queue flag file that exists while events are
// queued or being processed.
const udevRun = "/run/udev"

// udevWait bounds the wait for udevd to handle a device migrate made: at
// boot it may be busy with every other device.
const udevWait = 5 * time.Second

// waitUdev waits until udevd, when one runs in this network namespace, has
// handled the new network interface ifindex. systemd's udev rules
// (99-systemd.rules) run systemd-sysctl for every new interface, which
// applies the sysctl files' assignments for it, globs included
// (net.ipv4.conf.*.rp_filter = 1 in a hardened image): milliseconds after
// the device appears, that is after migrate set its rp_filter and
// accept_local, and the file's value would win. Waiting here, before the
// device's sysctls are set, makes migrate's values the last ones.
//
// It waits for nothing where no udevd runs in this namespace (udevd sees
// only the uevents of its own network namespace), and gives up after
// udevWait: the device is configured anyway, and plan warns of such files.
func waitUdev(ifindex int) {
	if !udevdHere() {
		return
	}
	data := filepath.Join(udevRun, "data", "n"+strconv.Itoa(ifindex))
	queue := filepath.Join(udevRun, "queue")
	for deadline := time.Now().Add(udevWait); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if exists(data) && !exists(queue) {
			return
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return !errors.Is(err, fs.ErrNotExist)
}

// udevdHere says whether a systemd-udevd process runs in the calling
// thread's network namespace and sees the same /run/udev.
func udevdHere() bool {
	if !exists(filepath.Join(udevRun, "control")) {
		return false
	}
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || string(comm) != "systemd-udevd\n" {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && ns == self {
			return true
		}
	}
	return false
}
