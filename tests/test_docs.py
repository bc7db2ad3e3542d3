"""The documentation site: built by the README's command (``bash scripts/docs.sh``) with
warnings as errors, in a network namespace with no link up (the build fetches nothing);
its generated references complete (every reservation key, CLI command, error class,
capability); the built index and API pages opened in headless Chromium, every link
resolving and nothing fetched from the network (Chromium's own net log is read)."""
from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

import docblocks
from chromium import chromium
from prereq import missing

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import enosdocs  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built by scripts/docs.sh into a fresh directory, offline when root."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        missing("root and unshare are needed to build the docs with no network")
    out = tmp_path_factory.mktemp("site") / "html"
    envs = tmp_path_factory.mktemp("notebook-envs")     # the notebook pages' env dirs
    t0 = time.monotonic()
    # a network namespace of its own, loopback up (the notebook pages' Jupyter kernel talks
    # to the build over 127.0.0.1; their local hosts get a bridge in this namespace)
    script = f"ip link set lo up && exec bash {REPO / 'scripts' / 'docs.sh'} {out}"
    try:
        p = subprocess.run(["unshare", "--net", "sh", "-c", script], env=dict(os.environ, ENOS_DOCS_ENVS=str(envs)),
                           capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
    finally:        # a notebook that failed half-way left its hosts: give them back
        for state in envs.rglob("state.json"):
            if json.loads(state.read_text()).get("phase") != "destroyed":
                subprocess.run([sys.executable, "-m", "enos", "destroy", "--env", str(state.parent)],
                               capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"docs build failed (-W: a warning is an error):\n{p.stdout}\n{p.stderr}"
    print(f"docs build: {time.monotonic() - t0:.1f}s")
    return out


def text_of(page: Path) -> str:
    """The visible text of a built page (tags removed, entities decoded)."""
    import html as h
    return h.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_generated_parts_have_no_problem():
    """Every key has an example, every error class a cause and a fix, every capability and
    top-level key a description: what the build would turn into an error under -W."""
    _, problems = enosdocs.generate_all(DOCS)
    assert list(problems) == []


def test_every_error_class_has_an_entry():
    """A new class in enos/errors.py without a written cause and fix fails here."""
    assert enosdocs.undocumented_errors(DOCS / "errors.yaml") == []
    # and the check can fail: an entry removed is seen
    entries = enosdocs.errors_entries(DOCS / "errors.yaml")
    entries.pop("StateLocked")
    trimmed = DOCS / "_generated"
    trimmed.mkdir(exist_ok=True)
    f = trimmed / "errors-trimmed.yaml"
    import yaml
    f.write_text(yaml.safe_dump(entries))
    try:
        assert enosdocs.undocumented_errors(f) == ["StateLocked"]
    finally:
        f.unlink()


def test_site_builds_and_holds_the_references(site):
    """The pages exist; the generated references list every key of every provider's
    schema, every CLI command, every error class, each provider's capabilities."""
    for page in ("index", "getting-started", "tutorial", "experiments", "reservation", "cli", "python", "campaign-file", "troubleshooting",
                 "writing-a-provider", "architecture", "api", "providers/local", "providers/static",
                 "providers/g5k", "providers/libvirt", "providers/vagrant"):
        assert (site / f"{page}.html").exists(), page
    reservation = text_of(site / "reservation.html")
    for name, cls in enosdocs.builtin_classes().items():
        for path, _, _ in enosdocs.walk(cls.schema, "provider", skip=("type",)):
            assert path in reservation, f"{name}: {path} missing from the reservation reference"
        for path, _, _ in enosdocs.walk(cls.machine_schema, ""):
            assert path in reservation
        caps = text_of(site / "providers" / f"{name}.html")
        assert f"Declared by {cls.__module__}.{cls.__name__}" in caps, f"{name}: capabilities table missing"
    import enos.cli
    cli = text_of(site / "cli.html")
    for cmd, doc in enos.cli.COMMANDS.items():
        assert f"enos {cmd}" in cli and doc.strip().splitlines()[-1].strip() in cli, cmd
    trouble = text_of(site / "troubleshooting.html")
    for cls in enosdocs._error_classes():
        assert f"enos.errors.{cls.__name__}" in trouble, cls.__name__
    # the notebook pages ran during the build: their outputs are there, measured
    tutorial = text_of(site / "tutorial.html")
    assert "network constraints measured: ok" in tutorial and "measured_mbit" in tutorial
    assert re.search(r"\d+\.\d+mbit", tutorial), "no measured rate in the tutorial"
    assert (site / "tutorial.html").read_text().count("<img") >= 2, \
        "the tutorial's figures (monitor plot, sweep figure) are missing"
    experiments = text_of(site / "experiments.html")
    assert "RATE measured" in experiments and "facts of 3 host(s)" in experiments
    assert "destroyed" in tutorial and "destroyed" in experiments
    python = (site / "python.html").read_text()
    for name in ("enos.experiment.env.up", "enos.experiment.env.Env.run", "enos.results.Results",
                 "enos.provider.provider.Provider.init", "enos.testing.conformance.ConformanceSuite"):
        assert f'id="{name}"' in python, f"autodoc did not document {name}"


# --- the browser ------------------------------------------------------------------------------

class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key) and tag in ("a", "link", "script", "img", "iframe", "source", "video", "audio"):
                self.refs.append((tag, a[key]))


def _parse(text: str) -> _Refs:
    p = _Refs()
    p.feed(text)
    return p


def page_fetches(dom_url: str, tmp: Path, name: str):
    """Open ``dom_url`` in headless Chromium (no network: unshare --net) with its net log on;
    return (the DOM, the URLs the *page* asked for that are not files). Chromium's own
    background requests (initiator 'not an origin') are not the page's."""
    log = tmp / f"{name}-netlog.json"
    p = chromium([f"--log-net-log={log}", "--net-log-capture-mode=Everything", "--virtual-time-budget=5000",
                  "--dump-dom", dom_url], tmp, name)
    assert p.returncode == 0 and "</html>" in p.stdout, p.stderr[-2000:]
    raw = log.read_text()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:            # a log cut at exit lacks its closing brackets
        data = json.loads(raw.rstrip().rstrip(",") + "]}")
    start = data["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    fetched = [ev["params"]["url"] for ev in data["events"]
               if ev["type"] == start and ev.get("params", {}).get("url")
               and ev["params"].get("initiator") != "not an origin"
               and not ev["params"]["url"].startswith("file:")]
    return p.stdout, fetched


def test_net_log_probe_sees_a_page_fetch(tmp_path):
    """The probe is not blind: a page with a remote stylesheet and image is caught."""
    page = tmp_path / "remote.html"
    page.write_text('<html><head><link rel="stylesheet" href="https://fonts.example.org/a.css"></head>'
                    '<body><img src="http://cdn.example.org/x.png"></body></html>')
    _, fetched = page_fetches(page.as_uri(), tmp_path, "probe")
    assert "https://fonts.example.org/a.css" in fetched and "http://cdn.example.org/x.png" in fetched


def test_notebook_pages_ran(site):
    """Every code cell of every notebook page (tutorial, experiments) was executed by the
    build's Jupyter kernel, in order, without an error: myst-nb's executed copies
    (``<out>/../jupyter_execute/*.ipynb``) hold one executed cell per ``{code-cell}`` block."""
    pages = docblocks.notebook_pages()
    assert {p.stem for p in pages} >= {"tutorial", "experiments"}, pages
    for page in pages:
        cells = [b for b in docblocks.blocks(page) if b.kind == "cell"]
        rel = page.relative_to(DOCS).with_suffix(".ipynb")
        executed = site.parent / "jupyter_execute" / rel
        assert executed.exists(), f"{rel}: not executed by the build"
        nb = json.loads(executed.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert len(code) == len(cells) > 0, f"{rel}: {len(code)} executed cells, {len(cells)} in the page"
        assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), f"{rel}: not all cells ran"
        errors = [o for c in code for o in c["outputs"] if o.get("output_type") == "error"]
        assert not errors, f"{rel}: {errors}"
        print(f"{rel}: {len(code)} cells executed")


@pytest.mark.parametrize("page", ["index.html", "python.html", "tutorial.html"])
def test_page_in_chromium_links_resolve_nothing_fetched(site, tmp_path, page):
    """The rendered page (after its scripts ran) links only to files of the site that exist,
    and to anchors that exist in them; it fetches nothing over the network."""
    dom, fetched = page_fetches((site / page).as_uri(), tmp_path, page.split(".")[0])
    assert fetched == [], f"{page} fetched {fetched}"
    refs = _parse(dom)
    assert len([r for r in refs.refs if r[0] == "a"]) > 20, "no navigation rendered"
    broken, remote = [], []
    for tag, ref in refs.refs:
        u = urlparse(ref)
        if u.scheme in ("http", "https"):
            if tag != "a":
                remote.append(ref)               # a resource the page would load from the network
            continue
        if u.scheme in ("mailto", "data", "javascript") or (not u.path and not u.fragment):
            continue
        target = (site / page).parent / unquote(u.path) if u.path else site / page
        if u.scheme == "file":
            target = Path(unquote(u.path))
        if not target.exists():
            broken.append(ref)
            continue
        if u.fragment and target.suffix == ".html":
            ids = refs.ids if target == site / page else _parse(target.read_text()).ids
            if unquote(u.fragment) not in ids:
                broken.append(ref)
    assert not remote, f"{page} loads remote resources: {remote}"
    assert not broken, f"{page}: links that do not resolve: {broken}"
