"""The code blocks of the documentation (README.md and docs/**/*.md), with the markers that
say how tests/test_docs_examples.py treats them.

A marker is an HTML comment on the line(s) just before a block (invisible on the site and
on GitHub)::

    <!-- docs-test: skip=grid5000 needs a Grid'5000 account -->
    <!-- docs-test: covered=tests/test_example_provider.py::TestLoopbackConformance runs it -->
    <!-- docs-test: file=static.yaml -->        (a YAML/text block written to that file first)
    <!-- docs-test: fragment -->                (a YAML block that is part of a file: parsed only)
    <!-- docs-test: invalid -->                 (a YAML reservation that enos validate must refuse)
    <!-- docs-test: beside=examples/iperf-campaign -->  (a campaign file, validated by 'enos
                                                 campaign validate' beside that directory's files)
    <!-- docs-test: touch=keys/id_ed25519 -->   (files the block names, made empty first: a key,
                                                 an image, a playbook the reader brings)

``skip`` takes a kind from :data:`SKIP_KINDS` and a reason of a few words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
SHELL = {"sh", "bash", "shell", "console"}
PYTHON = {"python", "py"}
YAML = {"yaml", "yml"}
#: shown as is, never run: outputs, diagrams, other formats
TEXT = {"text", "toml", "ini", "json", "jinja", "html", "csv", "xml", "diff"}
#: why a block cannot run on this machine (the only accepted reasons)
SKIP_KINDS = {
    "grid5000": "needs a Grid'5000 account, its API and its gateway",
    "macos": "runs on macOS only",
    "recursive": "is the test suite (or a part of it) that runs this test",
    "remote": "needs a second machine",
    "virtualbox": "needs VirtualBox, which Debian does not ship",
    "installs": "installs from a package index into a new virtualenv or the system "
                "(scripts/setup.sh does the same before the tests)",
}
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)(.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    """One fenced code block: its page, line (1-based, of the opening fence), language,
    text and marker (``{"skip": "kind reason"}``, ``{"file": "name"}``, ...)."""

    page: Path
    line: int
    lang: str
    text: str
    marker: Dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def kind(self) -> str:
        """shell, python, yaml, text, cell (a notebook page's code cell), directive or
        unlabelled."""
        if self.lang == "{code-cell}":
            return "cell"
        if self.lang.startswith("{"):
            return "directive"
        for name, langs in (("shell", SHELL), ("python", PYTHON), ("yaml", YAML), ("text", TEXT)):
            if self.lang in langs:
                return name
        return "unlabelled" if not self.lang else "unknown"


def pages() -> List[Path]:
    """README.md and every page source of the site."""
    docs = REPO / "docs"
    found = [p for p in sorted(docs.rglob("*.md"))
             if not any(part.startswith("_") for part in p.relative_to(docs).parts)]
    return [REPO / "README.md"] + found


def is_notebook(page: Path) -> bool:
    """Whether ``page`` is a MyST text notebook (front matter ``file_format: mystnb``): its
    ``{code-cell}`` blocks are executed in a Jupyter kernel by the site build (myst-nb), and
    tests/test_docs.py checks that each of them ran."""
    text = page.read_text()
    if not text.startswith("---\n"):
        return False
    front = text[4:text.find("\n---", 4)]
    return bool(re.search(r"^file_format:\s*mystnb\s*$", front, re.M))


def notebook_pages() -> List[Path]:
    """The site's notebook pages (executed by the build)."""
    return [p for p in pages() if p.name != "README.md" and is_notebook(p)]


def parse_marker(text: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for m in re.finditer(r"(\w+)(?:=(\S+)((?:\s+(?!\w+=)[^\s]+)*))?", text):
        key, value, rest = m.group(1), m.group(2), (m.group(3) or "").strip()
        out[key] = (value or "") + (" " + rest if rest else "")
    return out


def blocks(page: Path) -> List[Block]:
    """The fenced code blocks of ``page``, in order."""
    lines = page.read_text().splitlines()
    out: List[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3)
        j = i + 1
        while j < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[j]):
            j += 1
        body = [ln[len(indent):] if ln.startswith(indent) else ln for ln in lines[i + 1:j]]
        marker: Dict[str, str] = {}
        k = i - 1
        while k >= 0 and _MARKER.match(lines[k]):
            marker.update(parse_marker(_MARKER.match(lines[k]).group(1)))
            k -= 1
        out.append(Block(page, i + 1, lang.lower(), "\n".join(body) + "\n", marker))
        i = j + 1
    return out


def marker_problem(b: Block) -> Optional[str]:
    """What is wrong with the block's marker, or None."""
    if "skip" in b.marker:
        kind, _, reason = b.marker["skip"].partition(" ")
        if kind not in SKIP_KINDS:
            return f"skip kind '{kind}' is not one of {sorted(SKIP_KINDS)}"
        if len(reason.split()) < 3:
            return "a skip needs a reason of a few words after its kind"
    if "covered" in b.marker:
        target, _, reason = b.marker["covered"].partition(" ")
        path, _, name = target.partition("::")
        f = REPO / path
        if not f.exists() or not name or not re.search(rf"^\s*(def|class) {re.escape(name.split('::')[0])}\b",
                                                          f.read_text(), re.M):
            return f"covered= names no existing test: {target}"
        if len(reason.split()) < 2:
            return "covered= needs a reason after the test id"
    for t in filter(None, b.marker.get("touch", "").split(",")):
        if t.startswith("/") or ".." in Path(t).parts:
            return f"touch= takes paths inside the working directory, not {t}"
    if "beside" in b.marker and not (REPO / b.marker["beside"]).is_dir():
        return f"beside= names no directory of the repository: {b.marker['beside']}"
    unknown = set(b.marker) - {"skip", "covered", "file", "fragment", "invalid", "touch", "beside"}
    if unknown:
        return f"unknown marker keys {sorted(unknown)}"
    return None
