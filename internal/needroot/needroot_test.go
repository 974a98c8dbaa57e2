package needroot

import "testing"

func TestSummary(t *testing.T) {
	for n, want := range map[int64]string{
		0: "",
		1: "1 test skipped: it needs root (run the README's test command as root)",
		3: "3 tests skipped: they need root (run the README's test command as root)",
	} {
		if got := Summary(n); got != want {
			t.Errorf("Summary(%d) = %q, want %q", n, got, want)
		}
	}
}
