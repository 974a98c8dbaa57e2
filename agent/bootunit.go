package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// The boot unit. apply installs it (state.File objects, like any other
// owned object: journalled, removed by rollback: the unit, its enable link
// and the drop-ins of state.DropInServices) on a host where
// systemd is PID 1; at boot it runs this agent as BootRestoreCommand,
// which puts back the host's part of the last confirmed state (boot.go).
// Nothing else outside the state directory is ever written.
//
// Tests move both the unit directory and the "systemd is PID 1" check
// (the lab's hosts are namespaces on a machine whose /etc/systemd must not
// be touched): MIGRATE_SYSTEMD_DIR and MIGRATE_SYSTEMD_RUNTIME.

// BootRestoreCommand is the hidden subcommand the unit runs.
const BootRestoreCommand = "agent-boot-restore"

// UnitDir is where the unit goes: MIGRATE_SYSTEMD_DIR, else
// /etc/systemd/system.
func UnitDir() string {
	if d := os.Getenv("MIGRATE_SYSTEMD_DIR"); d != "" {
		return d
	}
	return "/etc/systemd/system"
}

// systemdRuntime is the directory that exists when systemd is PID 1
// (sd_booted(3)): MIGRATE_SYSTEMD_RUNTIME, else /run/systemd/system.
func systemdRuntime() string {
	if d := os.Getenv("MIGRATE_SYSTEMD_RUNTIME"); d != "" {
		return d
	}
	return "/run/systemd/system"
}

// SystemdBooted reports whether systemd is PID 1 on this host.
func SystemdBooted() bool {
	st, err := os.Stat(systemdRuntime())
	return err == nil && st.IsDir()
}

// UnitText is the unit that runs exe's boot restore for stateDir. Its
// ordering is explained in docs/design.md ("Surviving a reboot"):
//   - DefaultDependencies=no: the default would order it after
//     sysinit.target and basic.target, too late for the daemons it must
//     precede.
//   - After= what would undo it if it ran first: nftables.service and
//     netfilter-persistent.service load a ruleset that usually starts
//     with `flush ruleset` (it would remove migrate's table);
//     systemd-sysctl.service sets sysctls from /etc/sysctl.d
//     (ip_forward back to 0); systemd-networkd.service removes foreign
//     routes and rules when it starts; systemd-modules-load.service may
//     load the tunnel modules with options. Ordering after a unit that
//     does not exist or is not enabled does nothing.
//   - Before=sysinit.target (every normal service is ordered after
//     basic.target, which is after sysinit.target) and network.target:
//     NEW's migrated address is on lo before a daemon binds it, OLD's
//     table in place before its daemons accept connections. Not before
//     network-pre.target: systemd-networkd.service is ordered after it,
//     so that would be a cycle. The tunnel needs no underlay address to
//     be created: packets flow as soon as the network brings it up.
//   - Conflicts= and Before=shutdown.target, as every unit without
//     default dependencies: stopped at shutdown (it does nothing then:
//     there is no ExecStop, the kernel state goes with the reboot).
func UnitText(exe, stateDir, unitDir string) string {
	return strings.Join([]string{
		"# Installed by migrate apply; removed by migrate rollback. Do not edit:",
		"# migrate checks this file and replaces it when it differs.",
		"# It restores this host's part of the last confirmed migrate apply at",
		"# boot, before the network and the daemons start (docs/design.md,",
		"# \"Surviving a reboot\").",
		"[Unit]",
		"Description=Restore migrate's data path (last confirmed apply)",
		"Documentation=https://github.com/opsmigrate/migrate",
		"# Without default dependencies: they would order it after sysinit.target,",
		"# alongside the daemons it must precede.",
		"DefaultDependencies=no",
		"# After what would undo it: a ruleset loaded with `flush ruleset`",
		"# (nftables, netfilter-persistent), /etc/sysctl.d (systemd-sysctl),",
		"# networkd removing rules and routes it did not make at its start.",
		"After=local-fs.target systemd-modules-load.service systemd-sysctl.service nftables.service netfilter-persistent.service systemd-networkd.service",
		"# Before every ordinary service (they start after basic.target, after",
		"# sysinit.target) and the network daemons: NEW's address is on lo before",
		"# a daemon binds it, OLD's table in place before its daemons accept",
		"# connections. Not before network-pre.target: networkd is after it.",
		"Before=sysinit.target network.target shutdown.target",
		"Conflicts=shutdown.target",
		"",
		"[Service]",
		"Type=oneshot",
		"RemainAfterExit=yes",
		"ExecStart=" + BootExecStart(exe, stateDir, unitDir),
		"",
		"[Install]",
		"WantedBy=sysinit.target",
		"",
	}, "\n")
}

// BootExecStart is the unit's command.
func BootExecStart(exe, stateDir, unitDir string) string {
	return strings.Join([]string{exe, BootRestoreCommand, "--state-dir", stateDir, "--unit-dir", unitDir}, " ")
}

// The drop-ins' events: what of their service ran the restore
// (BootRecord.After).
const (
	AfterStart  = "start"
	AfterReload = "reload"
)

// DropInText is the drop-in for service (state.DropInServices) that runs
// exe's restore after that service undid part of migrate's state:
//   - nftables.service's start and reload load a file that usually begins
//     with `flush ruleset` (Debian's /etc/nftables.conf; RHEL's reload
//     is `flush ruleset; include ...`), so a `systemctl reload nftables`
//     or `restart` mid-migration removed migrate's table and every moved
//     service fell back to OLD until the next `migrate apply`.
//     ExecStartPost (start and restart) and an extra ExecReload (a
//     drop-in's ExecReload= adds to the service's own, which runs
//     first): the restore runs right after the ruleset is in.
//     `systemctl stop nftables` (ExecStop=nft flush ruleset) is not
//     covered.
//   - systemd-sysctl.service's start (a restart after editing
//     /etc/sysctl.d) sets every sysctl of the files: a hardened image's
//     `net.ipv4.ip_forward = 0` turned OLD's forwarding off. ExecStartPost
//     only (the service has no reload).
//   - "-": a failed restore does not fail the service (the firewall or
//     sysctls the administrator asked for are loaded either way); its
//     record says what failed, and plan and status show it.
//   - At boot it does nothing (AfterRestore): the boot unit, ordered
//     after both services, restores everything.
func DropInText(service, exe, stateDir, unitDir string) string {
	cmd := BootExecStart(exe, stateDir, unitDir) + " --service " + service + " --after "
	lines := []string{
		"# Installed by migrate apply; removed by migrate rollback. Do not edit:",
		"# migrate checks this file and replaces it when it differs.",
	}
	switch service {
	case state.NftablesService:
		lines = append(lines,
			"# nftables.service's start and reload load a ruleset that usually begins",
			"# with `flush ruleset`, which removes migrate's table: this puts it back",
			"# right after (the last confirmed apply, as at boot).")
	default:
		lines = append(lines,
			"# "+service+"'s start sets the sysctls of /etc/sysctl.d, where a file",
			"# may undo what migrate set (net.ipv4.ip_forward = 0): this puts them",
			"# back right after (the last confirmed apply, as at boot).")
	}
	lines = append(lines,
		"# At boot it does nothing: "+state.BootUnitName+" runs after "+service+".",
		"# \"-\": a failed restore does not fail "+service+".",
		"[Service]",
		"ExecStartPost=-"+cmd+AfterStart)
	if service == state.NftablesService {
		lines = append(lines, "ExecReload=-"+cmd+AfterReload)
	}
	return strings.Join(append(lines, ""), "\n")
}

// agentExe is the path of the running agent.
func agentExe() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return exe
}

// unitPathOK reports paths systemd reads without quoting: the unit's
// command line is split on spaces.
var unitPathOK = regexp.MustCompile(`^/[A-Za-z0-9_./+-]*$`)

// installedAgent matches an agent the CLI installed in the state
// directory (remote: STATE/bin/migrate-SHA256).
var installedAgent = regexp.MustCompile(`^migrate-[0-9a-f]{64}$`)

// checkUnitText checks a unit text a step would write at path: it must
// be exactly UnitText (or, for the drop-in, DropInText) for this state and
// unit directory, run by this agent or by an agent the CLI installed in
// the state directory (an older or newer migrate's, when a step is
// undone).
func checkUnitText(path, text string) error {
	service := state.DropInService(UnitDir(), path)
	dropIn := service != ""
	exe := ""
	for _, l := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(l, "ExecStart="); ok {
			exe, _, _ = strings.Cut(rest, " ")
		}
		if rest, ok := strings.CutPrefix(l, "ExecStartPost=-"); ok && dropIn {
			exe, _, _ = strings.Cut(rest, " ")
		}
	}
	dir := StateDir()
	switch {
	case exe == "":
		return fmt.Errorf("the unit %s has no ExecStart", state.BootUnitName)
	case exe == agentExe():
	case filepath.Dir(exe) == filepath.Join(dir, "bin") && installedAgent.MatchString(filepath.Base(exe)):
	default:
		return fmt.Errorf("the unit %s runs %s: migrate's unit only runs this agent (%s) or one installed in %s", state.BootUnitName, show(exe), agentExe(), filepath.Join(dir, "bin"))
	}
	if dropIn {
		if text != DropInText(service, exe, dir, UnitDir()) {
			return fmt.Errorf("the drop-in %s is not the text migrate writes", path)
		}
		return nil
	}
	if text != UnitText(exe, dir, UnitDir()) {
		return fmt.Errorf("the unit %s is not the text migrate writes", state.BootUnitName)
	}
	return nil
}

// BootFacts reads what the host says about surviving a reboot.
func BootFacts(h *HostFiles) *state.Boot {
	dir := UnitDir()
	b := &state.Boot{Systemd: SystemdBooted(), UnitDir: dir, BootID: bootID()}
	if exe := agentExe(); unitPathOK.MatchString(exe) && unitPathOK.MatchString(h.Dir) && unitPathOK.MatchString(dir) {
		b.Unit = UnitText(exe, h.Dir, dir)
		b.DropIns = map[string]string{}
		for _, svc := range state.DropInServices {
			b.DropIns[svc] = DropInText(svc, exe, h.Dir, dir)
		}
	}
	unit, link := state.BootUnitFiles(dir)
	paths := []string{unit, link}
	for _, svc := range state.DropInServices {
		paths = append(paths, state.BootDropInPath(dir, svc))
	}
	for _, p := range paths {
		if f, ok := readOwnFile(p); ok {
			b.Files = append(b.Files, f)
		}
	}
	b.Last, _ = h.LastBoot()
	b.LastAfter, _ = h.LastAfterRestore()
	return b
}

// maxUnitSize bounds what is read of a file at the unit's paths.
const maxUnitSize = state.MaxFileSize

// readOwnFile reads a regular file or a symlink at p.
func readOwnFile(p string) (state.File, bool) {
	st, err := os.Lstat(p)
	if err != nil {
		return state.File{}, false
	}
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		t, err := os.Readlink(p)
		return state.File{Path: p, Link: t}, err == nil
	case st.Mode().IsRegular() && st.Size() <= maxUnitSize:
		b, err := os.ReadFile(p)
		return state.File{Path: p, Content: string(b)}, err == nil
	}
	// Something else (a directory, a huge file): shown as a file with
	// other content, which a step then refuses to touch.
	return state.File{Path: p, Content: fmt.Sprintf("(not migrate's: %s)", st.Mode().Type())}, true
}

// checkOwnedFile is the static check of a file object: only the unit, its
// enable link and the drop-ins (state.DropInServices) in UnitDir. What a
// step writes is checked further in checkOwnedStep (checkUnitText).
func checkOwnedFile(f state.File) error {
	unit, link := state.BootUnitFiles(UnitDir())
	dropIn := state.DropInService(UnitDir(), f.Path) != ""
	switch {
	case f.Path == unit || dropIn:
		if f.Link != "" {
			return fmt.Errorf("file %s: migrate's unit and drop-ins are regular files", f.Path)
		}
	case f.Path == link:
		if f.Link != unit || f.Content != "" {
			return fmt.Errorf("file %s: the enable link must point to %s", f.Path, unit)
		}
	default:
		return fmt.Errorf("file %s: migrate only writes %s, %s and its drop-ins %s", show(f.Path), unit, link, state.BootDropInPath(UnitDir(), "SERVICE"))
	}
	return nil
}

// liveFileOwned: before a destructive step, what is at the path must be
// one of the versions the step records.
func liveFileOwned(s state.Step) error {
	p := s.Object().File.Path
	live, ok := readOwnFile(p)
	if !ok {
		return nil
	}
	if s.Action == state.Create {
		if live == *s.After.File {
			return nil
		}
		return fmt.Errorf("%s exists and is not what migrate writes: migrate does not replace a file it did not write", p)
	}
	for _, v := range versions(s) {
		if live == *v.File {
			return nil
		}
	}
	return fmt.Errorf("%s is not the file migrate recorded (changed by hand?)", p)
}
