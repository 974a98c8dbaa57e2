package ops

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

// FaultEnv is a test-only switch: "die-at:N", "drop-ssh-at:N",
// "kill-agent-at:N" or "hang-at:N" makes apply fail just before its Nth
// step, the way a crash, a dropped connection or a killed agent would.
// The confirm has its own (confirmFault): "die-between-confirms-at:1"
// exits right after NEW confirmed, before OLD's confirm is sent;
// "delay-confirm-old-at:MS" waits MS milliseconds before it;
// "die-before-confirm" exits once every step is applied, before any host
// is confirmed (each reverts at its deadline, or at its next boot).
const FaultEnv = "MIGRATE_TEST_FAULT"

func faultHook[H FaultHost](s *Session[H]) func(n int, st state.Step) error {
	spec := os.Getenv(FaultEnv)
	if spec == "" {
		return nil
	}
	kind, nstr, ok := strings.Cut(spec, "-at:")
	at, err := strconv.Atoi(nstr)
	if strings.HasSuffix(kind, "confirm-old") || strings.HasSuffix(kind, "between-confirms") || kind == "die-before-confirm" {
		return nil // confirmFault
	}
	if kind == "pause-agent-start" {
		return nil // PauseAgentStart
	}
	if !ok || err != nil {
		fmt.Fprintf(os.Stderr, "ignoring malformed %s=%q\n", FaultEnv, spec)
		return nil
	}
	return func(n int, st state.Step) error {
		if n != at {
			return nil
		}
		switch kind {
		case "die":
			fmt.Fprintf(os.Stderr, "%s: dying before step %d\n", FaultEnv, n)
			os.Exit(3)
		case "drop-ssh":
			for _, c := range s.Clients {
				c.DropConnection()
			}
		case "kill-agent":
			if c, ok := s.Clients[st.Host]; ok {
				if err := c.KillAgent(); err != nil {
					return err
				}
			}
		case "hang":
			fmt.Fprintf(os.Stderr, "%s: hanging before step %d\n", FaultEnv, n)
			select {}
		}
		return nil
	}
}

// PauseAgentStart is a test-only fault (MIGRATE_TEST_FAULT=
// pause-agent-start-at:HOST): once the agent on HOST was checked (or
// installed) and before it is started, the CLI prints
// "MIGRATE_TEST_FAULT: paused before starting the agent on HOST" to stderr
// and waits for SIGUSR1, so that a test can swap the binary in between.
func PauseAgentStart() {
	kind, host, ok := strings.Cut(os.Getenv(FaultEnv), "-at:")
	if !ok || kind != "pause-agent-start" {
		return
	}
	resume := make(chan os.Signal, 1)
	signal.Notify(resume, syscall.SIGUSR1)
	remote.BeforeAgentStart = func(name string) {
		if name != host {
			return
		}
		fmt.Fprintf(os.Stderr, "%s: paused before starting the agent on %s\n", FaultEnv, name)
		<-resume
	}
}

// FaultHost is a host a fault can cut: *remote.Client.
type FaultHost interface {
	Host
	DropConnection()
	KillAgent() error
}

// FaultHooks are the test-only faults of FaultEnv for an operation; s is
// the session apply runs on (nil for rollback, which only pauses).
func FaultHooks[H FaultHost](s *Session[H]) Hooks {
	h := Hooks{WrapHosts: pauseHosts, Confirm: confirmFault}
	if s != nil {
		h.BeforeStep = faultHook(s)
	}
	return h
}

// confirmFault is the test-only hook of FaultEnv for the confirm.
func confirmFault(stage string) {
	kind, arg, _ := strings.Cut(os.Getenv(FaultEnv), "-at:")
	switch {
	case kind == "die-before-confirm" && stage == "before":
		fmt.Fprintf(os.Stderr, "%s: dying before any confirm\n", FaultEnv)
		os.Exit(3)
	case kind == "die-between-confirms" && stage == "between":
		fmt.Fprintf(os.Stderr, "%s: dying between the two confirms\n", FaultEnv)
		os.Exit(3)
	case kind == "delay-confirm-old" && stage == "before-old":
		ms, _ := strconv.Atoi(arg)
		fmt.Fprintf(os.Stderr, "%s: waiting %dms before confirming OLD\n", FaultEnv, ms)
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
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
