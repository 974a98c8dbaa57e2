package agent

import (
	"os"
	"reflect"
	"testing"
	"testing/fstest"
)

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s), Mode: 0o644} }

// TestNetworkdSettings reads networkd.conf trees as networkd would: the
// default, the main file, drop-ins in basename order over it, a drop-in
// of /etc masking one of the same name in /usr/lib, comments, other
// sections, and values it cannot parse (reported, counted as yes).
func TestNetworkdSettings(t *testing.T) {
	const debianMain = `#  This file is part of systemd.
[Network]
#SpeedMeter=no
#ManageForeignRoutingPolicyRules=yes
#ManageForeignRoutes=yes
#RouteTable=
`
	tests := []struct {
		name          string
		fs            fstest.MapFS
		rules, routes bool
		files         []string
		problems      []string
	}{
		{name: "nothing: defaults", fs: fstest.MapFS{}, rules: true, routes: true},
		{name: "Debian's main file, all commented", fs: fstest.MapFS{"etc/systemd/networkd.conf": file(debianMain)},
			rules: true, routes: true, files: []string{"/etc/systemd/networkd.conf"}},
		{name: "main file says no", fs: fstest.MapFS{"etc/systemd/networkd.conf": file("[Network]\nManageForeignRoutingPolicyRules=no\n  ManageForeignRoutes = NO  \n")},
			rules: false, routes: false, files: []string{"/etc/systemd/networkd.conf"}},
		{name: "main file falls back to /usr/lib", fs: fstest.MapFS{"usr/lib/systemd/networkd.conf": file("[Network]\nManageForeignRoutes=off\n")},
			rules: true, routes: false, files: []string{"/usr/lib/systemd/networkd.conf"}},
		{name: "/etc main file hides /usr/lib's", fs: fstest.MapFS{
			"etc/systemd/networkd.conf":     file("[Network]\nManageForeignRoutes=false\n"),
			"usr/lib/systemd/networkd.conf": file("[Network]\nManageForeignRoutingPolicyRules=0\n"),
		}, rules: true, routes: false, files: []string{"/etc/systemd/networkd.conf"}},
		{name: "drop-in overrides the main file", fs: fstest.MapFS{
			"etc/systemd/networkd.conf":                    file("[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n"),
			"run/systemd/networkd.conf.d/10-back.conf":     file("[Network]\nManageForeignRoutes=yes\n"),
			"etc/systemd/networkd.conf.d/60-migrate.conf":  file("[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n"),
			"usr/lib/systemd/networkd.conf.d/99-last.conf": file("[Network]\nManageForeignRoutingPolicyRules=on\n"),
			"etc/systemd/networkd.conf.d/70-not-a-conf":    file("[Network]\nManageForeignRoutes=yes\n"),
		}, rules: true, routes: false, files: []string{
			"/etc/systemd/networkd.conf",
			"/run/systemd/networkd.conf.d/10-back.conf",
			"/etc/systemd/networkd.conf.d/60-migrate.conf",
			"/usr/lib/systemd/networkd.conf.d/99-last.conf",
		}},
		{name: "same basename: the earlier directory wins", fs: fstest.MapFS{
			"etc/systemd/networkd.conf.d/50-x.conf":           file(""),
			"run/systemd/networkd.conf.d/50-x.conf":           file("[Network]\nManageForeignRoutes=no\n"),
			"usr/local/lib/systemd/networkd.conf.d/50-y.conf": file("[Network]\nManageForeignRoutingPolicyRules=no\n"),
			"usr/lib/systemd/networkd.conf.d/50-y.conf":       file("[Network]\nManageForeignRoutingPolicyRules=yes\n"),
		}, rules: false, routes: true, files: []string{
			"/etc/systemd/networkd.conf.d/50-x.conf",
			"/usr/local/lib/systemd/networkd.conf.d/50-y.conf",
		}},
		{name: "comments and other sections", fs: fstest.MapFS{"etc/systemd/networkd.conf": file(`[DHCPv4]
ManageForeignRoutes=no
[Network]
# ManageForeignRoutes=no
; ManageForeignRoutingPolicyRules=no
SpeedMeter=yes
[DHCPv6]
ManageForeignRoutingPolicyRules=no
`)}, rules: true, routes: true, files: []string{"/etc/systemd/networkd.conf"}},
		{name: "continuation line", fs: fstest.MapFS{"etc/systemd/networkd.conf": file("[Network]\nManageForeignRoutes=\\\n no\n")},
			rules: true, routes: false, files: []string{"/etc/systemd/networkd.conf"}},
		{name: "bad values count as yes, and are reported", fs: fstest.MapFS{
			"etc/systemd/networkd.conf":              file("[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n"),
			"etc/systemd/networkd.conf.d/10-x.conf":  file("[Network]\nManageForeignRoutingPolicyRules=nope\nManageForeignRoutes=\njunk\n[Broken\n"),
			"etc/systemd/networkd.conf.d/20-ok.conf": file("[Network]\nmanageforeignroutes=no\n"), // keys are case-sensitive
		}, rules: true, routes: true, files: []string{
			"/etc/systemd/networkd.conf",
			"/etc/systemd/networkd.conf.d/10-x.conf",
			"/etc/systemd/networkd.conf.d/20-ok.conf",
		}, problems: []string{
			`/etc/systemd/networkd.conf.d/10-x.conf:2: ManageForeignRoutingPolicyRules="nope" is not a boolean: counted as yes`,
			`/etc/systemd/networkd.conf.d/10-x.conf:3: ManageForeignRoutes="" is not a boolean: counted as yes`,
			`/etc/systemd/networkd.conf.d/10-x.conf:4: "junk" is not KEY=VALUE`,
			`/etc/systemd/networkd.conf.d/10-x.conf:5: bad section header "[Broken"`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := NetworkdSettings(tc.fs)
			if n.ForeignRules != tc.rules || n.ForeignRoutes != tc.routes {
				t.Errorf("rules, routes = %v, %v; want %v, %v", n.ForeignRules, n.ForeignRoutes, tc.rules, tc.routes)
			}
			if !reflect.DeepEqual(n.Files, tc.files) {
				t.Errorf("files:\n%q\nwant\n%q", n.Files, tc.files)
			}
			if !reflect.DeepEqual(n.Problems, tc.problems) {
				t.Errorf("problems:\n%q\nwant\n%q", n.Problems, tc.problems)
			}
			n.Running, n.PID = true, 1
			if err := n.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseSystemdBool(t *testing.T) {
	for s, want := range map[string]bool{"1": true, "yes": true, "Y": true, "TRUE": true, "t": true, "On": true,
		"0": false, "no": false, "N": false, "False": false, "f": false, "OFF": false} {
		if v, ok := parseSystemdBool(s); !ok || v != want {
			t.Errorf("%q: %v %v, want %v", s, v, ok, want)
		}
	}
	for _, s := range []string{"", "2", "yess", "nope", "enabled"} {
		if _, ok := parseSystemdBool(s); ok {
			t.Errorf("%q parsed as a boolean", s)
		}
	}
}

// TestFindNetworkd scans a fake /proc: only a process named
// systemd-network (comm's 15 bytes) whose network namespace is the
// caller's counts.
func TestFindNetworkd(t *testing.T) {
	proc := t.TempDir()
	mk := func(name, comm, ns string) {
		d := proc + "/" + name
		if err := os.MkdirAll(d+"/ns", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d+"/comm", []byte(comm+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(ns, d+"/ns/net"); err != nil {
			t.Fatal(err)
		}
	}
	other := t.TempDir() + "/other-netns"
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mk("self", "go-test", "/proc/self/ns/net")
	mk("7", "systemd-network", other) // another namespace
	mk("12", "systemd-resolve", "/proc/self/ns/net")
	if pid, err := findNetworkd(proc); err != nil || pid != 0 {
		t.Fatalf("found %d, %v; want none", pid, err)
	}
	mk("30", "systemd-network", "/proc/self/ns/net")
	mk("200", "systemd-network", "/proc/self/ns/net")
	if pid, err := findNetworkd(proc); err != nil || pid != 30 {
		t.Fatalf("found %d, %v; want 30", pid, err)
	}
}
