# Shared by the guest lanes (scripts/vm-lane-arm64.sh, scripts/vm-lane-reboot.sh):
# logging and check bookkeeping, the cleanup of every process a lane started,
# bounded commands, the host-network snapshot, the private apt configuration
# for the guests' .debs, and running a script on both guests.
#
# Source it after setting LANE_TAG (e.g. arm64-lane) and LOG; a lane may define
# lane_cleanup (called by cleanup before the run directory goes) and sets RUN,
# QPIDS and SUMMARY_DONE as it goes. Functions only, plus the traps installed by
# guest_lane_traps: nothing here runs on its own.

T0=$(date +%s)
CHECKS=() FAILED=
RUN= QPIDS=() SUMMARY_DONE=
say() { printf '== %s [%4ss] %s\n' "$LANE_TAG" "$(($(date +%s) - T0))" "$*" | tee -a "$LOG"; }
pass() { CHECKS+=("PASS $*"); say "PASS: $*"; }
bad() { CHECKS+=("FAIL $*"); FAILED=1; say "FAIL: $*"; }
die() { say "FAIL: $*"; FAILED=1; exit 1; }
# show FILE [N]: append to the log; on the terminal only its tail (with a title)
show() { { echo "----- $1"; cat "$1"; } >> "$LOG"; tail -n "${2:-25}" "$1" | sed 's/^/    | /'; }

descendants() { local c; for c in $(pgrep -P "$1"); do descendants "$c"; echo "$c"; done; }
# running PID: alive and not a zombie (our exited children stay zombies until waited for)
running() { local st; st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ] && [ "$st" != X ]; }
# cleanup: every process we started (qemu first, given a few seconds to go),
# then the lane's own (lane_cleanup), then the run's directory, consoles kept
# in the log.
cleanup() {
  local rc=$? p kids alive
  trap - EXIT INT TERM HUP
  kids=$(descendants $$)
  for p in "${QPIDS[@]}" $kids; do kill "$p" 2>/dev/null || true; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    alive=
    for p in "${QPIDS[@]}"; do if running "$p"; then alive=1; fi; done
    [ -n "$alive" ] || break
    sleep 0.5
  done
  for p in $(descendants $$); do kill -9 "$p" 2>/dev/null || true; done   # still ours: no reused pid
  if declare -F lane_cleanup >/dev/null; then lane_cleanup || true; fi
  if [ -n "$RUN" ] && [ -d "$RUN" ]; then
    for f in "$RUN"/*.console; do [ -e "$f" ] && { echo "----- $f"; cat "$f"; } >> "$LOG"; done
    rm -rf "$RUN"
  fi
  if [ "$rc" != 0 ]; then
    if [ -z "$SUMMARY_DONE" ] && [ ${#CHECKS[@]} -gt 0 ]; then printf '  %s\n' "${CHECKS[@]}" >&2; fi
    echo "== $LANE_TAG: FAILED (exit $rc); full output in $LOG" >&2
  fi
  exit "$rc"
}
guest_lane_traps() {
  trap cleanup EXIT
  trap 'say "interrupted"; exit 130' INT
  trap 'say "terminated (timeout?)"; exit 124' TERM HUP
}
# bounded SECS CMD...: CMD with a time limit, in the background so that a
# signal reaches our traps at once.
bounded() { timeout --foreground -k 5 "$1" "${@:2}" & wait $!; }

# host_net: the root namespace's networking, compared at the end (a lane must
# not change it). Routes from router advertisements count down: masked.
host_net() { { ip -br link; ip -br addr; ip rule; ip -6 rule; ip route show table all; ip -6 route show table all; } 2>&1 |
  sed -E 's/ expires [0-9]+sec//'; }

# private_apt DIR ARCH MIRROR: an apt configuration of its own in DIR (lists,
# cache, an empty dpkg status) for Debian bookworm ARCH, so the guests' .debs
# are resolved and fetched without telling the host's dpkg anything; papt runs
# an apt command with it.
private_apt() {
  local a=$1 arch=$2 mirror=$3 key=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/etc/none"
  [ -e "$a/status" ] || : > "$a/status"
  cat > "$a/etc/sources.list" <<EOS
deb [signed-by=$key] $mirror/debian bookworm main
deb [signed-by=$key] $mirror/debian bookworm-updates main
deb [signed-by=$key] $mirror/debian-security bookworm-security main
EOS
  cat > "$a/apt.conf" <<EOS
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
APT::Sandbox::User "root";
Dir::State "$a";
Dir::State::Lists "$a/lists";
Dir::State::status "$a/status";
Dir::Cache "$a/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Etc::SourceList "$a/etc/sources.list";
Dir::Etc::SourceParts "$a/etc/none";
Dir::Etc::Preferences "$a/etc/prefs";
Dir::Etc::PreferencesParts "$a/etc/none";
Acquire::Languages "none";
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Post-Invoke;
EOS
}
papt() { APT_CONFIG=$A/apt.conf bounded 600 "$@"; }

# section FILE NAME: the lines after "@@NAME" up to the next "@@" line.
section() { awk -v s="@@$2" '$0 == s {on = 1; next} /^@@/ {on = 0} on' "$1"; }
# on_both NAME SECS SCRIPT: SCRIPT on both guests at once (the lane's gssh),
# into RUN/NAME.{old,new}; false if either ssh failed.
on_both() {
  local p1 p2 r1=0 r2=0
  gssh old "$2" "$3" > "$RUN/$1.old" 2>&1 & p1=$!
  gssh new "$2" "$3" > "$RUN/$1.new" 2>&1 & p2=$!
  wait "$p1" || r1=$?
  wait "$p2" || r2=$?
  for h in old new; do { echo "----- $1 on $h"; cat "$RUN/$1.$h"; } >> "$LOG"; done
  [ "$r1" = 0 ] || bad "$1: ssh to old failed (exit $r1): $(tail -n 3 "$RUN/$1.old" | tr '\n' ' ')"
  [ "$r2" = 0 ] || bad "$1: ssh to new failed (exit $r2): $(tail -n 3 "$RUN/$1.new" | tr '\n' ' ')"
  [ "$r1" = 0 ] && [ "$r2" = 0 ]
}
