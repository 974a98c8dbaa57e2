.PHONY: bench test unit demo release

# sudo only when not already root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Data-path and scale benchmarks on a namespace lab (root), then the Go
# benchmarks of config loading and planning. See BENCHMARKS.md.
bench:
	$(SUDO) ./bench/run.sh
	go test -run='^$$' -bench=. -benchmem ./config ./plan

test:
	$(SUDO) ./test.sh

# The packages whose tests need no root: everything but agent/kernel, lab
# and e2e (network namespaces, sshd).
UNIT_PKGS := ./state/... ./config/... ./plan/... ./status/... ./apply/... \
	./views/... ./remote/... ./cmd/... ./agent ./agent/proto/... ./examples/... \
	./internal/...

# Root-free checks for contributors: vet, gofmt and the unit tests above
# (test.sh runs them too, with the race detector, then the root-only rest).
unit:
	go vet ./...
	@bad=$$(gofmt -l .); if [ -n "$$bad" ]; then echo "gofmt would change: $$bad"; exit 1; fi
	go test -count=1 $(UNIT_PKGS)
	@echo "unit: passed; not run here: agent/kernel, lab and e2e, which need root (make test)"

demo:
	$(SUDO) ./demo.sh

# Cross-built CLIs for darwin/linux x amd64/arm64, each carrying static
# linux/amd64 and linux/arm64 agents, into dist/ with SHA256SUMS.
release:
	./scripts/release.sh
