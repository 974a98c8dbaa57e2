package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// confirmFault is the test-only hook of FaultEnv for the confirm.
func confirmFault(stage string) {
	kind, arg, _ := strings.Cut(os.Getenv(FaultEnv), "-at:")
	switch {
	case kind == "die-between-confirms" && stage == "between":
		fmt.Fprintf(os.Stderr, "%s: dying between the two confirms\n", FaultEnv)
		os.Exit(3)
	case kind == "delay-confirm-old" && stage == "before-old":
		ms, _ := strconv.Atoi(arg)
		fmt.Fprintf(os.Stderr, "%s: waiting %dms before confirming OLD\n", FaultEnv, ms)
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
}
