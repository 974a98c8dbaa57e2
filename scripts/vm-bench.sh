#!/usr/bin/env bash
# VM bench (opt-in, not part of the VM lane): tunnel ÷ routed ratios for the
# tunnel types this machine's kernel lacks, under Debian's stock kernel in
# qemu (tools/kernel-lab/run-in-kernel). For each type in VM_BENCH_TYPES it
# runs bench/labbench in the guest with only the routed and tunnel columns,
# TCP throughput and connection rate, short cells:
#
#   labbench -tunnel TYPE -cols "routed,migrate tunnel (TYPE)" -metrics iperf,rr
#            -rounds $VM_BENCH_ROUNDS -d $VM_BENCH_D -skip-scale -skip-cp
#
# and prints each run's ratio table. Nothing is asserted: the guest is
# emulated (TCG, 15-50x slower than native, one emulated CPU per vCPU), so
# absolute figures mean nothing and even ratios weigh CPU work differently
# from real hardware; what it shows is how the types compare with each other
# and with the routed path under one kernel. It takes about 5 minutes per
# type (the lab, and migrate's apply and rollback over SSH, are slow under
# emulation), more than the VM lane can afford, hence opt-in.
#
# Usage (root):  ./scripts/vm-bench.sh
# Environment:   VM_BENCH_TYPES  (default "vxlan gre wireguard")
#                VM_BENCH_ROUNDS (default 3)   VM_BENCH_D (default 2s)
#                VM_BENCH_TIMEOUT (default 40m: the whole guest run)
#                VM_BENCH_OUT    (default bench/vm-last-run.md: the tables)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ "$(id -u)" = 0 ] || { echo "vm-bench: run as root" >&2; exit 2; }
./scripts/deps.sh
command -v iperf3 >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends iperf3; }
TYPES=${VM_BENCH_TYPES:-vxlan gre wireguard}
OUT=${VM_BENCH_OUT:-bench/vm-last-run.md}
DIR=$(mktemp -d "$ROOT/.vm-bench.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
export CGO_ENABLED=0
go build -o "$DIR/labbench" ./bench/labbench
go build -o "$DIR/loadgen" ./bench/loadgen
go build -o "$DIR/migrate" ./cmd/migrate
go build -o "$DIR/labtool" ./lab/labtool

cat > "$DIR/guest.sh" <<'EOF'
set -u
echo "VM-BENCH guest kernel: $(uname -r)"
# As in scripts/vm-lane.sh: root's shell startup files make every SSH
# session slow under emulation; the guest's / is a throw-away overlay.
home=$(getent passwd root | cut -d: -f6)
for f in "$home/.bashrc" "$home/.bash_profile" "$home/.bash_login" "$home/.profile"; do
  if [ -f "$f" ]; then mount --bind /dev/null "$f"; fi
done
for m in veth bridge br_netfilter ip_gre vxlan wireguard nf_tables nft_ct nf_conntrack nf_nat; do
  modprobe "$m" || echo "VM-BENCH warning: modprobe $m failed" >&2
done
rc=0
for t in $VM_BENCH_TYPES; do
  echo "VM-BENCH type: $t"
  s=$(date +%s)
  (cd "$VM_BENCH_ROOT" && MIGRATE_E2E_BINDIR="$VM_BENCH_DIR" "$VM_BENCH_DIR/labbench" -tunnel "$t" \
    -cols "routed,migrate tunnel ($t)" -metrics iperf,rr -rounds "$VM_BENCH_ROUNDS" -d "$VM_BENCH_D" \
    -skip-scale -skip-cp -loadgen "$VM_BENCH_DIR/loadgen" -out "$VM_BENCH_DIR/vm-$t.md") || rc=1
  echo "VM-BENCH time: $t $(( $(date +%s) - s )) s"
done
exit $rc
EOF

set +e
VM_BENCH_ROOT=$ROOT VM_BENCH_DIR=$DIR VM_BENCH_TYPES=$TYPES VM_BENCH_ROUNDS=${VM_BENCH_ROUNDS:-3} VM_BENCH_D=${VM_BENCH_D:-2s} \
  MIGRATE_E2E_SLOW=${MIGRATE_E2E_SLOW:-3} \
  timeout --foreground -k 30s "${VM_BENCH_TIMEOUT:-40m}" \
  ./tools/kernel-lab/run-in-kernel -- bash "$DIR/guest.sh" </dev/null
rc=$?
set -e
{
  echo "VM bench (scripts/vm-bench.sh), $(date -u '+%Y-%m-%d %H:%M UTC'), host $(uname -r), types: $TYPES"
  for t in $TYPES; do
    echo
    echo "#### $t"
    echo
    if [ -f "$DIR/vm-$t.md" ]; then cat "$DIR/vm-$t.md"; else echo "(no result: see the guest's output above)"; fi
  done
} > "$OUT"
cat "$OUT"
exit $rc
