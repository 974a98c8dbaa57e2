package hostcmd

import (
	"bytes"
	"sort"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/agent"
)

// The subcommands carry the names the agent re-executes itself as
// (watchdog) and the boot unit runs (agent.UnitText).
func TestCommandNames(t *testing.T) {
	var got []string
	for _, c := range Commands(&bytes.Buffer{}) {
		got = append(got, c.Name())
	}
	sort.Strings(got)
	want := []string{"agent", "agent-install", agent.BootRestoreCommand, agent.WatchdogCommand}
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("commands %q, want %q", got, want)
	}
}

// The agent takes exactly `--sha256 HASH` (the sudoers rule allows no
// other argument), and the boot restore needs both directories: anything
// else is refused before the state directory or the kernel is touched.
func TestRefusedArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"agent"}, "usage: migrate agent --sha256 HASH"},
		{[]string{"agent", "--sha256"}, "usage: migrate agent --sha256 HASH"},
		{[]string{"agent", "--help"}, "usage: migrate agent --sha256 HASH"},
		{[]string{"agent", "--sha256", "x", "--state-dir", "/tmp"}, "usage: migrate agent --sha256 HASH"},
		{[]string{agent.BootRestoreCommand, "--state-dir", "/nonexistent"}, "--state-dir and --unit-dir are required"},
	} {
		var out bytes.Buffer
		var err error
		for _, cmd := range Commands(&out) {
			if cmd.Name() == c.args[0] {
				cmd.SetArgs(c.args[1:])
				cmd.SetOut(&out)
				cmd.SetErr(&out)
				cmd.SilenceUsage, cmd.SilenceErrors = true, true
				err = cmd.Execute()
			}
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.args, err, c.want)
		}
	}
}
