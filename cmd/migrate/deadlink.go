package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opsmigrate/migrate/apply"
	"github.com/opsmigrate/migrate/remote"
	"github.com/opsmigrate/migrate/state"
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

// pauseHosts is a test-only fault (MIGRATE_TEST_FAULT=pause-at:N): before
// the Nth step that apply or rollback sends to a host, the CLI prints
// "MIGRATE_TEST_FAULT: paused before step N" to stderr and waits for
// SIGUSR1, so that a test can change the world (black-hole a host) at an
// exact point. Other faults, and no fault, leave hosts as they are.
func pauseHosts(hosts map[string]apply.Host) map[string]apply.Host {
	kind, nstr, ok := strings.Cut(os.Getenv(FaultEnv), "-at:")
	at, err := strconv.Atoi(nstr)
	if !ok || err != nil || kind != "pause" {
		return hosts
	}
	resume := make(chan os.Signal, 1)
	signal.Notify(resume, syscall.SIGUSR1)
	count := new(int)
	out := map[string]apply.Host{}
	for name, h := range hosts {
		out[name] = &pausingHost{Host: h, at: at, count: count, resume: resume}
	}
	return out
}

type pausingHost struct {
	apply.Host
	at     int
	count  *int
	resume chan os.Signal
}

func (p *pausingHost) Apply(ctx context.Context, s state.Step, rec state.Record) error {
	*p.count++
	if *p.count == p.at {
		fmt.Fprintf(os.Stderr, "%s: paused before step %d\n", FaultEnv, p.at)
		select {
		case <-p.resume:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.Host.Apply(ctx, s, rec)
}
