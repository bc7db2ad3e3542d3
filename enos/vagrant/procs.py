"""The vagrant processes of an env, found by a marker in their environment.

Every ``vagrant`` command enos runs gets ``ENOS_VAGRANT_RUN=<run id>`` in its environment
(inherited by the ruby, ssh and qemu-img processes it starts). After a kill -9 of enos, a
``vagrant up`` it started goes on booting machines; ``destroy`` first kills every process
carrying the marker (by PID, read from ``/proc``), so nothing is created behind its back.
"""
from __future__ import annotations

import os
import signal
import time
from typing import List

MARKER = "ENOS_VAGRANT_RUN"


def marked(run_id: str) -> List[int]:
    """Return the PIDs of the processes whose environment holds ``ENOS_VAGRANT_RUN=run_id``
    (never this process). Returns [] for an empty run id."""
    if not run_id:
        return []
    needle = f"{MARKER}={run_id}".encode()
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            out.append(int(d))
    return out


def kill_marked(run_id: str, timeout: float = 10.0) -> List[int]:
    """SIGKILL every process of ``run_id`` (see :func:`marked`), wait until they are gone
    (reaping our own children); return the PIDs killed. Never raises for a process that
    already exited."""
    killed = []
    deadline = time.monotonic() + timeout
    while True:
        pids = marked(run_id)
        if not pids or time.monotonic() > deadline:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.05)
