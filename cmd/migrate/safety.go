package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/opsmigrate/migrate/ops"
	"github.com/opsmigrate/migrate/state"
)

// FaultEnv is a test-only switch: "die-at:N", "drop-ssh-at:N",
// "kill-agent-at:N" or "hang-at:N" makes apply fail just before its Nth
// step, the way a crash, a dropped connection or a killed agent would.
// The confirm has its own (confirm.go): "die-between-confirms-at:1"
// exits right after NEW confirmed, before OLD's confirm is sent;
// "delay-confirm-old-at:MS" waits MS milliseconds before it.
const FaultEnv = "MIGRATE_TEST_FAULT"

func faultHook(s *session) func(n int, st state.Step) error {
	spec := os.Getenv(FaultEnv)
	if spec == "" {
		return nil
	}
	kind, nstr, ok := strings.Cut(spec, "-at:")
	at, err := strconv.Atoi(nstr)
	if strings.HasSuffix(kind, "confirm-old") || strings.HasSuffix(kind, "between-confirms") {
		return nil // confirmFault
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
			if c := s.Clients[st.Host]; c != nil {
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

// faultHooks are the test-only faults of FaultEnv for an operation; s
// is the session apply runs on (nil for rollback, which only pauses).
func faultHooks(s *session) ops.Hooks {
	h := ops.Hooks{WrapHosts: pauseHosts, Confirm: confirmFault}
	if s != nil {
		h.BeforeStep = faultHook(s)
	}
	return h
}
