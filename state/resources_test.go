package state

import (
	"net/netip"
	"testing"
	"time"
)

func TestResourcesFollowTheJournal(t *testing.T) {
	j := NewJournal()
	fwdOff := &Object{Sysctl: &Sysctl{Name: "net.ipv4.ip_forward", Value: "0"}}
	fwdOn := &Object{Sysctl: &Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}}
	link := &Object{Link: &Link{Name: "mig0", Type: "vxlan"}}
	addr := &Object{Addr: &Addr{Dev: "lo", CIDR: netip.MustParsePrefix("198.51.100.10/32")}}
	now := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	j.Append("run1", 1, Step{Host: "old", Action: Update, Before: fwdOff, After: fwdOn}, now)
	j.Append("run1", 2, Step{Host: "new", Action: Create, After: link}, now)
	j.Append("run1", 3, Step{Host: "new", Action: Create, After: addr}, now)
	// A second apply removes the address again: still owned (until
	// rollback) but absent now.
	j.Append("run2", 4, Step{Host: "new", Action: Delete, Before: addr}, now)

	rs := j.Resources()
	var got []string
	for _, r := range rs {
		got = append(got, r.Address)
	}
	want := []string{"new.link.mig0", "new.addr.lo_198.51.100.10/32", "old.sysctl.net.ipv4.ip_forward"}
	if len(got) != len(want) {
		t.Fatalf("addresses %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("addresses %v, want %v", got, want)
		}
	}
	r, ok := j.FindResource("old.sysctl.net.ipv4.ip_forward")
	if !ok || r.Current.Sysctl.Value != "1" || r.Restore.Sysctl.Value != "0" {
		t.Fatalf("sysctl resource %+v", r)
	}
	r, ok = j.FindResource("new.addr.lo 198.51.100.10/32")
	if !ok || r.Current != nil || r.Restore != nil || len(r.Entries) != 2 {
		t.Fatalf("addr resource (created then deleted) %+v", r)
	}
	if _, ok := j.FindResource("new.link.mig1"); ok {
		t.Fatal("found a resource that does not exist")
	}

	// Rolled-back entries are no longer owned.
	for i := range j.Entries {
		j.Entries[i].RolledBack = &now
	}
	if rs := j.Resources(); len(rs) != 0 {
		t.Fatalf("after rollback: %v", rs)
	}
}
