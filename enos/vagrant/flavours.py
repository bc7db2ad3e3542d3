"""VM sizes of the vagrant provider, as Enos defines them (``enos/provider/vagrant.py`` of
Enos ≤ 8): name → (vCPUs, memory in MiB)."""
from __future__ import annotations

from typing import Dict, Tuple

FLAVOURS: Dict[str, Tuple[int, int]] = {
    "tiny": (1, 512), "small": (1, 1024), "medium": (2, 2048), "big": (3, 3072),
    "large": (4, 4096), "extra-large": (6, 6144),
}
#: the flavour of a machine that names none
DEFAULT_FLAVOUR = "tiny"


def flavour_names() -> str:
    """Return the flavour names, comma-separated, for messages."""
    return ", ".join(FLAVOURS)


def describe() -> str:
    """Return a one-line description of every flavour (``tiny (1 CPU, 512 MiB), ...``)."""
    return ", ".join(f"{n} ({c} CPU{'s' if c > 1 else ''}, {m} MiB)" for n, (c, m) in FLAVOURS.items())
