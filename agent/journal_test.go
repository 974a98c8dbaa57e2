package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/state"
)

// pipeClient talks to Serve over pipes, frame by frame, as the CLI does
// over SSH.
type pipeClient struct {
	w    io.WriteCloser
	r    io.Reader
	id   uint64
	done chan error
}

func servePipes(t *testing.T, k Kernel, hf *HostFiles) *pipeClient {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &pipeClient{w: inW, r: outR, done: make(chan error, 1)}
	go func() {
		err := Serve(inR, outW, k, hf)
		outW.CloseWithError(io.EOF)
		c.done <- err
	}()
	t.Cleanup(func() {
		inW.Close()
		if err := <-c.done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return c
}

func (c *pipeClient) call(method string, params, result any) error {
	c.id++
	req := proto.Request{ID: c.id, Method: method}
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return err
		}
		req.Params = b
	}
	if err := proto.WriteFrame(c.w, req); err != nil {
		return err
	}
	var resp proto.Response
	if err := proto.ReadFrame(c.r, &resp); err != nil {
		return err
	}
	if resp.Error != nil {
		return fmt.Errorf("%s", resp.Error.Message)
	}
	if result != nil {
		return json.Unmarshal(resp.Result, result)
	}
	return nil
}

// scattered is an nft spec whose service list cannot be written as port
// runs: every other port of 1024-65535, at percent pct. About 2 MB of
// JSON, even in the compact encoding.
func scattered(pct int) *state.Object {
	spec := state.NftSpec{Role: "old", TunnelDev: "mig0", Mark: 0x20000}
	for p := 1024; p <= 65535; p += 2 {
		spec.Services = append(spec.Services, state.NftService{Addr: netip.MustParseAddr("198.51.100.10"), Proto: "tcp", Port: uint16(p), Percent: pct})
	}
	return &state.Object{Nft: &state.NftTable{Family: "inet", Name: "migrate", Spec: spec}}
}

// A host journal larger than a frame (MaxFrame, 64 MiB) even in the
// compact encoding: 36 stage changes, each to a spec of its own. Before
// paging, reading it failed ("frame of N bytes exceeds"), and with it
// every command, rollback included (a response over MaxFrame ends the
// agent's session). Now the journal is read page by page
// through the real Serve, and the rollback's undo of the last change is
// recorded.
func TestLargeJournalStillRollsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and reads a journal of about 100 MB")
	}
	hf := &HostFiles{Dir: t.TempDir()}
	if err := os.Chmod(hf.Dir, 0o700); err != nil { // a state directory the agent accepts
		t.Fatal(err)
	}
	j := state.NewJournal()
	prev := (*state.Object)(nil)
	const changes = 36
	for i := 1; i <= changes; i++ {
		next := scattered(i)
		s := state.Step{Host: "old", Action: state.Update, Before: prev, After: next}
		if prev == nil {
			s.Action = state.Create
		}
		j.NoteRun(fmt.Sprintf("%016x", i), "", time.Unix(int64(i), 0))
		j.Append(fmt.Sprintf("%016x", i), i, s, time.Unix(int64(i), 0))
		prev = next
	}
	path := filepath.Join(hf.Dir, "journal.json")
	if err := j.Save(path); err != nil {
		t.Fatal(err)
	}
	compact, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	if len(compact) <= proto.MaxFrame {
		t.Fatalf("the journal's compact form is %d bytes, not above the frame limit %d: the test proves nothing", len(compact), proto.MaxFrame)
	}
	st, _ := os.Stat(path)
	t.Logf("journal: %d bytes on disk, %d compact, frame limit %d", st.Size(), len(compact), proto.MaxFrame)

	c := servePipes(t, &fakeKernel{t: t}, hf)
	pages := 0
	got, err := proto.FetchJournal(func(p proto.JournalPageParams, pg *proto.JournalPage) error {
		pages++
		return c.call(proto.MethodJournalPage, p, pg)
	})
	if err != nil {
		t.Fatalf("read the journal page by page: %v", err)
	}
	if len(got.Entries) != changes || len(got.Runs) != changes || pages < 2 {
		t.Fatalf("read %d entries and %d runs in %d pages, want %d in several", len(got.Entries), len(got.Runs), pages, changes)
	}
	for i, e := range got.Entries {
		if e.Seq != i+1 || !e.Step.After.Equal(*scattered(i + 1)) {
			t.Fatalf("entry %d read back as seq %d with another spec", i+1, e.Seq)
		}
	}
	// Undo the last change as rollback does: back to the previous spec.
	last := got.Entries[changes-1]
	undo := state.Step{Host: "old", Action: state.Update, Before: last.Step.After, After: last.Step.Before}
	if err := c.call(proto.MethodApply, proto.ApplyParams{Step: undo, Run: last.Run, Seq: last.Seq, Undo: true}, nil); err != nil {
		t.Fatalf("undo the last change: %v", err)
	}
	after, err := hf.Journal()
	if err != nil {
		t.Fatal(err)
	}
	if e := after.Find(last.Run, last.Seq); e == nil || e.RolledBack == nil {
		t.Fatalf("the undo of the last change is not recorded: %+v", e)
	}
}
