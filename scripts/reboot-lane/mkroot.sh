#!/usr/bin/env bash
# mkroot.sh OUT DEBS KVER: build the reboot lane's shared guest files into the
# empty directory OUT from the amd64 .debs in DEBS (kernel linux-image-KVER
# included). Called by scripts/vm-lane-reboot.sh as
#   unshare --mount --propagation private -- mkroot.sh OUT DEBS KVER
# so that the mount lock-down below stays in this process's own mount
# namespace (same safety as scripts/arm64-lane/mkroot.sh: Debian packages
# hold absolute symlinks, and a write following one would land on the host).
#
# Writes:
#   OUT/root/       the guests' read-only lower layer: every .deb unpacked with
#                   dpkg-deb -x, plus the generic files below (systemd as
#                   /sbin/init, ifupdown, sshd, the lab's daemons). What
#                   differs per guest (hostname, addresses, keys, machine-id)
#                   lives on the guest's own disk (the lane writes it).
#   OUT/initrd.img  busybox + the modules to mount the root (stage 1, init)
#   OUT/vmlinux     the kernel, uncompressed (boots through PVH: faster under TCG)
set -euo pipefail
[ $# = 3 ] || { echo "usage: $0 OUT DEBS KVER" >&2; exit 2; }
OUT=$(realpath -e "$1") DEBS=$(realpath -e "$2") KVER=$3
HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "mkroot: $*" >&2; exit 1; }
[ -z "$(ls -A "$OUT")" ] || die "$OUT is not empty"
ls "$DEBS/linux-image-${KVER}_"*_amd64.deb >/dev/null 2>&1 || die "no linux-image-$KVER in $DEBS"

# --- lock down: only OUT stays writable ----------------------------------------
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] ||
  die "must run in a private mount namespace (unshare --mount --propagation private)"
mount --bind "$OUT" "$OUT"
findmnt -rn -o TARGET | sort -ru | while read -r m; do
  m=$(printf '%b' "$m")
  [ "$m" = "$OUT" ] || mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for p in / /bin /usr/bin /usr/sbin /etc /var/cache /tmp /dev/shm "$DEBS" "$HERE"; do
  probe=$p/.mkroot-write-probe.$$
  if : 2>/dev/null > "$probe"; then rm -f "$probe"; die "$p is still writable after the lock-down"; fi
done
: > "$OUT/.probe" && rm "$OUT/.probe"

R=$OUT/root
mkdir "$R"

# --- the packages ----------------------------------------------------------------
n=0
for deb in "$DEBS"/*.deb; do dpkg-deb -x "$deb" "$R"; n=$((n + 1)); done
[ -x "$R/usr/sbin/sshd" ] && [ -f "$R/bin/busybox" ] && [ ! -L "$R/bin/busybox" ] &&
  [ -x "$R/lib/systemd/systemd" ] && [ -e "$R/boot/vmlinuz-$KVER" ] ||
  die "sshd, busybox, systemd or the kernel missing after unpacking $n packages"
depmod -b "$R" "$KVER"

# put PATH MODE: write stdin to R/PATH as a new file. Its directory must be
# a real directory inside R (no symlink on the way); an existing entry is
# removed first (rm does not follow symlinks), so the write cannot follow one.
put() {
  local dst=$R/$1 dir
  dir=$(dirname "$dst")
  mkdir -p "$dir"
  [ "$(realpath -e "$dir")" = "$dir" ] || die "$dir has a symlink in its path"
  rm -f "$dst"
  (umask 077 && cat > "$dst")
  chmod "$2" "$dst"
}
# rel LINK TARGET: a relative symlink R/LINK -> TARGET (checked like put)
rel() {
  local dst=$R/$1 dir
  dir=$(dirname "$dst")
  mkdir -p "$dir"
  [ "$(realpath -e "$dir")" = "$dir" ] || die "$dir has a symlink in its path"
  ln -sfn "$2" "$dst"
}

# --- users (systemd-sysusers adds its own at boot) -------------------------------
put etc/passwd 644 <<'EOF'
root:x:0:0:root:/root:/bin/bash
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
put etc/group 644 <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
put etc/shadow 640 <<'EOF'
root:*:19000:0:99999:7:::
sshd:*:19000:0:99999:7:::
EOF
put etc/nsswitch.conf 644 <<'EOF'
passwd: files
group: files
shadow: files
hosts: files
EOF
put etc/hosts 644 <<'EOF'
127.0.0.1 localhost
EOF
: | put etc/fstab 644
# No PAM (its modules and config are not set up here), keys only. The host
# key and root's authorized_keys are on each guest's own disk.
put etc/ssh/sshd_config 644 <<'EOF'
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile /root/.ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
PrintMotd no
EOF

# --- systemd: what boots, what does not ------------------------------------------
# systemd is PID 1 (systemd-sysv's /sbin/init). The network comes up as on a
# Debian 12 server from the installer: ifupdown's networking.service reading
# /etc/network/interfaces (on each guest's disk), sshd through ssh.service,
# the lab's servers through lab-*.service units (enabled per guest). Units
# that only slow a TCG boot down or wait for things a VM here lacks are masked.
[ ! -L "$R/etc/systemd/system" ] || die "etc/systemd/system is a symlink"
for u in systemd-firstboot.service systemd-networkd-wait-online.service systemd-networkd.service \
  getty@tty1.service serial-getty@ttyS0.service getty.target \
  systemd-timesyncd.service systemd-resolved.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_reap.service e2scrub_all.timer fstrim.timer man-db.timer dpkg-db-backup.timer \
  systemd-pstore.service systemd-hwdb-update.service systemd-journal-catalog-update.service \
  ldconfig.service; do
  rel "etc/systemd/system/$u" /dev/null
done
rel etc/systemd/system/multi-user.target.wants/networking.service /lib/systemd/system/networking.service
rel etc/systemd/system/network-online.target.wants/networking.service /lib/systemd/system/networking.service
rel etc/systemd/system/multi-user.target.wants/ssh.service /lib/systemd/system/ssh.service
rel etc/systemd/system/default.target /lib/systemd/system/multi-user.target
put etc/systemd/journald.conf.d/lane.conf 644 <<'EOF'
[Journal]
Storage=volatile
ForwardToConsole=yes
TTYPath=/dev/ttyS0
MaxLevelConsole=notice
EOF
# A line on the console when the boot is done, for the lane to wait for.
put etc/systemd/system/lane-ready.service 644 <<'EOF'
[Unit]
Description=reboot lane: say on the console that the boot finished
After=multi-user.target ssh.service networking.service
[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh -c 'echo "REBOOT-LANE READY host=$(hostname) kernel=$(uname -r) uptime=$(cut -d" " -f1 /proc/uptime) ssh=$(systemctl is-active ssh) networking=$(systemctl is-active networking) failed=$(systemctl --failed --plain --no-legend | cut -d" " -f1 | tr "\\n" ,)"; ip -br addr | sed "s/^/REBOOT-LANE ADDR /"'
[Install]
WantedBy=multi-user.target
EOF
rel etc/systemd/system/multi-user.target.wants/lane-ready.service ../lane-ready.service
# The lab's servers: plain daemons, After=network.target like a distribution's.
# Each guest's disk enables the ones it runs (lab.env sets the addresses).
unit() { # unit NAME DESCRIPTION ARGS
  put "etc/systemd/system/$1.service" 644 <<EOF
[Unit]
Description=reboot lane: $2
After=network.target
[Service]
EnvironmentFile=/etc/lab.env
ExecStart=/usr/local/bin/labtool serve $3
EOF
}
unit lab-tcp "TCP server of this host (\$TCP_LISTEN)" '-name ${LAB_NAME} -listen ${TCP_LISTEN}'
unit lab-stay "TCP server that stays on OLD (\$STAY_LISTEN)" '-name ${LAB_NAME} -listen ${STAY_LISTEN}'
unit lab-udp "UDP server of this host (\$UDP_LISTEN)" '-udp -name ${LAB_NAME} -listen ${UDP_LISTEN}'

# /bin/sh is dash (busybox sh would run its own applets, such as a small
# `ip`, before the ones in PATH: ifupdown runs its commands through sh).
# busybox fills the gaps the packages leave (grep, sed, awk, ...), as
# relative links in usr/bin.
[ ! -L "$R/bin" ] && [ ! -L "$R/usr/bin" ] || die "bin or usr/bin is a symlink"
[ -x "$R/bin/dash" ] || die "no dash"
ln -sfn dash "$R/bin/sh"
for a in $("$R/bin/busybox" --list); do
  case $a in */* | '' | init | linuxrc) continue ;; esac
  have=
  for d in usr/local/sbin usr/local/bin usr/sbin usr/bin sbin bin; do
    if [ -e "$R/$d/$a" ] || [ -L "$R/$d/$a" ]; then have=1; break; fi
  done
  [ -n "$have" ] || ln -s ../../bin/busybox "$R/usr/bin/$a"
done
mkdir -p "$R/root" "$R/proc" "$R/sys" "$R/dev" "$R/run" "$R/tmp" "$R/var/lib" "$R/var/log" "$R/usr/local/bin"
chmod 700 "$R/root"; chmod 1777 "$R/tmp"

# --- stage 1: the initramfs ----------------------------------------------------------
I=$OUT/initrd
mkdir -p "$I/bin" "$I/mod" "$I/proc" "$I/dev" "$I/sys"
cp "$R/bin/busybox" "$I/bin/busybox"
: > "$I/modules"
for m in virtio_pci virtio_blk virtio_net 9pnet_virtio 9p overlay ext4; do
  modprobe -d "$R" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  case $ko in "$R"/*) ;; *) die "module outside the root: $ko" ;; esac
  cp "$ko" "$I/mod/"
  echo "/mod/$(basename "$ko")" >> "$I/modules"
done
cp "$HERE/initramfs-init" "$I/init"
chmod 755 "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet) > "$OUT/initrd.img"
rm -rf "$I"

# --- the kernel, uncompressed ------------------------------------------------------------
bz=$R/boot/vmlinuz-$KVER
off=$(grep -abo -m1 $'\xfd7zXZ\x00' "$bz" | head -1 | cut -d: -f1) || true
{ tail -c +$((${off:-0} + 1)) "$bz" | xz -dcq > "$OUT/vmlinux"; } 2>/dev/null || true
head -c 4 "$OUT/vmlinux" | grep -q ELF || cp "$bz" "$OUT/vmlinux"
echo "mkroot: $n packages, kernel $KVER, root $(du -s --apparent-size -m "$R" | cut -f1) MB, initrd $(($(stat -c %s "$OUT/initrd.img") / 1024)) KB"
