package state

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sysStep(v string) *Step {
	return &Step{Host: "old", Action: Update, Before: &Object{Sysctl: &Sysctl{Name: "net.ipv4.ip_forward", Value: "0"}}, After: &Object{Sysctl: &Sysctl{Name: "net.ipv4.ip_forward", Value: v}}}
}

// A step is one line appended to the log: the snapshot is not written
// again, and the journal read back holds the step.
func TestCommitAppendsWithoutRewritingTheSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	j := NewJournal()
	if err := j.Save(path); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	for i := 1; i <= 50; i++ {
		if err := j.Commit(path, LogRecord{Op: OpStep, Run: "r1", Seq: i, Time: time.Unix(int64(i), 0), Step: sysStep("1")}); err != nil {
			t.Fatal(err)
		}
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("a step rewrote the snapshot")
	}
	back, err := LoadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Entries) != 50 || back.Entries[49].Seq != 50 {
		t.Fatalf("read back %d entries", len(back.Entries))
	}
	// Fifty entries, one After value, held once.
	if back.Entries[0].Step.After != back.Entries[49].Step.After {
		t.Error("equal objects are not shared")
	}
	if err := back.Save(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if n := strings.Count(string(b), `"value":"1"`); n != 1 {
		t.Errorf("the snapshot stores the same object %d times", n)
	}
}

// A torn last line (a crash in the middle of an append) is skipped, and
// the next append is not swallowed by it.
func TestTornLogLineIsSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	j := NewJournal()
	if err := j.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := CommitTo(path, LogRecord{Op: OpStep, Run: "r1", Seq: 1, Step: sysStep("1"), Pending: true}); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(path+".log", os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"op":"done","run":"r1","se`)
	f.Close()
	back, err := LoadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Entries) != 1 || !back.Entries[0].Pending {
		t.Fatalf("after a torn completion: %+v", back.Entries)
	}
	if err := CommitTo(path, LogRecord{Op: OpDone, Run: "r1", Seq: 1}); err != nil {
		t.Fatal(err)
	}
	back, err = LoadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Entries) != 1 || back.Entries[0].Pending {
		t.Fatalf("the append after a torn line was lost: %+v", back.Entries)
	}
}

// Save cut short at each point: the journal reads the same, and a log
// already folded into the snapshot is not played again.
func TestSaveCutShort(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	j := NewJournal()
	if err := j.Save(path); err != nil { // log_gen 1
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := j.Commit(path, LogRecord{Op: OpStep, Run: "r1", Seq: i, Step: sysStep("1")}); err != nil {
			t.Fatal(err)
		}
	}
	// The log also drops entry 2 (a replay of it onto a snapshot
	// without entry 2 changes nothing; onto one where entry 2 came
	// back it would).
	if err := j.Commit(path, LogRecord{Op: OpDrop, IDs: []EntryID{{Run: "r1", Seq: 2}}}); err != nil {
		t.Fatal(err)
	}
	log1, _ := os.ReadFile(path + ".log")
	want := func(what string, seqs ...int) {
		t.Helper()
		back, err := LoadJournal(path)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var got []int
		for _, e := range back.Entries {
			got = append(got, e.Seq)
		}
		if len(got) != len(seqs) {
			t.Fatalf("%s: entries %v, want %v", what, got, seqs)
		}
		for i := range got {
			if got[i] != seqs[i] {
				t.Fatalf("%s: entries %v, want %v", what, got, seqs)
			}
		}
	}
	// 1. Cut after PATH.log.next was written: snapshot 1 and log 1 hold.
	os.WriteFile(path+".log.next", []byte(`{"log_gen":2}`+"\n"), 0o600)
	want("cut after step 1", 1, 3)
	// An append then finishes the compaction first.
	if err := CommitTo(path, LogRecord{Op: OpStep, Run: "r2", Seq: 4, Step: sysStep("0")}); err != nil {
		t.Fatal(err)
	}
	want("append after a cut compaction", 1, 3, 4)
	if _, err := os.Stat(path + ".log.next"); err == nil {
		t.Error("PATH.log.next left behind")
	}
	// 2. Cut after the snapshot: snapshot N+1 with entry 2 back in it
	// (by hand), the stale log N still there. The stale log's drop must
	// not be replayed.
	back, _ := LoadJournal(path)
	back.Entries = append(back.Entries, Entry{Seq: 2, Run: "r1", Step: *sysStep("1")})
	gen := back.LogGen
	back.Serial++
	back.LogGen = gen + 1
	b, _ := back.MarshalJSON()
	os.WriteFile(path, b, 0o600)
	os.WriteFile(path+".log", append([]byte(`{"log_gen":`+itoa(gen)+"}\n"), log1[strings.Index(string(log1), "\n")+1:]...), 0o600)
	os.WriteFile(path+".log.next", []byte(`{"log_gen":`+itoa(gen+1)+"}\n"), 0o600)
	want("cut after step 2", 1, 3, 4, 2)
}

func itoa(n int) string { return strconv.Itoa(n) }

// A version 1 state file (objects inline) reads, and is written back as
// version 2.
func TestJournalVersion1Reads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	v1 := `{"version":1,"lineage":"x","serial":3,"entries":[{"seq":1,"run":"r1","time":"2024-01-01T00:00:00Z","step":{"host":"old","action":"update","before":{"sysctl":{"name":"net.ipv4.ip_forward","value":"0"}},"after":{"sysctl":{"name":"net.ipv4.ip_forward","value":"1"}}}}]}`
	os.WriteFile(path, []byte(v1), 0o600)
	j, err := LoadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Entries) != 1 || j.Entries[0].Step.After.Sysctl.Value != "1" || j.Lineage != "x" {
		t.Fatalf("read %+v", j)
	}
	if err := j.Save(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"version":2`) || !strings.Contains(string(b), `"objects"`) {
		t.Errorf("not written as version 2: %s", b)
	}
}

// A state file of a newer format, whose contents this migrate's types
// cannot even decode, is refused by its version, naming what to do.
func TestParseJournalNewerVersion(t *testing.T) {
	_, err := ParseJournal([]byte(`{"version": 99, "entries": "a newer encoding"}`), "x.state.json")
	if err == nil || !strings.Contains(err.Error(), "format version 99, written by a newer migrate") {
		t.Fatalf("err = %v", err)
	}
}
