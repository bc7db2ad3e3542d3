"""The interruption promise of enos, asserted the same way by every test that sends a
real SIGINT/SIGTERM: exit 130 within :data:`INTERRUPT_SECONDS` of the signal."""
from __future__ import annotations

import os
import sys

#: Ctrl-C (SIGINT to the process group) or SIGTERM at any moment: exit 130 within this
#: many seconds (README, docs/architecture.md)
INTERRUPT_SECONDS = 2.0


def assert_interrupted_in_time(name: str, seconds: float) -> None:
    """Print the figure (a FIGURE line on stderr, kept by ``pytest -s`` and in reports)
    and assert the promise; the message carries the load average of the machine."""
    print(f"\nFIGURE {name}: exit 130 after {seconds:.2f} s", file=sys.stderr)
    assert seconds < INTERRUPT_SECONDS, (f"{name}: exit 130 only {seconds:.2f} s after the signal (promise: "
                                         f"{INTERRUPT_SECONDS:.0f} s; load average {os.getloadavg()[0]:.1f})")
