#!/usr/bin/env bash
# The main job on a fresh machine: set it up, then `enos up` the sample reservation
# (real SSH hosts in network namespaces, provisioned by Ansible) and show `enos info`.
# Needs root (network namespaces). Idempotent: a second run resumes the same environment.
# Give everything back with: .venv/bin/enos destroy
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/enos up -f reservation.yaml.sample "$@"
.venv/bin/enos info
