package config

import (
	"bytes"
	"os"
)

// FormatFiles formats each plan file in place (`migrate fmt`), or with
// check only tells; either way it calls changed with each file that was
// not in the canonical format, and stops at the first error.
func FormatFiles(paths []string, check bool, changed func(path string)) error {
	for _, f := range paths {
		src, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		out, err := Format(src, f)
		if err != nil {
			return err
		}
		if bytes.Equal(src, out) {
			continue
		}
		if !check {
			if err := os.WriteFile(f, out, 0o644); err != nil {
				return err
			}
		}
		changed(f)
	}
	return nil
}
