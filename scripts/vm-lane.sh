#!/usr/bin/env bash
# VM lane: run the tunnel types this machine's kernel lacks (gre, ip6gre,
# wireguard) under Debian's stock kernel in qemu:
#   - e2e: TestCoreSlice/gre, TestCoreSlice/ip6gre, TestCoreSlice/wireguard,
#     TestForgedPackets/gre, TestUDPListeners/{gre,ip6gre,wireguard} (UDP
#     daemons on a wildcard, bound, and dnsmasq, answered through the move);
#     and the direct type (no device: ARP/NDP, redirects, policy routes to
#     the peer's segment address), which this kernel runs too but which
#     leans on neighbour and redirect behaviour that differs between kernels:
#     TestCoreSlice/direct, TestUDPListeners/direct, TestDirectSegment under
#     Debian 12's own kernel; and the tunnel block edited mid-migration,
#     with a held connection on NEW and an exact rollback:
#     TestTunnelChangeTypes/wireguard (listen_port, in place) and
#     TestTunnelChangeTypes/vxlan-to-gre (VXLAN to GRE, then a GRE key:
#     made again each time), ~140 s;
#   - agent/kernel: TestTunnelLinks (every type: links read back as built,
#     full-size datagrams through each tunnel without outer fragmentation)
#     and TestWireGuardLink (keys made by each end, ping through, rollback
#     removes the key), TestForwardBytecode and TestForwardPackets (the
#     forward tables: Linux 6.1 refuses nft constructs newer kernels take)
#     and TestForwardGuard (chain guard: a neighbour is not routed, migrate's
#     own flows are), TestUDPAnswersFromServiceAddress (NEW's UDP answer
#     rewrite: the dynamic map, the route chain, checksums under 6.1),
#     TestNftLayoutUpgrade (a table of the previous release's nft layout
#     verified without drift and replaced by the next update) and
#     TestUnderlayFilter (the underlay filter's drops, wherever the layout
#     puts it);
#   - conntrack capacity, with the guest's global nf_conntrack_max lowered
#     to 16384 for the step and put back after it: agent/kernel
#     TestConntrackFacts and TestConntrackMaxInitNet (the limit raised and
#     restored in the guest's initial namespace, which only this throw-away
#     guest may do), e2e TestConntrackCapacity (OLD's table filled past
#     half the low limit: plan warns, apply refuses, status shows it).
# A few focused tests only: everything in the guest is 15-50x slower.
#
# The binaries are built here, on the host (CGO_ENABLED=0); compiling inside
# the emulated guest is many times slower. The guest sees the host's / read-only
# (so sshd, ip, nft, ... come from the host) and this repository read-write,
# where the binaries and the log live for the run.
#
# Usage (root):  ./scripts/vm-lane.sh
# Environment:   VM_LANE_TIMEOUT (default 40m: the whole guest run, boot included)
#                VM_LANE_RUN     (default '^(TestCoreSlice|TestForgedPackets|TestUDPListeners|TestDirectSegment|TestTunnelChangeTypes)$/^(gre|ip6gre|wireguard|direct|vxlan-to-gre)$':
#                                 the e2e tests; setting it also empties VM_LANE_EXPECT)
#                VM_LANE_KERNEL_RUN (default '^(TestTunnelLinks|TestWireGuardLink|TestForwardBytecode|TestForwardPackets|TestForwardGuard|TestUDPAnswersFromServiceAddress|TestNftDNATChains|TestNftGoldenKernel|TestNftLayoutUpgrade|TestUnderlayFilter)$'; empty: skip agent/kernel)
#                VM_LANE_CONNTRACK (default 1; 0 skips the conntrack capacity step)
#                VM_LANE_EXPECT  (subtests that must run and pass in the guest; default
#                                 the e2e and kernel subtests for gre, ip6gre and wireguard,
#                                 and the tunnel changes)
#                MIGRATE_E2E_SLOW (default 3 here: multiplies the lab's timeouts,
#                                 see lab/scenario.SlowEnv)
#                VM_LANE_LOG     (default /tmp/migrate-vm-lane.log: the guest's full output)
#                KERNEL_LAB_* are tools/kernel-lab/run-in-kernel's knobs.
# Exit status: non-zero if a test fails or is skipped in the guest, if an
# expected subtest did not run and pass there, or if the guest died.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEFAULT_EXPECT='TestCoreSlice/gre TestCoreSlice/ip6gre TestCoreSlice/wireguard TestForgedPackets/gre
  TestUDPListeners/gre TestUDPListeners/ip6gre TestUDPListeners/wireguard TestUDPAnswersFromServiceAddress
  TestTunnelLinks/gre TestTunnelLinks/gre-key TestTunnelLinks/ip6gre TestTunnelLinks/ip6gre-key
  TestWireGuardLink/v4 TestWireGuardLink/v6 TestForwardBytecode TestForwardPackets TestForwardGuard
  TestCoreSlice/direct TestUDPListeners/direct TestDirectSegment
  TestTunnelChangeTypes/wireguard TestTunnelChangeTypes/vxlan-to-gre'
CONNTRACK=${VM_LANE_CONNTRACK:-1}
if [ "$CONNTRACK" = 1 ]; then
  DEFAULT_EXPECT="$DEFAULT_EXPECT TestConntrackFacts TestConntrackMaxInitNet TestConntrackCapacity"
fi
if [ -n "${VM_LANE_RUN:-}" ]; then DEFAULT_EXPECT=; fi
RUN=${VM_LANE_RUN:-'^(TestCoreSlice|TestForgedPackets|TestUDPListeners|TestDirectSegment|TestTunnelChangeTypes)$/^(gre|ip6gre|wireguard|direct|vxlan-to-gre)$'}
KRUN=${VM_LANE_KERNEL_RUN-'^(TestTunnelLinks|TestWireGuardLink|TestForwardBytecode|TestForwardPackets|TestForwardGuard|TestUDPAnswersFromServiceAddress|TestNftDNATChains|TestNftGoldenKernel|TestNftLayoutUpgrade|TestUnderlayFilter)$'}
EXPECT=${VM_LANE_EXPECT:-$DEFAULT_EXPECT}
say() { printf '== vm-lane: %s\n' "$*"; }
t0=$(date +%s)

[ "$(id -u)" = 0 ] || { echo "vm-lane: run as root (qemu, network namespaces inside the guest, apt-get)" >&2; exit 2; }
# The guest runs the host's sshd, ip, nft, unshare, sysctl, ssh-keygen.
./scripts/deps.sh

DIR=$(mktemp -d "$ROOT/.vm-lane.XXXXXX")
trap 'rm -rf "$DIR"' EXIT

say "building on the host (CGO_ENABLED=0) into ${DIR#"$ROOT"/}"
export CGO_ENABLED=0
go test -c -o "$DIR/e2e.test" ./e2e
go test -c -o "$DIR/kernel.test" ./agent/kernel
go build -o "$DIR/migrate" ./cmd/migrate
go build -o "$DIR/labtool" ./lab/labtool
t1=$(date +%s)

# What runs inside the guest. Module autoloading works there (the host's
# modprobe, the kernel package's modules); loading them up front costs ~1 s,
# turns a missing module into a clear warning instead of a confusing failure,
# and makes the tunnels' fallback devices (gre0, ip6gre0, ...) exist in every
# lab namespace from its start, so they are not a difference in the
# before/after snapshots.
cat > "$DIR/guest.sh" <<'EOF'
set -u
echo "VM-LANE guest kernel: $(uname -r)"
# The lab's sshd runs every command through root's login shell, and bash run
# by sshd reads ~/.bashrc even for `bash -c`. A .bashrc without the usual
# "not interactive: return" guard (pyenv, nvm, cargo env...) costs ~20 s per SSH
# session under emulation, and migrate opens several per command. The guest's
# / is a throw-away overlay, so empty them there (the host's files are untouched).
home=$(getent passwd root | cut -d: -f6)
for f in "$home/.bashrc" "$home/.bash_profile" "$home/.bash_login" "$home/.profile"; do
  if [ -f "$f" ]; then mount --bind /dev/null "$f"; fi
done
for m in veth ip_gre ip6_gre vxlan wireguard nf_tables nft_ct nf_conntrack; do
  modprobe "$m" || echo "VM-LANE warning: modprobe $m failed" >&2
done
rc=0
if [ -n "$VM_LANE_KERNEL_RUN" ]; then
  echo "VM-LANE step: agent/kernel -test.run '$VM_LANE_KERNEL_RUN'"
  s=$(date +%s)
  (cd "$VM_LANE_ROOT/agent/kernel" && "$VM_LANE_DIR/kernel.test" \
    -test.run "$VM_LANE_KERNEL_RUN" -test.v -test.count 1 -test.timeout 10m) || rc=1
  echo "VM-LANE time: agent/kernel $(( $(date +%s) - s )) s"
fi
if [ "$VM_LANE_CONNTRACK" = 1 ]; then
  # The guest's own initial namespace (a throw-away VM): a low global
  # limit, as on a small server, so a few thousand entries fill half of it.
  echo "VM-LANE step: conntrack capacity, global nf_conntrack_max 16384"
  s=$(date +%s)
  ct0=$(cat /proc/sys/net/netfilter/nf_conntrack_max)
  echo 16384 > /proc/sys/net/netfilter/nf_conntrack_max
  (cd "$VM_LANE_ROOT/agent/kernel" && MIGRATE_VM_GUEST=1 "$VM_LANE_DIR/kernel.test" \
    -test.run '^(TestConntrackFacts|TestConntrackMaxInitNet)$' -test.v -test.count 1 -test.timeout 5m) || rc=1
  (cd "$VM_LANE_ROOT/e2e" && env MIGRATE_E2E_BINDIR="$VM_LANE_DIR" "$VM_LANE_DIR/e2e.test" \
    -test.run '^TestConntrackCapacity$' -test.v -test.count 1 -test.timeout 10m) || rc=1
  echo "$ct0" > /proc/sys/net/netfilter/nf_conntrack_max
  echo "VM-LANE time: conntrack $(( $(date +%s) - s )) s"
fi
echo "VM-LANE step: e2e -test.run '$VM_LANE_RUN'"
s=$(date +%s)
(cd "$VM_LANE_ROOT/e2e" && env MIGRATE_E2E_BINDIR="$VM_LANE_DIR" "$VM_LANE_DIR/e2e.test" \
  -test.run "$VM_LANE_RUN" -test.v -test.count 1 -test.timeout 35m) || rc=1
echo "VM-LANE time: e2e $(( $(date +%s) - s )) s"
exit $rc
EOF

# Which types this (host) kernel has, for the "ran where" summary.
host_has() {
  case $1 in
    vxlan) set -- vxlan id 1 dstport 4789 local 192.0.2.1 ;;
    gre) set -- gre local 192.0.2.1 remote 192.0.2.2 ;;
    ip6gre) set -- ip6gre local 2001:db8::1 remote 2001:db8::2 ;;
    *) set -- "$1" ;;
  esac
  unshare --net -- ip link add probe0 type "$@" >/dev/null 2>&1
}

say "booting Debian's kernel in qemu and running -test.run '$RUN'${KRUN:+ and agent/kernel '$KRUN'} there"
LOG=${VM_LANE_LOG:-/tmp/migrate-vm-lane.log}
set +e
VM_LANE_ROOT=$ROOT VM_LANE_DIR=$DIR VM_LANE_RUN=$RUN VM_LANE_KERNEL_RUN=$KRUN VM_LANE_CONNTRACK=$CONNTRACK MIGRATE_E2E_SLOW=${MIGRATE_E2E_SLOW:-3} \
  timeout --foreground -k 30s "${VM_LANE_TIMEOUT:-40m}" \
  ./tools/kernel-lab/run-in-kernel -- bash "$DIR/guest.sh" </dev/null 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
t2=$(date +%s)

echo
say "summary"
kver=$(sed -n 's/^VM-LANE guest kernel: //p' "$LOG" | head -1)
echo "guest kernel:      ${kver:-unknown (the guest did not start the command)}"
echo "host kernel:       $(uname -r)"
printf 'natively (%s):' "$(uname -r)"
for typ in vxlan gre ip6gre wireguard; do
  if host_has "$typ"; then printf ' %s=yes' "$typ"; else printf ' %s=no' "$typ"; fi
done
echo " (the native suite, ./test.sh, runs the types marked yes)"
echo "tunnel types, as the tests reported them inside the VM:"
grep -oE 'TUNNEL [a-z0-9-]+: .*' "$LOG" | sort | uniq -c | sed 's/^ */  /' || echo "  (none reported)"
# agent/kernel's tests run in a child namespace and log its lines as
# "...: netns: <line>": results are at a line start or after "netns: ".
res='(^|netns: )\s*--- '
echo "results in the VM:"
grep -E "$res(PASS|FAIL|SKIP)" "$LOG" | sed -E 's/^.*netns: //; s/^ */  /' || echo "  (none)"
grep -E '^VM-LANE time:' "$LOG" | sed 's/^VM-LANE /  /' || true
echo "time:              build $((t1 - t0)) s, guest $((t2 - t1)) s, total $((t2 - t0)) s"

fail=
[ "$rc" = 0 ] || fail="the guest run exited with status $rc$([ "$rc" = 124 ] && echo ' (timeout)')$([ "$rc" = 125 ] && echo ' (the guest died)')"
missing=
for want in $EXPECT; do
  if ! grep -qE "${res}PASS: ${want}( |$)" "$LOG"; then missing="$missing $want"; fi
done
[ -z "$missing" ] || fail="${fail:+$fail; }did not run and pass in the VM:$missing"
if ! grep -qE "${res}PASS" "$LOG"; then
  fail="${fail:+$fail; }no test passed in the VM"
fi
if grep -qE "${res}(FAIL|SKIP)|^FAIL|^panic" "$LOG"; then
  fail="${fail:+$fail; }a test failed or was skipped in the VM"
fi
if [ -n "$fail" ]; then
  say "FAIL: $fail"
  exit 1
fi
say "PASS under kernel $kver:" $EXPECT
