#!/usr/bin/env bash
# Installs what GoShip needs on a Debian 12 host, only what is missing.
#   Debian packages: QEMU, qemu-img, mmdebstrap (image builds), xorriso (seed ISO),
#   e2fsprogs (mkfs.ext4 -d), busybox-static + cpio (the fast test initramfs).
#   npm packages: from package-lock.json, with `npm ci`.
# As root it installs; otherwise it says exactly what to run.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package that provides it
declare -A NEED=(
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [mmdebstrap]=mmdebstrap
  [xorriso]=xorriso
  [mkfs.ext4]=e2fsprogs
  [busybox]=busybox-static
  [cpio]=cpio
  [isoinfo]=genisoimage
)
missing=()
for cmd in "${!NEED[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ] && [ ! -x "/bin/$cmd" ]; then
    missing+=("${NEED[$cmd]}")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  # unique, sorted
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -eq 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# npm dependencies: install when node_modules is absent or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "bootstrap: installing npm packages (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
