package agent

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

func sysctlStep(v string) state.Step {
	return state.Step{Host: "old", Action: state.Update,
		Before: &state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: "0"}},
		After:  &state.Object{Sysctl: &state.Sysctl{Name: "net.ipv4.ip_forward", Value: v}}}
}

func record(t *testing.T, h *HostFiles, run string, seq int, undo bool, stepErr error) {
	t.Helper()
	p := proto.ApplyParams{Step: sysctlStep("1"), Run: run, Seq: seq, Undo: undo}
	if err := h.BeginStep(p); err != nil {
		t.Fatal(err)
	}
	if stepErr == errPending {
		return
	}
	if err := h.EndStep(p, stepErr); err != nil {
		t.Fatal(err)
	}
}

var errPending = errors.New("agent died mid-step")

func ids(j *state.Journal) []state.EntryID {
	var out []state.EntryID
	for _, e := range j.Entries {
		out = append(out, state.EntryID{Run: e.Run, Seq: e.Seq})
	}
	return out
}

// The host drops what it is asked to, except what its revert timer may
// still replay and steps that may be half done.
func TestHostPruneKeepsWhatTheTimerNeeds(t *testing.T) {
	h := &HostFiles{Dir: stateDir(t)}
	record(t, h, "r1", 1, false, nil) // confirmed
	record(t, h, "r2", 2, false, nil) // armed, never confirmed, undone by its timer
	record(t, h, "r2", 2, true, nil)
	record(t, h, "r3", 3, false, nil) // armed, not confirmed yet
	record(t, h, "r4", 4, false, errPending)
	runState := func(run, st string) {
		t.Helper()
		if err := h.writeRun(&runRecord{Run: run, State: st}); err != nil {
			t.Fatal(err)
		}
	}
	runState("r1", proto.RunConfirmed)
	runState("r2", proto.RunReverted)
	runState("r3", proto.RunArmed)
	all := []state.EntryID{{Run: "r1", Seq: 1}, {Run: "r2", Seq: 2}, {Run: "r3", Seq: 3}, {Run: "r4", Seq: 4}, {Run: "r9", Seq: 9}}
	dropped, err := h.Prune(all)
	if err != nil {
		t.Fatal(err)
	}
	if want := []state.EntryID{{Run: "r1", Seq: 1}, {Run: "r2", Seq: 2}}; !reflect.DeepEqual(dropped, want) {
		t.Errorf("dropped %v, want %v", dropped, want)
	}
	j, err := h.Journal()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(j), []state.EntryID{{Run: "r3", Seq: 3}, {Run: "r4", Seq: 4}}; !reflect.DeepEqual(got, want) {
		t.Errorf("journal keeps %v, want %v", got, want)
	}
	// Once r3 is confirmed it can go.
	runState("r3", proto.RunConfirmed)
	if dropped, _ := h.Prune(all); !reflect.DeepEqual(dropped, []state.EntryID{{Run: "r3", Seq: 3}}) {
		t.Errorf("after confirming r3, dropped %v", dropped)
	}
}

// A host journal written before the compact encoding (per-port nft
// specs) still reads, and is written back compact.
func TestHostJournalReadsThePerPortForm(t *testing.T) {
	h := &HostFiles{Dir: stateDir(t)}
	old := `{"version":1,"lineage":"x","serial":3,"entries":[{"seq":1,"run":"r1","time":"2024-01-01T00:00:00Z","step":{"host":"old","action":"create","after":{"nft":{"family":"inet","name":"migrate","spec":{"role":"old","tunnel_dev":"mig0","mark":131072,"services":[{"addr":"192.0.2.1","proto":"tcp","port":80,"percent":100},{"addr":"192.0.2.1","proto":"tcp","port":81,"percent":100},{"addr":"192.0.2.1","proto":"tcp","port":82,"percent":100}]}}}}}]}`
	if err := os.WriteFile(h.path("journal.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	j, err := h.Journal()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(j.Entries[0].Step.After.Nft.Spec.Services); n != 3 {
		t.Fatalf("%d services read, want 3", n)
	}
	record(t, h, "r2", 2, false, nil)
	b, _ := os.ReadFile(h.path("journal.json"))
	if !strings.Contains(string(b), `"through":82`) {
		t.Errorf("journal not rewritten compact:\n%s", b)
	}
}
