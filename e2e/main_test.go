package e2e

import (
	"os"
	"testing"

	"github.com/opsmigrate/migrate/lab/scenario"
)

func TestMain(m *testing.M) {
	code := m.Run()
	scenario.CleanupBinaries()
	os.Exit(code)
}
