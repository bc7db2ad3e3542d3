#!/usr/bin/env bash
# Set this machine up for enos, idempotently: system packages (Debian/Ubuntu, as root),
# a virtualenv in .venv with enos installed (editable, 'compat' mode: a .pth path entry
# instead of an import hook that costs ~20 ms at every interpreter start).
#   scripts/setup.sh          what `enos up` of reservation.yaml.sample and `enos campaign`
#                             (execo, matplotlib, Jinja2) need
#   scripts/setup.sh --test   + every provider's libraries, the test tools, the docs tools,
#                             and what the integration tests need (libvirtd, QEMU,
#                             mmdebstrap, a kernel, headless Chromium for the HTML tests)
#   scripts/setup.sh --docs   what scripts/docs.sh needs (Sphinx, MyST, the theme)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."   # the checkout this script belongs to, even through a symlink
mode=${1:-}

core_pkgs=(openssh-server openssh-client iproute2 util-linux python3 python3-venv)
test_pkgs=(pkg-config libvirt-dev gcc python3-dev
           libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils dnsmasq-base iptables
           mmdebstrap linux-image-amd64 e2fsprogs busybox-static cpio kmod zstd
           vagrant vagrant-libvirt chromium chromium-driver)

pkgs=("${core_pkgs[@]}")
[ "$mode" = "--test" ] && pkgs+=("${test_pkgs[@]}")

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing system packages: ${missing[*]} — install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Daemons must not be started by package scripts (no systemd here; tests start their own).
  policy=/usr/sbin/policy-rc.d; made_policy=
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1; fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$made_policy" ] && rm -f "$policy"
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=.venv/.enos-installed$mode
fresh() { [ -f "$1" ] && [ ! setup.cfg -nt "$1" ]; }
# --test installs a superset of the other modes: its fresh stamp satisfies them (and a
# second pip run would need the package index, which the tests' network guard refuses)
if ! fresh "$stamp" && ! fresh .venv/.enos-installed--test; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  if [ "$mode" = "--test" ]; then
    .venv/bin/python -m pip install -q -e '.[all,test,docs]' --config-settings editable_mode=compat
  elif [ "$mode" = "--docs" ]; then
    .venv/bin/python -m pip install -q -e '.[campaign,docs]' --config-settings editable_mode=compat
  else
    .venv/bin/python -m pip install -q -e '.[campaign]' --config-settings editable_mode=compat
  fi
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/enos $(.venv/bin/enos --version | cut -d' ' -f2))" >&2
