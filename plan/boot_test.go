package plan

import (
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/state"
)

// TestBootWords: what plan and status say about a host's restore at
// boot, and only for the host's current boot.
func TestBootWords(t *testing.T) {
	at := time.Date(2026, 12, 6, 5, 12, 0, 0, time.UTC)
	b := &state.Boot{Systemd: true, BootID: "b2", Last: &state.BootRecord{Time: at, BootID: "b2", Outcome: state.BootRestored, Steps: 10, TookMS: 42}}
	if got := BootLine(New, b); !strings.HasPrefix(got, "NEW was restored at boot at 05:12 UTC") {
		t.Errorf("restored: %q", got)
	}
	b.Last = &state.BootRecord{Time: at, BootID: "b2", Outcome: state.BootFailed, Error: "restore + link mig0: boom"}
	if got := BootLine(Old, b); got != "OLD's restore at boot failed at 05:12 UTC: restore + link mig0: boom; OLD is as before migrate: run migrate apply" || !BootFailed(b) {
		t.Errorf("failed: %q", got)
	}
	b.Last = &state.BootRecord{Time: at, BootID: "b2", Outcome: state.BootNothing, RevertedRuns: []string{"r1"}}
	if got := BootLine(New, b); !strings.Contains(got, "NEW rebooted inside the confirm window of apply r1") {
		t.Errorf("reverted: %q", got)
	}
	b.BootID = "b3" // a record of an earlier boot says nothing now
	if got := BootLine(New, b); got != "" || BootFailed(b) {
		t.Errorf("earlier boot: %q", got)
	}
	// The unit is desired only where systemd runs and there is something
	// to restore; elsewhere plan says the host will not survive a reboot.
	h := HostDesired{Objects: []state.Object{{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}}}}
	bootDesired(state.Facts{Boot: &state.Boot{Systemd: true, UnitDir: "/etc/systemd/system", Unit: "[Unit]\n"}}, &h)
	if len(h.Objects) != 3 || h.Objects[1].File == nil || h.Objects[2].File.Link != "/etc/systemd/system/migrate-restore.service" {
		t.Errorf("desired with systemd: %v", h.Objects)
	}
	empty := HostDesired{}
	bootDesired(state.Facts{Boot: &state.Boot{Systemd: true, UnitDir: "/x", Unit: "u"}}, &empty)
	if len(empty.Objects) != 0 {
		t.Errorf("a host with nothing of migrate's gets %v", empty.Objects)
	}
	notes := BootNotes(map[string]HostDesired{New: h}, map[string]state.Facts{New: {Boot: &state.Boot{}}})
	if len(notes) != 1 || !strings.Contains(notes[0], "host new: systemd is not PID 1 there") || !strings.Contains(notes[0], "will not survive a reboot") {
		t.Errorf("notes without systemd: %q", notes)
	}
}

// TestAfterRestoreWords: what plan and status say about the
// nftables.service drop-in's restore, only for the host's current boot and
// only when it put something back or failed; and the drop-in is desired
// with the unit when the agent gives its text.
func TestAfterRestoreWords(t *testing.T) {
	at := time.Date(2026, 12, 7, 14, 2, 0, 0, time.UTC)
	b := &state.Boot{Systemd: true, BootID: "b2", LastAfter: &state.BootRecord{Time: at, BootID: "b2", Outcome: state.BootRestored, Steps: 1, TookMS: 23, After: "reload", Service: "nftables.service"}}
	if got := AfterRestoreLine(Old, b); !strings.HasPrefix(got, "nftables.service reload on OLD at 14:02 UTC removed migrate's part there") ||
		!strings.Contains(got, "put it back within 23 ms (1 step(s))") || !strings.Contains(got, "reset by OLD's own stack") {
		t.Errorf("restored on OLD: %q", got)
	}
	if got := AfterRestoreLine(New, b); strings.Contains(got, "reset") {
		t.Errorf("restored on NEW: %q (nothing of NEW's resets connections)", got)
	}
	b.LastAfter = &state.BootRecord{Time: at, BootID: "b2", Outcome: state.BootFailed, After: "start", Service: "nftables.service", Error: "host locked"}
	if got := AfterRestoreLine(Old, b); got != "WARNING host old: nftables.service start at 14:02 UTC: migrate's drop-in could not put back migrate's part: host locked. Run migrate apply" {
		t.Errorf("failed: %q", got)
	}
	b.LastAfter = &state.BootRecord{Time: at, BootID: "b2", Outcome: state.BootNothing, After: "reload"}
	if got := AfterRestoreLine(Old, b); got != "" {
		t.Errorf("nothing to put back: %q", got)
	}
	b.LastAfter = &state.BootRecord{Time: at, BootID: "b1", Outcome: state.BootRestored, Steps: 1, After: "reload"}
	if got := AfterRestoreLine(Old, b); got != "" {
		t.Errorf("an earlier boot's: %q", got)
	}
	b.LastAfter = &state.BootRecord{Time: at, BootID: "b2", Outcome: state.BootRestored, Steps: 1, TookMS: 9, After: "start", Service: "systemd-sysctl.service"}
	if got := AfterRestoreLine(Old, b); !strings.HasPrefix(got, "systemd-sysctl.service start on OLD at 14:02 UTC set sysctls migrate had changed back to the values of /etc/sysctl.d") ||
		strings.Contains(got, "reset") || !strings.Contains(got, "put it back within 9 ms") {
		t.Errorf("sysctls restored: %q", got)
	}
	h := HostDesired{Objects: []state.Object{{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}}}}
	bootDesired(state.Facts{Boot: &state.Boot{Systemd: true, UnitDir: "/etc/systemd/system", Unit: "[Unit]\n",
		DropIns: map[string]string{"nftables.service": "[Service]\n", "systemd-sysctl.service": "[Service]\n#s\n"}}}, &h)
	if len(h.Objects) != 5 || h.Objects[3].File == nil || h.Objects[3].File.Path != "/etc/systemd/system/nftables.service.d/migrate-restore.conf" ||
		h.Objects[4].File == nil || h.Objects[4].File.Path != "/etc/systemd/system/systemd-sysctl.service.d/migrate-restore.conf" {
		t.Errorf("desired with the drop-ins: %v", h.Objects)
	}
}
