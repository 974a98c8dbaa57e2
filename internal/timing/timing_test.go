package timing

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestRec(t *testing.T) {
	var none *Rec
	none.Add("x", time.Second) // a nil recorder records nothing, and does not panic
	none.Merge("p ", map[string]int64{"a": 1})
	if none.Micros() != nil {
		t.Fatal("nil recorder has values")
	}

	r := New()
	r.Add("parse", 1500*time.Millisecond)
	r.Add("parse", 500*time.Millisecond)
	r.Merge("agent old: ", map[string]int64{"facts": 250000, "apply": 1000})
	m := r.Micros()
	if m["parse"] != 2000000 || m["agent old: facts"] != 250000 || m["agent old: apply"] != 1000 {
		t.Fatalf("micros: %v", m)
	}
	var b bytes.Buffer
	r.Write(&b, 4*time.Second)
	out := b.String()
	for _, want := range []string{
		"timing: wall", "4.000 s",
		"parse", "2.000 s      2 call(s)   50.0 %",
		"agent old: facts", "0.250 s      1 call(s)    6.2 %",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// First seen first: parse, then the merged lines in name order.
	if i, j := strings.Index(out, "parse"), strings.Index(out, "agent old: apply"); i > j {
		t.Errorf("order:\n%s", out)
	}
	if i, j := strings.Index(out, "agent old: apply"), strings.Index(out, "agent old: facts"); i > j {
		t.Errorf("merged lines not in name order:\n%s", out)
	}
}
