package state

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// JournalVersion is the format version of the state file (journalfile.go);
// version 1 is still read.
const JournalVersion = 2

// Journal is the state file: every step migrate applied, in order, with the
// value it replaced. Rollback reads it, never memory.
type Journal struct {
	Version int    `json:"version"`
	Lineage string `json:"lineage"`
	Serial  int    `json:"serial"`
	// Targets records how each host was reached, so rollback works from
	// the state file alone.
	Targets map[string]Target `json:"targets,omitempty"`
	Entries []Entry           `json:"entries"`
	// Runs describe the applies of the entries, when recorded (a state
	// file rebuilt from the hosts' journals has none).
	Runs []Run `json:"runs,omitempty"`
	// LogGen is the generation of the log that continues this snapshot
	// (journalfile.go).
	LogGen int `json:"log_gen,omitempty"`

	objs *objects // distinct objects, shared by the entries
}

// Run is one apply: when it started and the digest of what it applied
// (the plan's intent: both hosts' desired objects).
type Run struct {
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Intent string    `json:"intent,omitempty"`
}

// RunIntent is the recorded intent digest of run id, or "".
func (j *Journal) RunIntent(id string) string {
	for _, r := range j.Runs {
		if r.ID == id {
			return r.Intent
		}
	}
	return ""
}

// NoteRun records run id once.
func (j *Journal) NoteRun(id, intent string, now time.Time) {
	for _, r := range j.Runs {
		if r.ID == id {
			return
		}
	}
	j.Runs = append(j.Runs, Run{ID: id, Time: now.UTC(), Intent: intent})
}

// Target is how a host was reached over SSH.
type Target struct {
	User         string `json:"user"`
	Address      string `json:"address"`
	Port         int    `json:"port"`
	IdentityFile string `json:"identity_file,omitempty"`
	KnownHosts   string `json:"known_hosts"`
	Sudo         bool   `json:"sudo,omitempty"`
	// IdentityFiles are optional keys from ~/.ssh/config, offered when
	// IdentityFile is empty.
	IdentityFiles []string `json:"identity_files,omitempty"`
	// Jumps are the ProxyJump hosts, in order (Sudo unused).
	Jumps []Target `json:"jumps,omitempty"`
	// Name is the jump host as written in ProxyJump (jumps only).
	Name string `json:"name,omitempty"`
}

// Entry is one applied step.
type Entry struct {
	Seq        int        `json:"seq"`
	Run        string     `json:"run"` // id of the apply that made it
	Time       time.Time  `json:"time"`
	Step       Step       `json:"step"`
	RolledBack *time.Time `json:"rolled_back,omitempty"`
	// Pending marks a host-journal entry written before its step ran
	// (write-ahead): if the agent died mid-step, the step may or may not
	// have happened, and undoing it is still safe because every undo is
	// idempotent.
	Pending bool `json:"pending,omitempty"`
}

// Record identifies a step in a host's own journal: entry Seq of the apply
// Run, or, with Undo, the marking of that entry as rolled back.
type Record struct {
	Run  string
	Seq  int
	Undo bool
}

// NewJournal returns an empty journal with a fresh lineage.
func NewJournal() *Journal {
	return &Journal{Version: JournalVersion, Lineage: NewID()}
}

// NewID returns a random 16-hex-digit id.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// LoadJournal reads path and replays its log (journalfile.go). A missing
// file is an empty journal.
func LoadJournal(path string) (*Journal, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		j := NewJournal()
		return j, j.replayLog(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	return ParseJournal(b, path)
}

// ParseJournal decodes a journal read from path (named in errors) and
// checks its format version.
func ParseJournal(b []byte, path string) (*Journal, error) {
	// The version first: a newer migrate's file may not decode into this
	// one's types, and "not valid JSON" would hide why.
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("state %s is not valid JSON: %w", path, err)
	}
	if v.Version > JournalVersion {
		return nil, fmt.Errorf("state %s has format version %d, written by a newer migrate; this migrate reads versions 1 to %d: use that newer migrate (or a later one)", path, v.Version, JournalVersion)
	}
	var j Journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("state %s is not valid JSON: %w", path, err)
	}
	if j.Version != JournalVersion && j.Version != 1 {
		return nil, fmt.Errorf("state %s has format version %d; this migrate reads versions 1 and %d", path, j.Version, JournalVersion)
	}
	j.Version = JournalVersion
	if err := j.replayLog(path); err != nil {
		return nil, err
	}
	return &j, nil
}

// Save writes the whole journal as a new snapshot and starts an empty
// log (the compaction of journalfile.go). It bumps Serial.
func (j *Journal) Save(path string) error {
	j.Serial++
	j.Version = JournalVersion
	gen := j.LogGen + 1
	next := logPath(path) + ".next"
	hb, _ := json.Marshal(logHeader{LogGen: gen})
	if err := writeFileSync(next, append(hb, '\n')); err != nil {
		return err
	}
	j.LogGen = gen
	// Compact: indenting a spec's port runs more than doubles it.
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := writeFileSync(path, append(b, '\n')); err != nil {
		return err
	}
	if err := os.Rename(next, logPath(path)); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// NextSeq is the sequence number the next entry will get.
func (j *Journal) NextSeq() int {
	seq := 1
	for _, e := range j.Entries {
		if e.Seq >= seq {
			seq = e.Seq + 1
		}
	}
	return seq
}

// Append records an applied step under seq.
func (j *Journal) Append(run string, seq int, s Step, now time.Time) *Entry {
	j.Entries = append(j.Entries, Entry{Seq: seq, Run: run, Time: now.UTC(), Step: j.internStep(s)})
	return &j.Entries[len(j.Entries)-1]
}

// Find returns the entry of run with seq, or nil.
func (j *Journal) Find(run string, seq int) *Entry {
	for i := range j.Entries {
		if j.Entries[i].Run == run && j.Entries[i].Seq == seq {
			return &j.Entries[i]
		}
	}
	return nil
}

// Active returns the entries not yet rolled back, in order.
func (j *Journal) Active() []*Entry {
	var out []*Entry
	for i := range j.Entries {
		if j.Entries[i].RolledBack == nil {
			out = append(out, &j.Entries[i])
		}
	}
	return out
}

// LastRun is the run id of the newest active entry, or "".
func (j *Journal) LastRun() string {
	a := j.Active()
	if len(a) == 0 {
		return ""
	}
	return a[len(a)-1].Run
}

// Owned maps each object key that migrate changed on host, and has not
// rolled back, to the value it had before migrate's first change (nil when
// migrate created it). This is what "restore" means for that key.
func (j *Journal) Owned(host string) map[string]*Object {
	out := map[string]*Object{}
	for _, e := range j.Active() {
		if e.Step.Host != host {
			continue
		}
		k := e.Step.Key()
		if _, seen := out[k]; !seen {
			out[k] = e.Step.Before
		}
	}
	return out
}

// EntryID names an entry in the state file and in its host's journal.
type EntryID struct {
	Run string `json:"run"`
	Seq int    `json:"seq"`
}

// Drop removes the entries named by ids (absent ones are ignored) and
// returns how many it removed.
func (j *Journal) Drop(ids []EntryID) int {
	gone := map[EntryID]bool{}
	for _, id := range ids {
		gone[id] = true
	}
	kept := j.Entries[:0]
	for _, e := range j.Entries {
		if !gone[EntryID{Run: e.Run, Seq: e.Seq}] {
			kept = append(kept, e)
		}
	}
	n := len(j.Entries) - len(kept)
	for i := len(kept); i < len(j.Entries); i++ {
		j.Entries[i] = Entry{}
	}
	j.Entries = kept
	// A run without entries left has nothing to describe.
	used := map[string]bool{}
	for _, e := range j.Entries {
		used[e.Run] = true
	}
	runs := j.Runs[:0]
	for _, r := range j.Runs {
		if used[r.ID] {
			runs = append(runs, r)
		}
	}
	j.Runs = runs
	return n
}
