"""How enos reacts to SIGINT and SIGTERM: every wait ends within ~2 s, exit 130.

:func:`install` (done by the CLI) makes both signals set :data:`STOP` and raise
``KeyboardInterrupt`` in the main thread, which unwinds whatever it waits for (sleeps,
joins, selects and subprocess waits are all interruptible). Worker threads never see that
exception: their loops watch :data:`STOP` (:func:`sleep` returns early) and kill their
own subprocesses when it is set.

A signal that arrives while the first one is being handled (a second Ctrl-C during the
clean-up) only sets :data:`STOP` again: the clean-up (ending children, releasing the lock)
is not cut in half, and state files are always written atomically anyway.

:func:`flag_only` is for code that must not be interrupted at an arbitrary line but polls
:data:`STOP` itself (ansible-runner's loop: it would otherwise install its own handlers
and never restore ours); on leaving it our handlers are back and, if a signal came, the
``KeyboardInterrupt`` is raised then.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
TYPE_CHECKING = False   # annotations only ('enos run' on one host loads this module)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Iterator, Optional

#: set by the first SIGINT/SIGTERM; watched by worker threads and polling loops
STOP = threading.Event()
_received: Optional[int] = None
_raised = False
_flag_only = 0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _handler(signum, frame) -> None:
    global _received, _raised
    if _received is None:
        _received = signum
    STOP.set()
    if _flag_only or _raised:
        return
    _raised = True
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> dict:
    """Install enos' SIGINT/SIGTERM handlers (main thread only); return the previous
    handlers for :func:`restore`."""
    reset()
    old = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, _handler)
    return old


def restore(old: dict) -> None:
    """Put back the handlers returned by :func:`install` and forget any signal received."""
    for s, h in old.items():
        signal.signal(s, h)
    reset()


def reset() -> None:
    """Forget a received signal (a new command starts)."""
    global _received, _raised
    STOP.clear()
    _received = None
    _raised = False


def received() -> Optional[int]:
    """Return the number of the first signal received (None if none)."""
    return _received


def sleep(seconds: float) -> bool:
    """Sleep up to ``seconds``, waking as soon as a signal is received; return True if it
    was (the caller should then stop), False after a full sleep."""
    return STOP.wait(max(0.0, seconds))


def interruptible_sleep(seconds: float) -> None:
    """Sleep up to ``seconds``; raise KeyboardInterrupt as soon as a signal is received
    (in any thread: for waits in worker threads, which never get the handler's exception)."""
    if STOP.wait(max(0.0, seconds)):
        raise KeyboardInterrupt(signal.Signals(_received).name if _received else "interrupted")


def check() -> None:
    """Raise KeyboardInterrupt if a signal was received and not yet raised (for loops of
    the main thread that ran under :func:`flag_only`)."""
    global _raised
    if STOP.is_set() and not _raised:
        _raised = True
        raise KeyboardInterrupt(signal.Signals(_received).name if _received else "interrupted")


@contextmanager
def flag_only() -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM only set :data:`STOP` (the code polls it); on
    leaving, our handlers are reinstalled (whatever the block installed) and a received
    signal raises KeyboardInterrupt. Only in the main thread."""
    global _flag_only
    if threading.current_thread() is not threading.main_thread():
        yield                      # handlers belong to the main thread: nothing to keep
        return
    ours = signal.getsignal(signal.SIGINT) is _handler
    before = {s: signal.getsignal(s) for s in _SIGNALS}
    if not ours:                   # library use without the CLI: still stop on a signal
        for s in _SIGNALS:
            signal.signal(s, _handler)
    _flag_only += 1
    try:
        yield
    finally:
        _flag_only -= 1
        for s, h in before.items():
            signal.signal(s, h)
    if ours:
        check()
    elif STOP.is_set():
        reset()
        raise KeyboardInterrupt("interrupted")
