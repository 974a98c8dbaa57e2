package agent

import (
	"fmt"
	"io"
	"math/rand"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/kernel"
	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// serveForTest is the hidden mode of the test binary in which it is a
// real agent: kernel.Host and HostFiles in MIGRATE_STATE_DIR, requests on
// stdin (see TestMain). MIGRATE_TEST_COMPACT_AT lowers state.CompactAt so
// that compactions happen, and get killed, in the middle of a run.
const serveForTest = "agent-serve-for-test"

func runServeForTest() error {
	if s := os.Getenv("MIGRATE_TEST_COMPACT_AT"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		state.CompactAt = n
	}
	k, err := kernel.New(StateDir())
	if err != nil {
		return err
	}
	return Serve(os.Stdin, os.Stdout, k, &HostFiles{Dir: StateDir()})
}

// agentProc is a real agent process: this test binary in serveForTest
// mode.
type agentProc struct {
	cmd *exec.Cmd
	c   *pipeClient
}

func startAgent(t *testing.T, dir string) *agentProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], serveForTest)
	cmd.Env = append(os.Environ(), "MIGRATE_STATE_DIR="+dir, "MIGRATE_TEST_COMPACT_AT=4096")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &agentProc{cmd: cmd, c: &pipeClient{w: in, r: out}}
}

// killAfter SIGKILLs the agent d from now, wherever it is.
func (a *agentProc) killAfter(d time.Duration) {
	time.AfterFunc(d, func() { _ = a.cmd.Process.Kill() })
}

func (a *agentProc) wait() {
	_ = a.cmd.Process.Kill()
	a.c.w.Close()
	_, _ = io.Copy(io.Discard, a.c.r)
	_ = a.cmd.Wait()
}

// stageSpec is OLD's table with ports 1024-3071 at stage i: old (nothing to
// NEW), canary at a percent of its own, or new.
func stageSpec(i int) *state.Object {
	spec := state.NftSpec{Role: "old", TunnelDev: "mig0", Mark: 0x20000,
		Underlay: &state.NftUnderlay{Proto: "udp", Port: 4789, Local: netip.MustParseAddr("192.0.2.1"), Peer: netip.MustParseAddr("192.0.2.2")}}
	pct := []int{0, 1 + i%99, 100}[i%3]
	for p := 1024; p <= 3071; p++ {
		spec.Accounted = append(spec.Accounted, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: uint16(p)})
		if pct > 0 {
			spec.Services = append(spec.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: uint16(p), Percent: pct})
		}
	}
	return &state.Object{Nft: &state.NftTable{Family: "inet", Name: "migrate", Spec: spec}}
}

// TestJournalSurvivesKilledAgentInNetns applies a run of steps (tunnel,
// addresses, rules, then stage changes of a 2 048-port service) through
// a real agent process that is SIGKILLed at random moments, in a loop:
// in the middle of a step, of its journal record, of a compaction (the
// compaction threshold is lowered). After each kill the journal is read
// again by a new agent; it must load, and the live table must be one the
// journal knows (the write-ahead record precedes every change). The
// driver carries on as the CLI would (a pending step is sent again).
// Then it rolls everything back from the journal alone, entry by entry
// in reverse, under the same kills; the namespace must end byte-identical
// to before. MIGRATE_CRASH_SEED and MIGRATE_CRASH_CHANGES replay or
// extend.
func TestJournalSurvivesKilledAgentInNetns(t *testing.T) {
	if !inNetns(t) {
		return
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("MIGRATE_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	changes := 12
	if s := os.Getenv("MIGRATE_CRASH_CHANGES"); s != "" {
		changes, _ = strconv.Atoi(s)
	}
	t.Logf("seed %d, %d stage changes", seed, changes)
	r := rand.New(rand.NewSource(seed))
	clean := takeSnapshot(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil { // a state directory the agent accepts
		t.Fatal(err)
	}
	// The test reads the live state as the agents do, with their
	// records (nft-migrate.json) in the same directory.
	h, err := kernel.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	// The script: what apply would send, one run per five steps.
	var script []state.Step
	for _, o := range ownObjects() {
		script = append(script, state.Step{Host: "old", Action: state.Create, After: &o})
	}
	prev := (*state.Object)(nil)
	for i := 0; i <= changes; i++ {
		next := stageSpec(i)
		s := state.Step{Host: "old", Action: state.Update, Before: prev, After: next}
		if prev == nil {
			s.Action = state.Create
		}
		script = append(script, s)
		prev = next
	}
	runOf := func(k int) string { return fmt.Sprintf("%016x", k/5+1) }

	readJournal := func() *state.Journal {
		t.Helper()
		a := startAgent(t, dir)
		defer a.wait()
		j, err := proto.FetchJournal(func(p proto.JournalPageParams, pg *proto.JournalPage) error {
			return a.c.call(proto.MethodJournalPage, p, pg)
		})
		if err != nil {
			t.Fatalf("read the journal after a kill: %v", err)
		}
		// The same journal straight from the files.
		fj, err := state.LoadJournal(dir + "/journal.json")
		if err != nil {
			t.Fatalf("load the journal files after a kill: %v", err)
		}
		if len(fj.Entries) != len(j.Entries) {
			t.Fatalf("the agent reads %d entries, the files hold %d", len(j.Entries), len(fj.Entries))
		}
		return j
	}
	// checkWriteAhead: the kernel never holds a table the journal does
	// not know. Without a pending nft entry, the live table is exactly
	// the After of the newest nft entry (or absent). With one, the step
	// may have been cut anywhere (the agent's own record of the table is
	// written after the transaction); undoing it puts Before back.
	checkWriteAhead := func(j *state.Journal) {
		t.Helper()
		f, err := h.Facts(state.FactsRequest{NftTable: "migrate"})
		if err != nil {
			t.Fatal(err)
		}
		var last *state.Entry
		for _, e := range j.Active() {
			if e.Step.Object().Nft != nil {
				last = e
			}
		}
		if last != nil && last.Pending {
			return
		}
		live := ""
		if f.Nft != nil {
			live = f.Nft.Spec.Digest()
		}
		want := ""
		if last != nil {
			want = last.Step.After.Nft.Spec.Digest()
		}
		if live != want || f.NftDrift != "" {
			t.Fatalf("the kernel holds nft table %q (drift: %q), the journal's newest entry says %q: %+v", live, f.NftDrift, want, last)
		}
	}

	kills := 0
	var lastErr error
	// Forward: send what is not done yet, pipelined, and kill at random.
	for {
		j := readJournal()
		checkWriteAhead(j)
		var todo []int
		for k := range script {
			if e := j.Find(runOf(k), k+1); e == nil || e.Pending {
				todo = append(todo, k)
			}
		}
		if len(todo) == 0 {
			break
		}
		a := startAgent(t, dir)
		n := r.Intn(4) // steps that finish before the kill is armed
		for i, k := range todo {
			if i == n {
				a.killAfter(time.Duration(r.Intn(100)) * time.Millisecond)
			}
			err := a.c.call(proto.MethodApply, proto.ApplyParams{Step: script[k], Run: runOf(k), Seq: k + 1}, nil)
			if err != nil {
				lastErr = err
				break // killed (or refused: the next reading shows it)
			}
		}
		a.wait()
		kills++
		if kills > 20*len(script) {
			t.Fatalf("no progress: %v", lastErr)
		}
	}
	t.Logf("applied %d steps through %d agent processes", len(script), kills)
	if f, _ := h.Facts(state.FactsRequest{NftTable: "migrate"}); f.Nft == nil || f.Nft.Spec.Digest() != script[len(script)-1].After.Nft.Spec.Digest() {
		t.Fatal("the last stage is not what the kernel holds")
	}
	// Rollback from the journal alone, under kills.
	undoKills := 0
	for {
		j := readJournal()
		act := j.Active()
		if len(act) == 0 {
			break
		}
		a := startAgent(t, dir)
		n := r.Intn(4)
		for i := len(act) - 1; i >= 0; i-- {
			if i == len(act)-1-n {
				a.killAfter(time.Duration(r.Intn(100)) * time.Millisecond)
			}
			e := act[i]
			err := a.c.call(proto.MethodApply, proto.ApplyParams{Step: e.Step.Inverse(), Run: e.Run, Seq: e.Seq, Undo: true}, nil)
			if err != nil {
				lastErr = err
				break
			}
		}
		a.wait()
		undoKills++
		if undoKills > 20*len(script) {
			t.Fatalf("no progress rolling back: %v", lastErr)
		}
	}
	t.Logf("rolled back through %d agent processes", undoKills)
	clean.diff(t, "rollback after killed agents", takeSnapshot(t))
	for _, e := range readJournal().Entries {
		if e.RolledBack == nil {
			t.Errorf("entry %d not marked rolled back", e.Seq)
		}
	}
}
