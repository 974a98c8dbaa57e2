package state

import (
	"path/filepath"
	"time"
)

// BootUnitName is the systemd unit apply installs on a host where systemd
// is PID 1: at boot it restores the host's part of the last confirmed
// state (agent.BootRestore). docs/design.md, "Surviving a reboot".
const BootUnitName = "migrate-restore.service"

// BootUnitWants is the directory, under the unit directory, of the enable
// link: sysinit.target wants the unit, so it runs before every normal
// service (they are all ordered after basic.target, after sysinit.target).
const BootUnitWants = "sysinit.target.wants"

// BootUnitFiles are the unit's path and its enable link's path in unitDir.
func BootUnitFiles(unitDir string) (unit, link string) {
	return filepath.Join(unitDir, BootUnitName), filepath.Join(unitDir, BootUnitWants, BootUnitName)
}

// BootDropIn is the drop-in apply installs for nftables.service, beside
// the unit: nftables.service's start and reload load a ruleset that
// usually begins with `flush ruleset` (Debian's /etc/nftables.conf; on
// RHEL its reload flushes first), which removes migrate's table mid-
// migration. The drop-in runs the restore again right after
// (agent.RulesetRestore).
const BootDropIn = "nftables.service.d/migrate-restore.conf"

// BootDropInPath is the drop-in's path in unitDir.
func BootDropInPath(unitDir string) string { return filepath.Join(unitDir, BootDropIn) }

// Boot is what a host says about surviving a reboot (Facts.Boot).
type Boot struct {
	// Systemd: systemd is PID 1 (/run/systemd/system exists), so apply
	// installs the boot unit there.
	Systemd bool   `json:"systemd"`
	UnitDir string `json:"unit_dir"`
	// Unit is the text of the unit this host's agent installs.
	Unit string `json:"unit,omitempty"`
	// DropIn is the text of the nftables.service drop-in this host's
	// agent installs ("" from an agent before it).
	DropIn string `json:"drop_in,omitempty"`
	// Files are the unit, its enable link and the drop-in as they are
	// now (absent ones left out).
	Files []File `json:"files,omitempty"`
	// BootID is the host's current boot (/proc/sys/kernel/random/boot_id).
	BootID string `json:"boot_id"`
	// Last is the record of the last boot restore, if any ran.
	Last *BootRecord `json:"last,omitempty"`
	// LastRuleset is the record of the last restore the drop-in ran after
	// nftables.service loaded its ruleset in a running system.
	LastRuleset *BootRecord `json:"last_ruleset,omitempty"`
}

// Outcomes of a boot restore (BootRecord.Outcome).
const (
	BootRestored = "restored" // the host's part is back as last confirmed
	BootNothing  = "nothing"  // there was nothing to restore
	BootFailed   = "failed"   // restoring failed; what it did was undone
)

// BootRecord is what the boot unit's last run did, kept in the agent's
// state directory as boot.json.
type BootRecord struct {
	Time    time.Time `json:"time"`
	BootID  string    `json:"boot_id"`
	Outcome string    `json:"outcome"`
	Error   string    `json:"error,omitempty"`
	// Steps is how many steps the restore applied to put back what a
	// kept run set (when it failed: how many it had applied, and undid
	// again). Removing what an unconfirmed run left is not counted.
	Steps int `json:"steps"`
	// RevertedRuns are the applies that were still in their confirm
	// window when the host went down: decided reverted, not restored.
	RevertedRuns []string `json:"reverted_runs,omitempty"`
	TookMS       int64    `json:"took_ms"`
	// After is what ran the restore when it was not the boot unit: the
	// drop-in after nftables.service's "start" or "reload".
	After string `json:"after,omitempty"`
}

// ThisBootRuleset is the drop-in's last restore when it ran in the
// host's current boot.
func (b *Boot) ThisBootRuleset() *BootRecord {
	if b == nil || b.LastRuleset == nil || b.BootID == "" || b.LastRuleset.BootID != b.BootID {
		return nil
	}
	return b.LastRuleset
}

// ThisBoot reports whether the record is of the host's current boot.
func (b *Boot) ThisBoot() *BootRecord {
	if b == nil || b.Last == nil || b.BootID == "" || b.Last.BootID != b.BootID {
		return nil
	}
	return b.Last
}
