"""Plain-text tables for the CLI (``enos info``): aligned columns, and provider details of
any shape (scalars, mappings, lists of records) turned into lines a person reads —
``-o json`` keeps the raw data for scripts."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence


def table(rows: Sequence[Sequence[Any]], header: Sequence[str], indent: str = "") -> List[str]:
    """Return the lines of a table with a header row, columns padded to their widest cell
    (None shows as ``-``, the last column is not padded)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(values):
        padded = [v.ljust(widths[i]) if i < len(values) - 1 else v for i, v in enumerate(values)]
        return (indent + "  ".join(padded)).rstrip()
    return [line(list(header))] + [line(r) for r in cells]


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return ",".join(_cell(x) for x in v) or "-"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items()) or "-"
    return str(v)


def _records(value: Any) -> bool:
    if isinstance(value, dict):
        return bool(value) and all(isinstance(v, dict) for v in value.values())
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, dict) for v in value)
    return False


def details(data: Dict[str, Any], indent: str = "") -> List[str]:
    """Return provider details as text: ``key  value`` lines for scalars and flat
    mappings, and a table for each collection of records (a mapping name → record, its
    first column named after the key, or a list of records)."""
    out: List[str] = []
    simple = [(k, v) for k, v in data.items() if not _records(v)]
    width = max([len(k) for k, _ in simple] or [0])
    for k, v in simple:
        out.append(f"{indent}{k.ljust(width)}  {_cell(v)}")
    for k, v in data.items():
        if not _records(v):
            continue
        out.append(f"{indent}{k}:")
        if isinstance(v, dict):
            cols = list(dict.fromkeys(c for rec in v.values() for c in rec))
            first = k[:-1] if k.endswith("s") else k
            rows = [[name] + [rec.get(c) for c in cols] for name, rec in v.items()]
            out += table(rows, [first.upper()] + [c.upper() for c in cols], indent + "  ")
        else:
            cols = list(dict.fromkeys(c for rec in v for c in rec))
            out += table([[rec.get(c) for c in cols] for rec in v], [c.upper() for c in cols], indent + "  ")
    return out


def local_iso(ts: float) -> str:
    """Unix time ``ts`` as this machine's local time, ISO 8601 with its offset (seconds)."""
    import datetime as _dt
    return _dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
