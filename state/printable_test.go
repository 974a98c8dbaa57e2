package state

import "testing"

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":             "nginx",
		"node-exporter 1.2": "node-exporter 1.2",
		"café":              "café",
		"\x1b[31mred\x07":   "?[31mred?",
		"a\nb\rc\td":        "a?b?c?d",
		"\xff\xfeok":        "??ok",
		"\u009b2J":          "?2J", // C1 CSI
		"\u202eevil":        "?evil",
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}
