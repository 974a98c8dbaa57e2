package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FormatFiles: --check names the unformatted file and leaves it; without
// it the file is rewritten and a second run finds nothing.
func TestFormatFiles(t *testing.T) {
	dir := t.TempDir()
	ugly := filepath.Join(dir, "ugly.hcl")
	good, err := os.ReadFile(filepath.Join("..", "examples", "basic.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(good), "  ssh = ", "ssh=", 1)
	if err := os.WriteFile(ugly, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []string
	note := func(p string) { got = append(got, p) }
	if err := FormatFiles([]string{ugly}, true, note); err != nil || !reflect.DeepEqual(got, []string{ugly}) {
		t.Fatalf("check: %v %v", err, got)
	}
	if b, _ := os.ReadFile(ugly); string(b) != src {
		t.Fatal("--check changed the file")
	}
	got = nil
	if err := FormatFiles([]string{ugly}, false, note); err != nil || len(got) != 1 {
		t.Fatalf("format: %v %v", err, got)
	}
	got = nil
	if err := FormatFiles([]string{ugly}, true, note); err != nil || len(got) != 0 {
		t.Errorf("after formatting, check still lists %v (%v)", got, err)
	}
	if err := FormatFiles([]string{filepath.Join(dir, "missing.hcl")}, true, note); err == nil {
		t.Error("a missing file is not an error")
	}
}
