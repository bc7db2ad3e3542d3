"""Missing prerequisites: a skip with the reason on a developer's machine, a FAILURE under
``CI=true`` (CI installs everything through ``bash scripts/setup.sh --test``, so a missing
piece there is a broken setup, never a reason to go green without running the test)."""
from __future__ import annotations

import importlib
import os

import pytest

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str, module_level: bool = False) -> None:
    """Skip (fail under CI=true) because ``reason``; never returns."""
    if CI:
        pytest.fail(f"missing prerequisite under CI=true: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def need_module(name: str, module_level: bool = False):
    """Return the imported module ``name``, or skip/fail (see :func:`missing`)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"Python module '{name}' is not installed ({e}); run 'bash scripts/setup.sh --test'",
                module_level)
