package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// BuildLabtool builds the labtool helper (./lab/labtool, CGO_ENABLED=0) into
// dir and returns the binary's absolute path. The module root is found with
// `go env GOMOD`, falling back to this package's source location.
func BuildLabtool(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "labtool")
	cmd := exec.Command("go", "build", "-o", bin, "./lab/labtool")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("lab: go build ./lab/labtool: %v: %s", err, bytes.TrimSpace(out))
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	hasTool := func(root string) bool {
		_, err := os.Stat(filepath.Join(root, "lab", "labtool", "main.go"))
		return err == nil
	}
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		gomod := strings.TrimSpace(string(out))
		if gomod != "" && gomod != os.DevNull {
			if root := filepath.Dir(gomod); hasTool(root) {
				return root, nil
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		if root := filepath.Dir(filepath.Dir(file)); hasTool(root) {
			return root, nil
		}
	}
	return "", errors.New("lab: cannot find the module root holding lab/labtool (run inside the module)")
}
