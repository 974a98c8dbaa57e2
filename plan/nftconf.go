package plan

import (
	"fmt"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// NftConfNotes warns, per host, where the configuration nftables.service
// loads holds a copy of migrate's table (Facts.NftConf): the common way
// to persist a firewall change, `nft list ruleset > /etc/nftables.conf`,
// saves migrate's tables with the operator's. Every boot and every
// restart of the service then loads the copy as it was when saved, and
// after a rollback it brings back a table nothing stands behind.
func NftConfNotes(facts map[string]state.Facts) []string {
	var out []string
	for _, host := range []string{New, Old} {
		if n := NftConfNote(host, facts[host].NftConf); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// NftConfNote is NftConfNotes for one host ("" when nothing is saved).
func NftConfNote(host string, saved []state.NftConfTable) string {
	if len(saved) == 0 {
		return ""
	}
	var where, tables []string
	seen := map[string]bool{}
	for _, s := range saved {
		t := "table " + s.Family + " " + s.Name
		where = append(where, fmt.Sprintf("%s:%d (%s)", s.File, s.Line, t))
		if !seen[t] {
			seen[t] = true
			tables = append(tables, t)
		}
	}
	arp := ""
	for _, s := range saved {
		if s.Family == "arp" {
			// The copy keeps dropping ARP requests for the addresses
			// NEW held for OLD, which may be NEW's own by then.
			arp = " Its table arp drops ARP requests for the moved addresses: should an address move to this host for good on the same network segment (answered by ARP, not routed to it), the copy makes the host ignore it after the next boot."
			break
		}
	}
	return fmt.Sprintf("WARNING host %s: a file nftables.service loads holds a saved copy of migrate's table: %s. The service loads it at every boot and every restart of nftables: the table as it was when saved (its stages and services then), until `migrate apply` writes the current one again; and after `migrate rollback --all` it brings the table back with no tunnel and no journal behind it.%s Remove %s from the file, and save only your own tables (`nft list table inet NAME > FILE`, not `nft list ruleset`).",
		host, strings.Join(where, ", "), arp, strings.Join(tables, " and "))
}
