#!/usr/bin/env bash
# Install the Debian packages the boot harness runs on the host (run as root).
#
#   debootstrap        builds the cached bookworm image
#   systemd-container  systemd-nspawn boots it
#   udev               a host udevd gives the loop-device data disk its by-id link
#                      and udev database (the harness starts and stops it)
#   iproute2           the private network namespace of the mirror and machines
#   dpkg-dev           dpkg-scanpackages for the local apt repository
#   zstd, curl         the Ollama archive and the mirror's readiness probe
#   util-linux, e2fsprogs  losetup, nsenter, mount, blkid
set -Eeuo pipefail

PACKAGES=(debootstrap systemd-container udev iproute2 dpkg-dev zstd curl util-linux e2fsprogs)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f '${Status}' "$package" 2> /dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "boot harness packages already installed"
  exit 0
fi

# udev's maintainer script starts udevd and replays every device event when the
# host has no systemd. The harness runs its own udevd only while tests run, so
# keep the install from starting one, without touching a policy that exists.
policy=/usr/sbin/policy-rc.d
created_policy=false
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# Written by tests/boot/install_deps.sh while it installs packages.\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  created_policy=true
fi
remove_policy() {
  if [[ $created_policy == true ]]; then
    rm -f "$policy"
  fi
}
trap remove_policy EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
echo "installed: ${missing[*]}"
