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
for pair in sshd:openssh-server ssh:openssh-client nft:nftables ip:iproute2 conntrack:conntrack socat:socat unshare:util-linux sysctl:procps qemu-aarch64-static:qemu-user-static sudo:sudo ethtool:ethtool dnsmasq:dnsmasq-base systemd-analyze:systemd; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
