#!/usr/bin/env bash
# Runs the migrate demo against a throwaway namespace lab. Needs root.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/deps.sh
exec go run ./examples/demo "$@"
