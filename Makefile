.PHONY: bench test demo

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
