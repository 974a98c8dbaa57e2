package agent

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// unitDirective returns the values of key in the unit text, split on
// spaces.
func unitDirective(text, key string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			out = append(out, strings.Fields(v)...)
		}
	}
	return out
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestBootUnitText: the unit runs before the daemons and after what
// would undo it (docs/design.md, "Surviving a reboot").
func TestBootUnitText(t *testing.T) {
	u := UnitText("/var/lib/migrate/bin/migrate-x", "/var/lib/migrate", "/etc/systemd/system")
	for key, want := range map[string][]string{
		"DefaultDependencies": {"no"},
		"After":               {"local-fs.target", "systemd-modules-load.service", "systemd-sysctl.service", "nftables.service", "netfilter-persistent.service", "systemd-networkd.service"},
		"Before":              {"sysinit.target", "network.target", "shutdown.target"},
		"Conflicts":           {"shutdown.target"},
		"Type":                {"oneshot"},
		"RemainAfterExit":     {"yes"},
		"WantedBy":            {"sysinit.target"},
	} {
		got := unitDirective(u, key)
		for _, w := range want {
			if !has(got, w) {
				t.Errorf("%s= lacks %s: %v", key, w, got)
			}
		}
	}
	if got := unitDirective(u, "ExecStart"); strings.Join(got, " ") != "/var/lib/migrate/bin/migrate-x agent-boot-restore --state-dir /var/lib/migrate --unit-dir /etc/systemd/system" {
		t.Errorf("ExecStart=%v", got)
	}
	if _, link := state.BootUnitFiles("/etc/systemd/system"); link != "/etc/systemd/system/sysinit.target.wants/migrate-restore.service" {
		t.Errorf("enable link %s", link)
	}
}

// TestBootUnitOrderingVerify installs the unit and its enable link in a
// unit directory of its own (SYSTEMD_UNIT_PATH, searched before the
// system's) and asks systemd-analyze to build the boot transaction with
// the units it is ordered against: no ordering cycle. A unit ordered
// after multi-user.target, a cycle, is caught the same way.
func TestBootUnitOrderingVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	verify := func(text, dropIn string) string {
		dir := t.TempDir()
		unit, link := state.BootUnitFiles(dir)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			t.Fatal(err)
		}
		if dropIn != "" {
			p := state.BootDropInPath(dir, "nftables.service")
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(dropIn), 0o644); err != nil {
				t.Fatal(err)
			}
			p = state.BootDropInPath(dir, "systemd-sysctl.service")
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(DropInText("systemd-sysctl.service", exe, "/var/lib/migrate", "/etc/systemd/system")), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(unit, link); err != nil {
			t.Fatal(err)
		}
		// Debian's netfilter-persistent and ifupdown units, in case the
		// machine has neither (their orderings as shipped).
		stubs := map[string]string{
			"netfilter-persistent.service": "[Unit]\nDefaultDependencies=no\nWants=network-pre.target systemd-modules-load.service local-fs.target\nBefore=network-pre.target shutdown.target\nAfter=systemd-modules-load.service local-fs.target\nConflicts=shutdown.target\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
			"networking.service":           "[Unit]\nDefaultDependencies=no\nWants=network.target\nAfter=local-fs.target network-pre.target systemd-sysctl.service systemd-modules-load.service\nBefore=network.target shutdown.target network-online.target\nConflicts=shutdown.target\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
		}
		for name, s := range stubs {
			if _, err := os.Stat(filepath.Join("/lib/systemd/system", name)); err == nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(sa, "verify", "--man=no", "multi-user.target", "nftables.service", "netfilter-persistent.service", "networking.service",
			"systemd-networkd.service", "systemd-sysctl.service", "systemd-modules-load.service", state.BootUnitName)
		// A trailing colon: the default unit directories after this one.
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	good := UnitText(exe, "/var/lib/migrate", "/etc/systemd/system")
	if out := verify(good, ""); strings.Contains(out, "cycl") || strings.Contains(out, state.BootUnitName) {
		t.Errorf("systemd-analyze verify:\n%s", out)
	}
	// The drop-in: systemd takes its command lines ("-" prefix, an
	// executable that exists) for nftables.service.
	dropIn := DropInText("nftables.service", exe, "/var/lib/migrate", "/etc/systemd/system")
	if out := verify(good, dropIn); strings.Contains(out, "cycl") || strings.Contains(out, "migrate-restore") || strings.Contains(out, "nftables.service:") || strings.Contains(out, "systemd-sysctl.service:") {
		t.Errorf("systemd-analyze verify with the drop-in:\n%s", out)
	}
	if out := verify(good, strings.Replace(dropIn, "ExecReload=-"+exe, "ExecReload=-relative/"+filepath.Base(exe), 1)); !strings.Contains(out, "migrate-restore.conf") {
		t.Errorf("a drop-in with a relative command: systemd-analyze said nothing of it:\n%s", out)
	}
	bad := strings.Replace(good, "After=local-fs.target", "After=multi-user.target local-fs.target", 1)
	if out := verify(bad, ""); !strings.Contains(out, "cycl") {
		t.Errorf("a unit ordered after multi-user.target and before sysinit.target: systemd-analyze found no cycle:\n%s", out)
	}
}

func fileStep(a state.Action, before, after *state.File) state.Step {
	s := state.Step{Host: "new", Action: a}
	if before != nil {
		s.Before = &state.Object{File: before}
	}
	if after != nil {
		s.After = &state.Object{File: after}
	}
	return s
}

// TestOwnedBootFiles: the agent writes only the unit and its enable link
// in the unit directory, and only the unit text migrate makes.
func TestOwnedBootFiles(t *testing.T) {
	units, stateDir := t.TempDir(), t.TempDir()
	t.Setenv("MIGRATE_SYSTEMD_DIR", units)
	t.Setenv("MIGRATE_STATE_DIR", stateDir)
	unit, link := state.BootUnitFiles(units)
	dropIn := state.BootDropInPath(units, "nftables.service")
	sysctlDropIn := state.BootDropInPath(units, "systemd-sysctl.service")
	installed := filepath.Join(stateDir, "bin", "migrate-"+strings.Repeat("ab", 32))
	good := UnitText(installed, stateDir, units)
	goodDropIn := DropInText("nftables.service", installed, stateDir, units)
	goodSysctl := DropInText("systemd-sysctl.service", installed, stateDir, units)
	ok := []state.Step{
		fileStep(state.Create, nil, &state.File{Path: dropIn, Content: goodDropIn}),
		fileStep(state.Create, nil, &state.File{Path: dropIn, Content: DropInText("nftables.service", agentExe(), stateDir, units)}),
		fileStep(state.Create, nil, &state.File{Path: sysctlDropIn, Content: goodSysctl}),
		fileStep(state.Delete, &state.File{Path: dropIn, Content: "edited by hand"}, nil),
		fileStep(state.Create, nil, &state.File{Path: unit, Content: good}),
		fileStep(state.Create, nil, &state.File{Path: unit, Content: UnitText(agentExe(), stateDir, units)}),
		fileStep(state.Create, nil, &state.File{Path: link, Link: unit}),
		fileStep(state.Delete, &state.File{Path: unit, Content: "edited by hand"}, nil),
		fileStep(state.Update, &state.File{Path: unit, Content: "edited by hand"}, &state.File{Path: unit, Content: good}),
	}
	for _, s := range ok {
		if err := validateStep(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
		if err := checkOwnedStep(s); err != nil {
			t.Errorf("%s: refused: %v", s, err)
		}
	}
	for name, s := range map[string]state.Step{
		"another unit":          fileStep(state.Create, nil, &state.File{Path: filepath.Join(units, "evil.service"), Content: good}),
		"outside the unit dir":  fileStep(state.Delete, &state.File{Path: "/etc/passwd", Content: "x"}, nil),
		"path with ..":          fileStep(state.Create, nil, &state.File{Path: units + "/../" + filepath.Base(units) + "/" + state.BootUnitName, Content: good}),
		"link elsewhere":        fileStep(state.Create, nil, &state.File{Path: link, Link: "/etc/systemd/system/evil.service"}),
		"unit as a symlink":     fileStep(state.Create, nil, &state.File{Path: unit, Link: "/tmp/x"}),
		"other command":         fileStep(state.Create, nil, &state.File{Path: unit, Content: strings.Replace(good, "ExecStart="+installed, "ExecStart=/bin/sh -c id", 1)}),
		"binary outside bin":    fileStep(state.Create, nil, &state.File{Path: unit, Content: UnitText("/tmp/migrate-"+strings.Repeat("ab", 32), stateDir, units)}),
		"extra directive":       fileStep(state.Create, nil, &state.File{Path: unit, Content: good + "ExecStartPost=/bin/sh -c id\n"}),
		"other state directory": fileStep(state.Create, nil, &state.File{Path: unit, Content: UnitText(installed, "/", units)}),
		"undo writes foreign":   fileStep(state.Update, &state.File{Path: unit, Content: good}, &state.File{Path: unit, Content: "[Service]\nExecStart=/bin/sh\n"}),
		"unit text as drop-in":  fileStep(state.Create, nil, &state.File{Path: dropIn, Content: good}),
		"drop-in text as unit":  fileStep(state.Create, nil, &state.File{Path: unit, Content: goodDropIn}),
		"drop-in, other cmd":    fileStep(state.Create, nil, &state.File{Path: dropIn, Content: strings.Replace(goodDropIn, "ExecReload=-"+installed, "ExecReload=-/bin/sh -c id #", 1)}),
		"drop-in, extra line":   fileStep(state.Create, nil, &state.File{Path: dropIn, Content: goodDropIn + "ExecStopPost=/bin/sh -c id\n"}),
		"drop-in as a symlink":  fileStep(state.Create, nil, &state.File{Path: dropIn, Link: "/tmp/x"}),
		"other service's dir":   fileStep(state.Create, nil, &state.File{Path: filepath.Join(units, "ssh.service.d", filepath.Base(dropIn)), Content: goodDropIn}),
		"drop-in, other binary": fileStep(state.Create, nil, &state.File{Path: dropIn, Content: DropInText("nftables.service", "/tmp/migrate-"+strings.Repeat("ab", 32), stateDir, units)}),
		"other service's text":  fileStep(state.Create, nil, &state.File{Path: sysctlDropIn, Content: goodDropIn}),
		"drop-in of another":    fileStep(state.Create, nil, &state.File{Path: state.BootDropInPath(units, "sshd.service"), Content: DropInText("sshd.service", installed, stateDir, units)}),
	} {
		err := validateStep(s)
		if err == nil {
			err = checkOwnedStep(s)
		}
		if err == nil {
			t.Errorf("%s: %s was allowed", name, s)
		}
	}
	// Before a destructive step, the file there must be one the step
	// records.
	if err := os.WriteFile(unit, []byte("edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := liveFileOwned(fileStep(state.Delete, &state.File{Path: unit, Content: good}, nil)); err == nil {
		t.Error("deleting a unit changed by hand since the step recorded it was allowed")
	}
	if err := liveFileOwned(fileStep(state.Delete, &state.File{Path: unit, Content: "edited by hand\n"}, nil)); err != nil {
		t.Errorf("deleting the unit as recorded: %v", err)
	}
	if err := liveFileOwned(fileStep(state.Create, nil, &state.File{Path: unit, Content: good})); err == nil {
		t.Error("creating the unit over a file migrate did not write was allowed")
	}
}

func entry(run string, seq int, s state.Step) state.Entry {
	return state.Entry{Run: run, Seq: seq, Time: time.Unix(int64(seq), 0), Step: s}
}

// TestKeptRestores chooses what a boot restores from a host journal: the
// newest value a kept run set; an unconfirmed run's objects go back to
// what they were before it.
func TestKeptRestores(t *testing.T) {
	sys := func(v string) *state.Object {
		return &state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: v}}
	}
	link := &state.Object{Link: &state.Link{Name: "mig0", Type: "vxlan", Local: netip.MustParseAddr("192.0.2.1"), Remote: netip.MustParseAddr("192.0.2.2"), VNI: 1, Port: 4789, MTU: 1450, Up: true}}
	addr := &state.Object{Addr: &state.Addr{Dev: "lo", CIDR: netip.MustParsePrefix("198.51.100.10/32")}}
	unit := &state.Object{File: &state.File{Path: "/etc/systemd/system/migrate-restore.service", Content: "x"}}
	rolled := time.Unix(100, 0)
	j := &state.Journal{Entries: []state.Entry{
		entry("A", 1, state.Step{Host: "new", Action: state.Create, After: link}),
		entry("A", 2, state.Step{Host: "new", Action: state.Update, Before: sys("0"), After: sys("1")}),
		entry("A", 3, state.Step{Host: "new", Action: state.Create, After: unit}),
		// B was reverted by its timer long ago: rolled back.
		{Run: "B", Seq: 4, Step: state.Step{Host: "new", Action: state.Create, After: addr}, RolledBack: &rolled},
		// C is the apply the reboot left unconfirmed.
		entry("C", 5, state.Step{Host: "new", Action: state.Update, Before: sys("1"), After: sys("0")}),
		entry("C", 6, state.Step{Host: "new", Action: state.Create, After: addr}),
	}}
	restores, undo := KeptRestores(j, map[string]bool{"B": true, "C": true})
	if len(undo) != 2 || undo[0].Seq != 5 || undo[1].Seq != 6 {
		t.Fatalf("undo %v, want C's entries 5 and 6", undo)
	}
	got := map[string]*state.Object{}
	var order []string
	for _, r := range restores {
		got[r.Key] = r.Target
		order = append(order, r.Key)
	}
	want := map[string]*state.Object{link.Key(): link, sys("").Key(): sys("1"), unit.Key(): unit, addr.Key(): nil}
	for k, w := range want {
		g, ok := got[k]
		if !ok || (w == nil) != (g == nil) || w != nil && !w.Equal(*g) {
			t.Errorf("%s: restores to %v, want %v", k, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("restores %v", order)
	}
	// Objects only kept runs touched first, in the order apply made
	// them; then those of the unconfirmed run, in the reverse of its
	// order (as a rollback of it).
	if strings.Join(order, ",") != strings.Join([]string{link.Key(), unit.Key(), addr.Key(), sys("").Key()}, ",") {
		t.Errorf("order %v", order)
	}
}

// TestRebootDecidesRevert: a run armed in another boot is decided
// reverted by the boot restore, and a confirm of it is refused; a
// confirmed run stays kept; a run armed in this boot stops the restore.
func TestRebootDecidesRevert(t *testing.T) {
	hf := &HostFiles{Dir: stateDir(t)}
	for _, r := range []runRecord{
		{Run: "armed", State: proto.RunArmed, BootID: "an-earlier-boot", DeadlineNS: 1 << 62},
		{Run: "prepared", State: proto.RunPrepared, BootID: "an-earlier-boot", DeadlineNS: 1 << 62},
		{Run: "kept", State: proto.RunConfirmed, BootID: "an-earlier-boot"},
	} {
		r := r
		if err := hf.writeRun(&r); err != nil {
			t.Fatal(err)
		}
	}
	unkept, decided, err := decideAtBoot(hf)
	if err != nil {
		t.Fatal(err)
	}
	if !unkept["armed"] || !unkept["prepared"] || unkept["kept"] || len(decided) != 2 {
		t.Errorf("unkept %v, decided %v", unkept, decided)
	}
	for _, run := range []string{"armed", "prepared"} {
		st, err := hf.Confirm(run)
		if err == nil || st.State != proto.RunReverted || !strings.Contains(st.Reason, "host rebooted inside the confirm window") {
			t.Errorf("confirm of %s after the reboot: %+v, %v", run, st, err)
		}
	}
	live := runRecord{Run: "live", State: proto.RunArmed, BootID: bootID(), DeadlineNS: 1 << 62}
	if err := hf.writeRun(&live); err != nil {
		t.Fatal(err)
	}
	if _, _, err := decideAtBoot(hf); err == nil || !strings.Contains(err.Error(), "run live is armed in this boot") {
		t.Errorf("a run in its confirm window in this boot: %v", err)
	}
}
