package plan_test

import (
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

func TestNftConfNotes(t *testing.T) {
	facts := map[string]state.Facts{
		plan.Old: {NftConf: []state.NftConfTable{{Family: "inet", Name: "migrate", File: "/etc/nftables.conf", Line: 2}}},
		plan.New: {NftConf: []state.NftConfTable{
			{Family: "inet", Name: "migrate", File: "/etc/sysconfig/nftables.conf", Line: 40},
			{Family: "arp", Name: "migrate", File: "/etc/sysconfig/nftables.conf", Line: 90},
		}},
	}
	notes := plan.NftConfNotes(facts)
	if len(notes) != 2 ||
		!strings.HasPrefix(notes[0], "WARNING host new: a file nftables.service loads holds a saved copy of migrate's table: /etc/sysconfig/nftables.conf:40 (table inet migrate), /etc/sysconfig/nftables.conf:90 (table arp migrate).") ||
		!strings.Contains(notes[0], "Remove table inet migrate and table arp migrate from the file") ||
		!strings.Contains(notes[0], "Its table arp drops ARP requests for the moved addresses") || strings.Contains(notes[1], "ARP") ||
		!strings.HasPrefix(notes[1], "WARNING host old: a file nftables.service loads holds a saved copy of migrate's table: /etc/nftables.conf:2 (table inet migrate).") {
		t.Errorf("notes: %q", notes)
	}
	if n := plan.NftConfNotes(map[string]state.Facts{plan.Old: {}}); n != nil {
		t.Errorf("nothing saved: %q", n)
	}
}

// A table of migrate's name that neither the agent's record (Spec.Role
// empty) nor the journal knows: a saved copy loaded after a rollback. The
// plan creates the table over it, so that the rollback removes it; with
// the journal recording the table it stays an update.
func TestDiffUnrecordedTableIsCreated(t *testing.T) {
	want := state.Object{Nft: &state.NftTable{Family: "inet", Name: plan.NftTableName, Spec: state.NftSpec{Role: "old", Mark: 0x20000}}}
	facts := state.Facts{
		Nft:      &state.NftTable{Family: "inet", Name: plan.NftTableName},
		NftDrift: "nft table migrate was changed outside migrate: the agent has no record of what migrate wrote (/var/lib/migrate/nft-migrate.json is missing)",
	}
	steps, err := plan.Diff(plan.Old, plan.HostDesired{Objects: []state.Object{want}}, facts, nil)
	if err != nil || len(steps) != 1 || steps[0].Action != state.Create || steps[0].Before != nil || !steps[0].After.Equal(want) {
		t.Fatalf("unrecorded table: %v %+v", err, steps)
	}
	if n := plan.NftDriftNote(plan.Old, facts, nil); !strings.Contains(n, "host old has a table inet migrate that no migrate apply recorded") {
		t.Errorf("note: %q", n)
	}
	owned := map[string]*state.Object{want.Key(): nil}
	steps, err = plan.Diff(plan.Old, plan.HostDesired{Objects: []state.Object{want}}, facts, owned)
	if err != nil || len(steps) != 1 || steps[0].Action != state.Update {
		t.Fatalf("journaled table: %v %+v", err, steps)
	}
	if n := plan.NftDriftNote(plan.Old, facts, owned); !strings.HasPrefix(n, "host old: nft table migrate was changed outside migrate: the agent has no record") {
		t.Errorf("note: %q", n)
	}
	if n := plan.NftDriftNote(plan.Old, state.Facts{Nft: want.Nft}, nil); n != "" {
		t.Errorf("no drift: %q", n)
	}
}
