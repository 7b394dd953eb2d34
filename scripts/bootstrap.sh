#!/usr/bin/env bash
# Installs what GoShip needs on a Debian 12 host, only what is missing.
#   Debian packages: QEMU, qemu-img, OVMF (UEFI boot), mmdebstrap (image builds), xorriso and
#   genisoimage (seed ISO, and a second reader for it),
#   e2fsprogs (mkfs.ext4 -d), busybox-static + cpio (the fast test initramfs).
#   npm packages: from package-lock.json, with `npm ci`.
# As root it installs; otherwise it says exactly what to run.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Debian packages GoShip needs (busybox-static: the fast test guest needs a
# static busybox, which the plain busybox package is not).
# openssh-client reaches other nodes (goshipctl node …); openssh-server is the
# tests' second node (test/e2e/nodes.test.ts starts its own sshd on loopback).
PACKAGES=(qemu-system-x86 qemu-utils ovmf mmdebstrap xorriso genisoimage e2fsprogs busybox-static cpio openssh-client openssh-server)
missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Installing a package must not start its service here (openssh-server's sshd):
    # GoShip starts what it needs itself. policy-rc.d says so to invoke-rc.d, only while we install.
    policy_added=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && policy_added=1
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ -n "$policy_added" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  else
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# docker-compose (Debian 12's, v1) drives the same relayed socket in test/e2e/host-tools.test.ts.
# Without its Recommends: they would put docker.io, a Docker daemon, on this host.
if ! dpkg-query -W -f='${Status}' docker-compose 2>/dev/null | grep -q 'install ok installed'; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "bootstrap: installing docker-compose (without a Docker daemon)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
    }
  else
    echo "bootstrap: missing docker-compose: sudo apt-get install -y --no-install-recommends docker-compose" >&2
    exit 1
  fi
fi

# The Docker CLI the tests of `goshipctl project docker` drive (test/e2e/host-tools.test.ts):
# Debian's own (docker.io's /usr/bin/docker), extracted from the package into .cache/, not
# installed, so no Docker daemon is put on this host. A host's own docker CLI works the same.
DOCKER_CLI=.cache/docker-cli/docker
if [ ! -x "$DOCKER_CLI" ]; then
  echo "bootstrap: fetching Debian's Docker CLI into $DOCKER_CLI (the package is extracted, not installed)" >&2
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download docker.io >/dev/null 2>&1 || { apt-get update -qq && apt-get download docker.io >/dev/null 2>&1; }; })
  dpkg-deb -x "$tmp"/docker.io_*.deb "$tmp/root"
  mkdir -p "$(dirname "$DOCKER_CLI")"
  install -m 0755 "$tmp/root/usr/bin/docker" "$DOCKER_CLI"
  rm -rf "$tmp"
fi

# npm dependencies: install when node_modules is absent or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "bootstrap: installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
