#!/usr/bin/env bash
# Run the whole test suite, installing what it needs first (idempotent).
# Extra arguments go to pytest (e.g. scripts/test.sh -k local -x).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test || exit 1
.venv/bin/python -m pytest -ra --timeout=1200 "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "test: pytest collected no tests — that is a failure" >&2
  exit 1
fi
exit $rc
