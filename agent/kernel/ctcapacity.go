package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/opsmigrate/migrate/state"
	"golang.org/x/sys/unix"
)

// conntrackFacts reads how full the namespace's conntrack table is and
// how many sockets it holds. Without conntrack in the kernel yet (the
// module is loaded with the first table that uses it) the sysctls are
// absent: Loaded is false, the count 0 and the limit unknown.
func (h *Host) conntrackFacts() (*state.Conntrack, error) {
	c := &state.Conntrack{}
	read := func(name string) (int64, bool, error) {
		v, ok, err := h.readSysctl(name)
		if err != nil || !ok {
			return 0, ok, err
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("sysctl %s = %q: not a number", name, v)
		}
		return n, true, nil
	}
	var err error
	if c.Max, c.Loaded, err = read(state.ConntrackMax); err != nil {
		return nil, err
	}
	if c.Loaded {
		if c.Count, _, err = read("net.netfilter.nf_conntrack_count"); err != nil {
			return nil, err
		}
		if c.Buckets, _, err = read("net.netfilter.nf_conntrack_buckets"); err != nil {
			return nil, err
		}
		// The kernel makes nf_conntrack_max read-only (0444) outside the
		// initial namespace; a container may mount /proc/sys read-only.
		// access(2) asks the kernel itself.
		p, err := h.sysctlPath(state.ConntrackMax)
		if err != nil {
			return nil, err
		}
		c.MaxWritable = unix.Access(p, unix.W_OK) == nil
	}
	for _, f := range []string{"sockstat", "sockstat6"} {
		if err := readSockstat(h.ProcNet+"/"+f, c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// readSockstat adds the TCP and UDP socket counts of one sockstat file
// (/proc/net/sockstat: "TCP: inuse 5 orphan 0 tw 2 alloc 6 mem 1", "UDP:
// inuse 2 mem 0"; sockstat6: "TCP6: inuse 3", "UDP6: inuse 1"). tw is
// in sockstat only and covers IPv4 and IPv6. A missing sockstat6 (no
// IPv6) adds nothing.
func readSockstat(path string, c *state.Conntrack) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		val := func(key string) int64 {
			for i := 1; i+1 < len(fields); i += 2 {
				if fields[i] == key {
					n, _ := strconv.ParseInt(fields[i+1], 10, 64)
					return n
				}
			}
			return 0
		}
		switch fields[0] {
		case "TCP:", "TCP6:":
			c.TCPInUse += val("inuse")
			c.TCPTimeWait += val("tw")
		case "UDP:", "UDP6:":
			c.UDPInUse += val("inuse")
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
