#!/usr/bin/env bash
# mkroot.sh OUT DEBS KVER: build the arm64 lane's guest files into the empty
# directory OUT, from the arm64 .debs in DEBS (kernel linux-image-KVER
# included). Called by scripts/vm-lane-arm64.sh, which runs it as
#   unshare --mount --propagation private -- mkroot.sh OUT DEBS KVER
# so that the mount lock-down below stays in this process's own mount
# namespace.
#
# Writes:
#   OUT/root/        the guests' root: every .deb unpacked with dpkg-deb -x
#                    (never copied), plus a few files written here; the guests
#                    mount it read-only over 9p under a tmpfs overlay
#   OUT/initrd.img   busybox + the modules to mount that root (stage 1, init)
#
# Host safety. Debian packages hold absolute symlinks (sbin/modprobe ->
# /bin/kmod, ...), and a tool that follows one while writing into the tree
# writes into the HOST instead (the lane's research overwrote the host's
# /bin/busybox with an arm64 one that way). So, before anything is written,
# every mount of this private namespace except OUT is remounted read-only:
# a write through a symlink that leaves OUT fails with EROFS instead of
# landing on the host. Files are only unpacked (dpkg-deb -x), created fresh
# after checking that no component of their directory is a symlink, or made
# as relative symlinks.
set -euo pipefail
[ $# = 3 ] || { echo "usage: $0 OUT DEBS KVER" >&2; exit 2; }
OUT=$(realpath -e "$1") DEBS=$(realpath -e "$2") KVER=$3
HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "mkroot: $*" >&2; exit 1; }
[ -z "$(ls -A "$OUT")" ] || die "$OUT is not empty"
ls "$DEBS/linux-image-${KVER}_"*_arm64.deb >/dev/null 2>&1 || die "no linux-image-$KVER in $DEBS"

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
[ -x "$R/usr/sbin/sshd" ] && [ -f "$R/bin/busybox" ] && [ ! -L "$R/bin/busybox" ] && [ -e "$R/boot/vmlinuz-$KVER" ] ||
  die "sshd, busybox or the kernel missing after unpacking $n packages"
depmod -b "$R" "$KVER"

# --- files of our own ----------------------------------------------------------------
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
# No PAM (its modules and config are not set up here), keys only; the host
# key and root's authorized_keys come per run from the lane's share (init2).
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
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
mkdir -p "$R/root" "$R/proc" "$R/sys" "$R/dev" "$R/run" "$R/tmp" "$R/var/lib" "$R/var/log"
chmod 700 "$R/root"
# No dash here: busybox is /bin/sh. Then busybox fills the gaps the packages
# leave (grep, sed, mount, setsid, unshare, poweroff, ...), as relative links
# in usr/bin. The applet list comes from running the arm64 busybox under
# qemu-user (it only prints).
[ ! -L "$R/bin" ] && [ ! -L "$R/usr/bin" ] || die "bin or usr/bin is a symlink"
ln -sfn busybox "$R/bin/sh"
for a in $(qemu-aarch64-static "$R/bin/busybox" --list); do
  case $a in */* | '') continue ;; esac
  have=
  for d in usr/local/sbin usr/local/bin usr/sbin usr/bin sbin bin; do
    if [ -e "$R/$d/$a" ] || [ -L "$R/$d/$a" ]; then have=1; break; fi
  done
  [ -n "$have" ] || ln -s ../../bin/busybox "$R/usr/bin/$a"
done

# --- stage 1: the initramfs ----------------------------------------------------------
I=$OUT/initrd
mkdir -p "$I/bin" "$I/mod" "$I/proc" "$I/dev" "$I/sys"
cp "$R/bin/busybox" "$I/bin/busybox"
: > "$I/modules"
for m in virtio_pci virtio_net 9pnet_virtio 9p overlay; do
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
echo "mkroot: $n packages, kernel $KVER, root $(du -s --apparent-size -m "$R" | cut -f1) MB, initrd $(($(stat -c %s "$OUT/initrd.img") / 1024)) KB"
