package state

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// How a journal lives on disk (the CLI's state file and each host's
// journal.json alike): a snapshot, PATH, and an append-only log beside it,
// PATH.log.
//
// The snapshot stores every distinct object once, in a table keyed by the
// hash of its canonical JSON ("objects"); an entry names its before and
// after values by that key. Going back and forth between stages therefore
// costs one entry (a few hundred bytes) per change, not two copies of the
// nft table: an object that comes back is the same key. Loading decodes
// each distinct object once, and every entry that names it shares the one
// value in memory (see intern), so a journal of a thousand stage changes
// of a 64 512-port service holds a handful of specs, not two thousand.
//
// Each step is one line appended to the log and fsynced (Commit,
// CommitTo): its cost does not depend on the journal's size. A step is
// in the log before the host does it (the agent's write-ahead record), and
// its completion after. Save compacts: it writes a new snapshot holding
// everything and starts an empty log. Both carry a generation: the log's
// first line is {"log_gen":G}, and only the log whose generation is the
// snapshot's is replayed, so a log already folded into a snapshot is never
// replayed twice. Save's order makes every crash point safe:
//
//  1. PATH.log.next, header G+1, fsynced;
//  2. the snapshot with log_gen G+1: temp file, fsync, rename, fsync dir;
//  3. PATH.log.next renamed to PATH.log, fsync dir.
//
// A crash before 2 leaves snapshot G and log G (PATH.log.next is ignored);
// after 2, snapshot G+1 and the empty log G+1 in PATH.log.next. A crash
// in the middle of an append leaves a torn last line, which is skipped:
// its fsync never returned, so the host did not act on it (a torn
// completion only leaves the entry pending, or not yet marked undone, and
// undoing it again is idempotent).
//
// A snapshot of format version 1 (entries with their objects inline, as
// every journal before this one) reads as it was; the next Save writes
// version 2.

// LogRecord is one change to a journal, as appended to its log.
type LogRecord struct {
	Op   string    `json:"op"` // one of the Op constants
	Run  string    `json:"run,omitempty"`
	Seq  int       `json:"seq,omitempty"`
	Time time.Time `json:"time"`
	// Step and Pending: OpStep.
	Step    *Step `json:"step,omitempty"`
	Pending bool  `json:"pending,omitempty"`
	// Intent: OpRun.
	Intent string `json:"intent,omitempty"`
	// IDs: OpDrop.
	IDs []EntryID `json:"ids,omitempty"`
}

// Log operations.
const (
	// OpStep records entry Seq of Run (once: a retry of the same step
	// changes nothing).
	OpStep = "step"
	// OpDone completes a pending entry.
	OpDone = "done"
	// OpFail removes an entry whose step failed (nothing changed).
	OpFail = "fail"
	// OpUndo marks an entry rolled back at Time.
	OpUndo = "undo"
	// OpRun records run Run with its Intent (once).
	OpRun = "run"
	// OpDrop removes the entries IDs (pruning).
	OpDrop = "drop"
)

// Play applies one record to the journal in memory. Every record can be
// played twice with the same result.
func (j *Journal) Play(r LogRecord) {
	switch r.Op {
	case OpStep:
		if r.Step == nil || j.Find(r.Run, r.Seq) != nil {
			return
		}
		s := j.internStep(*r.Step)
		j.Entries = append(j.Entries, Entry{Seq: r.Seq, Run: r.Run, Time: r.Time.UTC(), Step: s, Pending: r.Pending})
	case OpDone:
		if e := j.Find(r.Run, r.Seq); e != nil {
			e.Pending = false
		}
	case OpFail:
		for i := range j.Entries {
			if j.Entries[i].Run == r.Run && j.Entries[i].Seq == r.Seq {
				j.Entries = append(j.Entries[:i], j.Entries[i+1:]...)
				break
			}
		}
	case OpUndo:
		if e := j.Find(r.Run, r.Seq); e != nil {
			t := r.Time.UTC()
			e.RolledBack = &t
		}
	case OpRun:
		j.NoteRun(r.Run, r.Intent, r.Time)
	case OpDrop:
		j.Drop(r.IDs)
	}
}

// HasRun reports whether run id is recorded.
func (j *Journal) HasRun(id string) bool {
	for _, r := range j.Runs {
		if r.ID == id {
			return true
		}
	}
	return false
}

// CompactAt is the log size from which Commit and CommitTo fold the log
// into the snapshot, once the log is also larger than the snapshot: a
// compaction costs the journal's size, and happens once per as many bytes
// of steps, so a step's cost stays independent of the journal's size.
var CompactAt int64 = 256 << 10

// errNoLog says PATH.log cannot take an append as it is: missing, or a
// compaction was cut short (PATH.log.next exists). A Save sets it right.
var errNoLog = errors.New("no current journal log")

// Commit plays the records into j, then appends them to path's log. When
// the log is missing or has grown large, it saves (compacts) instead.
func (j *Journal) Commit(path string, recs ...LogRecord) error {
	for _, r := range recs {
		j.Play(r)
	}
	size, err := appendLog(path, recs)
	if errors.Is(err, errNoLog) || err == nil && needsCompaction(path, size) {
		return j.Save(path)
	}
	return err
}

// CommitTo appends the records to path's log without reading the
// journal. When the log is missing or has grown large, it loads the
// journal, plays them and saves (compacts). The caller serialises writers
// (the agent holds journal.lock).
func CommitTo(path string, recs ...LogRecord) error {
	size, err := appendLog(path, recs)
	if err == nil && !needsCompaction(path, size) {
		return nil
	}
	if err != nil && !errors.Is(err, errNoLog) {
		return err
	}
	j, lerr := loadNoFollow(path)
	if lerr != nil {
		return lerr
	}
	if err != nil { // not appended: play them now
		for _, r := range recs {
			j.Play(r)
		}
	}
	return j.Save(path)
}

// loadNoFollow is LoadJournal refusing a snapshot that is a symbolic
// link (the agent's state directory: see agent/statedir.go).
func loadNoFollow(path string) (*Journal, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) {
		j := NewJournal()
		return j, j.replayLog(path)
	}
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link: the agent never follows links in its state directory; remove it", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	return ParseJournal(b, path)
}

func needsCompaction(path string, logSize int64) bool {
	if logSize < CompactAt {
		return false
	}
	st, err := os.Stat(path)
	return err != nil || logSize > st.Size()
}

func logPath(path string) string { return path + ".log" }

// appendLog appends recs to path's log as lines and fsyncs it; it returns
// the log's size.
func appendLog(path string, recs []LogRecord) (int64, error) {
	if _, err := os.Lstat(logPath(path) + ".next"); err == nil {
		return 0, errNoLog
	}
	f, err := os.OpenFile(logPath(path), os.O_RDWR|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, errNoLog
	}
	if errors.Is(err, unix.ELOOP) {
		return 0, fmt.Errorf("%s is a symbolic link: the agent never follows links in its state directory; remove it", logPath(path))
	}
	if err != nil {
		return 0, fmt.Errorf("open journal log: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	// A torn last line (a crash mid-append) must not swallow this one.
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		var last [1]byte
		if _, err := f.ReadAt(last[:], st.Size()-1); err == nil && last[0] != '\n' {
			buf.WriteByte('\n')
		}
	}
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return 0, err
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		return 0, fmt.Errorf("append to the journal log: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sync the journal log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

type logHeader struct {
	LogGen int `json:"log_gen"`
}

// replayLog plays path's log into j when its generation is j's; any other
// log was folded into a snapshot already.
func (j *Journal) replayLog(path string) error {
	for _, p := range []string{logPath(path), logPath(path) + ".next"} {
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read journal log: %w", err)
		}
		err = j.replayFrom(f, p)
		f.Close()
		if !errors.Is(err, errOtherGen) {
			return err
		}
	}
	return nil
}

var errOtherGen = errors.New("log of another generation")

func (j *Journal) replayFrom(r io.Reader, name string) error {
	br := bufio.NewReaderSize(r, 1<<16)
	first := true
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if first {
				var h logHeader
				if json.Unmarshal(line, &h) != nil || h.LogGen != j.LogGen {
					return errOtherGen
				}
				first = false
			} else {
				var rec LogRecord
				// A line that does not parse is a torn append
				// (see above): skipped.
				if json.Unmarshal(line, &rec) == nil {
					j.Play(rec)
				}
			}
		}
		if errors.Is(err, io.EOF) {
			if first {
				return errOtherGen
			}
			return nil // an unterminated last line is torn: skipped
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
}

// writeFileSync writes b to path through a temp file: fsync, rename,
// fsync of the directory.
func writeFileSync(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".state-*.tmp")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync state: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	_ = d.Sync()
	return nil
}

// objects is a journal's table of distinct objects: one value per
// content, shared by every entry that names it. Nothing may change an
// object once it is in a journal.
type objects struct {
	byID map[string]*Object
	ids  map[*Object]string
	// lists holds each distinct nft service list once: the specs of
	// one service at different stages share their Accounted list, and
	// every spec at one canary percent its Services list.
	lists map[string][]NftService
	// raw is each object's canonical JSON, when known: a Save writes it
	// without marshalling the object again.
	raw map[string][]byte
}

func (j *Journal) table() *objects {
	if j.objs == nil {
		j.objs = &objects{byID: map[string]*Object{}, ids: map[*Object]string{}, lists: map[string][]NftService{}, raw: map[string][]byte{}}
	}
	return j.objs
}

// objectID is the hash of o's canonical JSON; remembered for the
// journal's own objects (intern), computed again for any other, so that
// the journal holds no reference to objects that are not its own.
func (j *Journal) objectID(o *Object) (string, []byte) {
	if id, ok := j.table().ids[o]; ok {
		return id, nil
	}
	b, _ := json.Marshal(o)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:16]), b
}

// intern returns the journal's one value equal to o: the one it has, or
// a new one made from o (whose nft service lists are shared with the
// journal's equal lists).
func (j *Journal) intern(o *Object) *Object { return j.internID(o, "", nil) }

// internID is intern with o's id and canonical JSON, when known ("" and
// nil otherwise).
func (j *Journal) internID(o *Object, id string, raw []byte) *Object {
	if o == nil {
		return nil
	}
	if id == "" {
		id, raw = j.objectID(o)
	}
	t := j.table()
	if raw != nil && t.raw[id] == nil {
		t.raw[id] = raw
	}
	if c, ok := t.byID[id]; ok {
		return c
	}
	if o.Nft != nil {
		// A copy: o may belong to the caller.
		n := *o.Nft
		n.Spec.Services = t.list(n.Spec.Services)
		n.Spec.Accounted = t.list(n.Spec.Accounted)
		n.Spec.UDPServices = t.list(n.Spec.UDPServices)
		o = &Object{Nft: &n}
	}
	t.byID[id] = o
	t.ids[o] = id
	return o
}

func (t *objects) list(l []NftService) []NftService {
	if len(l) == 0 {
		return l
	}
	b, _ := json.Marshal(compactServices(l))
	k := string(b)
	if c, ok := t.lists[k]; ok {
		return c
	}
	t.lists[k] = l
	return l
}

func (j *Journal) internStep(s Step) Step {
	s.Before, s.After = j.intern(s.Before), j.intern(s.After)
	return s
}

// SameObject reports whether a and b are the same value (both nil
// included). Objects of the journal compare by their content hash, which
// is computed once per object, not per comparison.
func (j *Journal) SameObject(a, b *Object) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if a == b {
		return true
	}
	ia, _ := j.objectID(a)
	ib, _ := j.objectID(b)
	return ia == ib
}

// The snapshot's JSON (version 2). Step objects are object ids; version 1
// had the objects inline, which UnmarshalJSON still reads.
type journalJSON struct {
	Version int                        `json:"version"`
	Lineage string                     `json:"lineage"`
	Serial  int                        `json:"serial"`
	LogGen  int                        `json:"log_gen,omitempty"`
	Targets map[string]Target          `json:"targets,omitempty"`
	Objects map[string]json.RawMessage `json:"objects,omitempty"`
	Entries []entryJSON                `json:"entries"`
	Runs    []Run                      `json:"runs,omitempty"`
}

type entryJSON struct {
	Seq        int        `json:"seq"`
	Run        string     `json:"run"`
	Time       time.Time  `json:"time"`
	Step       stepJSON   `json:"step"`
	RolledBack *time.Time `json:"rolled_back,omitempty"`
	Pending    bool       `json:"pending,omitempty"`
}

type stepJSON struct {
	Host   string          `json:"host"`
	Action Action          `json:"action"`
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
}

// MarshalJSON writes the journal with its objects in one table.
func (j Journal) MarshalJSON() ([]byte, error) {
	out := journalJSON{
		Version: JournalVersion, Lineage: j.Lineage, Serial: j.Serial, LogGen: j.LogGen,
		Targets: j.Targets, Objects: map[string]json.RawMessage{}, Entries: make([]entryJSON, 0, len(j.Entries)), Runs: j.Runs,
	}
	ref := func(o *Object) (json.RawMessage, error) {
		if o == nil {
			return nil, nil
		}
		id, b := j.objectID(o)
		if _, ok := out.Objects[id]; !ok {
			if b == nil {
				b = j.table().raw[id]
			}
			if b == nil {
				var err error
				if b, err = json.Marshal(o); err != nil {
					return nil, err
				}
			}
			out.Objects[id] = b
		}
		return json.Marshal(id)
	}
	for _, e := range j.Entries {
		before, err := ref(e.Step.Before)
		if err != nil {
			return nil, err
		}
		after, err := ref(e.Step.After)
		if err != nil {
			return nil, err
		}
		out.Entries = append(out.Entries, entryJSON{Seq: e.Seq, Run: e.Run, Time: e.Time, RolledBack: e.RolledBack, Pending: e.Pending,
			Step: stepJSON{Host: e.Step.Host, Action: e.Step.Action, Before: before, After: after}})
	}
	if len(out.Objects) == 0 {
		out.Objects = nil
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads version 2 (object ids) and version 1 (objects
// inline). Each distinct object is decoded once.
func (j *Journal) UnmarshalJSON(b []byte) error {
	var in journalJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*j = Journal{Version: in.Version, Lineage: in.Lineage, Serial: in.Serial, LogGen: in.LogGen, Targets: in.Targets, Runs: in.Runs}
	byRef := map[string]*Object{} // object id, or hash of inline JSON -> value
	obj := func(raw json.RawMessage) (*Object, error) {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
			return nil, nil
		}
		var key string
		var src json.RawMessage
		if raw[0] == '"' {
			if err := json.Unmarshal(raw, &key); err != nil {
				return nil, err
			}
			var ok bool
			if src, ok = in.Objects[key]; !ok {
				return nil, fmt.Errorf("entry names object %s, which the journal does not hold", key)
			}
		} else {
			h := sha256.Sum256(raw)
			key, src = "inline:"+string(h[:]), raw
		}
		if o, ok := byRef[key]; ok {
			return o, nil
		}
		var o Object
		if err := json.Unmarshal(src, &o); err != nil {
			return nil, err
		}
		id, canon := "", []byte(nil)
		if raw[0] == '"' && len(key) == 32 {
			// The table's key is the object's id (objectID), and its
			// JSON the canonical one: neither is computed again.
			id, canon = key, append([]byte(nil), src...)
		}
		p := j.internID(&o, id, canon)
		byRef[key] = p
		return p, nil
	}
	j.Entries = make([]Entry, 0, len(in.Entries))
	for _, e := range in.Entries {
		before, err := obj(e.Step.Before)
		if err != nil {
			return fmt.Errorf("entry %s/%d: %w", e.Run, e.Seq, err)
		}
		after, err := obj(e.Step.After)
		if err != nil {
			return fmt.Errorf("entry %s/%d: %w", e.Run, e.Seq, err)
		}
		j.Entries = append(j.Entries, Entry{Seq: e.Seq, Run: e.Run, Time: e.Time, RolledBack: e.RolledBack, Pending: e.Pending,
			Step: Step{Host: e.Step.Host, Action: e.Step.Action, Before: before, After: after}})
	}
	return nil
}

// Page returns a journal holding the entries from index from on, as many
// as fit in about maxBytes of JSON (at least one), with the runs they
// name and, in the first page, the targets; and the index of the entry
// after them (0 when none is left). The page shares j's objects.
func (j *Journal) Page(from, maxBytes int) (*Journal, int) {
	p := &Journal{Version: JournalVersion, Lineage: j.Lineage, Serial: j.Serial, LogGen: j.LogGen, objs: j.objs}
	if from == 0 {
		p.Targets = j.Targets
	}
	seen := map[*Object]bool{}
	size, i := 0, from
	for ; i < len(j.Entries); i++ {
		e := j.Entries[i]
		n := 512 // the entry without its objects, generously
		for _, o := range []*Object{e.Step.Before, e.Step.After} {
			if o != nil && !seen[o] {
				seen[o] = true
				b, _ := json.Marshal(o)
				n += len(b)
			}
		}
		if size+n > maxBytes && i > from {
			break
		}
		size += n
		p.Entries = append(p.Entries, e)
	}
	used := map[string]bool{}
	for _, e := range p.Entries {
		used[e.Run] = true
	}
	for _, r := range j.Runs {
		if used[r.ID] {
			p.Runs = append(p.Runs, r)
		}
	}
	if i >= len(j.Entries) {
		return p, 0
	}
	return p, i
}
