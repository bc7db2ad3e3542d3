"""Progress on long waits: a rich live display on a terminal, plain log lines otherwise,
nothing under ``-q``.

Usage::

    with progress.task("waiting for SSH", total=len(hosts)) as t:
        ...; t.advance(); t.update("3 hosts left")
    progress.info("bridge enos-1a2b created")
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Optional

log = logging.getLogger("enos")

QUIET, PLAIN, RICH = "quiet", "plain", "rich"


class _Task:
    def __init__(self, owner: "Progress", description: str, total: Optional[int]):
        self.owner, self.description, self.total = owner, description, total
        self.completed = 0
        self.status = ""
        self._rich_id = None
        self._last_plain = 0.0

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done (a status left from before, e.g. "1 left", is
        cleared once all are done: never "2/2 1 left")."""
        self.completed += n
        if self.total is not None and self.completed >= self.total:
            self.status = ""
        self._refresh()

    def update(self, status: str = "", completed: Optional[int] = None) -> None:
        """Set the status text (and optionally the completed count)."""
        self.status = status
        if completed is not None:
            self.completed = completed
        self._refresh()

    def _refresh(self) -> None:
        o = self.owner
        if o.mode == RICH and o._rich is not None and self._rich_id is not None:
            desc = self.description + (f" — {self.status}" if self.status else "")
            o._rich.update(self._rich_id, completed=self.completed, description=desc)
        elif o.mode == PLAIN:
            now = time.monotonic()
            done = self.total is not None and self.completed >= self.total
            if done or now - self._last_plain >= o.plain_interval:
                self._last_plain = now
                frac = f" {self.completed}/{self.total}" if self.total is not None else ""
                o._emit(f"{self.description}:{frac} {self.status}".rstrip())


def _logs_to(stream) -> bool:
    """True if a handler of the ``enos`` logger (or of the root logger) writes to ``stream``."""
    lg = log
    while lg is not None:
        for h in lg.handlers:
            if getattr(h, "stream", None) is stream:
                return True
        lg = lg.parent if lg.propagate else None
    return False


def _CountColumn():
    """A rich column "3/5" for tasks with a total, nothing for open-ended ones (an Ansible
    run: not "0/None")."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class CountColumn(ProgressColumn):
        def render(self, task):
            return Text("" if task.total is None else f"{int(task.completed)}/{int(task.total)}")
    return CountColumn()


class Progress:
    """Progress reporter. ``mode`` is ``rich``, ``plain`` or ``quiet``; by default rich on a
    TTY stderr, plain otherwise."""

    def __init__(self, mode: Optional[str] = None, stream=None, plain_interval: float = 5.0):
        self.stream = stream or sys.stderr
        if mode is None:
            mode = RICH if getattr(self.stream, "isatty", lambda: False)() else PLAIN
        self.mode = mode
        self.plain_interval = plain_interval
        self._rich = None
        self._depth = 0

    def _emit(self, msg: str) -> None:
        if self.mode == QUIET:
            return
        if self.mode == RICH and self._rich is not None:
            self._rich.console.print(msg, highlight=False)
        else:
            print(msg, file=self.stream, flush=True)

    def info(self, msg: str) -> None:
        """Print one line of progress (not under quiet). Under ``-v`` (INFO logs on) it goes
        out once, as a log line, not twice."""
        if self.mode != QUIET and log.isEnabledFor(logging.INFO) and _logs_to(self.stream):
            log.info(msg)
            return
        log.info(msg)
        self._emit(msg)

    @contextmanager
    def task(self, description: str, total: Optional[int] = None) -> Iterator[_Task]:
        """Context manager yielding a task whose progress is displayed while it runs."""
        t = _Task(self, description, total)
        started = time.monotonic()
        if self.mode == RICH:
            if self._rich is None:
                from rich.console import Console
                from rich.progress import (BarColumn, Progress as RichProgress, SpinnerColumn,
                                           TextColumn, TimeElapsedColumn)
                self._rich = RichProgress(SpinnerColumn(), TextColumn("{task.description}"),
                                          BarColumn(), _CountColumn(),
                                          TimeElapsedColumn(), console=Console(file=self.stream),
                                          transient=True)
                self._rich.start()
            self._depth += 1
            t._rich_id = self._rich.add_task(description, total=total)
        elif self.mode == PLAIN:
            self._emit(f"{description} ...")
        try:
            yield t
        finally:
            elapsed = time.monotonic() - started
            if self.mode == RICH and self._rich is not None:
                self._rich.remove_task(t._rich_id)
                self._depth -= 1
                if self._depth == 0:
                    self._rich.stop()
                    self._rich = None
            self._emit(f"{description}: done in {elapsed:.1f}s" if sys.exc_info()[0] is None
                       else f"{description}: stopped after {elapsed:.1f}s")


NULL = Progress(mode=QUIET)
