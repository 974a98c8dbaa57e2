package state

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdata/compat was written by migrate's main at d265444, before the
// state types were typed (roles, protocols, addresses as strings): a CLI
// state file (snapshot and log, targets, a run, an update, an undo), the
// agent's host journal (write-ahead, the last step still pending), the
// agent's record of its nft table, and what that code made of them:
// *.want, each journal loaded and written again, and objects.want, each
// object's key, text and nft digest. Today's code must read them all and
// make the same of them: hosts and state files in the field keep working,
// and no nft table is seen as drifted because its digest moved.
func TestCompatOldStateFiles(t *testing.T) {
	src := filepath.Join("testdata", "compat")
	dir := t.TempDir()
	for _, n := range []string{"migrate.state", "migrate.state.log", "journal.json", "journal.json.log"} {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var got strings.Builder
	for _, n := range []string{"migrate.state", "journal.json"} {
		j, err := LoadJournal(filepath.Join(dir, n))
		if err != nil {
			t.Fatalf("%s written by the old code does not load: %v", n, err)
		}
		if len(j.Entries) < 10 {
			t.Fatalf("%s: %d entries", n, len(j.Entries))
		}
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(src, n+".want"))
		if err != nil {
			t.Fatal(err)
		}
		if string(b)+"\n" != string(want) {
			t.Errorf("%s: written again, its JSON differs from the old code's:\n got %s\nwant %s", n, b, want)
		}
		for _, e := range j.Entries {
			o := e.Step.Object()
			fmt.Fprintf(&got, "%s %d %s\n\tkey %s\n\ttext %s\n", n, e.Seq, e.Step.Action, o.Key(), o.String())
			if o.Nft != nil {
				fmt.Fprintf(&got, "\tdigest %s\n", o.Nft.Spec.Digest())
			}
			if err := e.Step.Validate(); err != nil {
				t.Errorf("%s entry %d (%s): %v", n, e.Seq, o, err)
			}
		}
	}
	want, err := os.ReadFile(filepath.Join(src, "objects.want"))
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != string(want) {
		t.Errorf("keys, texts or digests differ from the old code's:\n got:\n%s\nwant:\n%s", got.String(), want)
	}

	// The agent's nft record (agent/kernel/nft.go saveNft) reads, keeps
	// its digest and is written again byte for byte.
	b, err := os.ReadFile(filepath.Join(src, "nft-migrate.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tbl NftTable
	if err := json.Unmarshal(b, &tbl); err != nil {
		t.Fatalf("nft record: %v", err)
	}
	if err := tbl.Validate(); err != nil {
		t.Errorf("nft record: %v", err)
	}
	if !strings.Contains(string(want), "digest "+tbl.Spec.Digest()+"\n") {
		t.Errorf("nft record: digest %s is not the old code's", tbl.Spec.Digest())
	}
	again, _ := json.MarshalIndent(tbl, "", "  ")
	if string(again)+"\n" != string(b) {
		t.Errorf("nft record written again differs:\n%s", again)
	}
}
