#!/usr/bin/env bash
# Data-path and scale benchmarks of migrate on a throw-away namespace lab.
# Needs root. Installs what it needs (iperf3, haproxy, socat and the lab's
# packages) with apt-get, then runs bench/labbench, which builds the lab,
# measures, prints the tables and removes the lab. The root network
# namespace is never touched.
#
#   sudo ./bench/run.sh [labbench flags]     e.g. -d 3s, -sizes 1,1000, -skip-scale, -skip-cp, -cp-n 1000, -v,
#                                            -profile DIR (also installs linux-perf)
#
# The report is also written to bench/last-run.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench/run.sh: needs root (network namespaces): sudo ./bench/run.sh" >&2
  exit 1
fi
./scripts/deps.sh
need=()
pairs="iperf3:iperf3 haproxy:haproxy socat:socat"
# -profile records with perf (Debian's linux-perf samples newer kernels too).
case " $* " in *" -profile "*|*" -profile="*) pairs="$pairs perf:linux-perf" ;; esac
for pair in $pairs; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # policy-rc.d is not ours to change; the packages' own daemons are not
  # used (iperf3 and haproxy run inside the lab's namespaces).
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
bin=$(mktemp -d /tmp/migrate-bench.XXXXXX)
trap 'rm -rf "$bin"' EXIT
CGO_ENABLED=0 go build -o "$bin/labbench" ./bench/labbench
"$bin/labbench" -out bench/last-run.md "$@"
