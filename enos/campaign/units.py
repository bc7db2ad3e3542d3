"""Parameter values with units (``10mbit``, ``200mbit``, ``1gbit``, ``25ms``, ``4KiB``,
``0.5%``) read as numbers, so that figures put them on a numeric axis with the unit in its
label instead of spacing the strings evenly.

:func:`axis` looks at every value of a parameter: numbers stay numbers; strings that all
parse as a number with a unit of one family (rate, size, duration, percent) become numbers
in one display unit (the unit the values are written in when they share one, else the
family's unit that suits their median); anything else is categorical.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

_VALUE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z%/]+)\s*$")

#: family → unit (lower case) → factor to the family's base unit
UNITS: Dict[str, Dict[str, float]] = {
    "rate": {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
             "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9,            # tc's: bytes per second
             "bit/s": 1, "kbit/s": 1e3, "mbit/s": 1e6, "gbit/s": 1e9},
    "size": {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
             "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4},
    "time": {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "min": 60, "h": 3600},
    "percent": {"%": 1},
}
#: sizes written with a bare upper-case prefix (binary, as iperf3 and dd read them)
BARE_SIZES = {"K": 1024.0, "M": 1024.0 ** 2, "G": 1024.0 ** 3, "T": 1024.0 ** 4}
#: the units a family is shown in, smallest first (a value's display unit is the largest
#: one not above its median)
DISPLAY = {"rate": ["bit", "kbit", "mbit", "gbit", "tbit"], "size": ["B", "KiB", "MiB", "GiB", "TiB"],
           "time": ["us", "ms", "s"], "percent": ["%"]}


def parse(value: Any) -> Optional[Tuple[float, str, str]]:
    """Return (number in the family's base unit, family, unit as written) for a string
    like ``200mbit``; None for anything else (numbers included)."""
    if not isinstance(value, str):
        return None
    m = _VALUE.match(value)
    if not m:
        return None
    unit = m.group(2)
    if unit in BARE_SIZES:          # iperf's and dd's 10M: upper case only (10m may be minutes)
        return float(m.group(1)) * BARE_SIZES[unit], "size", unit
    for family, table in UNITS.items():
        factor = table.get(unit.lower())
        if factor is not None:
            return float(m.group(1)) * factor, family, unit
    return None


@dataclass
class Axis:
    """How a parameter's values sit on an axis: ``numeric`` (with ``values`` mapping each
    original value to its number, in ``unit``) or categorical (``values`` maps each value
    to its position, in the file's order)."""
    numeric: bool
    values: Dict[Any, float]
    unit: str = ""

    def label(self, name: str) -> str:
        """The axis label: the name, with the unit in parentheses when there is one."""
        return f"{name} ({self.unit})" if self.unit else name

    def span(self) -> float:
        """max/min of the positive values (1 when not numeric or not all positive)."""
        vals = [v for v in self.values.values()]
        if not self.numeric or not vals or min(vals) <= 0:
            return 1.0
        return max(vals) / min(vals)


def axis(values: Sequence[Any]) -> Axis:
    """Return the :class:`Axis` of a parameter's ``values``."""
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return Axis(True, {v: float(v) for v in values})
    parsed = [parse(v) for v in values]
    if not values or any(p is None for p in parsed) or len({p[1] for p in parsed}) != 1:
        return Axis(False, {v: float(i) for i, v in enumerate(values)})
    family = parsed[0][1]
    written = {p[2] for p in parsed}
    if len(written) == 1:
        unit = written.pop()
    else:
        median = statistics.median(p[0] for p in parsed)
        unit = DISPLAY[family][0]
        for u in DISPLAY[family]:
            if _factor(family, u) <= median:
                unit = u
    f = _factor(family, unit)
    return Axis(True, {v: p[0] / f for v, p in zip(values, parsed)}, unit)


def _factor(family: str, unit: str) -> float:
    return BARE_SIZES[unit] if family == "size" and unit in BARE_SIZES else UNITS[family][unit.lower()]


def numbers(values: Sequence[Any]) -> List[float]:
    """Return the values as numbers on their axis (positions when categorical)."""
    ax = axis(values)
    return [ax.values[v] for v in values]
