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
# the notebook pages' env dirs: whatever a failed or interrupted build left booked is destroyed
made_envs=
if [ -z "${ENOS_DOCS_ENVS:-}" ]; then
  ENOS_DOCS_ENVS=$(mktemp -d "${TMPDIR:-/tmp}/enos-docs-envs.XXXXXX"); export ENOS_DOCS_ENVS; made_envs=1
fi
give_back() {   # then removes the directory it made, once nothing in it is booked
  .venv/bin/python - "$ENOS_DOCS_ENVS" <<'PY' && [ -n "$made_envs" ] && rm -rf "$ENOS_DOCS_ENVS" || true
import json, pathlib, subprocess, sys
left = []
for state in pathlib.Path(sys.argv[1]).rglob("state.json"):
    try:
        done = json.loads(state.read_text()).get("phase") == "destroyed"
    except (OSError, ValueError):
        done = False
    if not done:
        print(f"docs: destroying {state.parent}, left by a notebook page", file=sys.stderr)
        p = subprocess.run([sys.executable, "-m", "enos", "-q", "destroy", "--env", str(state.parent)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=300)
        if p.returncode != 0:
            left.append(str(state.parent))
for d in left:
    print(f"docs: {d} is not destroyed: run 'enos destroy --env {d}'", file=sys.stderr)
sys.exit(1 if left else 0)
PY
}
trap give_back EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start=$(date +%s)
.venv/bin/python -m sphinx -E -W --keep-going -q -b html -d "$out/.doctrees" docs "$out"
echo "docs: built $out/index.html in $(( $(date +%s) - start ))s" >&2
