package agent

import (
	"testing"
	"testing/fstest"

	"github.com/opsmigrate/migrate/state"
)

// FuzzHostConf: the configuration files the agent reads for plan's
// warnings (sysctl files, nftables.service's files and what they include,
// networkd.conf) are whatever a host has, edited by hand over years; no
// text of theirs may crash the agent (a crash fails every plan on that
// host) or give more than the facts' bounds.
func FuzzHostConf(f *testing.F) {
	for _, seed := range []string{
		"net.ipv4.ip_forward = 0\n-net.ipv4.conf.all.rp_filter\nnet.ipv4.conf.*.rp_filter=1\n; comment\n# comment\n",
		"flush ruleset\ninclude \"/etc/nftables.d/*.nft\"\ntable inet migrate {\n}\nadd table arp migrate\n",
		"include \"./x.nft\"\ninclude \"x.nft\"\ntable\\\ninet migrate {",
		"[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=maybe\\\n  yes\n",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		root := fstest.MapFS{
			"etc/sysctl.conf":             {Data: []byte(text)},
			"etc/sysctl.d/60-x.conf":      {Data: []byte(text)},
			"etc/nftables.conf":           {Data: []byte(text)},
			"etc/nftables.d/x.nft":        {Data: []byte(text)},
			"etc/x.nft":                   {Data: []byte(text)},
			"etc/sysconfig/nftables.conf": {Data: []byte("include \"/etc/nftables.conf\"\n" + text)},
		}
		SysctlConf(root, []string{"net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.mig0.rp_filter"})
		NftConf(root, "migrate")
		var n state.Networkd
		if p := parseNetworkdConf("/etc/systemd/networkd.conf", text, &n); len(p) > len(text)+1 {
			t.Fatalf("%d problems from %d bytes", len(p), len(text))
		}
	})
}
