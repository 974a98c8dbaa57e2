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

// DropInServices are the services whose start (or reload) on a running
// host undoes part of what migrate set, with a drop-in of migrate's
// (BootDropInPath) that runs the restore again right after
// (agent.AfterRestore):
//   - nftables.service: its start and reload load a ruleset that usually
//     begins with `flush ruleset` (Debian's /etc/nftables.conf; RHEL's
//     reload flushes first), which removes migrate's table;
//   - systemd-sysctl.service: its start (`systemctl restart
//     systemd-sysctl`, how systemd hosts apply an edited /etc/sysctl.d)
//     sets every sysctl of the files, `net.ipv4.ip_forward = 0` of a
//     hardened image among them.
var DropInServices = []string{NftablesService, SysctlService}

// The services of DropInServices.
const (
	NftablesService = "nftables.service"
	SysctlService   = "systemd-sysctl.service"
)

// dropInName is the drop-in's file name in SERVICE.d.
const dropInName = "migrate-restore.conf"

// BootDropInPath is the path of migrate's drop-in for service in unitDir.
func BootDropInPath(unitDir, service string) string {
	return filepath.Join(unitDir, service+".d", dropInName)
}

// DropInService is the service whose drop-in path in unitDir p is, or "".
func DropInService(unitDir, p string) string {
	for _, svc := range DropInServices {
		if p == BootDropInPath(unitDir, svc) {
			return svc
		}
	}
	return ""
}

// IsDropInFile reports a file name and directory of migrate's drop-ins
// (SERVICE.d/migrate-restore.conf), whatever the unit directory.
func IsDropInFile(p string) bool {
	return filepath.Base(p) == dropInName && DropInService(filepath.Dir(filepath.Dir(p)), p) != ""
}

// Boot is what a host says about surviving a reboot (Facts.Boot).
type Boot struct {
	// Systemd: systemd is PID 1 (/run/systemd/system exists), so apply
	// installs the boot unit there.
	Systemd bool   `json:"systemd"`
	UnitDir string `json:"unit_dir"`
	// Unit is the text of the unit this host's agent installs.
	Unit string `json:"unit,omitempty"`
	// DropIns are the texts of the drop-ins this host's agent installs,
	// by service (DropInServices; none from an agent before them).
	DropIns map[string]string `json:"drop_ins,omitempty"`
	// Files are the unit, its enable link and the drop-ins as they are
	// now (absent ones left out).
	Files []File `json:"files,omitempty"`
	// BootID is the host's current boot (/proc/sys/kernel/random/boot_id).
	BootID string `json:"boot_id"`
	// Last is the record of the last boot restore, if any ran.
	Last *BootRecord `json:"last,omitempty"`
	// LastAfter is the record of the last restore a drop-in ran after
	// its service's start or reload in a running system that put
	// something back or failed.
	LastAfter *BootRecord `json:"last_after,omitempty"`
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
	// After and Service say what ran the restore when it was not the
	// boot unit: the drop-in after Service's "start" or "reload".
	After   string `json:"after,omitempty"`
	Service string `json:"service,omitempty"`
}

// ThisBootAfter is a drop-in's last restore when it ran in the host's
// current boot.
func (b *Boot) ThisBootAfter() *BootRecord {
	if b == nil || b.LastAfter == nil || b.BootID == "" || b.LastAfter.BootID != b.BootID {
		return nil
	}
	return b.LastAfter
}

// ThisBoot reports whether the record is of the host's current boot.
func (b *Boot) ThisBoot() *BootRecord {
	if b == nil || b.Last == nil || b.BootID == "" || b.Last.BootID != b.BootID {
		return nil
	}
	return b.Last
}
