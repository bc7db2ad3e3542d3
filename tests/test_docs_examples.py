"""Every code block of the docs that is a command or Python runs, as written, on this
machine: per page, in order, in a working directory holding the repository's files (as
root, on the `local` provider's real namespace hosts); YAML reservations pass
`enos validate` and campaign files `enos campaign validate` (or are refused, when marked
invalid). A block that cannot run here carries a marker with a reason of a known kind (tests/docblocks.py), checked here; nothing is
skipped silently. Whatever a page booked is destroyed at its end, even on failure."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import docblocks
from docblocks import REPO, Block
from prereq import missing

PAGES = docblocks.pages()
BLOCK_TIMEOUT = 900


def test_every_block_is_labelled_and_marked_correctly():
    """Each block says its language (text for output); markers name a known reason."""
    problems = []
    count = {}
    for page in PAGES:
        for b in docblocks.blocks(page):
            count[b.kind] = count.get(b.kind, 0) + 1
            if b.kind in ("unlabelled", "unknown"):
                problems.append(f"{b.where}: code block without a known language ('{b.lang}'): "
                                f"use sh, python, yaml, or text for output")
            p = docblocks.marker_problem(b)
            if p:
                problems.append(f"{b.where}: {p}")
            if ("fragment" in b.marker or "invalid" in b.marker or "beside" in b.marker) and b.kind != "yaml":
                problems.append(f"{b.where}: fragment/invalid/beside are for YAML blocks")
            if b.kind == "cell" and not docblocks.is_notebook(page):
                problems.append(f"{b.where}: a code-cell outside a notebook page (front matter "
                                f"'file_format: mystnb') is never executed")
            if b.kind == "cell" and b.marker:
                problems.append(f"{b.where}: a notebook cell always runs in the build: no marker")
    assert not problems, "\n".join(problems)
    assert count.get("shell", 0) > 20 and count.get("python", 0) > 3 and count.get("cell", 0) > 10, count
    print(f"blocks: {count}")


def test_marker_checks_can_fail(tmp_path):
    """An unknown skip kind, a reasonless skip and a covered= of no test are refused."""
    page = tmp_path / "p.md"
    page.write_text("<!-- docs-test: skip=lazy -->\n```sh\ntrue\n```\n"
                    "<!-- docs-test: skip=grid5000 -->\n```sh\ntrue\n```\n"
                    "<!-- docs-test: covered=tests/test_docs.py::test_nothing_here runs it -->\n```sh\ntrue\n```\n")
    found = [docblocks.marker_problem(b) for b in docblocks.blocks(page)]
    assert all(found), found
    # a code-cell counts as run only on a notebook page (the build executes those)
    nb = tmp_path / "n.md"
    nb.write_text("---\nfile_format: mystnb\n---\n```{code-cell} ipython3\n1\n```\n")
    assert docblocks.is_notebook(nb) and not docblocks.is_notebook(page)
    assert [b.kind for b in docblocks.blocks(nb)] == ["cell"]


def workdir(tmp: Path) -> Path:
    """A directory that looks like the repository (its files as symlinks) without anyone's
    environments in it."""
    w = tmp / "w"
    w.mkdir()
    for entry in REPO.iterdir():
        if entry.name in ("current", ".git", ".pytest_cache") or entry.name.startswith("enos_"):
            continue
        (w / entry.name).symlink_to(entry)
    return w


def block_env(w: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{w / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("ENOS_FAILPOINTS", None)
    # no Grid'5000 credentials, whatever this machine has: a g5k block then stops at the
    # credentials and never calls the real API
    for k in ("G5K_USERNAME", "G5K_PASSWORD", "G5K_API_URL"):
        env.pop(k, None)
    env["G5K_CREDENTIALS_FILE"] = str(w / "no-grid5000-credentials.yaml")
    return env


def envs_left(w: Path) -> list:
    """Env dirs under ``w`` (symlinked dirs not followed) that are not destroyed."""
    out = []
    for root, dirs, files in os.walk(w, followlinks=False):
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        if "state.json" in files:
            try:
                phase = json.loads((Path(root) / "state.json").read_text()).get("phase")
            except (OSError, ValueError):
                phase = "damaged"
            if phase != "destroyed":
                out.append(Path(root))
    return out


def run_yaml(b: Block, w: Path, env: dict) -> str:
    """Validate a reservation block (or write it to its file=); return a problem or ''."""
    try:
        data = yaml.safe_load(b.text)
    except yaml.YAMLError as e:
        return f"does not parse as YAML: {e}"
    if "file" in b.marker:
        (w / b.marker["file"]).write_text(b.text)
    for t in filter(None, b.marker.get("touch", "").split(",")):
        (w / t).parent.mkdir(parents=True, exist_ok=True)
        (w / t).touch()
    if "fragment" in b.marker or not isinstance(data, dict):
        return ""
    if "steps" in data:         # a campaign file: every check 'enos campaign run' makes
        d = w / f"_campaign_{b.page.stem}_{b.line}"
        d.mkdir()
        if "beside" in b.marker:    # validated beside the files it names (reservation, playbooks)
            for entry in (REPO / b.marker["beside"]).iterdir():
                (d / entry.name).symlink_to(entry)
        (d / "_block.yaml").write_text(b.text)
        argv = ["campaign", "validate", str(d / "_block.yaml")]
    elif "provider" in data or "providers" in data:
        f = w / f"_block_{b.page.stem}_{b.line}.yaml"
        f.write_text(b.text)
        argv = ["validate", "-f", f.name]
    else:
        return ""
    p = subprocess.run([str(w / ".venv" / "bin" / "enos")] + argv, cwd=w, env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if "invalid" in b.marker:
        return "" if p.returncode == 2 else f"marked invalid, but enos {argv[0]} exited {p.returncode}"
    return "" if p.returncode == 0 else f"enos {argv[0]} exited {p.returncode}: {p.stderr.strip()[-600:]}"


def run_code(b: Block, w: Path, env: dict) -> str:
    """Run a shell or Python block in ``w``; return a problem or ''."""
    argv = ["bash", "-e", "-o", "pipefail", "-c", b.text] if b.kind == "shell" \
        else [str(w / ".venv" / "bin" / "python"), "-c", b.text]
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, cwd=w, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"did not finish within {BLOCK_TIMEOUT}s"
    print(f"{b.where} ({b.kind}, {time.monotonic() - t0:.1f}s): exit {p.returncode}")
    if p.returncode != 0:
        return f"exited {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"
    return ""


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_blocks_run(page, tmp_path):
    """The page's blocks, in order: shell and Python run (exit 0), YAML reservations and
    campaign files validate; marked ones are accounted for. Envs left by the page are destroyed at the end."""
    if os.geteuid() != 0:
        missing("the docs' examples run on the local provider: root is needed")
    w = workdir(tmp_path)
    env = block_env(w)
    ran, marked = 0, []
    try:
        for b in docblocks.blocks(page):
            if b.kind == "cell":        # run by the site build in a Jupyter kernel
                marked.append(f"{b.where}: cell (tests/test_docs.py::test_notebook_pages_ran)")
                continue
            if "skip" in b.marker or "covered" in b.marker:
                marked.append(f"{b.where}: {b.marker}")
                continue
            if b.kind == "yaml":
                problem = run_yaml(b, w, env)
            elif b.kind in ("shell", "python"):
                problem = run_code(b, w, env)
                ran += 1
            else:
                if "file" in b.marker:
                    (w / b.marker["file"]).write_text(b.text)
                continue
            assert not problem, f"{b.where}: {b.kind} block {problem}\n--- the block:\n{b.text}"
    finally:
        for d in envs_left(w):
            subprocess.run([str(w / ".venv" / "bin" / "enos"), "destroy", "--env", str(d)], cwd=w, env=env,
                           capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
        left = envs_left(w)
    assert not left, f"{page.name}: environments not destroyed after the page: {left}"
    print(f"{page.name}: {ran} block(s) run; marked: {marked}")
