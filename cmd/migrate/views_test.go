package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/state"
	"github.com/opsmigrate/migrate/views"
)

// runCLI runs the command line args as main does, without the hosts.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newCLI(strings.NewReader(""), &out, &errb).root()
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// The commands that need no host print their result with the view
// --json picks at run time (flags are parsed after the commands are
// built): one document of the current schema, or the human text.
func TestLocalCommandsBothViews(t *testing.T) {
	dir := t.TempDir()
	sp := filepath.Join(dir, "migration.state.json")
	j := state.NewJournal()
	j.Append("run-1", 1, state.Step{Host: "old", Action: state.Update,
		Before: &state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "0"}},
		After:  &state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "1"}}}, time.Now())
	if err := j.Save(sp); err != nil {
		t.Fatal(err)
	}
	plan := filepath.Join("..", "..", "examples", "basic.hcl")
	for _, c := range []struct {
		args    []string
		typ     string
		human   string // a line of the human output
		jsonHas string // a field of the JSON document
	}{
		{[]string{"version"}, "version", "(agent protocol ", `"agent_protocol":`},
		{[]string{"validate", "-f", plan}, "validate", "is valid: 1 service(s)", `"services":1`},
		{[]string{"state", "list", "--state", sp}, "state_list", "old.sysctl.net.ipv4.ip_forward", `"resources":["old.sysctl.net.ipv4.ip_forward"]`},
		{[]string{"state", "show", "--state", sp, "old.sysctl.net.ipv4.ip_forward"}, "state_show", "now:      net.ipv4.ip_forward = 1", `"now":"net.ipv4.ip_forward = 1"`},
	} {
		name := strings.Join(c.args[:1], " ")
		human, err := runCLI(t, c.args...)
		if err != nil || !strings.Contains(human, c.human) || strings.Contains(human, "{") {
			t.Errorf("%s: %v\n%s", name, err, human)
		}
		out, err := runCLI(t, append(c.args, "--json")...)
		if err != nil {
			t.Fatalf("%s --json: %v", name, err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var h views.Header
		if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &h) != nil || h.Type != c.typ || h.SchemaVersion != views.JSONSchemaVersion || !strings.Contains(out, c.jsonHas) {
			t.Errorf("%s --json: want one %q document with %s, got:\n%s", name, c.typ, c.jsonHas, out)
		}
	}
}
