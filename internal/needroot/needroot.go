// Package needroot is for test packages whose tests need root (network
// namespaces, sshd, netlink writes): without root such a test skips, and
// the package says once, at the end, how many skipped, so that a run
// without root does not pass silently while testing little.
//
//	func TestMain(m *testing.M) { os.Exit(needroot.Main(m)) }
//
//	func TestX(t *testing.T) {
//		needroot.Skip(t, "needs root to create network namespaces")
//		...
//	}
package needroot

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
)

var skipped atomic.Int64

// Skip skips t, and counts it, unless the process runs as root.
func Skip(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipped.Add(1)
		t.Skip(why)
	}
}

// Main runs the tests, then prints how many Skip skipped, if any. It
// returns m.Run's exit code.
//
// go test shows this line with -v, for a failing package, and when run
// in the package's directory; in package list mode (go test ./...) it
// hides the output of passing packages, this line included.
func Main(m *testing.M) int {
	code := m.Run()
	if msg := Summary(skipped.Load()); msg != "" {
		fmt.Println(msg)
	}
	return code
}

// Summary is Main's line for n skipped tests ("" for none).
func Summary(n int64) string {
	switch n {
	case 0:
		return ""
	case 1:
		return "1 test skipped: it needs root (run the README's test command as root)"
	}
	return fmt.Sprintf("%d tests skipped: they need root (run the README's test command as root)", n)
}
