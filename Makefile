.PHONY: bench test demo release

# sudo only when not already root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Data-path and scale benchmarks on a namespace lab (root), then the Go
# benchmarks of config loading and planning. See BENCHMARKS.md.
bench:
	$(SUDO) ./bench/run.sh
	go test -run='^$$' -bench=. -benchmem ./config ./plan

test:
	$(SUDO) ./test.sh

demo:
	$(SUDO) ./demo.sh

# Cross-built CLIs for darwin/linux x amd64/arm64, each carrying static
# linux/amd64 and linux/arm64 agents, into dist/ with SHA256SUMS.
release:
	./scripts/release.sh
