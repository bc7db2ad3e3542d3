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


def communicate_or_dump(p, timeout: float, name: str):
    """Return ``p.communicate(timeout=timeout)`` (stdout, stderr). When the process is still
    there after ``timeout`` — an interrupted script that hangs — send it SIGABRT (started
    with ``python -X faulthandler``, it then prints every thread's stack on stderr) and
    raise AssertionError with those stacks and its process tree, so a hang seen once in a
    full run says where it was."""
    import signal
    import subprocess
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = subprocess.run(["ps", "-o", "pid,ppid,pgid,stat,args", "--forest", "-g", str(p.pid)],
                              capture_output=True, text=True).stdout
        os.kill(p.pid, signal.SIGABRT)
        try:
            _, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
        raise AssertionError(f"{name}: still running {timeout:.0f} s after the signal (load average "
                             f"{os.getloadavg()[0]:.1f}); its process group:\n{tree}\nits threads' stacks "
                             f"(faulthandler):\n{(err or '')[-12000:]}") from None
