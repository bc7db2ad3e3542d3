"""``report.html``: one self-contained file (figures as ``data:`` URIs, no script, no
external resource) that says what was measured, with what and when: its date and enos'
version at the top, the figures (and how each was chosen), a summary per role, the
parameters, the failures, the provenance of the runs, the scripts the steps call, the
archive's manifest when one was made, the hosts, the versions, the reservation, the
campaign file and every row."""
from __future__ import annotations

import base64
import html
import json
import platform
import statistics
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, List, Tuple

from enos import __version__
from enos.campaign import provenance
from enos.campaign.figures import FigureSpec
from enos.campaign.file import Campaign
from enos.experiment.sweep import REPEAT, Sweep
from enos.state import atomic_write

#: what ``enos archive`` leaves in the results dir for the report
ARCHIVE_MANIFEST = "archive-manifest.json"
MAX_SCRIPT = 200_000

_CSS = """body{font-family:sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #bbb;padding:2px 8px;text-align:left;font-size:13px}
th{background:#eee}pre{background:#f6f6f6;padding:0.8em;overflow:auto;font-size:12px}
figure{display:inline-block;margin:0.5em}figcaption{font-size:12px;color:#555}
.fail{color:#b00}.meta{color:#555;font-size:13px}"""


def _table(headers, rows) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in headers) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def versions() -> Dict[str, str]:
    """Return the versions of enos, Python, the platform and the libraries a campaign uses."""
    out = {"enos": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in ("execo", "matplotlib", "Jinja2", "ansible-runner", "ansible-core", "pandas"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def summary(camp: Campaign, rows: List[dict]) -> List[list]:
    """Return the summary rows: per metric, combination and role, the mean over the
    repetitions of each run's mean over its hosts, the standard deviation, n."""
    names = list(camp.parameters)
    per: Dict[tuple, Dict[Any, List[float]]] = {}
    for r in rows:
        key = (r["metric"],) + tuple(r[n] for n in names) + (r.get("role", ""),)
        per.setdefault(key, {}).setdefault(r[REPEAT], []).append(float(r["value"]))
    order = [m.name for m in camp.metrics]
    out = []
    for key in sorted(per, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), k[0],
                                          [camp.parameters[p].index(v) for p, v in zip(names, k[1:-1])], k[-1])):
        vals = [statistics.fmean(v) for v in per[key].values()]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append([*key, f"{statistics.fmean(vals):.4g}", f"{std:.3g}", len(vals)])
    return out


def _figures(drawn: List[Tuple[FigureSpec, Path]], chosen: bool) -> List[str]:
    parts = ["<h2>Figures</h2>",
             f"<p class='meta'>{'chosen in the campaign file (figures:)' if chosen else 'the default set (no figures: section)'}; "
             "a line or bar is the mean over repetitions of each run's mean over its hosts, the error bar the "
             "standard deviation over repetitions; each dot is one host in one run.</p>"]
    for spec, png in drawn:
        data = base64.b64encode(png.read_bytes()).decode()
        how = ", ".join(f"{k}={v}" for k, v in (("x", spec.x), ("hue", spec.hue), ("col", spec.col),
                                                  ("row", spec.row), ("kind", spec.kind), ("where", spec.where or None))
                        if v)
        parts.append(f"<figure><img alt='{html.escape(png.stem)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(png.name)}: {html.escape(spec.y)} ({html.escape(how)})</figcaption></figure>")
    return parts


def _provenance(camp: Campaign, results: Path) -> List[str]:
    defn = provenance.definition(camp)
    current = provenance.fingerprint(defn)
    counts: Dict[str, int] = {}
    for rj in sorted((results / "runs").glob("*/*/result.json")):
        try:
            fp = json.loads(rj.read_text()).get("fingerprint") or "unknown"
        except (OSError, ValueError, AttributeError):
            continue
        counts[fp] = counts.get(fp, 0) + 1
    rows = [[fp, n, "the campaign file as it is now" if fp == current else "another definition"]
            for fp, n in sorted(counts.items())]
    return ["<h2>Provenance</h2>",
            f"<p>Each run records the fingerprint of the steps, setup, network constraints, reservation and "
            f"the files they name that it ran with; the campaign file now has <code>{current}</code>.</p>",
            _table(["fingerprint", "runs", "made with"], rows)]


def _scripts(camp: Campaign) -> List[str]:
    parts = ["<h2>Scripts and files the campaign names</h2>"]
    files = provenance.referenced_files(camp)
    if not files:
        return parts + ["<p>none</p>"]
    base = Path(camp.base_dir).resolve()
    for p in files:
        try:
            text = p.read_bytes()[:MAX_SCRIPT].decode("utf-8", errors="replace")
        except OSError as e:
            text = f"(cannot read: {e})"
        rel = p.relative_to(base) if p.is_relative_to(base) else p
        parts.append(f"<h3><code>{html.escape(str(rel))}</code></h3>" + _pre(text))
    return parts


def _archive(results: Path) -> List[str]:
    try:
        man = json.loads((results / ARCHIVE_MANIFEST).read_text())
    except (OSError, ValueError):
        return ["<h2>Archive</h2><p>none made yet: <code>enos archive --campaign FILE -o FILE.tar.gz</code></p>"]
    meta = man.get("meta") or {}
    files = man.get("files") or {}
    return ["<h2>Archive</h2>",
            f"<p><code>{html.escape(str(meta.get('archive', '')))}</code>, made {html.escape(str(meta.get('created')))} "
            f"by enos {html.escape(str(meta.get('enos')))}: {len(files)} file(s); check it with "
            f"<code>enos archive --check FILE</code> or <code>sha256sum -c SHA256SUMS</code> inside it.</p>",
            _table(["file", "bytes", "sha256"], [[p, f.get("size"), f.get("sha256")] for p, f in sorted(files.items())])]


def _text_of(camp: Campaign) -> Tuple[str, str]:
    import yaml       # PyYAML only when a report is written
    if isinstance(camp.reservation, str):
        try:
            res = Path(camp.reservation).read_text()
        except OSError as e:
            res = f"(cannot read {camp.reservation}: {e})"
    elif isinstance(camp.reservation, dict):
        res = yaml.safe_dump(camp.reservation, sort_keys=False)
    else:
        res = "(given as an environment with --env)"
    try:
        text = Path(camp.file).read_text()
    except OSError:
        text = yaml.safe_dump(camp.raw, sort_keys=False)
    return res, text


def _head(camp: Campaign, results: Path, stats: dict) -> List[str]:
    title = camp.name or Path(camp.file).stem
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)} — enos campaign</title>"
            f"<style>{_CSS}</style></head><body>",
            f"<h1>Campaign {html.escape(title)}</h1>",
            f"<p class='meta' id='made'>Report made {made} by enos {html.escape(__version__)} "
            f"(Python {html.escape(platform.python_version())}).</p>",
            f"<p>{html.escape(str(camp.raw.get('description') or ''))}</p>",
            f"<p>{stats['done']} of {stats['total']} run(s) done, {stats['failed']} failed, "
            f"{stats['in_progress']} in progress; {stats['elapsed']:.0f} s of runs. "
            f"Campaign file: <code>{html.escape(str(camp.file))}</code>; results: <code>{html.escape(str(results))}</code>.</p>"]


def _hosts(results: Path) -> List[str]:
    try:
        envinfo = json.loads((results / "environment.json").read_text())
    except (OSError, ValueError):
        envinfo = {"hosts": []}
    return [f"<h2>Hosts</h2><p>provider {html.escape(str(envinfo.get('provider')))}, environment "
            f"{html.escape(str(envinfo.get('env_dir')))} (run {html.escape(str(envinfo.get('run_id')))})</p>",
            _table(["host", "address", "roles", "OS", "kernel"],
                   [[h["alias"], h["address"], ",".join(h["roles"]), h.get("os"), h.get("kernel")]
                    for h in envinfo.get("hosts", [])])]


def write_html(camp: Campaign, results: Path, rows: List[dict], drawn: List[Tuple[FigureSpec, Path]], path: Path,
               problems: List[str]) -> None:
    """Write the self-contained report to ``path``."""
    stats = Sweep(results, camp.combinations(), camp.repeat).stats()
    names = list(camp.parameters)
    parts = _head(camp, results, stats) + _figures(drawn, camp.figures is not None)
    parts += ["<h2>Summary (mean ± std over repetitions, per role)</h2>",
              _table(["metric", *names, "role", "mean", "std", "n"], summary(camp, rows)),
              "<h2>Parameters</h2>",
              _table(["parameter", "values"], [[k, ", ".join(map(str, v))] for k, v in camp.parameters.items()]),
              f"<p>repeat: {camp.repeat}; excluded: {html.escape(json.dumps(camp.exclude))}; monitor: {camp.monitor}; "
              f"network constraints: {html.escape(json.dumps(camp.network_constraints))}</p>", "<h2>Failures</h2>"]
    if stats["failures"] or problems:
        parts.append("<ul class='fail'>" + "".join(
            f"<li>{html.escape(json.dumps(f['run']))}: {html.escape(str(f['error']))}</li>" for f in stats["failures"])
            + "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul>")
    else:
        parts.append("<p>none</p>")
    reservation, campaign_text = _text_of(camp)
    parts += _provenance(camp, results) + _scripts(camp) + _archive(results) + _hosts(results)
    parts += ["<h2>Versions</h2>", _table(["software", "version"], sorted(versions().items())),
              "<h2>Reservation</h2>", _pre(reservation), "<h2>Campaign file</h2>", _pre(campaign_text)]
    cols = names + [REPEAT, "host", "role", "metric", "value", "unit"]
    parts += [f"<h2>All results ({len(rows)} rows, also in results.csv)</h2>",
              _table(cols, [[r.get(c) for c in cols] for r in rows]), "</body></html>"]
    atomic_write(path, "\n".join(parts), mode=0o644)
