#!/usr/bin/env bash
# Build the documentation site into docs/_build/html (or the directory given), with
# warnings as errors. Installs what it needs first (the 'docs' extra: Sphinx, MyST, the
# theme) into .venv, through scripts/setup.sh. The build itself fetches nothing.
#   bash scripts/docs.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
out=${1:-docs/_build/html}
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sphinx, myst_parser, myst_nb, furo' 2>/dev/null; then
  bash scripts/setup.sh --docs
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "docs: not root: the notebook pages (tutorial, experiments) are shown without running them" \
       "(they book 'local' hosts, which needs root)" >&2
fi
start=$(date +%s)
.venv/bin/python -m sphinx -E -W --keep-going -q -b html -d "$out/.doctrees" docs "$out"
echo "docs: built $out/index.html in $(( $(date +%s) - start ))s" >&2
