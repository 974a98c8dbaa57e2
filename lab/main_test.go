package lab

import (
	"os"
	"testing"

	"github.com/opsmigrate/migrate/internal/needroot"
)

// TestMain says once how many tests skipped for want of root.
func TestMain(m *testing.M) { os.Exit(needroot.Main(m)) }
