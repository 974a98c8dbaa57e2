package agent

import (
	"reflect"
	"testing"
	"testing/fstest"

	"github.com/opsmigrate/migrate/state"
)

func TestSysctlConf(t *testing.T) {
	root := fstest.MapFS{
		// A hardened image: ip_forward 0, later set again by a file
		// that sorts after it; the same basename in /usr/lib is hidden
		// by /etc's.
		"etc/sysctl.d/60-cis.conf":         {Data: []byte("# CIS 3.1.1\nnet.ipv4.ip_forward = 0\n; comment\n-net/ipv4/ip_early_demux=1\nnet.ipv6.conf.all.forwarding = 0\n")},
		"usr/lib/sysctl.d/60-cis.conf":     {Data: []byte("net.ipv4.conf.mig0.rp_filter = 1\n")},
		"usr/lib/sysctl.d/50-default.conf": {Data: []byte("net.ipv4.conf.all.rp_filter = 2\nnet.ipv4.conf.*.rp_filter = 2\n")},
		"run/sysctl.d/70-vlan.conf":        {Data: []byte("net/ipv4/conf/eth0.100/rp_filter = 0\n")},
		"etc/sysctl.d/README":              {Data: []byte("net.ipv4.ip_forward = 1\n")}, // not *.conf
		"etc/sysctl.conf":                  {Data: []byte("net.ipv6.conf.all.forwarding=1\n")},
		// Globs: an explicit assignment wins whatever its order, a
		// later glob over an earlier one, "-KEY" excludes KEY.
		"etc/sysctl.d/80-glob.conf": {Data: []byte("net.ipv4.conf.*.accept_local = 0\nnet/ipv4/conf/*/accept_local = 5\nnet.ipv4.conf.*.rp_filter = 1\n-net.ipv4.conf.all.send_redirects\nnet.ipv4.conf.*.send_redirects = 1\nnet.ipv4.ip_*forward = 7\n")},
	}
	got := SysctlConf(root, []string{"net.ipv4.ip_forward", "net.ipv4.ip_early_demux", "net.ipv6.conf.all.forwarding",
		"net.ipv4.conf.mig0.rp_filter", "net.ipv4.conf.eth0/100.rp_filter", "net.ipv6.conf.*.accept_ra", "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.mig0.accept_local"})
	want := map[string]state.SysctlSetting{
		"net.ipv4.ip_forward":              {Value: "0", File: "/etc/sysctl.d/60-cis.conf", Line: 2},
		"net.ipv4.ip_early_demux":          {Value: "1", File: "/etc/sysctl.d/60-cis.conf", Line: 4},
		"net.ipv6.conf.all.forwarding":     {Value: "1", File: "/etc/sysctl.conf", Line: 1},
		"net.ipv4.conf.eth0/100.rp_filter": {Value: "0", File: "/run/sysctl.d/70-vlan.conf", Line: 1},
		"net.ipv4.conf.mig0.rp_filter":     {Value: "1", File: "/etc/sysctl.d/80-glob.conf", Line: 3, Pattern: "net.ipv4.conf.*.rp_filter"},
		"net.ipv4.conf.mig0.accept_local":  {Value: "5", File: "/etc/sysctl.d/80-glob.conf", Line: 2, Pattern: "net.ipv4.conf.*.accept_local"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	// An exclusion after an assignment replaces it: nothing is set.
	got = SysctlConf(fstest.MapFS{"etc/sysctl.conf": {Data: []byte("net.ipv4.ip_forward = 0\n-net.ipv4.ip_forward\nnet.ipv4.*_forward = 0\n")}}, []string{"net.ipv4.ip_forward"})
	if got != nil {
		t.Errorf("excluded after its assignment: %v", got)
	}
	if got := SysctlConf(fstest.MapFS{}, []string{"net.ipv4.ip_forward"}); got != nil {
		t.Errorf("no files: %v", got)
	}
}
