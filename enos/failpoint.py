"""Named checkpoints that tests can turn into crashes.

``checkpoint("local.bridge_created")`` does nothing unless the environment variable
``ENOS_FAILPOINTS`` names it::

    ENOS_FAILPOINTS="local.bridge_created=kill"        # SIGKILL this process
    ENOS_FAILPOINTS="task.booked=raise,x=interrupt"    # raise FailpointHit / KeyboardInterrupt
    ENOS_FAILPOINTS="task.booked=stop"                 # SIGSTOP this process (a test then
                                                       # fills a disk, races it, ... and SIGCONTs it)

A name may end with ``*`` to match a prefix. When ``ENOS_FAILPOINT_LOG`` names a file,
every checkpoint reached is appended to it (one name per line), so a test can first
record all checkpoints of a run and then crash at each of them.
"""
from __future__ import annotations

import os
import signal

from enos.errors import FailpointHit

_ACTIONS = ("kill", "raise", "interrupt", "term", "stop")


def _parse(spec: str) -> dict:
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        out[name] = action or "raise"
    return out


def checkpoint(name: str) -> None:
    """Mark that execution reached ``name``; crash here if a test asked for it.

    Returns None. Raises :class:`FailpointHit` (``raise``) or ``KeyboardInterrupt``
    (``interrupt``); ``kill``/``term``/``stop`` send SIGKILL/SIGTERM/SIGSTOP to this process."""
    log = os.environ.get("ENOS_FAILPOINT_LOG")
    if log:
        with open(log, "a") as f:
            f.write(name + "\n")
    spec = os.environ.get("ENOS_FAILPOINTS")
    if not spec:
        return
    table = _parse(spec)
    action = table.get(name)
    if action is None:
        for pat, act in table.items():
            if pat.endswith("*") and name.startswith(pat[:-1]):
                action = act
                break
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif action == "interrupt":
        raise KeyboardInterrupt(f"failpoint {name}")
    else:
        raise FailpointHit(f"failpoint {name} hit")
