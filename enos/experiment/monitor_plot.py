"""Figures of a :class:`~enos.experiment.monitor.Monitor`: one panel per metric (rows) and
role (columns), one line per host of that role, time since the start on x."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from enos.errors import UsageError

#: what each metric is called on its axis
LABELS = {"cpu_percent": "CPU (%)", "mem_used_mib": "memory used (MiB)",
          "net_rx_rate": "network received (B/s)", "net_tx_rate": "network sent (B/s)",
          "disk_read_rate": "disk read (B/s)", "disk_write_rate": "disk written (B/s)",
          "cpu_busy_seconds": "CPU busy (s, cumulative)", "net_rx_bytes": "network received (B, cumulative)",
          "net_tx_bytes": "network sent (B, cumulative)", "disk_read_bytes": "disk read (B, cumulative)",
          "disk_write_bytes": "disk written (B, cumulative)"}


def series(rows: Sequence[dict], metric: str) -> Dict[str, List[tuple]]:
    """Return host → [(elapsed, value)] of ``metric`` (a column, or ``<counter>_rate``:
    the counter's bytes per second between consecutive samples)."""
    if metric not in LABELS:
        raise UsageError(f"monitor: unknown metric '{metric}' (one of {', '.join(LABELS)})")
    by_host: Dict[str, List[dict]] = {}
    for r in rows:
        by_host.setdefault(r["host"], []).append(r)
    out: Dict[str, List[tuple]] = {}
    for host, rs in by_host.items():
        if metric.endswith("_rate"):
            col = metric[:-len("_rate")] + "_bytes"
            pts = [(b["elapsed"], (b[col] - a[col]) / (b["elapsed"] - a["elapsed"]))
                   for a, b in zip(rs, rs[1:]) if b["elapsed"] > a["elapsed"]]
        else:
            pts = [(r["elapsed"], r[metric]) for r in rs if r[metric] is not None]
        out[host] = pts
    return out


def plot(monitor, metrics: Sequence[str], path=None):
    """Draw the figure of ``monitor`` (see :meth:`Monitor.plot`); save it to ``path`` when
    given; return the matplotlib Figure."""
    roles: Dict[str, List[str]] = {}
    for h in monitor.hosts:
        for role in h.roles or ["(no role)"]:
            roles.setdefault(role, []).append(h.alias)
    fig = _figure_class()(figsize=(4.5 * len(roles), 2.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), len(roles), squeeze=False, sharex=True)
    for i, metric in enumerate(metrics):
        data = series(monitor.rows, metric)
        for j, (role, aliases) in enumerate(roles.items()):
            ax = axes[i][j]
            for alias in aliases:
                pts = data.get(alias, [])
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=alias)
            if i == 0:
                ax.set_title(role)
            if j == 0:
                ax.set_ylabel(LABELS[metric])
            if i == len(metrics) - 1:
                ax.set_xlabel("time since start (s)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    if path is not None:
        fig.savefig(Path(path), dpi=100)
    return fig


_SHOWN_FIGURE: Optional[type] = None


def _figure_class() -> type:
    """Return a matplotlib Figure class that Jupyter shows as a PNG even in a kernel where
    pyplot was never imported (a bare Figure is shown there as ``<Figure size ...>``: the
    inline display of Figures is set up by pyplot). No pyplot here: the caller's figures and
    backend are left alone."""
    global _SHOWN_FIGURE
    if _SHOWN_FIGURE is None:
        from matplotlib.figure import Figure

        class ShownFigure(Figure):
            """A Figure with a PNG representation of its own (IPython's ``_repr_png_``)."""

            def _repr_png_(self) -> bytes:
                buf = io.BytesIO()
                self.savefig(buf, format="png", dpi=100)
                return buf.getvalue()

        _SHOWN_FIGURE = ShownFigure
    return _SHOWN_FIGURE
