"""pandas for the result tables (``to_dataframe()``): an optional dependency, in the
``campaign`` extra; the core of enos never imports it."""
from __future__ import annotations

from enos.errors import MissingDependency, UsageError


class MissingPandas(MissingDependency):
    """pandas is not installed; ``what`` needed it."""

    def __init__(self, what: str):
        self.provider, self.module, self.extra = None, "pandas", "campaign"
        UsageError.__init__(self, f"{what} needs pandas, which is not installed: pip install 'enos[campaign]'")


def pandas(what: str):
    """Return the pandas module. Raises :class:`MissingPandas` naming ``what`` when it is
    not installed."""
    try:
        import pandas as pd
    except ImportError:
        raise MissingPandas(what) from None
    return pd
