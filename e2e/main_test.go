package e2e

import (
	"os"
	"testing"

	"github.com/opsmigrate/migrate/internal/needroot"
	"github.com/opsmigrate/migrate/lab/scenario"
)

func TestMain(m *testing.M) {
	code := needroot.Main(m)
	scenario.CleanupBinaries()
	os.Exit(code)
}
