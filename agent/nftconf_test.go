package agent

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/opsmigrate/migrate/state"
)

func TestNftConf(t *testing.T) {
	saved := "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\ntable inet migrate {\n\tchain prerouting {\n\t}\n}\ntable arp migrate {\n}\n"
	root := fstest.MapFS{
		// Debian: `nft list ruleset > /etc/nftables.conf`, and includes.
		"etc/nftables.conf": {Data: []byte("#!/usr/sbin/nft -f\n# table inet migrate { in a comment\nflush ruleset\n" + saved +
			"include \"nftables.d/*.nft\"\ninclude \"./srv/fw.nft\";\ninclude \"/etc/nftables.d\"\ninclude \"none/*.nft\"\n")},
		// Relative to the include path /etc, not to the including file.
		"etc/nftables.d/10-a.nft":     {Data: []byte("add table inet migrate\ninclude \"b.nft\"\ninclude \"nftables.d/sub/c.nft\"\n")},
		"etc/nftables.d/b.nft":        {Data: []byte("create table inet migrate { }\n")}, // the glob's, after 10-a.nft
		"etc/b.nft":                   {Data: []byte("table inet \"migrate\"\n{\n}\n")},
		"etc/nftables.d/.hidden.nft":  {Data: []byte("table inet migrate {}\n")},
		"etc/nftables.d/sub/c.nft":    {Data: []byte("table ip migrate {}\ntable inet migrate2 {}\nlist table inet migrate\ndelete table inet migrate; table \\\narp migrate {}\n")},
		"srv/fw.nft":                  {Data: []byte("define x = \"table inet migrate\"\ntable inet other { chain c { comment \"table inet migrate\"; } }\n")},
		"etc/sysconfig/nftables.conf": {Data: []byte("# include \"/etc/nftables/main.nft\"\ninclude \"/etc/nftables/main.nft\"\n")},
		// Includes itself: read to nft's depth limit, not forever, and
		// reported once.
		"etc/nftables/main.nft": {Data: []byte("table inet migrate { chain x { } }\ninclude \"/etc/nftables/main.nft\"\n")},
	}
	got := NftConf(root, "migrate")
	want := []state.NftConfTable{
		{Family: "inet", Name: "migrate", File: "/etc/nftables.conf", Line: 9},
		{Family: "arp", Name: "migrate", File: "/etc/nftables.conf", Line: 13},
		{Family: "inet", Name: "migrate", File: "/etc/nftables.d/10-a.nft", Line: 1},
		{Family: "inet", Name: "migrate", File: "/etc/b.nft", Line: 1},
		{Family: "arp", Name: "migrate", File: "/etc/nftables.d/sub/c.nft", Line: 4},
		{Family: "inet", Name: "migrate", File: "/etc/nftables.d/b.nft", Line: 1},
		{Family: "inet", Name: "migrate", File: "/etc/nftables/main.nft", Line: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	// A big migration's saved table (4 MiB of set elements) ahead of
	// NEW's ARP table, and a string left open at the end of its line.
	var big strings.Builder
	big.WriteString("table inet migrate {\n\tset svc4 {\n\t\telements = { ")
	for i := 0; i < 150000; i++ {
		fmt.Fprintf(&big, "10.%d.%d.%d . tcp . 443 counter packets 0 bytes 0, ", i>>16, i>>8&255, i&255)
	}
	big.WriteString("}\n\t}\n\tchain c {\n\t\tcomment \"open\n\t}\n}\ntable arp migrate {\n}\n")
	lines := strings.Count(big.String(), "\n")
	got = NftConf(fstest.MapFS{"etc/nftables.conf": {Data: []byte(big.String())}}, "migrate")
	want = []state.NftConfTable{{Family: "inet", Name: "migrate", File: "/etc/nftables.conf", Line: 1}, {Family: "arp", Name: "migrate", File: "/etc/nftables.conf", Line: lines - 1}}
	if big.Len() < 4<<20 || !reflect.DeepEqual(got, want) {
		t.Errorf("big file (%d bytes): got %v, want %v", big.Len(), got, want)
	}
	if got := NftConf(fstest.MapFS{"etc/nftables.conf": {Data: []byte("flush ruleset\ntable inet filter {}\n")}}, "migrate"); got != nil {
		t.Errorf("own tables only: %v", got)
	}
	if got := NftConf(fstest.MapFS{}, "migrate"); got != nil {
		t.Errorf("no files: %v", got)
	}
}
