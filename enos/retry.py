"""Retry with exponential backoff and jitter, for transient failures only.

Only exceptions in ``retry_on`` (by default :class:`~enos.errors.Retryable`: ``Unavailable``,
``Timeout``, ``RateLimited``) are retried; anything else propagates at once. After the last
attempt the last exception propagates unchanged.
"""
from __future__ import annotations

import random
import time
from typing import Callable, Optional, Tuple, Type, TypeVar

from enos.errors import Retryable
from enos.signals import interruptible_sleep

T = TypeVar("T")


def backoff_delays(attempts: int, base_delay: float, max_delay: float,
                   jitter: float = 0.25, rng: Optional[random.Random] = None):
    """Yield ``attempts - 1`` delays: ``base_delay * 2**i`` capped at ``max_delay``, each
    scaled by a random factor in ``[1 - jitter, 1 + jitter]`` (so clients do not retry in step)."""
    r = rng or random
    for i in range(max(0, attempts - 1)):
        d = min(max_delay, base_delay * (2 ** i))
        yield max(0.0, d * (1 + r.uniform(-jitter, jitter)))


def retry(fn: Callable[[], T], *, attempts: int = 5, base_delay: float = 0.5,
          max_delay: float = 30.0, retry_on: Tuple[Type[BaseException], ...] = (Retryable,),
          on_retry: Optional[Callable[[int, BaseException, float], None]] = None,
          sleep: Optional[Callable[[float], None]] = None, deadline: Optional[float] = None) -> T:
    """Call ``fn()`` until it returns, at most ``attempts`` times; return its result.

    Between attempts sleeps with exponential backoff (see :func:`backoff_delays`); an
    exception carrying a ``retry_after`` attribute (seconds, e.g. from HTTP 429) makes the
    wait at least that long (still capped by ``max_delay``). ``on_retry(attempt, exc, delay)``
    is called before each wait. ``deadline`` (a ``time.monotonic()`` value) stops retrying
    once the next wait would pass it. ``sleep`` defaults to a sleep that a SIGINT/SIGTERM
    cuts short with KeyboardInterrupt, in worker threads too (:mod:`enos.signals`).

    Raises the last exception when attempts run out, at once any exception not in
    ``retry_on``; ``ValueError`` if ``attempts < 1``."""
    if attempts < 1:
        raise ValueError("attempts must be ≥ 1")
    if sleep is None:
        sleep = interruptible_sleep
    delays = backoff_delays(attempts, base_delay, max_delay)
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except retry_on as exc:
            delay = next(delays, None)
            if delay is None:
                raise
            hint = getattr(exc, "retry_after", None)
            if isinstance(hint, (int, float)) and hint > delay:
                delay = min(float(hint), max_delay)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)
