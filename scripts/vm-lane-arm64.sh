#!/usr/bin/env bash
# arm64 lane: the release CLI manages two real linux/arm64 hosts end to end.
#
# Two Debian 12 arm64 guests, OLD and NEW (Debian's stock arm64 kernel under
# qemu-system-aarch64, TCG, with sshd), and on this host, as the "laptop",
# the release's linux/amd64 CLI, which carries the arm64 agent. The CLI runs
# plan, apply --auto-approve, status and rollback --all over SSH with a plan
# moving a TCP and a UDP service from OLD to NEW over a vxlan tunnel, and the
# lane checks from the outside:
#   - both guests are aarch64 (uname -m over SSH);
#   - the agent the CLI installed on each is byte-identical (sha256) to the
#     release's agents/migrate-linux-arm64;
#   - init reads OLD's listeners through the arm64 agent (sock_diag), keeps
#     sshd's port out, refuses to guess tunnel endpoints behind qemu's
#     look-alike NATs and takes --old-endpoint/--new-endpoint;
#   - plan changes nothing; apply reports the tunnel verified in both
#     directions;
#   - a client (a network namespace in OLD) dialing OLD's IP:8080 is served
#     by NEW, which sees the client's real address; OLD's IP:8081 stays on
#     OLD; UDP OLD_IP:5353 is answered by NEW;
#   - NEW connecting out from OLD's IP reaches a remote peer (the client's
#     namespace), which sees OLD's IP as the source;
#   - status shows both services at stage new with >= 1 new flow to NEW;
#   - after rollback --all each guest's nft ruleset, ip rules, routes,
#     addresses, links (ip -d link) and the sysctls migrate touches equal a
#     snapshot taken before the first plan, and OLD serves again;
#   - agent/kernel's tests, built for arm64, pass in a guest (focused list).
# Every failed check fails the lane (exit 1) with a message saying which.
#
# What comes from where (all rebuilt from nothing; only downloads are cached):
#   - host tools via apt-get: qemu-system-arm (qemu-system-aarch64),
#     qemu-user-static (only to list busybox's applets), cpio, kmod, ...;
#   - the guests' kernel and userland: Debian bookworm arm64 .debs fetched
#     through a PRIVATE apt configuration (APT::Architecture "arm64", its own
#     lists and empty dpkg status) into $ARM64_LANE_CACHE, unpacked with
#     dpkg-deb -x by scripts/arm64-lane/mkroot.sh. The host's dpkg is never
#     told about arm64 (no dpkg --add-architecture) and nothing arm64 is
#     installed on it;
#   - the binaries: DIST=<tmp> ./scripts/release.sh (the tree is not changed),
#     lab/labtool and agent/kernel's test binary for linux/arm64.
#
# Host safety: the guests' root is shared read-only over 9p with a tmpfs
# overlay per guest; it is built in a private mount namespace where every
# other mount is read-only (see mkroot.sh). qemu listens on 127.0.0.1 only
# (slirp restrict=on, with a forward to each sshd on a port the kernel picks);
# OLD and NEW are joined by a qemu dgram link over two unix sockets in the
# run's directory. The root network namespace is not changed, and this host
# only talks to 127.0.0.1 (apt's downloads aside). Every qemu is killed on
# exit (trap, and PR_SET_PDEATHSIG should this script itself be killed).
#
# Usage (root):  ./scripts/vm-lane-arm64.sh
# Environment:   ARM64_LANE_CACHE   (default /var/cache/migrate-arm64-lane: apt lists,
#                                    .debs and the unpacked root, reused when present)
#                ARM64_LANE_REFRESH (1: ask the mirror again for the current kernel
#                                    and packages instead of reusing the cached set)
#                ARM64_LANE_MIRROR  (default http://deb.debian.org)
#                ARM64_LANE_TIMEOUT (default 15m: the whole run, downloads included)
#                ARM64_LANE_KERNEL_RUN (agent/kernel -test.run; default the focused
#                                    list below; empty: skip those tests)
#                ARM64_LANE_SERVED_BY (default new: the name NEW's server must
#                                    report; anything else makes the lane fail on
#                                    purpose, to prove it goes red)
#                ARM64_LANE_LOG     (default /tmp/migrate-arm64-lane.log: every
#                                    step's full output, the guests' consoles)
#                ARM64_LANE_MEM, ARM64_LANE_SMP (per guest; default 1024M, 2)
# Exit status: 0 all checks passed; 1 a check failed; 2 usage; 124 timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LANE=$ROOT/scripts/arm64-lane

TOTAL=${ARM64_LANE_TIMEOUT:-15m}
if [ -z "${ARM64_LANE_UNDER_TIMEOUT:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "arm64-lane: run as root (apt-get, qemu, /var/cache)" >&2; exit 2; }
  set +e
  ARM64_LANE_UNDER_TIMEOUT=1 timeout --foreground -k 30s "$TOTAL" bash "$0" "$@"
  rc=$?
  set -e
  [ "$rc" != 124 ] || echo "== arm64-lane: FAIL: the whole run exceeded ARM64_LANE_TIMEOUT=$TOTAL" >&2
  exit "$rc"
fi

CACHE=${ARM64_LANE_CACHE:-/var/cache/migrate-arm64-lane}
MIRROR=${ARM64_LANE_MIRROR:-http://deb.debian.org}
KTESTS='TestTunnelLinks TestWireGuardLink TestNftOldRole TestNftBytecode TestMarkPacketPath TestCanaryAndDrain TestForwardBytecode TestForwardPackets'
KRUN=${ARM64_LANE_KERNEL_RUN-"^($(echo $KTESTS | tr ' ' '|'))\$"}
if [ -n "${ARM64_LANE_KERNEL_RUN+set}" ]; then KTESTS=; fi   # a custom list: no fixed expectation
SERVED_BY=${ARM64_LANE_SERVED_BY:-new}
LOG=${ARM64_LANE_LOG:-/tmp/migrate-arm64-lane.log}
MEM=${ARM64_LANE_MEM:-1024M}
SMP=${ARM64_LANE_SMP:-2}
CPU=max,pauth-impdef=on   # -cpu max with QARMA pointer auth is 3x slower, cortex-a72 2x

# The guests' packages: the kernel (resolved from linux-image-arm64) and this
# userland with its dependencies, minus what only maintainer scripts use.
USERLAND='busybox-static netbase nftables iproute2 kmod openssh-server bash coreutils procps'
NOT_NEEDED='perl|perl-modules-5.36|libperl5.36|lib.*-perl|debconf|cdebconf|libdebian-installer4|libnewt0.52|libslang2|libtextwrap1|ucf|adduser|dpkg|install-info|gawk|libmpfr6|libsigsegv2|original-awk|usrmerge|usr-is-merged|runit-helper|sensible-utils|lsb-base|init-system-helpers|base-files|openssh-sftp-server'

# The lab inside the guests (documentation addresses only).
OLD_IP=198.51.100.10 NEW_IP=203.0.113.20      # eth1 of each: the tunnel endpoints
CLIENT_GW=192.0.2.1 CLIENT_IP=192.0.2.100     # OLD's veth into its "client" namespace
TCP_PORT=8080 STAY_PORT=8081 UDP_PORT=5353 PEER_PORT=9000

LANE_TAG=arm64-lane
# shellcheck source=lib/guest-lane.sh
. "$ROOT/scripts/lib/guest-lane.sh"
: > "$LOG"
guest_lane_traps   # cleanup: every process we started (qemu first), the run's directory

# --- 1. host tools -------------------------------------------------------------
need=()
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
for pair in cpio:cpio depmod:kmod ssh:openssh-client ssh-keygen:openssh-client file:file \
  setpriv:util-linux unshare:util-linux findmnt:util-linux flock:util-linux ss:iproute2 \
  dpkg-deb:dpkg apt-get:apt; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${need[@]}" >> "$LOG" 2>&1 ||
    { apt-get update -q >> "$LOG" 2>&1 && apt-get install -y -q --no-install-recommends "${need[@]}" >> "$LOG" 2>&1; } ||
    die "apt-get install ${need[*]} failed (see $LOG)"
fi
command -v go >/dev/null || die "go is not installed"
QEMU_VERSION=$(qemu-system-aarch64 --version | head -1 | sed 's/^QEMU emulator version //')

# The host's /bin/busybox must still be the host's at the end.
host_busybox() { if [ -e /bin/busybox ]; then echo "$(sha256sum < /bin/busybox | cut -c1-16) $(file -bL /bin/busybox | cut -d, -f1-2)"; else echo absent; fi; }
BUSYBOX_BEFORE=$(host_busybox)
HOSTNET_BEFORE=$(host_net)

# --- 2. the arm64 .debs, through a private apt configuration ---------------------
mkdir -p "$CACHE"
exec 8>"$CACHE/.lock"
bounded 900 flock 8   # concurrent runs: one fetches and builds, the others wait and reuse
A=$CACHE/apt
mkdir -p "$CACHE/debs"
private_apt "$A" arm64 "$MIRROR"
M=$CACHE/debs/manifest   # "FILE SHA256" per .deb of the current set
have_set() { [ -s "$M" ] && while read -r f _; do [ -s "$CACHE/debs/$f" ] || return 1; done < "$M"; }
if [ -n "${ARM64_LANE_REFRESH:-}" ] || ! have_set; then
  ts=$(date +%s)
  say "resolving Debian bookworm arm64 packages (private apt config in $A)"
  papt apt-get update -q >> "$LOG" 2>&1 || die "apt-get update (arm64, private config) failed (see $LOG)"
  KPKG=$(APT_CONFIG=$A/apt.conf apt-cache depends linux-image-arm64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$KPKG" ] || die "cannot resolve the kernel: linux-image-arm64 has no linux-image-<version> dependency"
  # shellcheck disable=SC2086
  pkgs=$(APT_CONFIG=$A/apt.conf apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances $USERLAND | grep -v '^[ <]' | sort -u | grep -vxE "$NOT_NEEDED")
  # shellcheck disable=SC2086
  uris=$(cd "$CACHE/debs" && APT_CONFIG=$A/apt.conf apt-get download --print-uris -q "$KPKG" $pkgs) ||
    die "apt-get download --print-uris failed"
  # 'URI' FILE SIZE SHA256:HASH
  echo "$uris" | awk '{sub(/^SHA256:/, "", $4); print $2, $4}' | sort > "$M.new"
  missing=$(while read -r f h; do
    [ -s "$CACHE/debs/$f" ] && [ "$(sha256sum < "$CACHE/debs/$f" | cut -d' ' -f1)" = "$h" ] || echo "${f%%_*}"
  done < "$M.new")
  if [ -n "$missing" ]; then
    say "downloading $(echo "$missing" | wc -w) .debs"
    # shellcheck disable=SC2086
    (cd "$CACHE/debs" && papt apt-get download -q $missing >> "$LOG" 2>&1) || die "apt-get download failed (see $LOG)"
  fi
  while read -r f h; do
    [ "$(sha256sum < "$CACHE/debs/$f" | cut -d' ' -f1)" = "$h" ] || die "$f: sha256 differs from the archive's"
  done < "$M.new"
  mv "$M.new" "$M"
  (cd "$CACHE/debs" && for f in *.deb; do grep -q "^$f " "$M" || rm -f "$f"; done)
  say "$(wc -l < "$M") arm64 .debs in $CACHE/debs ($(du -sm "$CACHE/debs" | cut -f1) MB) in $(($(date +%s) - ts)) s"
else
  say "reusing the cached arm64 .debs ($(wc -l < "$M") packages; ARM64_LANE_REFRESH=1 asks the mirror again)"
fi
KDEB=$(awk '$1 ~ /^linux-image-[0-9]/{print $1}' "$M")
KVER=$(echo "$KDEB" | sed -E 's/^linux-image-([^_]+)_.*/\1/')
KPKGVER=$(echo "$KDEB" | cut -d_ -f2)
[ -n "$KVER" ] || die "no kernel package in $M"

# --- 3. the guests' root, built once per package set and lane version ---------------
RKEY=$(cat "$M" "$LANE/mkroot.sh" "$LANE/initramfs-init" | sha256sum | cut -c1-16)
RFS=$CACHE/rootfs-$RKEY
if [ ! -e "$RFS/.done" ]; then
  ts=$(date +%s)
  say "building the guests' root ($KVER, $(wc -l < "$M") packages) into $RFS"
  rm -rf "$CACHE"/build.*
  B=$(mktemp -d "$CACHE/build.XXXXXX")
  mkdir "$B/out"
  (cd "$CACHE/debs" && mkdir "$B/debs" && for f in $(cut -d' ' -f1 "$M"); do ln "$f" "$B/debs/$f"; done)
  bounded 600 unshare --mount --propagation private -- "$LANE/mkroot.sh" "$B/out" "$B/debs" "$KVER" >> "$LOG" 2>&1 ||
    { tail -n 20 "$LOG"; die "building the root failed (see $LOG)"; }
  tail -n 1 "$LOG" | sed 's/^/    /'
  touch "$B/out/.done"
  mv "$B/out" "$RFS"
  rm -rf "$B"
  say "root built in $(($(date +%s) - ts)) s"
else
  say "reusing the guests' root $RFS"
fi
# Roots of older package sets or lane versions go, unless a run still uses one.
for d in "$CACHE"/rootfs-*; do
  [ "$d" = "$RFS" ] || [ ! -d "$d" ] || (exec 6<"$d/.done" && flock -xn 6 && rm -rf "$d") 2>/dev/null || true
done
exec 7<"$RFS/.done"
bounded 60 flock -s 7   # this run uses RFS (a later run's pruning skips it)
flock -u 8
exec 8>&-

# --- 4. binaries ------------------------------------------------------------------------
RUN=$(mktemp -d /tmp/migrate-arm64-lane-run.XXXXXX)
S=$RUN/share   # the guests' /run/lane (read-only 9p)
mkdir -p "$S/old" "$S/new" "$RUN/cli"
ts=$(date +%s)
say "building the release (DIST=<tmp> ./scripts/release.sh), labtool${KRUN:+ and the agent/kernel tests} for linux/arm64"
DIST=$RUN/dist bounded 900 ./scripts/release.sh >> "$LOG" 2>&1 || die "release.sh failed (see $LOG)"
CLI=$RUN/dist/migrate-linux-amd64
AGENT=$RUN/dist/agents/migrate-linux-arm64
[ -x "$CLI" ] && [ -s "$AGENT" ] || die "the release has no migrate-linux-amd64 or agents/migrate-linux-arm64"
AGENT_SHA=$(sha256sum < "$AGENT" | cut -d' ' -f1)
CGO_ENABLED=0 GOOS=linux GOARCH=arm64 bounded 600 go build -o "$S/labtool" ./lab/labtool >> "$LOG" 2>&1 ||
  die "building labtool for linux/arm64 failed"
if [ -n "$KRUN" ]; then
  CGO_ENABLED=0 GOOS=linux GOARCH=arm64 bounded 600 go test -c -o "$S/kernel.test" ./agent/kernel >> "$LOG" 2>&1 ||
    die "building agent/kernel's tests for linux/arm64 failed"
fi
cp "$LANE/init2" "$S/init2"
say "built in $(($(date +%s) - ts)) s ($("$CLI" version 2>/dev/null | head -1 || echo '?'); arm64 agent sha256 ${AGENT_SHA:0:16}...)"

# --- 5. this run's keys and the guests' setup ---------------------------------------------
ssh-keygen -q -t ed25519 -N '' -C arm64-lane-client -f "$RUN/id"
cp "$RUN/id.pub" "$S/authorized_keys"
for h in old new; do ssh-keygen -q -t ed25519 -N '' -C "arm64-lane-$h" -f "$S/$h/ssh_host_ed25519_key"; done

L=/run/lane/labtool
cat > "$S/old/setup.sh" <<EOF
ip route add $NEW_IP/32 dev eth1
ip netns add client
ip link add vc0 type veth peer name vc1 netns client
ip addr add $CLIENT_GW/24 dev vc0
ip link set vc0 up
ip -n client link set lo up
ip -n client addr add $CLIENT_IP/24 dev vc1
ip -n client link set vc1 up
ip -n client route add default via $CLIENT_GW
for p in $TCP_PORT $STAY_PORT; do setsid $L serve -name old -listen $OLD_IP:\$p </dev/null >/tmp/serve-tcp-\$p.log 2>&1 & done
setsid $L serve -udp -name old -listen $OLD_IP:$UDP_PORT </dev/null >/tmp/serve-udp.log 2>&1 &
ip netns exec client setsid $L serve -name peer -listen $CLIENT_IP:$PEER_PORT </dev/null >/tmp/serve-peer.log 2>&1 &
EOF
# (Not "setsid ip netns exec ...": busybox's setsid runs its own small ip
# applet before the one in PATH, as busybox sh does.)
# NEW's TCP server listens before the plan (so apply's readiness check and
# probe see it); its UDP server must bind OLD's address, which only becomes
# local on NEW with the apply: it starts after it.
cat > "$S/new/setup.sh" <<EOF
ip route add $OLD_IP/32 dev eth1
setsid $L serve -name $SERVED_BY -listen 0.0.0.0:$TCP_PORT </dev/null >/tmp/serve-tcp.log 2>&1 &
EOF
[ "$SERVED_BY" = new ] || say "ARM64_LANE_SERVED_BY=$SERVED_BY: NEW's server reports that name, so the served-by check must FAIL"

# --- 6. boot OLD and NEW -------------------------------------------------------------------
q() { printf '%s' "${1//,/,,}"; }   # a path inside a qemu option
declare -A QPID PORT
boot() { # boot NAME ETH1_CIDR MAC_SUFFIX PEER
  : > "$RUN/$1.console"
  setpriv --pdeathsig KILL -- qemu-system-aarch64 -nodefaults -no-user-config -display none -no-reboot \
    -M virt -cpu "$CPU" -accel tcg,thread=multi -smp "$SMP" -m "$MEM" \
    -kernel "$RFS/root/boot/vmlinuz-$KVER" -initrd "$RFS/initrd.img" \
    -append "console=ttyAMA0 panic=-1 quiet mitigations=off cryptomgr.notests lab.host=$1 lab.addr=$2" \
    -serial "file:$(q "$RUN/$1.console")" \
    -fsdev "local,id=root,path=$(q "$RFS/root"),security_model=none,multidevs=remap,readonly=on" \
    -device virtio-9p-pci,fsdev=root,mount_tag=root \
    -fsdev "local,id=lane,path=$(q "$S"),security_model=none,readonly=on" \
    -device virtio-9p-pci,fsdev=lane,mount_tag=lane \
    -netdev user,id=n0,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:0-10.0.2.15:22 \
    -device "virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:a6:00:$3" \
    -netdev "dgram,id=n1,local.type=unix,local.path=$(q "$RUN/$1.sock"),remote.type=unix,remote.path=$(q "$RUN/$4.sock")" \
    -device "virtio-net-pci,netdev=n1,romfile=,mac=52:54:00:a6:01:$3" \
    </dev/null >"$RUN/$1.qemu.log" 2>&1 &
  QPID[$1]=$!
  QPIDS+=($!)
}
ts=$(date +%s)
say "booting OLD and NEW: Debian $KVER ($KPKGVER), qemu-system-aarch64 $QEMU_VERSION TCG -cpu $CPU, $SMP vCPU, $MEM each"
boot old "$OLD_IP/24" 01 new
boot new "$NEW_IP/24" 02 old
# The sshd forward's port: the kernel picked it (hostfwd port 0); qemu's only
# TCP listener. Everything qemu listens on must be on 127.0.0.1.
for h in old new; do
  for _ in $(seq 100); do
    PORT[$h]=$(ss -Hltnp 2>/dev/null | awk -v p="pid=${QPID[$h]}," 'index($0, p) {n = split($4, a, ":"); print a[n]; exit}')
    [ -z "${PORT[$h]}" ] || break
    kill -0 "${QPID[$h]}" 2>/dev/null || { show "$RUN/$h.qemu.log"; die "qemu for $h exited at start"; }
    sleep 0.1
  done
  [ -n "${PORT[$h]}" ] || die "qemu for $h opened no listener"
done
listeners=$(ss -Hltunp 2>/dev/null | grep -E "pid=(${QPID[old]}|${QPID[new]})," | awk '{print $5}' | sort -u | tr '\n' ' ')
if echo "$listeners" | tr ' ' '\n' | grep -v '^$' | grep -qv '^127\.0\.0\.1:'; then
  die "qemu listens beyond 127.0.0.1: $listeners"
fi
{
  printf '[127.0.0.1]:%s %s\n' "${PORT[old]}" "$(cut -d' ' -f1-2 "$S/old/ssh_host_ed25519_key.pub")"
  printf '[127.0.0.1]:%s %s\n' "${PORT[new]}" "$(cut -d' ' -f1-2 "$S/new/ssh_host_ed25519_key.pub")"
} > "$RUN/known_hosts"
for _ in $(seq 240); do
  grep -q 'ARM64-LANE READY' "$RUN/old.console" && grep -q 'ARM64-LANE READY' "$RUN/new.console" && break
  for h in old new; do kill -0 "${QPID[$h]}" 2>/dev/null || { show "$RUN/$h.console" 40; die "guest $h died while booting"; }; done
  sleep 0.5
done
for h in old new; do
  grep -q 'ARM64-LANE READY' "$RUN/$h.console" || { show "$RUN/$h.console" 40; die "guest $h did not come up within 120 s"; }
  if grep -q 'ARM64-LANE ERROR' "$RUN/$h.console"; then show "$RUN/$h.console" 40; die "guest $h: $(grep -m1 'ARM64-LANE ERROR' "$RUN/$h.console")"; fi
done
say "guests up in $(($(date +%s) - ts)) s (ssh: old 127.0.0.1:${PORT[old]}, new 127.0.0.1:${PORT[new]}; qemu listens on: $listeners)"
grep -h 'ARM64-LANE READY' "$RUN/old.console" "$RUN/new.console" | sed 's/^/    /'

# gssh HOST SECS SCRIPT: run SCRIPT (sh) as root on a guest with this run's key.
gssh() {
  bounded "$2" ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i "$RUN/id" \
    -o UserKnownHostsFile="$RUN/known_hosts" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \
    -o ConnectTimeout=60 -o ServerAliveInterval=15 -o LogLevel=ERROR -p "${PORT[$1]}" root@127.0.0.1 "$3"
}
# What migrate may change on a host, as the e2e tests snapshot it, plus ip -d link.
SNAP='for c in "nft list ruleset" "ip rule" "ip -6 rule" "ip route show table all" "ip -6 route show table all" "ip addr" "ip -d link"; do echo "### $c"; $c 2>&1; done
for s in net.ipv4.ip_forward net.ipv4.conf.all.rp_filter net.ipv4.conf.default.rp_filter net.ipv4.conf.mig0.rp_filter net.ipv4.conf.mig0.accept_local net.ipv4.conf.all.forwarding net.ipv6.conf.all.forwarding net.ipv6.conf.default.forwarding net.ipv6.conf.eth0.forwarding net.ipv6.conf.eth0.accept_ra net.ipv6.conf.default.accept_ra; do echo "### sysctl $s"; sysctl -n "$s" 2>&1; done'
# complete FILE: the snapshot has every section, down to the last one.
complete() { grep -q '^### ip -d link' "$1" && grep -q '^### sysctl net.ipv6.conf.default.accept_ra' "$1"; }
D="$L dial -timeout 20s"
CDIAL="ip netns exec client $D"

# --- 7. before the first plan -----------------------------------------------------------------
ts=$(date +%s)
on_both before 180 "echo @@machine; uname -m; echo @@kernel; uname -r; echo @@snapshot; $SNAP
  if ip netns list | grep -q client; then
    echo @@dial-tcp; $CDIAL $OLD_IP:$TCP_PORT 2>&1
    echo @@peer; $D $CLIENT_IP:$PEER_PORT 2>&1
  fi
  echo @@end" || die "cannot reach the guests over SSH"
M_OLD=$(section "$RUN/before.old" machine) M_NEW=$(section "$RUN/before.new" machine)
GUEST_KERNEL=$(section "$RUN/before.old" kernel)
if [ "$M_OLD" = aarch64 ] && [ "$M_NEW" = aarch64 ]; then
  pass "both guests are aarch64 (uname -m over SSH), kernel $GUEST_KERNEL"
else
  die "uname -m: old '$M_OLD', new '$M_NEW' (want aarch64)"
fi
for h in old new; do section "$RUN/before.$h" snapshot > "$RUN/snap-before.$h"; done
out=$(section "$RUN/before.old" dial-tcp)
case $out in *"served-by=old peer=$CLIENT_IP "*) pass "before: client -> $OLD_IP:$TCP_PORT served by OLD" ;;
  *) bad "before: client -> $OLD_IP:$TCP_PORT: '$out', want served-by=old" ;; esac
out=$(section "$RUN/before.old" peer)
case $out in *"served-by=peer peer=$CLIENT_GW "*) pass "before: OLD -> the peer $CLIENT_IP:$PEER_PORT, which sees $CLIENT_GW" ;;
  *) bad "before: OLD -> the peer $CLIENT_IP:$PEER_PORT: '$out', want served-by=peer peer=$CLIENT_GW" ;; esac
say "baseline taken in $(($(date +%s) - ts)) s"

# --- 8. the CLI: plan, apply -------------------------------------------------------------------
cat > "$RUN/cli/migration.hcl" <<EOF
# written by scripts/vm-lane-arm64.sh for this run
host "old" {
  ssh           = "root@127.0.0.1:${PORT[old]}"
  identity_file = "$RUN/id"
  known_hosts   = "$RUN/known_hosts"
}

host "new" {
  ssh           = "root@127.0.0.1:${PORT[new]}"
  identity_file = "$RUN/id"
  known_hosts   = "$RUN/known_hosts"
}

tunnel {
  type         = "vxlan"
  old_endpoint = "$OLD_IP"
  new_endpoint = "$NEW_IP"
}

service "web" {
  address  = "$OLD_IP"
  protocol = "tcp"
  ports    = [$TCP_PORT]
  stage    = "new"
}

service "dns" {
  address       = "$OLD_IP"
  protocol      = "udp"
  ports         = [$UDP_PORT]
  stage         = "new"
  allow_unready = true # NEW's UDP server binds $OLD_IP, local on NEW only after the apply
}
EOF
# cli NAME SECS ARGS...: the release CLI in RUN/cli, isolated from root's
# ~/.ssh/config and ssh-agent; output in RUN/cli/NAME.log; returns its status.
cli() {
  local name=$1 secs=$2 rc=0 s
  shift 2
  s=$(date +%s)
  (cd "$RUN/cli" && unset SSH_AUTH_SOCK && export MIGRATE_SSH_CONFIG="$RUN/no-ssh-config" &&
    exec timeout --foreground -k 5 "$secs" "$CLI" "$@") > "$RUN/cli/$name.log" 2>&1 &
  wait $! || rc=$?
  { echo "----- migrate $* (exit $rc, $(($(date +%s) - s)) s)"; cat "$RUN/cli/$name.log"; } >> "$LOG"
  say "migrate $* -> exit $rc in $(($(date +%s) - s)) s"
  return "$rc"
}
# init against the arm64 hosts (the agent's sock_diag listener dump runs on
# arm64 here). Both guests sit behind qemu's user network, so sshd on each
# says it was reached on 10.0.2.15: init must refuse to guess the tunnel
# endpoints, then take them from --old-endpoint/--new-endpoint. The rest of
# the lane uses the plan written above (two services of its own choosing).
INIT="init --old root@127.0.0.1:${PORT[old]} --new root@127.0.0.1:${PORT[new]} --identity-file $RUN/id --known-hosts $RUN/known_hosts --force"
rc=0; cli init-guess 300 $INIT -o init-guess.hcl || rc=$?
if [ "$rc" = 1 ] && grep -q 'both tunnel endpoints came out as 10.0.2.15; give them with --old-endpoint and --new-endpoint' "$RUN/cli/init-guess.log" && [ ! -e "$RUN/cli/init-guess.hcl" ]; then
  pass "init behind look-alike NATs refuses to guess the tunnel endpoints"
else
  show "$RUN/cli/init-guess.log"; bad "init without endpoints: exit $rc (want 1, 'both tunnel endpoints came out as 10.0.2.15', no file)"
fi
rc=0; cli init 300 $INIT --old-endpoint "$OLD_IP" --new-endpoint "$NEW_IP" -o init.hcl || rc=$?
if [ "$rc" = 0 ] && grep -q "tcp $OLD_IP ports $TCP_PORT, $STAY_PORT (process labtool)" "$RUN/cli/init.log" &&
   grep -q "udp $OLD_IP ports $UDP_PORT (process labtool)" "$RUN/cli/init.log" &&
   grep -q 'it is the SSH port migrate uses' "$RUN/cli/init.log" &&
   grep -q "old_endpoint = \"$OLD_IP\"" "$RUN/cli/init.hcl" && grep -q "new_endpoint = \"$NEW_IP\"" "$RUN/cli/init.hcl"; then
  pass "init read OLD's listeners on arm64 (tcp $TCP_PORT, $STAY_PORT and udp $UDP_PORT by labtool; sshd's port kept out) and took the given endpoints"
else
  show "$RUN/cli/init.log"; [ -e "$RUN/cli/init.hcl" ] && show "$RUN/cli/init.hcl" 40
  bad "init with --old-endpoint/--new-endpoint: exit $rc, or the services/endpoints are not as expected"
fi
rc=0; cli init-validate 60 validate -f init.hcl || rc=$?
[ "$rc" = 0 ] && pass "the plan init wrote validates" || { show "$RUN/cli/init-validate.log"; bad "validate init.hcl: exit $rc"; }

rc=0; cli plan 300 plan -f migration.hcl --out plan.out --detailed-exitcode || rc=$?
if [ "$rc" = 2 ] && grep -q "type vxlan local $OLD_IP remote $NEW_IP" "$RUN/cli/plan.log"; then
  pass "plan: $(grep -m1 '^Plan:' "$RUN/cli/plan.log")"
else
  show "$RUN/cli/plan.log"; die "plan: exit $rc (want 2: changes), or no vxlan link from $OLD_IP to $NEW_IP in it"
fi
on_both afterplan 180 "$SNAP" || true
for h in old new; do
  if ! complete "$RUN/afterplan.$h"; then
    bad "$h: the snapshot after the plan is incomplete (ssh failed?)"; echo x > "$RUN/diff-plan.$h"
  elif diff -u "$RUN/snap-before.$h" "$RUN/afterplan.$h" > "$RUN/diff-plan.$h"; then :; else
    show "$RUN/diff-plan.$h" 40; bad "plan changed host $h"
  fi
done
[ -s "$RUN/diff-plan.old" ] || [ -s "$RUN/diff-plan.new" ] || pass "plan changed neither host"

rc=0; cli apply 400 apply plan.out --auto-approve || rc=$?
if [ "$rc" != 0 ] || ! grep -q '^Apply complete!' "$RUN/cli/apply.log"; then
  show "$RUN/cli/apply.log" 40; die "apply: exit $rc, no 'Apply complete!'"
fi
if grep -q 'tunnel verified in both directions' "$RUN/cli/apply.log"; then
  pass "apply: $(grep -m1 '^Apply complete!' "$RUN/cli/apply.log" | sed 's/\. State:.*//'), tunnel verified in both directions"
else
  show "$RUN/cli/apply.log" 40; bad "apply did not report 'tunnel verified in both directions'"
fi
if grep -q "probe: service \"web\": .*reached NEW" "$RUN/cli/apply.log"; then
  pass "apply's probe: web reached NEW through the tunnel"
else
  bad "apply's probe did not reach NEW for web: $(grep -m1 'probe: service "web"' "$RUN/cli/apply.log")"
fi

# --- 9. the data path ------------------------------------------------------------------------
AGENTS='echo @@agents; for f in /var/lib/migrate/bin/*; do [ -f "$f" ] && echo "$(sha256sum < "$f" | cut -d" " -f1) $f"; done'
gssh new 120 "$AGENTS
  setsid $L serve -udp -name $SERVED_BY -listen $OLD_IP:$UDP_PORT </dev/null >/tmp/serve-udp.log 2>&1 &
  i=0; until ss -Hlun | grep -q '$OLD_IP:$UDP_PORT '; do i=\$((i + 1)); [ \$i -lt 100 ] || break; sleep 0.2; done
  echo @@outbound; $D -bind $OLD_IP $CLIENT_IP:$PEER_PORT 2>&1
  echo @@debug; ip rule; ip route show table all; ss -tan; echo @@end" > "$RUN/after.new" 2>&1 || bad "ssh to new after the apply failed: $(tail -n 3 "$RUN/after.new" | tr '\n' ' ')"
gssh old 120 "$AGENTS
  echo @@tcp; $CDIAL $OLD_IP:$TCP_PORT 2>&1
  echo @@stay; $CDIAL $OLD_IP:$STAY_PORT 2>&1
  echo @@udp; $CDIAL -udp $OLD_IP:$UDP_PORT 2>&1
  echo @@debug; ip netns exec client ss -tan; cat /tmp/serve-peer.log; ip rule; ip route show table all; nft list ruleset; echo @@end" > "$RUN/after.old" 2>&1 || bad "ssh to old after the apply failed: $(tail -n 3 "$RUN/after.old" | tr '\n' ' ')"
for h in old new; do { echo "----- after apply on $h"; cat "$RUN/after.$h"; } >> "$LOG"; done
for h in old new; do
  a=$(section "$RUN/after.$h" agents)
  if [ "$(echo "$a" | grep -c .)" = 1 ] && [ "${a%% *}" = "$AGENT_SHA" ]; then
    pass "$h: the agent the CLI installed is byte-identical to the release's agents/migrate-linux-arm64 (sha256 ${AGENT_SHA:0:16}...)"
  else
    bad "$h: installed agent(s) '$a' differ from agents/migrate-linux-arm64 ($AGENT_SHA)"
  fi
done
want() { # want WHAT OUTPUT NEEDLE...: every NEEDLE in OUTPUT
  local what=$1 out=$2 n
  shift 2
  for n in "$@"; do
    case $out in *"$n"*) ;; *) bad "$what: got '$out', want '$n'"; return ;; esac
  done
  pass "$what ($(echo "$out" | cut -d' ' -f1-2))"
}
want "client $CLIENT_IP -> $OLD_IP:$TCP_PORT/tcp served by NEW with the client's real IP" "$(section "$RUN/after.old" tcp)" \
  "served-by=new peer=$CLIENT_IP " "remote=$OLD_IP:$TCP_PORT"
want "client -> $OLD_IP:$STAY_PORT/tcp (not in the plan) stays on OLD" "$(section "$RUN/after.old" stay)" "served-by=old peer=$CLIENT_IP "
want "client -> $OLD_IP:$UDP_PORT/udp answered by NEW with the client's real IP" "$(section "$RUN/after.old" udp)" \
  "served-by=new peer=$CLIENT_IP " "remote=$OLD_IP:$UDP_PORT"
want "NEW connects out from $OLD_IP: the remote peer $CLIENT_IP sees OLD's IP" "$(section "$RUN/after.new" outbound)" \
  "served-by=peer peer=$OLD_IP "

# --- 10. status, rollback ------------------------------------------------------------------------
rc=0; cli status 180 status -f migration.hcl || rc=$?
show "$RUN/cli/status.log" 12
for svc in web dns; do
  line=$(awk -v s="$svc" '$1 == s' "$RUN/cli/status.log")
  if [ "$rc" = 0 ] && echo "$line" | awk '{exit !($4 == "new" && $5 + 0 >= 1)}'; then
    pass "status: $svc at stage new, $(echo "$line" | awk '{print $5}') new flow(s) to NEW"
  else
    bad "status (exit $rc): $svc: '$line', want stage new and >= 1 new flow to NEW"
  fi
done

rc=0; cli rollback 400 rollback -f migration.hcl --all --auto-approve || rc=$?
if [ "$rc" = 0 ] && grep -q '^Rollback complete!' "$RUN/cli/rollback.log"; then
  pass "rollback --all: $(grep -m1 '^Rollback complete!' "$RUN/cli/rollback.log")"
else
  show "$RUN/cli/rollback.log" 40; bad "rollback --all: exit $rc, no 'Rollback complete!'"
fi
on_both restored 180 "echo @@snapshot; $SNAP
  if ip netns list | grep -q client; then echo @@tcp; $CDIAL $OLD_IP:$TCP_PORT 2>&1; echo @@udp; $CDIAL -udp $OLD_IP:$UDP_PORT 2>&1; fi
  echo @@end" || true
for h in old new; do
  section "$RUN/restored.$h" snapshot > "$RUN/snap-after.$h"
  if ! complete "$RUN/snap-before.$h" || ! complete "$RUN/snap-after.$h"; then
    bad "$h: a snapshot is incomplete (ssh failed?): cannot compare"
  elif diff -u "$RUN/snap-before.$h" "$RUN/snap-after.$h" > "$RUN/diff.$h"; then
    pass "$h after rollback --all: nft ruleset, ip rules, routes, addresses, ip -d link and sysctls equal the snapshot before the plan"
  else
    show "$RUN/diff.$h" 60; bad "$h after rollback --all differs from the snapshot before the plan (diff above)"
  fi
done
want "after rollback: client -> $OLD_IP:$TCP_PORT/tcp served by OLD" "$(section "$RUN/restored.old" tcp)" "served-by=old peer=$CLIENT_IP "
want "after rollback: client -> $OLD_IP:$UDP_PORT/udp answered by OLD" "$(section "$RUN/restored.old" udp)" "served-by=old peer=$CLIENT_IP "

# --- 11. agent/kernel's tests on arm64 ---------------------------------------------------------------
KSUM="not run (ARM64_LANE_KERNEL_RUN empty)"
if [ -n "$KRUN" ]; then
  ts=$(date +%s)
  say "agent/kernel -test.run '$KRUN' in guest new"
  rc=0
  gssh new 900 "cd /tmp && /run/lane/kernel.test -test.run '$KRUN' -test.v -test.count 1 -test.timeout 12m 2>&1" \
    > "$RUN/ktest.log" 2>&1 || rc=$?
  { echo "----- agent/kernel tests (exit $rc)"; cat "$RUN/ktest.log"; } >> "$LOG"
  res='(^|netns: )\s*--- '
  # the results as the tests report them inside their network namespaces
  grep -E "netns: \s*--- (PASS|FAIL|SKIP)" "$RUN/ktest.log" | sed -E 's/^.*netns: //; s/^ */    /' || true
  kfail=
  [ "$rc" = 0 ] || kfail="exit status $rc$([ "$rc" = 124 ] && echo ' (timeout)')"
  if grep -qE "${res}(FAIL|SKIP)|^FAIL|^panic" "$RUN/ktest.log"; then kfail="${kfail:+$kfail; }a test failed or was skipped"; fi
  grep -qE "${res}PASS" "$RUN/ktest.log" || kfail="${kfail:+$kfail; }no test passed"
  missing=
  for t in $KTESTS; do grep -qE "^--- PASS: $t " "$RUN/ktest.log" || missing="$missing $t"; done
  [ -z "$missing" ] || kfail="${kfail:+$kfail; }did not run and pass:$missing"
  npass=$(grep -cE '^--- PASS' "$RUN/ktest.log" || true)
  if [ -z "$kfail" ]; then
    KSUM="PASS ($npass tests, $(($(date +%s) - ts)) s)"
    pass "agent/kernel on arm64: $npass tests passed in $(($(date +%s) - ts)) s: $(grep -oE '^--- PASS: [A-Za-z0-9_]+' "$RUN/ktest.log" | cut -d' ' -f3 | tr '\n' ' ')"
  else
    KSUM="FAIL"
    grep -E "${res}FAIL|_test.go:[0-9]+:|^panic" "$RUN/ktest.log" | head -n 30 | sed 's/^/    | /'
    bad "agent/kernel on arm64: $kfail"
  fi
fi

# --- 12. the host is as it was ------------------------------------------------------------------------
BUSYBOX_AFTER=$(host_busybox)
if [ "$BUSYBOX_AFTER" = "$BUSYBOX_BEFORE" ] && { [ "$BUSYBOX_AFTER" = absent ] || echo "$BUSYBOX_AFTER" | grep -q 'x86-64'; }; then
  pass "host /bin/busybox unchanged ($BUSYBOX_AFTER)"
else
  bad "host /bin/busybox changed: before '$BUSYBOX_BEFORE', now '$BUSYBOX_AFTER'"
fi
if [ "$(host_net)" = "$HOSTNET_BEFORE" ]; then
  pass "host root network namespace unchanged (links, addresses, rules, routes)"
else
  diff <(echo "$HOSTNET_BEFORE") <(host_net) | sed 's/^/    | /' || true
  bad "the host's root network namespace changed during the run"
fi

# --- summary ------------------------------------------------------------------------------------------
echo | tee -a "$LOG"
say "summary"
{
  echo "guests:  old and new: $M_OLD, Debian kernel $GUEST_KERNEL (package $KPKGVER), qemu-system-aarch64 $QEMU_VERSION TCG -cpu $CPU"
  echo "laptop:  release CLI dist/migrate-linux-amd64 on $(uname -m), arm64 agent sha256 $AGENT_SHA"
  for c in "${CHECKS[@]}"; do echo "  $c"; done
  echo "time:    $(($(date +%s) - T0)) s total"
} | tee -a "$LOG"
SUMMARY_DONE=1
n_pass=$(printf '%s\n' "${CHECKS[@]}" | grep -c '^PASS' || true)
n_fail=$(printf '%s\n' "${CHECKS[@]}" | grep -c '^FAIL' || true)
if [ -n "$FAILED" ]; then
  say "FAIL: $n_fail of $((n_pass + n_fail)) checks failed (full output: $LOG)"
  exit 1
fi
say "arm64 lane: hosts aarch64 kernel $GUEST_KERNEL: init/plan/apply/status/rollback PASS, data path (tcp, udp, outbound from OLD's IP) PASS, agent sha256 PASS, rollback restores both hosts PASS, agent/kernel $KSUM ($n_pass checks, $(($(date +%s) - T0)) s)"
