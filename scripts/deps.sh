#!/usr/bin/env bash
# Installs the Debian packages migrate's lab, demo and tests need, when any
# is missing. Go itself must already be installed. qemu-user-static runs the
# release's linux/arm64 agent in a test (e2e/release_test.go); with
# --no-install-recommends (no binfmt-support) it registers no binfmt_misc
# handler: the test calls qemu-aarch64-static explicitly.
# systemd is for systemd-analyze (agent: the boot unit's ordering); installing
# it starts nothing.
set -euo pipefail
need=()
for pair in sshd:openssh-server ssh:openssh-client nft:nftables ip:iproute2 conntrack:conntrack socat:socat unshare:util-linux sysctl:procps qemu-aarch64-static:qemu-user-static sudo:sudo ethtool:ethtool dnsmasq:dnsmasq-base iptables-nft-restore:iptables iptables-legacy-restore:iptables ufw:ufw firewalld:firewalld systemd-analyze:systemd; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # ufw and firewalld are for the tests, which run them only inside the
  # lab's namespaces: a refusing policy-rc.d keeps their packages from
  # starting them on this machine, and a firewalld installed here is not
  # left enabled for the next boot.
  ours=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && ours=1
  fi
  rc=0
  apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}" || rc=$?
  [ -z "$ours" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || exit "$rc"
  if printf '%s\n' "${need[@]}" | grep -qx firewalld && command -v systemctl >/dev/null 2>&1; then
    systemctl disable firewalld.service >/dev/null 2>&1 || true
  fi
fi
# systemd-udevd for e2e TestSysctlGlobsAndUdev, which runs it only inside a
# lab host's namespaces. The udev package itself is not installed (its
# postinst would start udevd on this machine): its files are unpacked into
# a cache, at the version of the installed systemd (udevadm links against
# systemd's libsystemd-shared).
udev_cache=/var/cache/migrate-udev
if [ ! -x /lib/systemd/systemd-udevd ] && [ ! -x "$udev_cache/bin/udevadm" ]; then
  ver=$(dpkg-query -W -f='${Version}' systemd)
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q "udev=$ver" 2>/dev/null || { apt-get update -q && apt-get download -q "udev=$ver"; })
  mkdir -p "$udev_cache"
  dpkg-deb -x "$tmp"/udev_*.deb "$udev_cache"
  rm -rf "$tmp"
fi
