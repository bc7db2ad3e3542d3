"""The end of a campaign: ``results.csv``, figures and a self-contained ``report.html``.

* ``results.csv``: one row per run (combination × repetition) × metric × host, columns
  each parameter, ``repeat``, ``host``, ``metric``, ``value``. Metrics are taken again
  from the collected outputs (so a metric added to the file later applies to old runs);
  with ``monitor: true`` the monitor's summary per run and host is added as the metrics
  ``monitor_cpu_percent`` (mean), ``monitor_mem_used_mib`` (max),
  ``monitor_net_rx_bytes`` / ``monitor_net_tx_bytes`` (totals). Failed runs have no rows.
* ``figures/<metric>-vs-<parameter>.png`` for every metric and every parameter that takes
  more than one value: the mean over repetitions (hosts averaged within a run) with the
  standard deviation as error bars, one line per value of the other varied parameters.
* ``report.html``: everything above in one file (figures embedded as ``data:`` URIs, no
  external resource), the parameters, the reservation, the hosts and their OS, the
  versions of enos and Python, the failures.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import logging
import platform
import statistics
from pathlib import Path
from typing import Any, Dict, List, Tuple

from enos import __version__
from enos.campaign.file import Campaign, load_campaign
from enos.campaign.runner import run_dir
from enos.errors import UsageError
from enos.experiment.sweep import REPEAT, Sweep, run_key
from enos.state import atomic_write
import enos.campaign.metrics as mx
import enos.campaign.monitor as monitor

log = logging.getLogger("enos.campaign")


def collect_rows(camp: Campaign, results: Path) -> Tuple[List[dict], List[str]]:
    """Return (rows of results.csv, problems): one row per run × metric × host of the
    successful runs; a metric that cannot be read is a problem (text), not a row."""
    rows, problems = [], []
    sweep = Sweep(results, camp.combinations(), camp.repeat)
    for run in sweep.runs:
        rdir = run_dir(results, run)
        try:
            status = json.loads((rdir / "result.json").read_text())["status"]
        except (OSError, ValueError, KeyError):
            continue
        if status != "ok":
            continue
        hosts = sorted(p.name for p in rdir.iterdir() if p.is_dir() and not p.name.startswith("."))
        for metric in camp.metrics:
            for host in hosts:
                src = rdir / host / "stdout" if metric.source == "stdout" else rdir / host / "files" / metric.source
                if not src.is_file():
                    continue
                try:
                    value = mx.extract(metric, src.read_text(errors="replace"), camp.base_dir)
                except mx.MetricError as e:
                    problems.append(f"{run_key(run)} {host} {metric.name}: {e}")
                    continue
                rows.append(dict(run, host=host, metric=metric.name, value=value))
        mon = rdir / "monitor.csv"
        if camp.monitor and mon.is_file():
            with open(mon, newline="") as f:
                mrows = list(csv.DictReader(f))
            for host, values in sorted(monitor.summary(mrows).items()):
                for name, value in values.items():
                    rows.append(dict(run, host=host, metric=name, value=round(value, 3)))
    return rows, problems


def write_csv(camp: Campaign, rows: List[dict], path: Path) -> None:
    """Write ``rows`` to ``path`` with the columns: parameters, repeat, host, metric, value."""
    cols = list(camp.parameters) + [REPEAT, "host", "metric", "value"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def aggregate(camp: Campaign, rows: List[dict], metric: str) -> Dict[tuple, Tuple[float, float, int]]:
    """Return {combination values tuple: (mean, std, n)} of ``metric`` over repetitions
    (a run's value is the mean over its hosts)."""
    names = list(camp.parameters)
    per_run: Dict[tuple, Dict[Any, List[float]]] = {}
    for r in rows:
        if r["metric"] != metric:
            continue
        key = tuple(r[n] for n in names)
        per_run.setdefault(key, {}).setdefault(r[REPEAT], []).append(float(r["value"]))
    out = {}
    for key, reps in per_run.items():
        vals = [statistics.fmean(v) for v in reps.values()]
        out[key] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))
    return out


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def figure(camp: Campaign, agg: Dict[tuple, Tuple[float, float, int]], metric: str, param: str,
           path: Path) -> None:
    """Draw ``metric`` against ``param`` (one line per value of the other varied
    parameters, mean ± std over repetitions) into the PNG ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(camp.parameters)
    xi = names.index(param)
    xs = camp.parameters[param]
    numeric = _numeric(xs)
    others = [n for n in camp.varied() if n != param]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    groups: Dict[tuple, List[Tuple[Any, float, float]]] = {}
    for key, (mean, std, _n) in agg.items():
        g = tuple(key[names.index(o)] for o in others)
        groups.setdefault(g, []).append((key[xi], mean, std))
    for g in sorted(groups, key=lambda t: [camp.parameters[o].index(v) for o, v in zip(others, t)]):
        pts = sorted(groups[g], key=lambda p: xs.index(p[0]))
        x = [p[0] if numeric else xs.index(p[0]) for p in pts]
        label = ", ".join(f"{o}={v}" for o, v in zip(others, g)) or metric
        ax.errorbar(x, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=4, label=label)
    if not numeric:
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels([str(v) for v in xs])
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {param} (mean ± std over {camp.repeat} repetition(s))", fontsize=10)
    ax.grid(True, alpha=0.3)
    if others or len(groups) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _metric_names(camp: Campaign, rows: List[dict]) -> List[str]:
    names = [m.name for m in camp.metrics]
    names += sorted({r["metric"] for r in rows} - set(names))
    return names


def _versions() -> Dict[str, str]:
    out = {"enos": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for mod in ("execo_engine", "matplotlib", "jinja2", "ansible_runner"):
        try:
            from importlib.metadata import version
            dist = {"execo_engine": "execo", "ansible_runner": "ansible-runner"}.get(mod, mod)
            out[dist] = version(dist)
        except Exception:  # a missing distribution is just not listed
            pass
    return out


def _reservation_text(camp: Campaign) -> str:
    import yaml
    if isinstance(camp.reservation, str):
        try:
            return Path(camp.reservation).read_text()
        except OSError as e:
            return f"(cannot read {camp.reservation}: {e})"
    if isinstance(camp.reservation, dict):
        return yaml.safe_dump(camp.reservation, sort_keys=False)
    return "(given as an environment with --env)"


def _table(headers, rows) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in headers) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


_CSS = """body{font-family:sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #bbb;padding:2px 8px;text-align:left;font-size:13px}
th{background:#eee}pre{background:#f6f6f6;padding:0.8em;overflow:auto;font-size:12px}
figure{display:inline-block;margin:0.5em}figcaption{font-size:12px;color:#555}
.fail{color:#b00}"""


def write_html(camp: Campaign, results: Path, rows: List[dict], figures: List[Path], path: Path,
               problems: List[str]) -> None:
    """Write the self-contained report (figures embedded as data: URIs) to ``path``."""
    stats = Sweep(results, camp.combinations(), camp.repeat).stats()
    try:
        envinfo = json.loads((results / "environment.json").read_text())
    except (OSError, ValueError):
        envinfo = {"hosts": []}
    title = camp.name or Path(camp.file).stem
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)} — enos campaign</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Campaign {html.escape(title)}</h1>",
             f"<p>{html.escape(str(camp.raw.get('description') or ''))}</p>",
             f"<p>{stats['done']} of {stats['total']} run(s) done, {stats['failed']} failed, "
             f"{stats['in_progress']} in progress; {stats['elapsed']:.0f} s of runs. "
             f"Campaign file: <code>{html.escape(str(camp.file))}</code>; results: <code>{html.escape(str(results))}</code>.</p>",
             "<h2>Figures</h2>"]
    for fig in figures:
        data = base64.b64encode(fig.read_bytes()).decode()
        parts.append(f"<figure><img alt='{html.escape(fig.stem)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(fig.name)}</figcaption></figure>")
    parts.append("<h2>Summary (mean ± std over repetitions)</h2>")
    names = list(camp.parameters)
    summary_rows = []
    for metric in _metric_names(camp, rows):
        for key, (mean, std, n) in sorted(aggregate(camp, rows, metric).items(),
                                          key=lambda kv: [camp.parameters[p].index(v) for p, v in zip(names, kv[0])]):
            summary_rows.append([metric, *key, f"{mean:.4g}", f"{std:.3g}", n])
    parts.append(_table(["metric", *names, "mean", "std", "n"], summary_rows))
    parts.append("<h2>Parameters</h2>")
    parts.append(_table(["parameter", "values"], [[k, ", ".join(map(str, v))] for k, v in camp.parameters.items()]))
    parts.append(f"<p>repeat: {camp.repeat}; excluded: {html.escape(json.dumps(camp.exclude))}; "
                 f"monitor: {camp.monitor}; network constraints: {html.escape(json.dumps(camp.network_constraints))}</p>")
    parts.append("<h2>Failures</h2>")
    if stats["failures"] or problems:
        parts.append("<ul class='fail'>" + "".join(
            f"<li>{html.escape(json.dumps(f['run']))}: {html.escape(str(f['error']))}</li>" for f in stats["failures"])
            + "".join(f"<li>{html.escape(p)}</li>" for p in problems) + "</ul>")
    else:
        parts.append("<p>none</p>")
    parts.append(f"<h2>Hosts</h2><p>provider {html.escape(str(envinfo.get('provider')))}, "
                 f"environment {html.escape(str(envinfo.get('env_dir')))} (run {html.escape(str(envinfo.get('run_id')))})</p>")
    parts.append(_table(["host", "address", "roles", "OS", "kernel"],
                        [[h["alias"], h["address"], ",".join(h["roles"]), h.get("os"), h.get("kernel")]
                         for h in envinfo.get("hosts", [])]))
    parts.append("<h2>Versions</h2>")
    parts.append(_table(["software", "version"], sorted(_versions().items())))
    parts.append("<h2>Reservation</h2>")
    parts.append(f"<pre>{html.escape(_reservation_text(camp))}</pre>")
    parts.append("<h2>Campaign file</h2>")
    try:
        camp_text = Path(camp.file).read_text()
    except OSError:
        import yaml
        camp_text = yaml.safe_dump(camp.raw, sort_keys=False)
    parts.append(f"<pre>{html.escape(camp_text)}</pre>")
    parts.append(f"<h2>All results ({len(rows)} rows, also in results.csv)</h2>")
    cols = names + [REPEAT, "host", "metric", "value"]
    parts.append(_table(cols, [[r.get(c) for c in cols] for r in rows]))
    parts.append("</body></html>")
    atomic_write(path, "\n".join(parts), mode=0o644)


def report(source, results=None) -> Dict[str, Any]:
    """Write results.csv, the figures and report.html of the campaign ``source`` (file,
    dict or Campaign) from its results dir; return {csv, html, figures, rows, problems}.
    Raises ConfigError (campaign file), UsageError (no results yet)."""
    camp = source if isinstance(source, Campaign) else load_campaign(source)
    results = Path(results or camp.default_results()).absolute()
    if not (results / "runs").is_dir():
        raise UsageError(f"no runs in {results} yet: run 'enos campaign run {camp.file}' first")
    rows, problems = collect_rows(camp, results)
    csv_path = results / "results.csv"
    write_csv(camp, rows, csv_path)
    figdir = results / "figures"
    figdir.mkdir(exist_ok=True)
    for old in figdir.glob("*.png"):
        old.unlink()
    figures = []
    varied = camp.varied() or list(camp.parameters)[:1]
    for metric in _metric_names(camp, rows):
        agg = aggregate(camp, rows, metric)
        if not agg:
            continue
        for param in varied:
            path = figdir / f"{metric}-vs-{param}.png"
            figure(camp, agg, metric, param, path)
            figures.append(path)
    html_path = results / "report.html"
    write_html(camp, results, rows, figures, html_path, problems)
    return {"csv": str(csv_path), "html": str(html_path), "figures": [str(f) for f in figures],
            "rows": len(rows), "problems": problems}


def status(source, results=None) -> Dict[str, Any]:
    """Return the campaign's counts (done, remaining, in_progress, failed, total), elapsed
    seconds, the live owner's pid and the failures with their errors. Raises ConfigError."""
    camp = source if isinstance(source, Campaign) else load_campaign(source)
    results = Path(results or camp.default_results()).absolute()
    stats = Sweep(results, camp.combinations(), camp.repeat).stats()
    stats["results"] = str(results)
    return stats

