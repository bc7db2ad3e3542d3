"""HTML the user opens, checked as the user sees it: a strict well-formedness parse of a
fragment (every element closed, in order, no script) and a real headless Chromium, run in
a network namespace of its own (it cannot send a packet anywhere) with the flags of
/work/.library/env/machines/python.md, that renders fragments and reports their tables
(headers, cells' text and computed colour)."""
from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VOID = {"br", "hr", "img", "meta", "input", "col", "wbr"}


@dataclass
class Table:
    """One parsed ``<table>``: its caption, header cells and body rows (cells' text)."""
    caption: str = ""
    headers: List[str] = field(default_factory=list)
    rows: List[List[str]] = field(default_factory=list)


class _Strict(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: List[str] = []
        self.errors: List[str] = []
        self.tags: List[str] = []
        self.tables: List[Table] = []
        self._cell: Optional[List[str]] = None
        self._where = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "script":
            self.errors.append("a <script> element")
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append(Table())
        elif tag in ("th", "td", "caption"):
            self._cell, self._where = [], tag
        elif tag == "tr" and self.tables and "tbody" in self.stack:
            self.tables[-1].rows.append([])
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("th", "td", "caption") and self._cell is not None and self.tables:
            text, t = "".join(self._cell), self.tables[-1]
            if tag == "caption":
                t.caption = text
            elif tag == "th" and "thead" in self.stack:
                t.headers.append(text)
            elif t.rows:
                t.rows[-1].append(text)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(fragment: str) -> List[Table]:
    """Parse ``fragment`` strictly; return its tables. Raises AssertionError naming the
    first defects (an element closed out of order or never, a ``<script>``)."""
    p = _Strict()
    p.feed(fragment)
    p.close()
    if p.stack:
        p.errors.append(f"unclosed {p.stack}")
    assert not p.errors, f"malformed HTML: {p.errors[:3]} in {fragment[:300]!r}"
    return p.tables


def chromium(args: List[str], tmp: Path, name: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run headless Chromium with ``args`` in a network namespace of its own (no interface
    up: nothing can leave), a fresh profile under ``tmp``; return the finished process."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed (scripts/setup.sh --test installs it)"
    argv = ["unshare", "--net", exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / ('profile-' + name)}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


_PROBE = """<script>
const out = {};
for (const div of document.querySelectorAll('div[data-part]')) {
  out[div.dataset.part] = [...div.querySelectorAll('table')].map(t => ({
    caption: t.caption ? t.caption.textContent : '',
    headers: [...t.querySelectorAll('thead th')].map(x => x.textContent),
    rows: [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(
      td => [td.textContent, getComputedStyle(td).color])),
    visible: t.getBoundingClientRect().height > 0}));
}
document.getElementById('enos-out').textContent = JSON.stringify(out);
</script>"""


def render_tables(parts: Dict[str, str], tmp: Path) -> Dict[str, list]:
    """Render each HTML fragment of ``parts`` (name → fragment) in one page in headless
    Chromium; return name → list of its tables as the browser built them: ``caption``,
    ``headers``, ``rows`` of ``[text, computed colour]`` cells, ``visible``."""
    page = "<html><body>" + "".join(f'<div data-part="{htmllib.escape(k)}">{v}</div>' for k, v in parts.items()) \
        + '<pre id="enos-out"></pre>' + _PROBE + "</body></html>"
    path = tmp / "enos-parts.html"
    path.write_text(page)
    p = chromium(["--dump-dom", path.as_uri()], tmp, "parts")
    m = re.search(r'<pre id="enos-out">(.*?)</pre>', p.stdout, re.S)
    assert m, "chromium rendered nothing: " + p.stderr[-2000:]
    return json.loads(htmllib.unescape(m.group(1)))
