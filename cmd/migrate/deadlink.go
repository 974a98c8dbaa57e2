package main

import (
	"fmt"
	"time"

	"github.com/opsmigrate/migrate/remote"
)

// hostTimeout is --host-timeout: how long a host may stay silent (no
// answer to SSH keepalives, or from its agent to a call) before the
// command gives up on it. Every target the CLI builds carries it.
var hostTimeout = remote.DefaultTimeout

func checkHostTimeout() error {
	if hostTimeout < time.Second {
		return fmt.Errorf("--host-timeout %s: must be at least 1s (default %s)", hostTimeout, remote.DefaultTimeout)
	}
	return nil
}
