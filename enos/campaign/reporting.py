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

import csv
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Tuple

from enos.campaign import figures
from enos.campaign.figures import MONITOR_UNITS, FigureSpec
from enos.campaign.file import Campaign, load_campaign
from enos.campaign.report_html import write_html
from enos.campaign.runner import run_dir
from enos.errors import UsageError
from enos.experiment.sweep import REPEAT, Sweep, run_key
from enos.frames import pandas
import enos.campaign.metrics as mx

log = logging.getLogger("enos.campaign")


def host_roles(results: Path) -> Dict[str, str]:
    """Return alias → its roles joined by ',' (from ``environment.json``), for the ``role``
    column."""
    try:
        hosts = json.loads((results / "environment.json").read_text()).get("hosts") or []
    except (OSError, ValueError):
        return {}
    return {h["alias"]: ",".join(h.get("roles") or []) for h in hosts if isinstance(h, dict) and "alias" in h}


def _monitor_rows(run: Dict[str, Any], rdir: Path, roles: Dict[str, str]) -> List[dict]:
    """The rows of a run's monitor totals (``monitor.json``: exact, from the counters)."""
    try:
        data = json.loads((rdir / "monitor.json").read_text())
    except (OSError, ValueError):
        return []
    out = []
    for host, t in sorted((data.get("totals") or {}).items()):
        if not t:
            continue                 # no end sample: no total rather than a wrong one
        role = ",".join(data.get("roles", {}).get(host) or []) or roles.get(host, "")
        for name, key in (("monitor_cpu_percent", "cpu_percent"), ("monitor_cpu_busy_seconds", "cpu_busy_seconds"),
                          ("monitor_mem_used_mib", "mem_used_mib_max"), ("monitor_net_rx_bytes", "net_rx_bytes"),
                          ("monitor_net_tx_bytes", "net_tx_bytes"), ("monitor_disk_read_bytes", "disk_read_bytes"),
                          ("monitor_disk_write_bytes", "disk_write_bytes")):
            out.append(dict(run, host=host, role=role, metric=name, value=t[key], unit=MONITOR_UNITS[name]))
    return out


def collect_rows(camp: Campaign, results: Path) -> Tuple[List[dict], List[str]]:
    """Return (rows of results.csv, problems): one row per run × metric × host of the
    successful runs (with the host's ``role`` and the metric's ``unit``); a metric that
    cannot be read is a problem (text), not a row."""
    rows, problems = [], []
    roles = host_roles(results)
    for run in Sweep(results, camp.combinations(), camp.repeat).runs:
        rdir = run_dir(results, run)
        try:
            status = json.loads((rdir / "result.json").read_text())["status"]
        except (OSError, ValueError, KeyError, TypeError):
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
                rows.append(dict(run, host=host, role=roles.get(host, ""), metric=metric.name, value=value,
                                 unit=metric.unit))
        if camp.monitor:
            rows += _monitor_rows(run, rdir, roles)
    return rows, problems


def columns(camp: Campaign) -> List[str]:
    """The columns of results.csv: the parameters, repeat, host, role, metric, value, unit."""
    return list(camp.parameters) + [REPEAT, "host", "role", "metric", "value", "unit"]


def write_csv(camp: Campaign, rows: List[dict], path: Path) -> None:
    """Write ``rows`` to ``path`` with :func:`columns`."""
    cols = columns(camp)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def draw_figures(camp: Campaign, rows: List[dict], figdir: Path) -> List[Tuple[FigureSpec, Path]]:
    """Draw the campaign's figures (its ``figures:`` section, else the default set) into
    ``figdir`` (emptied of old PNGs first); return (spec, PNG) of those drawn."""
    figdir.mkdir(exist_ok=True)
    for old in figdir.glob("*.png"):
        old.unlink()
    specs = camp.figures if camp.figures is not None else \
        figures.defaults(camp.parameters, [m.name for m in camp.metrics], camp.monitor)
    units = dict(figures.MONITOR_UNITS, **{m.name: m.unit for m in camp.metrics if m.unit})
    out = []
    for spec in specs:
        path = figures.draw(spec, rows, camp.parameters, figdir / spec.file_name, units)
        if path is not None:
            out.append((spec, path))
    return out


def build(camp: Campaign, results: Path) -> Tuple[List[dict], List[str], List[Tuple[FigureSpec, Path]]]:
    """Write results.csv and the figures of ``camp`` from ``results``; return (rows,
    problems, figures drawn). Raises UsageError when there are no runs yet."""
    if not (results / "runs").is_dir():
        raise UsageError(f"no runs in {results} yet: run 'enos campaign run {camp.file}' first")
    rows, problems = collect_rows(camp, results)
    write_csv(camp, rows, results / "results.csv")
    return rows, problems, draw_figures(camp, rows, results / "figures")


def report(source, results=None) -> Dict[str, Any]:
    """Write results.csv, the figures and report.html of the campaign ``source`` (file,
    dict or Campaign) from its results dir; return {csv, html, figures, rows, problems}.
    The report shows the manifest of the last archive made of these results
    (``archive-manifest.json``, written by ``enos archive``). Raises ConfigError
    (campaign file), UsageError (no results yet)."""
    camp = source if isinstance(source, Campaign) else load_campaign(source)
    results = Path(results or camp.default_results()).absolute()
    rows, problems, drawn = build(camp, results)
    html_path = results / "report.html"
    write_html(camp, results, rows, drawn, html_path, problems)
    return {"csv": str(results / "results.csv"), "html": str(html_path), "figures": [str(p) for _, p in drawn],
            "rows": len(rows), "problems": problems}


def results_frame(source, results=None):
    """Return the campaign's results (the rows of results.csv, values as numbers) as a
    pandas DataFrame, read again from the runs. Raises ConfigError, UsageError (no runs),
    MissingDependency without pandas."""
    camp = source if isinstance(source, Campaign) else load_campaign(source)
    results = Path(results or camp.default_results()).absolute()
    if not (results / "runs").is_dir():
        raise UsageError(f"no runs in {results} yet: run 'enos campaign run {camp.file}' first")
    rows, _problems = collect_rows(camp, results)
    return pandas("enos.campaign.results()").DataFrame(rows, columns=columns(camp))


def status(source, results=None) -> Dict[str, Any]:
    """Return the campaign's counts (done, remaining, in_progress, failed, total), elapsed
    seconds, the live owner's pid and the failures with their errors. Raises ConfigError."""
    camp = source if isinstance(source, Campaign) else load_campaign(source)
    results = Path(results or camp.default_results()).absolute()
    stats = Sweep(results, camp.combinations(), camp.repeat).stats()
    stats["results"] = str(results)
    return stats

