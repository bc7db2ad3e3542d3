"""The figures of a campaign report: chosen in the campaign file's ``figures:`` section, or
a small default set chosen by the parameters' types.

```yaml
figures:
  - name: throughput            # figures/throughput.png (default: <y>-vs-<x>)
    y: throughput_mbps          # a metric (monitor_* ones too with monitor: true)
    x: rate                     # a parameter, or repeat / host / role (default: the first varied parameter)
    hue: clients                # one colour per value (a parameter, repeat, host or role)
    col: proto                  # one panel per value, side by side (row: one panel per value, stacked)
    kind: line                  # line | bar | box | scatter (default: line for a numeric x, else bar)
    logx: false                 # log axes (the values must be > 0)
    logy: false
    xlabel: "rate limit"        # default: the parameter, with the unit of its values (rate (mbit))
    ylabel: "Mbit/s"            # default: the metric
    title: "..."                # default: "<y> vs <x>"
    spread: hosts               # hosts: every host's value as a dot besides the mean ± std
                                # over repetitions; std: error bars only; none
    where: {role: client}       # keep only these rows (parameter, repeat, host or role → value(s))
```

Without ``figures:``, each metric of the file gets one figure: x the first varied
parameter, hue the second, facets by the third; a line for a numeric x (values with units
such as ``200mbit`` are numbers, the unit goes into the label; a log x when they span two
decades or more), bars for text values; every host's value shown. With ``monitor: true``,
each monitor metric gets one figure with a colour per role (senders and sinks are not
averaged together).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from enos.campaign.units import Axis, axis

KINDS = ("line", "bar", "box", "scatter")
SPREADS = ("hosts", "std", "none")
#: row fields besides the parameters a figure may use as x, hue, facets or filter
EXTRA_FIELDS = ("repeat", "host", "role")
#: the monitor's metrics (one per run and host: exact totals, CPU % over the run, memory peak)
MONITOR_METRICS = ("monitor_net_tx_bytes", "monitor_net_rx_bytes", "monitor_cpu_percent", "monitor_mem_used_mib",
                   "monitor_disk_read_bytes", "monitor_disk_write_bytes", "monitor_cpu_busy_seconds")
#: those with a default figure
DEFAULT_MONITOR = MONITOR_METRICS[:4]
#: their units
MONITOR_UNITS = {"monitor_net_tx_bytes": "B", "monitor_net_rx_bytes": "B", "monitor_cpu_percent": "%",
                 "monitor_mem_used_mib": "MiB", "monitor_disk_read_bytes": "B", "monitor_disk_write_bytes": "B",
                 "monitor_cpu_busy_seconds": "s"}

_FIELD = {"type": "string", "minLength": 1, "x-expected": "a parameter name, or repeat, host or role"}
_SCALAR = {"type": ["string", "number", "boolean"]}
SCHEMA = {
    "type": "array",
    "items": {"type": "object", "required": ["y"], "additionalProperties": False,
              "properties": {
                  "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$",
                           "x-expected": "a file name (letters, digits, '_', '.', '-')"},
                  "y": {"type": "string", "minLength": 1, "x-expected": "a metric name"},
                  "x": _FIELD, "hue": _FIELD, "col": _FIELD, "row": _FIELD,
                  "kind": {"enum": list(KINDS)}, "spread": {"enum": list(SPREADS)},
                  "logx": {"type": "boolean"}, "logy": {"type": "boolean"},
                  "xlabel": {"type": "string"}, "ylabel": {"type": "string"}, "title": {"type": "string"},
                  "where": {"type": "object", "minProperties": 1,
                            "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "minItems": 1,
                                                                         "items": _SCALAR}]},
                            "x-expected": "a mapping of parameter, repeat, host or role → value(s)"}},
              "x-expected": "a mapping with at least 'y: METRIC'"},
    "x-expected": "a list of figures"}


@dataclass
class FigureSpec:
    """One figure to draw (see the module's description)."""
    y: str
    x: str
    name: str = ""
    hue: Optional[str] = None
    col: Optional[str] = None
    row: Optional[str] = None
    kind: Optional[str] = None
    logx: Optional[bool] = None
    logy: bool = False
    xlabel: Optional[str] = None
    ylabel: Optional[str] = None
    title: Optional[str] = None
    spread: str = "hosts"
    where: Dict[str, List[Any]] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        """The PNG's name in the figures directory."""
        return f"{self.name or f'{self.y}-vs-{self.x}'}.png"


def check(figures: Sequence[dict], parameters: Dict[str, List[Any]], metrics: Sequence[str],
          monitor: bool, err: Callable[[tuple, str], Exception]) -> List[FigureSpec]:
    """Check the (schema-valid) ``figures:`` entries against the campaign; return their
    specs. ``err(path, message)`` builds the error to raise (a ConfigError with file and
    line). Raises it for an unknown metric or field, a value that is not a parameter's, a
    log axis on text values, two figures with one file name."""
    known_y = list(metrics) + (list(MONITOR_METRICS) if monitor else [])
    fields = list(parameters) + list(EXTRA_FIELDS)
    varied = [p for p, vs in parameters.items() if len(vs) > 1] or list(parameters)[:1]
    specs, names = [], {}
    for i, f in enumerate(figures):
        if f["y"] not in known_y:
            raise err(("figures", i, "y"), f"unknown metric '{f['y']}'; metrics: {', '.join(known_y) or 'none'}"
                      + ("" if monitor else " (monitor_* metrics need 'monitor: true')"))
        for key in ("x", "hue", "col", "row"):
            if key in f and f[key] not in fields:
                raise err(("figures", i, key), f"unknown field '{f[key]}'; one of: {', '.join(fields)}")
        used = [f.get(k) for k in ("x", "hue", "col", "row") if f.get(k)]
        if len(used) != len(set(used)):
            raise err(("figures", i), f"a field is used twice among x, hue, col and row: {', '.join(used)}")
        where = _where(f.get("where") or {}, parameters, fields, ("figures", i, "where"), err)
        spec = FigureSpec(y=f["y"], x=f.get("x") or varied[0], name=f.get("name", ""), hue=f.get("hue"),
                          col=f.get("col"), row=f.get("row"), kind=f.get("kind"), logx=f.get("logx"),
                          logy=bool(f.get("logy", False)), xlabel=f.get("xlabel"), ylabel=f.get("ylabel"),
                          title=f.get("title"), spread=f.get("spread", "hosts"), where=where)
        if spec.logx and spec.x in parameters:
            ax = axis(parameters[spec.x])
            if not ax.numeric or min(ax.values.values()) <= 0:
                raise err(("figures", i, "logx"), f"a log x axis needs positive numbers; '{spec.x}' takes "
                          + ", ".join(map(str, parameters[spec.x])))
        if spec.logx and spec.kind in ("bar", "box"):
            raise err(("figures", i, "logx"), f"a log x axis needs kind line or scatter (a {spec.kind} "
                      "chart puts its x values at even positions)")
        if spec.file_name in names:
            raise err(("figures", i, "name"), f"two figures would be written to {spec.file_name} "
                      f"(figure {names[spec.file_name] + 1} and {i + 1}): give one a 'name'")
        names[spec.file_name] = i
        specs.append(spec)
    return specs


def _where(where: dict, parameters, fields, path, err) -> Dict[str, List[Any]]:
    out = {}
    for k, v in where.items():
        if k not in fields:
            raise err(path + (k,), f"unknown field '{k}'; one of: {', '.join(fields)}")
        values = v if isinstance(v, list) else [v]
        if k in parameters:
            bad = [x for x in values if x not in parameters[k]]
            if bad:
                raise err(path + (k,), f"{bad[0]!r} is not a value of '{k}' ({', '.join(map(str, parameters[k]))})")
        out[k] = values
    return out


def defaults(parameters: Dict[str, List[Any]], metrics: Sequence[str], monitor: bool) -> List[FigureSpec]:
    """Return the default figures (see the module's description)."""
    varied = [p for p, vs in parameters.items() if len(vs) > 1] or list(parameters)[:1]
    x = varied[0]
    ax = axis(parameters[x])
    kind = "line" if ax.numeric else "bar"
    logx = ax.numeric and ax.span() >= 100
    hue = varied[1] if len(varied) > 1 else None
    col = varied[2] if len(varied) > 2 else None
    row = varied[3] if len(varied) > 3 else None
    out = [FigureSpec(y=m, x=x, hue=hue, col=col, row=row, kind=kind, logx=logx) for m in metrics]
    if monitor:
        out += [FigureSpec(y=m, x=x, hue="role", col=hue, kind=kind, logx=logx) for m in DEFAULT_MONITOR]
    return out


# --- drawing -----------------------------------------------------------------------------
def _order(name: str, parameters: Dict[str, List[Any]], rows: Sequence[dict]) -> List[Any]:
    present = {r.get(name) for r in rows}
    if name in parameters:
        return [v for v in parameters[name] if v in present]
    return sorted(present, key=lambda v: (str(type(v)), v))


def _axis(name: str, parameters: Dict[str, List[Any]], rows: Sequence[dict]) -> Axis:
    if name in parameters:
        return axis(parameters[name])
    values = _order(name, parameters, rows)
    return axis(values) if name == "repeat" else Axis(False, {v: float(i) for i, v in enumerate(values)})


def _points(rows: Sequence[dict], names: Sequence[str]) -> Tuple[float, float, List[float]]:
    """Return (mean over runs of the run's host mean, std over runs, every host value)."""
    runs: Dict[tuple, List[float]] = {}
    for r in rows:
        runs.setdefault(tuple(r.get(n) for n in names) + (r.get("repeat"),), []).append(float(r["value"]))
    means = [statistics.fmean(v) for v in runs.values()]
    std = statistics.stdev(means) if len(means) > 1 else 0.0
    return statistics.fmean(means), std, [v for vs in runs.values() for v in vs]


def _keep(rows: Sequence[dict], spec: FigureSpec) -> List[dict]:
    return [r for r in rows if r.get("metric") == spec.y
            and all(r.get(k) in vs for k, vs in spec.where.items())]


def draw(spec: FigureSpec, rows: Sequence[dict], parameters: Dict[str, List[Any]], path: Path,
         units: Optional[Dict[str, str]] = None) -> Optional[Path]:
    """Draw ``spec`` from the result rows (dicts with the parameters, ``repeat``, ``host``,
    ``role``, ``metric``, ``value``) into the PNG ``path``; return it, or None when no row
    is left for it. ``units`` maps a metric to its unit (for the y label)."""
    from matplotlib.figure import Figure
    data = _keep(rows, spec)
    if not data:
        return None
    cols = _order(spec.col, parameters, data) if spec.col else [None]
    rws = _order(spec.row, parameters, data) if spec.row else [None]
    fig = Figure(figsize=(5.6 * len(cols), 4.0 * len(rws)), dpi=100, layout="constrained")
    axes = fig.subplots(len(rws), len(cols), squeeze=False, sharey=True)
    for i, rv in enumerate(rws):
        for j, cv in enumerate(cols):
            sub = [r for r in data if (spec.row is None or r.get(spec.row) == rv)
                   and (spec.col is None or r.get(spec.col) == cv)]
            title = ", ".join(f"{k}={v}" for k, v in ((spec.row, rv), (spec.col, cv)) if k)
            _panel(axes[i][j], spec, sub, parameters, title, show_x=i == len(rws) - 1, show_y=j == 0,
                   unit=(units or {}).get(spec.y))
    reps = len({r.get("repeat") for r in data})
    fig.suptitle(spec.title or f"{spec.y} vs {spec.x} (mean ± std over {reps} repetition(s)"
                 f"{', each host a dot' if spec.spread == 'hosts' else ''})", fontsize=10)
    fig.savefig(path, format="png")
    return path


def _panel(ax, spec: FigureSpec, rows: Sequence[dict], parameters, title: str, show_x: bool, show_y: bool,
           unit: Optional[str]) -> None:
    xa = _axis(spec.x, parameters, rows)
    kind = spec.kind or ("line" if xa.numeric else "bar")
    positional = kind in ("bar", "box") or not xa.numeric
    xs = _order(spec.x, parameters, rows)
    hues = _order(spec.hue, parameters, rows) if spec.hue else [None]
    names = list(parameters)
    width = 0.8 / max(1, len(hues))
    colours = [f"C{k % 10}" for k in range(len(hues))]
    for k, hv in enumerate(hues):
        label = f"{spec.hue}={hv}" if spec.hue else spec.y
        pts = []
        for n, xv in enumerate(xs):
            sub = [r for r in rows if r.get(spec.x) == xv and (spec.hue is None or r.get(spec.hue) == hv)]
            if sub:
                pos = n + (k - (len(hues) - 1) / 2) * width if positional else xa.values[xv]
                pts.append((pos,) + _points(sub, names))
        if not pts:
            continue
        _series(ax, kind, spec.spread, pts, colours[k], label, width)
    if positional:
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels([_short(v, xa) for v in xs])
    if spec.logx and not positional:
        ax.set_xscale("log")
    if not positional and len(xs) <= 12:        # the values themselves, not 10^k
        ax.set_xticks([xa.values[v] for v in xs], [f"{xa.values[v]:g}" for v in xs])
        ax.minorticks_off()
    if spec.logy:
        ax.set_yscale("log")
    if show_x:
        ax.set_xlabel(spec.xlabel or xa.label(spec.x))
    if show_y:
        ax.set_ylabel(spec.ylabel or (f"{spec.y} ({unit})" if unit else spec.y))
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    if spec.hue or kind == "box":
        ax.legend(fontsize=8)


def _short(value: Any, xa: Axis) -> str:
    if xa.numeric and xa.unit:
        return f"{xa.values[value]:g}"
    return str(value)


def _series(ax, kind: str, spread: str, pts: List[tuple], colour: str, label: str, width: float) -> None:
    """One hue's points: ``pts`` = [(x, mean, std, host values)]."""
    x = [p[0] for p in pts]
    mean = [p[1] for p in pts]
    err = [p[2] for p in pts] if spread != "none" else None
    if kind == "line":
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=4, color=colour, label=label)
    elif kind == "bar":
        ax.bar(x, mean, width=width * 0.9, yerr=err, capsize=3, color=colour, alpha=0.75, label=label)
    elif kind == "box":
        bp = ax.boxplot([p[3] for p in pts], positions=x, widths=width * 0.8, patch_artist=True,
                        manage_ticks=False)
        for box in bp["boxes"]:
            box.set_facecolor(colour)
            box.set_alpha(0.6)
        ax.plot([], [], color=colour, label=label)
    if spread == "hosts" or kind == "scatter":
        for p in pts:
            n = len(p[3])
            jitter = [(i - (n - 1) / 2) * width * 0.6 / max(1, n) for i in range(n)]
            off = [p[0] + j for j in jitter] if kind in ("bar", "box") else [p[0]] * n
            ax.scatter(off, p[3], s=14, color=colour, alpha=0.6, edgecolors="black", linewidths=0.3,
                       label=label if kind == "scatter" and p is pts[0] else None, zorder=3)
