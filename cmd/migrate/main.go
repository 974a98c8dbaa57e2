// Command migrate moves services from an OLD server to a NEW one, one
// IP:port at a time, through a tunnel, nftables conntrack marks and policy
// routing. See README.md.
package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/opsmigrate/migrate/internal/timing"
)

// exitError carries a specific exit status (plan --detailed-exitcode).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if timing.CLI != nil {
		defer func(t0 time.Time) { timing.CLI.Write(os.Stderr, time.Since(t0)) }(time.Now())
	}
	cli := newCLI(os.Stdin, os.Stdout, os.Stderr)
	root := cli.root()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	cli.view().Error(err)
	return 1
}
