#!/usr/bin/env bash
# Reboot lane: a confirmed apply survives real reboots of either host.
#
# Two Debian 12 amd64 guests, OLD and NEW (Debian's stock kernel under
# qemu-system-x86_64, TCG), that boot like servers: systemd is PID 1, the
# network comes up from /etc/network/interfaces (ifupdown), sshd and the lab's
# servers are systemd units, and everything a guest writes to /etc, /var/lib
# or /root is on its own disk (an ext4 image, the upper layer of its root), so
# it survives the guest's reboots, while the kernel's state does not. The
# release CLI (dist/migrate-linux-amd64) moves a TCP and a UDP service from
# OLD to NEW over a vxlan tunnel and the lane checks from the outside:
#   - apply; the data path works: a client dialing OLD's IP:port is served by
#     NEW, which sees the client's address (TCP and UDP), and NEW connecting
#     out from OLD's IP reaches a peer that sees OLD's IP;
#   - reboot NEW (systemctl reboot), then OLD, then both at once: each time the
#     same checks pass again without any migrate command, and the lane prints
#     how long it took from the boot (the guest's reset, and the guest
#     kernel's own uptime) until the data path worked;
#   - an apply left unconfirmed (the agent's test fault) is gone after a
#     reboot;
#   - rollback --all leaves both guests as before the first plan: nft ruleset,
#     ip rules, routes, addresses, links, sysctls, and /etc/systemd/system.
# Every failed check fails the lane (exit 1) with a message saying which.
#
# The network: qemu runs inside a network namespace the lane creates (LAB),
# holding a bridge with one tap per guest (eth1, the guests' link) and the
# address of the client and of the remote peer, so the client is neither
# guest and survives their reboots. sshd is reached through qemu's user
# network (eth0, slirp restrict=on) forwarded to 127.0.0.1 in LAB; the CLI and
# ssh run in LAB too. The root network namespace is never changed.
#
# What comes from where (rebuilt from nothing; downloads are cached):
#   - host tools via apt-get: qemu-system-x86, e2fsprogs (mkfs.ext4 -d), ...;
#   - the guests' kernel and userland: Debian bookworm amd64 .debs fetched
#     through a PRIVATE apt configuration (own lists and empty dpkg status)
#     into $REBOOT_LANE_CACHE, unpacked with dpkg-deb -x by
#     scripts/reboot-lane/mkroot.sh (nothing is installed on this host);
#   - the binaries: DIST=<tmp> ./scripts/release.sh, lab/labtool.
#
# Usage (root):  ./scripts/vm-lane-reboot.sh
# Environment:   REBOOT_LANE_CACHE   (default /var/cache/migrate-reboot-lane)
#                REBOOT_LANE_REFRESH (1: ask the mirror again for the packages)
#                REBOOT_LANE_MIRROR  (default http://deb.debian.org)
#                REBOOT_LANE_TIMEOUT (default 25m: the whole run)
#                REBOOT_LANE_BOOT_TIMEOUT (default 300: seconds a guest may take
#                                    from its reset until the data path works)
#                REBOOT_LANE_LOG     (default /tmp/migrate-reboot-lane.log)
#                REBOOT_LANE_MEM, REBOOT_LANE_SMP (per guest; default 768M, 1)
#                REBOOT_LANE_DROP_UNIT (1: remove apply's boot unit from both hosts
#                                    after the apply, to prove the lane goes red)
# Exit status: 0 all checks passed; 1 a check failed; 2 usage; 124 timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LANE=$ROOT/scripts/reboot-lane

TOTAL=${REBOOT_LANE_TIMEOUT:-25m}
if [ -z "${REBOOT_LANE_UNDER_TIMEOUT:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "reboot-lane: run as root (apt-get, qemu, netns, /var/cache)" >&2; exit 2; }
  set +e
  REBOOT_LANE_UNDER_TIMEOUT=1 timeout --foreground -k 30s "$TOTAL" bash "$0" "$@"
  rc=$?
  set -e
  [ "$rc" != 124 ] || echo "== reboot-lane: FAIL: the whole run exceeded REBOOT_LANE_TIMEOUT=$TOTAL" >&2
  exit "$rc"
fi

CACHE=${REBOOT_LANE_CACHE:-/var/cache/migrate-reboot-lane}
MIRROR=${REBOOT_LANE_MIRROR:-http://deb.debian.org}
LOG=${REBOOT_LANE_LOG:-/tmp/migrate-reboot-lane.log}
MEM=${REBOOT_LANE_MEM:-768M}
SMP=${REBOOT_LANE_SMP:-1}
BOOT_TIMEOUT=${REBOOT_LANE_BOOT_TIMEOUT:-300}

# The guests' packages: the kernel (resolved from linux-image-amd64) and this
# userland with its dependencies, minus what only maintainer scripts use.
USERLAND='dash systemd systemd-sysv udev ifupdown openssh-server nftables iproute2 kmod busybox-static bash coreutils procps netbase'
NOT_NEEDED='perl|perl-modules-5.36|libperl5.36|lib.*-perl|debconf|cdebconf|libdebian-installer4|libnewt0.52|libslang2|libtextwrap1|ucf|adduser|dpkg|install-info|gawk|libmpfr6|libsigsegv2|original-awk|usrmerge|usr-is-merged|runit-helper|sensible-utils|lsb-base|base-files|openssh-sftp-server|linux-base|initramfs-tools|initramfs-tools-core|klibc-utils|libklibc|busybox|cpio|zstd|pigz'

# The lab (documentation addresses only).
OLD_IP=198.51.100.10 NEW_IP=203.0.113.20      # eth1 of each: the tunnel endpoints
CLIENT_IP=192.0.2.100                         # the client and remote peer, in LAB
TCP_PORT=8080 STAY_PORT=8081 UDP_PORT=5353 PEER_PORT=9000

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
LANE_TAG=reboot-lane
# shellcheck source=lib/guest-lane.sh
. "$ROOT/scripts/lib/guest-lane.sh"
: > "$LOG"
# cleanup (the library's) also removes the lab namespace, after the processes.
NS=
lane_cleanup() {
  if [ -n "$NS" ] && [ -e "/run/netns/$NS" ]; then
    for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
  fi
}
guest_lane_traps

# --- 1. host tools -------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
for pair in cpio:cpio depmod:kmod ssh:openssh-client ssh-keygen:openssh-client mkfs.ext4:e2fsprogs \
  setpriv:util-linux unshare:util-linux findmnt:util-linux flock:util-linux ss:iproute2 xz:xz-utils \
  dpkg-deb:dpkg apt-get:apt; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
[ -e /dev/net/tun ] || die "/dev/net/tun is missing (the guests' link uses tap devices)"
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -o DPkg::Lock::Timeout=300 -y -q --no-install-recommends "${need[@]}" >> "$LOG" 2>&1 ||
    { apt-get update -q >> "$LOG" 2>&1 && apt-get install -o DPkg::Lock::Timeout=300 -y -q --no-install-recommends "${need[@]}" >> "$LOG" 2>&1; } ||
    die "apt-get install ${need[*]} failed (see $LOG)"
fi
command -v go >/dev/null || die "go is not installed"
QEMU_VERSION=$(qemu-system-x86_64 --version | head -1 | sed 's/^QEMU emulator version //')
HOSTNET_BEFORE=$(host_net)

# --- 2. the amd64 .debs, through a private apt configuration ---------------------
mkdir -p "$CACHE"
exec 8>"$CACHE/.lock"
bounded 900 flock 8
A=$CACHE/apt
mkdir -p "$CACHE/debs"
private_apt "$A" amd64 "$MIRROR"
M=$CACHE/debs/manifest
# the set in the cache is this lane's (same package list) and complete
have_set() { [ -s "$M" ] && [ "$(cat "$M.userland" 2>/dev/null)" = "$USERLAND -$NOT_NEEDED" ] &&
  while read -r f _; do [ -s "$CACHE/debs/$f" ] || return 1; done < "$M"; }
if [ -n "${REBOOT_LANE_REFRESH:-}" ] || ! have_set; then
  ts=$(date +%s)
  say "resolving Debian bookworm amd64 packages (private apt config in $A)"
  papt apt-get update -q >> "$LOG" 2>&1 || die "apt-get update (private config) failed (see $LOG)"
  KPKG=$(APT_CONFIG=$A/apt.conf apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$KPKG" ] || die "cannot resolve the kernel: linux-image-amd64 has no linux-image-<version> dependency"
  # shellcheck disable=SC2086
  pkgs=$(APT_CONFIG=$A/apt.conf apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances $USERLAND | grep -v '^[ <]' | sort -u | grep -vxE "$NOT_NEEDED")
  # shellcheck disable=SC2086
  # (in an empty directory: apt-get download leaves out the .debs already in the current one)
  mkdir -p "$CACHE/empty"
  uris=$(cd "$CACHE/empty" && APT_CONFIG=$A/apt.conf apt-get download --print-uris -q "$KPKG" $pkgs) ||
    die "apt-get download --print-uris failed"
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
  echo "$USERLAND -$NOT_NEEDED" > "$M.userland"
  (cd "$CACHE/debs" && for f in *.deb; do grep -q "^$f " "$M" || rm -f "$f"; done)
  say "$(wc -l < "$M") amd64 .debs in $CACHE/debs ($(du -sm "$CACHE/debs" | cut -f1) MB) in $(($(date +%s) - ts)) s"
else
  say "reusing the cached .debs ($(wc -l < "$M") packages; REBOOT_LANE_REFRESH=1 asks the mirror again)"
fi
KDEB=$(awk '$1 ~ /^linux-image-[0-9]/{print $1}' "$M")
KVER=$(echo "$KDEB" | sed -E 's/^linux-image-([^_]+)_.*/\1/')
KPKGVER=$(echo "$KDEB" | cut -d_ -f2)
[ -n "$KVER" ] || die "no kernel package in $M"

# --- 3. the guests' shared root, built once per package set and lane version --------
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
for d in "$CACHE"/rootfs-*; do
  [ "$d" = "$RFS" ] || [ ! -d "$d" ] || (exec 6<"$d/.done" && flock -xn 6 && rm -rf "$d") 2>/dev/null || true
done
exec 7<"$RFS/.done"
bounded 60 flock -s 7
flock -u 8
exec 8>&-

# --- 4. binaries ------------------------------------------------------------------------
RUN=$(mktemp -d /tmp/migrate-reboot-lane-run.XXXXXX)
mkdir -p "$RUN/cli"
ts=$(date +%s)
say "building the release (DIST=<tmp> ./scripts/release.sh) and labtool"
DIST=$RUN/dist bounded 900 ./scripts/release.sh >> "$LOG" 2>&1 || die "release.sh failed (see $LOG)"
CLI=$RUN/dist/migrate-linux-amd64
[ -x "$CLI" ] || die "the release has no migrate-linux-amd64"
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 bounded 600 go build -o "$RUN/labtool" ./lab/labtool >> "$LOG" 2>&1 ||
  die "building labtool failed"
say "built in $(($(date +%s) - ts)) s ($("$CLI" version 2>/dev/null | head -1 || echo '?'))"

# --- 5. this run's keys and each guest's own disk ------------------------------------------
# A guest's disk is an ext4 image (made with mkfs.ext4 -d, never mounted on
# this host) holding upper/ and work/ of its root's overlay: what makes it
# this host (hostname, machine-id, addresses, sshd's key, root's key, which
# lab servers it runs) and everything it writes later (migrate's state, units).
ssh-keygen -q -t ed25519 -N '' -C reboot-lane-client -f "$RUN/id"
declare -A ETH1=([old]=$OLD_IP [new]=$NEW_IP) OTHER=([old]=$NEW_IP [new]=$OLD_IP) MAC=([old]=01 [new]=02)
mkdisk() { # mkdisk NAME
  local h=$1 D=$RUN/disk-$1 U
  U=$D/upper
  mkdir -p "$D/work" "$U/etc/ssh" "$U/etc/network" "$U/root/.ssh" "$U/usr/local/bin" \
    "$U/etc/systemd/system/multi-user.target.wants"
  echo "$h" > "$U/etc/hostname"
  printf '%s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" > "$U/etc/machine-id"
  ssh-keygen -q -t ed25519 -N '' -C "reboot-lane-$h" -f "$U/etc/ssh/ssh_host_ed25519_key"
  cp "$U/etc/ssh/ssh_host_ed25519_key.pub" "$RUN/$h.hostkey.pub"
  cp "$RUN/id.pub" "$U/root/.ssh/authorized_keys"
  chmod 700 "$U/root" "$U/root/.ssh"; chmod 600 "$U/root/.ssh/authorized_keys"
  cp "$RUN/labtool" "$U/usr/local/bin/labtool"
  cat > "$U/etc/network/interfaces" <<EOF
# written by scripts/vm-lane-reboot.sh: eth0 is qemu's user network (sshd),
# eth1 the link to the other server and to the client ($CLIENT_IP)
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet static
    address 10.0.2.15/24
    gateway 10.0.2.2

auto eth1
iface eth1 inet static
    address ${ETH1[$h]}/24
    up ip route add ${OTHER[$h]}/32 dev eth1
    up ip route add 192.0.2.0/24 dev eth1
EOF
  if [ "$h" = old ]; then
    printf 'LAB_NAME=old\nTCP_LISTEN=%s\nSTAY_LISTEN=%s\nUDP_LISTEN=%s\n' \
      "$OLD_IP:$TCP_PORT" "$OLD_IP:$STAY_PORT" "$OLD_IP:$UDP_PORT" > "$U/etc/lab.env"
    units='lab-tcp lab-stay lab-udp'
  else
    # NEW's UDP server binds OLD's address: it fails at the first boot (the
    # address is not local before the apply) and must come up by itself at
    # every boot after it (migrate's unit puts the address on lo first).
    printf 'LAB_NAME=new\nTCP_LISTEN=%s\nUDP_LISTEN=%s\n' "0.0.0.0:$TCP_PORT" "$OLD_IP:$UDP_PORT" > "$U/etc/lab.env"
    units='lab-tcp lab-udp'
  fi
  for u in $units; do ln -s "../$u.service" "$U/etc/systemd/system/multi-user.target.wants/$u.service"; done
  mkfs.ext4 -q -F -L "lane-$h" -d "$D" "$RUN/$h.img" 256M >> "$LOG" 2>&1 || die "mkfs.ext4 for $h failed"
  rm -rf "$D"
}
mkdisk old
mkdisk new

# --- 6. the lab network namespace: bridge, taps, client --------------------------------------
NS=mig-rebootlane-$$
ip netns add "$NS" || die "cannot create network namespace $NS"
[ -e "/run/netns/$NS" ] || die "network namespace $NS is missing after ip netns add"
# lab CMD...: CMD inside the lab namespace (checked to exist: never the host's).
lab() { [ -n "$NS" ] && [ -e "/run/netns/$NS" ] || die "lab namespace '$NS' is gone"; ip netns exec "$NS" "$@"; }
lab ip link set lo up
lab ip link add br0 type bridge
lab ip link set br0 type bridge stp_state 0 forward_delay 0
for h in old new; do
  lab ip tuntap add dev "tap-$h" mode tap
  lab ip link set "tap-$h" master br0 up
done
lab ip link set br0 up
lab ip addr add "$CLIENT_IP/24" dev br0
lab ip route add "$OLD_IP/32" dev br0
lab ip route add "$NEW_IP/32" dev br0
setsid ip netns exec "$NS" "$RUN/labtool" serve -name peer -listen "$CLIENT_IP:$PEER_PORT" </dev/null > "$RUN/peer.log" 2>&1 &

# --- 7. boot OLD and NEW -------------------------------------------------------------------
q() { printf '%s' "${1//,/,,}"; }
declare -A QPID PORT
# no_timer_check: on a loaded machine the kernel's early IO-APIC timer check
# under TCG can miss its ticks and panic ("IO-APIC + timer doesn't work!").
# A guest's qemu lives as long as the run: a reboot inside the guest resets
# the virtual machine (same qemu, same disk, same forwards), as a server's
# reset button would; the kernel's state starts over, the disk stays.
boot() { # boot NAME
  : > "$RUN/$1.console"
  ip netns exec "$NS" setpriv --pdeathsig KILL -- qemu-system-x86_64 -nodefaults -no-user-config -display none \
    -accel tcg,thread=multi -M pc -cpu qemu64 -smp "$SMP" -m "$MEM" \
    -kernel "$RFS/vmlinux" -initrd "$RFS/initrd.img" \
    -append "console=ttyS0 quiet panic=0 mitigations=off cryptomgr.notests lpj=4000000 tsc=reliable no_timer_check net.ifnames=0 systemd.show_status=false" \
    -serial "file:$(q "$RUN/$1.console")" \
    -fsdev "local,id=root,path=$(q "$RFS/root"),security_model=none,multidevs=remap,readonly=on" \
    -device virtio-9p-pci,fsdev=root,mount_tag=root \
    -drive "file=$(q "$RUN/$1.img"),if=virtio,format=raw,cache=unsafe" \
    -netdev user,id=n0,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:0-10.0.2.15:22 \
    -device "virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:a7:00:${MAC[$1]}" \
    -netdev "tap,id=n1,ifname=tap-$1,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n1,romfile=,mac=52:54:00:a7:01:${MAC[$1]}" \
    </dev/null >"$RUN/$1.qemu.log" 2>&1 &
  QPID[$1]=$!
  QPIDS+=($!)
}
now() { date +%s.%N | cut -c1-14; }   # seconds, 1/1000
fsub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", a - b}'; }
count() { grep -c "$2" "$RUN/$1.console" 2>/dev/null || true; }
# wait_ready NAME N SECS: until the guest's N-th boot said READY on its console.
wait_ready() {
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    [ "$(count "$1" 'REBOOT-LANE READY')" -lt "$2" ] || return 0
    running "${QPID[$1]}" || { show "$RUN/$1.console" 40; die "qemu for $1 exited"; }
    sleep 0.2
  done
  show "$RUN/$1.console" 40
  die "guest $1: boot $2 did not say READY within $3 s"
}
ts=$(now)
say "booting OLD and NEW: Debian $KVER ($KPKGVER), systemd as PID 1, qemu-system-x86_64 $QEMU_VERSION TCG -cpu qemu64, $SMP vCPU, $MEM each"
boot old
boot new
for h in old new; do
  for _ in $(seq 100); do
    PORT[$h]=$(lab ss -Hltnp 2>/dev/null | awk -v p="pid=${QPID[$h]}," 'index($0, p) {n = split($4, a, ":"); print a[n]; exit}')
    [ -z "${PORT[$h]}" ] || break
    running "${QPID[$h]}" || { show "$RUN/$h.qemu.log"; die "qemu for $h exited at start"; }
    sleep 0.1
  done
  [ -n "${PORT[$h]}" ] || die "qemu for $h opened no listener"
done
{
  printf '[127.0.0.1]:%s %s\n' "${PORT[old]}" "$(cut -d' ' -f1-2 "$RUN/old.hostkey.pub")"
  printf '[127.0.0.1]:%s %s\n' "${PORT[new]}" "$(cut -d' ' -f1-2 "$RUN/new.hostkey.pub")"
} > "$RUN/known_hosts"
wait_ready old 1 "$BOOT_TIMEOUT"
wait_ready new 1 "$BOOT_TIMEOUT"
ready_up() { grep -m1 'REBOOT-LANE READY' "$RUN/$1.console" | grep -o 'uptime=[0-9.]*' | cut -d= -f2; }
FIRST_BOOT="READY at old $(ready_up old) s, new $(ready_up new) s of guest uptime; both $(fsub "$(now)" "$ts") s after qemu started"
say "guests up in $(fsub "$(now)" "$ts") s (ssh in $NS: old 127.0.0.1:${PORT[old]}, new 127.0.0.1:${PORT[new]})"
grep -h 'REBOOT-LANE READY' "$RUN/old.console" "$RUN/new.console" | sed 's/^/    /'

# gssh HOST SECS SCRIPT: run SCRIPT (sh) as root on a guest with this run's key.
gssh() {
  lab timeout --foreground -k 5 "$2" ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i "$RUN/id" \
    -o UserKnownHostsFile="$RUN/known_hosts" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \
    -o ConnectTimeout=20 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 -o LogLevel=ERROR \
    -p "${PORT[$1]}" root@127.0.0.1 "$3" & wait $!
}
# What migrate may change on a host, as the e2e tests snapshot it, plus ip -d
# link and the unit directory (apply's boot unit must be gone after rollback).
SNAP='for c in "nft list ruleset" "ip rule" "ip -6 rule" "ip route show table all" "ip -6 route show table all" "ip addr" "ip -d link"; do echo "### $c"; $c 2>&1; done
for s in net.ipv4.ip_forward net.ipv4.conf.all.rp_filter net.ipv4.conf.default.rp_filter net.ipv4.conf.eth1.rp_filter net.ipv4.conf.mig0.rp_filter net.ipv4.conf.mig0.accept_local net.ipv4.conf.all.forwarding net.ipv6.conf.all.forwarding net.ipv6.conf.default.forwarding net.ipv6.conf.eth0.forwarding net.ipv6.conf.eth0.accept_ra net.ipv6.conf.default.accept_ra; do echo "### sysctl $s"; sysctl -n "$s" 2>&1; done
echo "### find /etc/systemd/system"; find /etc/systemd/system | sort'
complete() { grep -q '^### ip -d link' "$1" && grep -q '^### find /etc/systemd/system' "$1"; }
L=/usr/local/bin/labtool
HL=$RUN/labtool   # the same tool on this side, run in the lab namespace
UNIT=migrate-restore.service
BOOTREC=/var/lib/migrate/boot.json

# --- 8. before the first plan -----------------------------------------------------------------
on_both before 180 "echo @@snapshot; $SNAP; echo @@end" || die "cannot reach the guests over SSH"
for h in old new; do
  section "$RUN/before.$h" snapshot > "$RUN/snap-before.$h"
  complete "$RUN/snap-before.$h" || die "$h: the snapshot before the plan is incomplete"
done
dial() { lab timeout -k 2 30 "$HL" dial -timeout "${DT:-10s}" "$@" 2>&1 || true; }
out=$(dial "$OLD_IP:$TCP_PORT")
case $out in *"served-by=old peer=$CLIENT_IP "*) pass "before: client $CLIENT_IP -> $OLD_IP:$TCP_PORT served by OLD" ;;
  *) bad "before: client -> $OLD_IP:$TCP_PORT: '$out', want served-by=old peer=$CLIENT_IP" ;; esac

# --- 9. the CLI: plan, apply -------------------------------------------------------------------
cat > "$RUN/cli/migration.hcl" <<EOF
# written by scripts/vm-lane-reboot.sh for this run
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
# cli NAME SECS ARGS...: the release CLI in the lab namespace, isolated from
# root's ~/.ssh/config and ssh-agent; output in RUN/cli/NAME.log.
cli() {
  local name=$1 secs=$2 rc=0 s
  shift 2
  s=$(date +%s)
  [ -e "/run/netns/$NS" ] || die "lab namespace '$NS' is gone"
  (cd "$RUN/cli" && unset SSH_AUTH_SOCK && export MIGRATE_SSH_CONFIG="$RUN/no-ssh-config" &&
    exec ip netns exec "$NS" timeout --foreground -k 5 "$secs" "$CLI" "$@") > "$RUN/cli/$name.log" 2>&1 &
  wait $! || rc=$?
  { echo "----- migrate $* (exit $rc, $(($(date +%s) - s)) s)"; cat "$RUN/cli/$name.log"; } >> "$LOG"
  say "migrate $* -> exit $rc in $(($(date +%s) - s)) s"
  return "$rc"
}
rc=0; cli plan 400 plan -f migration.hcl --out plan.out --detailed-exitcode || rc=$?
if [ "$rc" = 2 ] && grep -q "type vxlan local $OLD_IP remote $NEW_IP" "$RUN/cli/plan.log"; then
  pass "plan: $(grep -m1 '^Plan:' "$RUN/cli/plan.log")"
else
  show "$RUN/cli/plan.log"; die "plan: exit $rc (want 2: changes), or no vxlan link from $OLD_IP to $NEW_IP in it"
fi
rc=0; cli apply 600 apply plan.out --auto-approve || rc=$?
if [ "$rc" != 0 ] || ! grep -q '^Apply complete!' "$RUN/cli/apply.log"; then
  show "$RUN/cli/apply.log" 40; die "apply: exit $rc, no 'Apply complete!'"
fi
if grep -q '^Confirmed: ' "$RUN/cli/apply.log"; then
  pass "apply: $(grep -m1 '^Apply complete!' "$RUN/cli/apply.log" | sed 's/\. State:.*//'); $(grep -m1 '^Confirmed: ' "$RUN/cli/apply.log")"
else
  show "$RUN/cli/apply.log" 40; bad "apply did not report 'Confirmed: ...'"
fi
if [ -n "${REBOOT_LANE_DROP_UNIT:-}" ]; then
  # To prove the lane goes red: take apply's boot unit away (as if apply had
  # not installed it); the reboots below must then FAIL.
  say "REBOOT_LANE_DROP_UNIT=$REBOOT_LANE_DROP_UNIT: removing $UNIT on both hosts, so the reboot checks must FAIL"
  on_both dropunit 60 "rm -f /etc/systemd/system/$UNIT /etc/systemd/system/sysinit.target.wants/$UNIT && systemctl daemon-reload" || true
fi
# NEW's UDP server failed at boot (OLD's address was not local): the admin
# starts it once after the apply, as the arm64 lane does. From now on it must
# come up at every boot by itself.
gssh new 60 'systemctl restart lab-udp.service; sleep 1; systemctl is-active lab-udp.service' > "$RUN/udp-start.log" 2>&1 ||
  { show "$RUN/udp-start.log"; bad "NEW: lab-udp.service (UDP server on $OLD_IP:$UDP_PORT) does not start after the apply"; }

# --- 10. the data path, and its check after each reboot --------------------------------------
want() { # want WHAT OUTPUT NEEDLE...: every NEEDLE in OUTPUT
  local what=$1 out=$2 n
  shift 2
  for n in "$@"; do
    case $out in *"$n"*) ;; *) bad "$what: got '$out', want '$n'"; return 1 ;; esac
  done
  pass "$what ($(echo "$out" | cut -d' ' -f1-2))"
}
out_new() { gssh new 60 "$L dial -timeout ${DT:-10s} -bind $OLD_IP $CLIENT_IP:$PEER_PORT 2>&1" 2>&1 || true; }
# path_ok: the whole data path, once, quietly (for polling after a reboot).
path_ok() {
  local DT=3s
  case $(dial "$OLD_IP:$TCP_PORT") in *"served-by=new peer=$CLIENT_IP "*) ;; *) return 1 ;; esac
  case $(dial -udp "$OLD_IP:$UDP_PORT") in *"served-by=new peer=$CLIENT_IP "*) ;; *) return 1 ;; esac
  case $(out_new) in *"served-by=peer peer=$OLD_IP "*) ;; *) return 1 ;; esac
}
# path_checks WHEN: the data path, each piece a check of its own.
path_checks() {
  want "$1: client $CLIENT_IP -> $OLD_IP:$TCP_PORT/tcp served by NEW with the client's address" \
    "$(dial "$OLD_IP:$TCP_PORT")" "served-by=new peer=$CLIENT_IP " "remote=$OLD_IP:$TCP_PORT" || true
  want "$1: client -> $OLD_IP:$UDP_PORT/udp answered by NEW with the client's address" \
    "$(dial -udp "$OLD_IP:$UDP_PORT")" "served-by=new peer=$CLIENT_IP " "remote=$OLD_IP:$UDP_PORT" || true
  want "$1: NEW connects out from $OLD_IP: the peer $CLIENT_IP sees OLD's address" "$(out_new)" "served-by=peer peer=$OLD_IP " || true
  want "$1: client -> $OLD_IP:$STAY_PORT/tcp (not in the plan) stays on OLD" "$(dial "$OLD_IP:$STAY_PORT")" "served-by=old peer=$CLIENT_IP " || true
}
path_checks "after apply"

TABLE=()   # the timing table's rows
# reboot EVENT HOST...: reboot the hosts at once (systemctl reboot over SSH),
# wait until each guest was reset and booted, and until the data path works
# again with no migrate command; then check it piece by piece and record the
# times.
reboot() {
  local ev=$1 h t0 tpath tb ta u d; shift
  declare -A nreset nready treset
  for h in "$@"; do nreset[$h]=$(( $(count "$h" 'reboot: Restarting system') + 1 )); nready[$h]=$(( $(count "$h" 'REBOOT-LANE READY') + 1 )); done
  say "$ev: systemctl reboot on $*"
  t0=$(now)
  local pids=()
  for h in "$@"; do gssh "$h" 30 'systemctl reboot' > /dev/null 2>&1 & pids+=($!); done
  wait "${pids[@]}" || true   # (not a bare wait: the peer server is our child too)
  local pending="$*" deadline=$(( $(date +%s) + BOOT_TIMEOUT )) ok=
  while [ "$(date +%s)" -lt "$deadline" ]; do
    for h in $pending; do
      running "${QPID[$h]}" || { show "$RUN/$h.console" 40; die "$ev: qemu for $h exited"; }
      if [ "$(count "$h" 'reboot: Restarting system')" -ge "${nreset[$h]}" ]; then
        treset[$h]=$(now); pending=$(echo "$pending" | tr ' ' '\n' | grep -vx "$h" | tr '\n' ' ' || true)
      fi
    done
    if [ -z "${pending// /}" ] && path_ok; then ok=1; break; fi
    sleep 0.5
  done
  tpath=$(now)
  for h in "$@"; do
    [ -n "${treset[$h]:-}" ] || { show "$RUN/$h.console" 30; bad "$ev: $h was not reset within $BOOT_TIMEOUT s of systemctl reboot"; }
  done
  if [ -z "$ok" ]; then
    for h in old new; do show "$RUN/$h.console" 30; done
    bad "$ev: the data path did not come back within $BOOT_TIMEOUT s without the admin"
    path_checks "$ev (no recovery)"
    return
  fi
  say "$ev: the data path works again, $(fsub "$tpath" "$t0") s after systemctl reboot"
  # the guests' own view: kernel uptime now (minus the time since the path
  # worked), when the boot unit finished, when the boot said READY
  # (OLD's data path can work before its sshd listens: retry until it does)
  for h in "$@"; do
    local tries=0
    while :; do
    tb=$(now)
    gssh "$h" 60 "echo @@uptime; cut -d' ' -f1 /proc/uptime; echo @@bootid; cat /proc/sys/kernel/random/boot_id
      echo @@unit; systemctl show $UNIT -p ActiveState -p Result -p ExecMainStatus -p ActiveEnterTimestampMonotonic 2>&1
      echo @@udp; systemctl show lab-udp.service -p ActiveState -p ActiveEnterTimestampMonotonic 2>&1
      echo @@record; cat $BOOTREC 2>&1; echo; echo @@journal; journalctl -b -u $UNIT --no-pager -o cat 2>&1 | tail -n 40
      echo @@analyze; systemd-analyze 2>&1 | head -n 2; echo @@end" > "$RUN/$ev.$h" 2>&1 || true
    ta=$(now)
    grep -qx '@@end' "$RUN/$ev.$h" && break
    tries=$((tries + 1))
    [ "$tries" -lt 60 ] || break
    sleep 2
    done
    [ "$tries" = 0 ] || say "$ev: ssh to $h answered after $tries retries (its data path worked before its sshd)"
    { echo "----- $ev on $h"; cat "$RUN/$ev.$h"; } >> "$LOG"
    u=$(section "$RUN/$ev.$h" uptime)
    # uptime when the path worked: uptime read mid-ssh, minus the time since
    d=$(awk -v u="$u" -v a="$ta" -v b="$tb" -v p="$tpath" 'BEGIN {printf "%.1f", u - ((a + b) / 2 - p)}')
    local unit udp rec restore_at udp_at
    unit=$(section "$RUN/$ev.$h" unit) udp=$(section "$RUN/$ev.$h" udp) rec=$(section "$RUN/$ev.$h" record)
    restore_at=$(echo "$unit" | awk -F= '$1 == "ActiveEnterTimestampMonotonic" && $2 > 0 {printf "%.1f", $2 / 1e6}')
    udp_at=$(echo "$udp" | awk -F= '$1 == "ActiveEnterTimestampMonotonic" && $2 > 0 {printf "%.1f", $2 / 1e6}')
    TABLE+=("$(printf '%-12s %-4s %9s %9s %11s %13s %11s' "$ev" "$h" \
      "$(fsub "$tpath" "${treset[$h]}")" "$d" "${restore_at:--}" "${udp_at:--}" \
      "$(grep -m1 -o 'uptime=[0-9.]*' <(grep 'REBOOT-LANE READY' "$RUN/$h.console" | tail -n 1) | cut -d= -f2)")")
    # (grep -q <<< VALUE, not echo | grep -q: with pipefail, grep quitting at
    # the first match can fail the pipeline with echo's SIGPIPE)
    if grep -qx 'ActiveState=active' <<< "$unit" && grep -qx 'Result=success' <<< "$unit"; then
      pass "$ev: $h ran $UNIT at boot (active, success; finished at ${restore_at:-?} s of uptime)"
    else
      bad "$ev: $h: $UNIT did not run to success at boot: $(echo "$unit" | tr '\n' ' ')"
    fi
    if grep -q "\"boot_id\": *\"$(section "$RUN/$ev.$h" bootid)" <<< "$rec" && grep -q '"outcome": *"restored"' <<< "$rec"; then
      pass "$ev: $h's boot record ($BOOTREC) says restored, for this boot"
    else
      bad "$ev: $h's boot record is not 'restored' for this boot: $(echo "$rec" | tr -s '\n ' ' ' | cut -c1-300)"
    fi
  done
  path_checks "$ev"
  if [[ " $* " == *" new "* ]]; then
    if grep -qx 'ActiveState=active' <<< "$(section "$RUN/$ev.new" udp)"; then
      pass "$ev: NEW's UDP server (binds $OLD_IP, After=network.target) started by itself at boot"
    else
      bad "$ev: NEW's UDP server (lab-udp.service, binds $OLD_IP) is not active after the boot: $(section "$RUN/$ev.new" udp | tr '\n' ' ')"
    fi
  fi
}
reboot "reboot-NEW" new
reboot "reboot-OLD" old
reboot "reboot-both" old new

# --- 10b. nftables.service mid-migration ---------------------------------------------------------
# Debian's /etc/nftables.conf (as the package ships it) begins with `flush
# ruleset`: `systemctl start`, `reload` and `restart nftables` on OLD remove
# migrate's table with everything else. apply's drop-in for nftables.service
# (ExecStartPost, ExecReload) puts it back right after; the data path must
# work after each with no migrate command run. Real systemd, real service:
# this also checks that apply's daemon-reload made systemd read the drop-in.
# Then `systemctl stop nftables` (not covered: its flush stays) and the
# recovery the README gives: `systemctl restart migrate-restore.service`.
RREC=/var/lib/migrate/restore-after.json
gssh old 30 "grep -c '^flush ruleset' /etc/nftables.conf; systemctl show nftables.service -p DropInPaths" > "$RUN/nft-setup.old" 2>&1 || true
if grep -qx 1 "$RUN/nft-setup.old" && grep -q "nftables.service.d/migrate-restore.conf" "$RUN/nft-setup.old"; then
  pass "OLD: /etc/nftables.conf begins with flush ruleset, and systemd has read migrate's drop-in for nftables.service"
else
  bad "OLD: /etc/nftables.conf without flush ruleset, or systemd does not know migrate's drop-in: $(tr '\n' ' ' < "$RUN/nft-setup.old")"
fi
for ev in start reload restart; do
  t0=$(now)
  gssh old 60 "systemctl $ev nftables.service; echo rc=\$?; nft list tables; cat $RREC" > "$RUN/nft-$ev.old" 2>&1 || true
  ok=
  for _ in $(seq 20); do path_ok && { ok=1; break; }; sleep 0.5; done
  { echo "----- systemctl $ev nftables on old"; cat "$RUN/nft-$ev.old"; } >> "$LOG"
  rec=$(tr -d '\n ' < "$RUN/nft-$ev.old")
  if [ -n "$ok" ] && grep -q '^rc=0' "$RUN/nft-$ev.old" && grep -q "\"after\":\"${ev/restart/start}\"" <<< "$rec" && grep -q '"outcome":"restored"' <<< "$rec"; then
    pass "systemctl $ev nftables on OLD: the drop-in put migrate's table back ($(grep -o '"took_ms":[0-9]*' <<< "$rec")); the data path works $(fsub "$(now)" "$t0") s after the command"
  else
    show "$RUN/nft-$ev.old" 30; bad "systemctl $ev nftables on OLD: the data path or the drop-in's record is not right (above)"
    path_checks "after systemctl $ev nftables"
  fi
done
# systemd-sysctl.service: a hardened file turns forwarding off (CIS:
# net.ipv4.ip_forward = 0); `systemctl restart systemd-sysctl` applies it,
# and migrate's drop-in for that service sets OLD's forwarding back.
t0=$(now)
gssh old 60 "printf 'net.ipv4.ip_forward = 0\\n' > /etc/sysctl.d/99-lane-hardening.conf; systemctl restart systemd-sysctl.service; echo rc=\$?; echo forward=\$(sysctl -n net.ipv4.ip_forward); cat $RREC; rm -f /etc/sysctl.d/99-lane-hardening.conf" > "$RUN/sysctl-restart.old" 2>&1 || true
ok=
for _ in $(seq 20); do path_ok && { ok=1; break; }; sleep 0.5; done
{ echo "----- systemctl restart systemd-sysctl on old"; cat "$RUN/sysctl-restart.old"; } >> "$LOG"
rec=$(tr -d '\n ' < "$RUN/sysctl-restart.old")
if [ -n "$ok" ] && grep -q '^rc=0' "$RUN/sysctl-restart.old" && grep -qx 'forward=1' "$RUN/sysctl-restart.old" &&
  grep -q '"service":"systemd-sysctl.service"' <<< "$rec" && grep -q '"outcome":"restored"' <<< "$rec"; then
  pass "systemctl restart systemd-sysctl on OLD with net.ipv4.ip_forward = 0 in /etc/sysctl.d: the drop-in set forwarding back ($(grep -o '"took_ms":[0-9]*' <<< "$rec")); the data path works $(fsub "$(now)" "$t0") s after the command"
else
  show "$RUN/sysctl-restart.old" 30; bad "systemctl restart systemd-sysctl on OLD: forwarding, the data path or the drop-in's record is not right (above)"
  path_checks "after systemctl restart systemd-sysctl"
fi
gssh old 60 "systemctl stop nftables.service; nft list tables" > "$RUN/nft-stop.old" 2>&1 || true
if grep -q 'inet migrate' "$RUN/nft-stop.old"; then
  bad "systemctl stop nftables on OLD left migrate's table (its ExecStop flushes the ruleset): $(tr '\n' ' ' < "$RUN/nft-stop.old")"
else
  gssh old 60 "systemctl restart $UNIT; echo rc=\$?" > "$RUN/nft-recover.old" 2>&1 || true
  ok=
  for _ in $(seq 20); do path_ok && { ok=1; break; }; sleep 0.5; done
  if [ -n "$ok" ] && grep -q '^rc=0' "$RUN/nft-recover.old"; then
    pass "systemctl stop nftables on OLD removed migrate's table; systemctl restart $UNIT put it back"
  else
    show "$RUN/nft-recover.old"; bad "after systemctl stop nftables on OLD: systemctl restart $UNIT did not bring the data path back"
  fi
fi

# --- 11. status, rollback --all ----------------------------------------------------------------
rc=0; cli status 300 status -f migration.hcl || rc=$?
show "$RUN/cli/status.log" 15
if grep -q 'restored at boot' "$RUN/cli/status.log"; then
  pass "status says a host was restored at boot: $(grep -m1 'restored at boot' "$RUN/cli/status.log" | sed 's/^ *//')"
else
  bad "status (exit $rc) does not say that the hosts were restored at boot"
fi
compare() { # compare WHEN NAME: snapshots RUN/NAME.{old,new} against the ones before the plan
  local h
  for h in old new; do
    section "$RUN/$2.$h" snapshot > "$RUN/snap-$2.$h"
    if ! complete "$RUN/snap-$2.$h"; then
      bad "$1: $h's snapshot is incomplete (ssh failed?): cannot compare"
    elif diff -u "$RUN/snap-before.$h" "$RUN/snap-$2.$h" > "$RUN/diff-$2.$h"; then
      pass "$1: $h's nft ruleset, ip rules, routes, addresses, ip -d link, sysctls and /etc/systemd/system equal the snapshot before the first plan"
    else
      show "$RUN/diff-$2.$h" 60; bad "$1: $h differs from the snapshot before the first plan (diff above)"
    fi
  done
}
rc=0; cli rollback 600 rollback -f migration.hcl --all --auto-approve || rc=$?
if [ "$rc" = 0 ] && grep -q '^Rollback complete!' "$RUN/cli/rollback.log"; then
  pass "rollback --all: $(grep -m1 '^Rollback complete!' "$RUN/cli/rollback.log")"
else
  show "$RUN/cli/rollback.log" 40; bad "rollback --all: exit $rc, no 'Rollback complete!'"
fi
on_both restored 180 "echo @@snapshot; $SNAP; echo @@end" || true
compare "after rollback --all" restored
want "after rollback: client -> $OLD_IP:$TCP_PORT/tcp served by OLD" "$(dial "$OLD_IP:$TCP_PORT")" "served-by=old peer=$CLIENT_IP " || true

# --- 12. an apply left unconfirmed is gone after a reboot -------------------------------------
# The test fault die-before-confirm makes the CLI exit once every step is
# applied, before it confirms either host; the revert timers are set far out
# (30m), so only the reboot can undo the change. The boot unit must not
# restore it: after the reboot both hosts are as before the first plan (unit
# files included) and OLD serves again, with no migrate command run.
rc=0
MIGRATE_TEST_FAULT=die-before-confirm cli unconfirmed 600 apply -f migration.hcl --auto-approve --confirm-timeout 30m || rc=$?
if [ "$rc" = 3 ] && ! grep -q '^Confirmed: ' "$RUN/cli/unconfirmed.log"; then
  pass "apply with MIGRATE_TEST_FAULT=die-before-confirm exited 3 before confirming either host"
else
  show "$RUN/cli/unconfirmed.log" 30; bad "apply with MIGRATE_TEST_FAULT=die-before-confirm: exit $rc (want 3, no 'Confirmed:')"
fi
want "unconfirmed apply is live: client -> $OLD_IP:$TCP_PORT/tcp served by NEW" "$(dial "$OLD_IP:$TCP_PORT")" "served-by=new peer=$CLIENT_IP " || true
on_both unconf-files 60 "ls /etc/systemd/system/$UNIT /etc/systemd/system/sysinit.target.wants/$UNIT 2>&1" || true
for h in old new; do
  if [ "$(grep -c "^/etc/systemd/system/.*$UNIT\$" "$RUN/unconf-files.$h")" = 2 ]; then
    pass "unconfirmed apply installed the boot unit on $h (so the reboot must decide it)"
  else
    bad "unconfirmed apply: $h has no $UNIT and its link: $(tr '\n' ' ' < "$RUN/unconf-files.$h")"
  fi
done
say "unconfirmed: systemctl reboot on old new"
declare -A NREADY
for h in old new; do NREADY[$h]=$(( $(count "$h" 'REBOOT-LANE READY') + 1 )); done
t0=$(now)
pids=()
for h in old new; do gssh "$h" 30 'systemctl reboot' > /dev/null 2>&1 & pids+=($!); done
wait "${pids[@]}" || true
wait_ready old "${NREADY[old]}" "$BOOT_TIMEOUT"
wait_ready new "${NREADY[new]}" "$BOOT_TIMEOUT"
out=
for _ in $(seq 60); do
  out=$(DT=3s dial "$OLD_IP:$TCP_PORT")
  case $out in *"served-by="*) break ;; esac
  sleep 1
done
say "unconfirmed: both guests up again $(fsub "$(now)" "$t0") s after systemctl reboot"
want "after rebooting with an unconfirmed apply: client -> $OLD_IP:$TCP_PORT/tcp served by OLD" "$out" "served-by=old peer=$CLIENT_IP " || true
on_both unconfirmed-boot 180 "echo @@snapshot; $SNAP; echo @@record; cat $BOOTREC 2>&1; echo; echo @@end" || true
compare "after rebooting with an unconfirmed apply (no migrate command)" unconfirmed-boot
for h in old new; do
  rec=$(section "$RUN/unconfirmed-boot.$h" record | tr -d '\n')
  if grep -qE '"reverted_runs": *\[ *"[^"]+' <<< "$rec"; then
    pass "$h's boot record names the run the reboot reverted ($(echo "$rec" | grep -oE '"outcome": *"[a-z]+"'))"
  else
    bad "$h's boot record names no reverted run: $(echo "$rec" | cut -c1-300)"
  fi
done
rc=0; cli rollback-end 600 rollback -f migration.hcl --all --auto-approve || rc=$?
[ "$rc" = 0 ] && pass "rollback --all after the reverted apply: exit 0" ||
  { show "$RUN/cli/rollback-end.log" 30; bad "rollback --all after the reverted apply: exit $rc"; }
on_both final 180 "echo @@snapshot; $SNAP; echo @@end" || true
compare "at the end" final

# --- 13. the host is as it was ------------------------------------------------------------------------
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
  echo "guests:  old and new: Debian 12 amd64, kernel $KVER ($KPKGVER), systemd as PID 1, qemu-system-x86_64 $QEMU_VERSION TCG -cpu qemu64, $SMP vCPU, $MEM"
  echo "first boot (qemu start -> READY on the console): $FIRST_BOOT"
  echo "this machine: $(nproc) CPUs, load average at the start $LOAD0, now $(cut -d' ' -f1-3 /proc/loadavg) (TCG times grow with it)"
  echo "time from a reboot until the data path works (no migrate command run):"
  echo "  event        host reset->ok uptime@ok restore-unit  udp-server  boot-READY   (s; all but reset->ok: the guest kernel's own uptime when it happened)"
  for r in "${TABLE[@]}"; do echo "  $r"; done
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
say "reboot lane: apply, reboot NEW/OLD/both with the data path back each time, unconfirmed apply gone after a reboot, rollback --all exact: PASS ($n_pass checks, $(($(date +%s) - T0)) s)"
