"""Numbers taken from what a run collected: ``{json: dotted.path}``, ``{regex: "(...)"}``
or ``{python: "module:function"}`` (the function gets the text, returns a number), each
multiplied by ``scale``."""
from __future__ import annotations

import importlib
import json
import math
import re
import sys
from typing import Any

from enos.errors import EnosError


class MetricError(EnosError):
    """A metric could not be taken from a run's output."""


def _json_path(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, list):
            try:
                data = data[int(part)]
            except (ValueError, IndexError):
                raise MetricError(f"no item '{part}' in a list of {len(data)}") from None
        elif isinstance(data, dict):
            if part not in data:
                raise MetricError(f"no key '{part}' (keys: {', '.join(map(str, list(data)[:10]))})")
            data = data[part]
        else:
            raise MetricError(f"cannot look up '{part}' in {type(data).__name__}")
    return data


def extract(metric, text: str, base_dir: str = ".") -> float:
    """Return the value of ``metric`` (a :class:`~enos.campaign.file.Metric`) in ``text``.
    Raises MetricError saying what was not found."""
    if metric.kind == "json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise MetricError(f"output is not JSON ({e})") from None
        value = _json_path(data, metric.expr)
    elif metric.kind == "regex":
        m = re.search(metric.expr, text, re.M)
        if m is None:
            raise MetricError(f"regex {metric.expr!r} does not match the output")
        value = m.group(1)
    else:
        mod_name, func_name = metric.expr.split(":")
        if base_dir not in sys.path:
            sys.path.insert(0, base_dir)
        try:
            func = getattr(importlib.import_module(mod_name), func_name)
        except (ImportError, AttributeError) as e:
            raise MetricError(f"cannot load {metric.expr}: {e}") from None
        value = func(text)
    try:
        number = float(value) * metric.scale
    except (TypeError, ValueError):
        raise MetricError(f"not a number: {str(value)[:60]!r}") from None
    if math.isnan(number):
        raise MetricError("not a number: NaN")
    return number
