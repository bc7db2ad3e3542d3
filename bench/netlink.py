"""What running pyroute2 on a loop-free worker thread costs (enos.local.netlink, issue 20).

    .venv/bin/python bench/netlink.py [--repeat 300]

Interleaved, medians of ``--repeat``: (a) a whole ``with IPRoute() as i: i.link_lookup(ifname="lo")``
(what the local provider does per init/destroy/preflight), (b) one ``link_lookup`` on an
open socket (what it does per host), each with pyroute2's ``IPRoute`` called directly and
through :class:`enos.local.netlink.IPRoute`. Also checks that the worker works under a
running asyncio loop and that pyroute2 called directly does not. Needs no root.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Callable, List


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(repeat: int) -> dict:
    """Return the medians (ms) of the four cases, interleaved ``repeat`` times."""
    from pyroute2 import IPRoute as Direct
    from enos.local.netlink import IPRoute as Worker

    def cycle(cls):
        def go():
            with cls() as i:
                i.link_lookup(ifname="lo")
        return go

    samples: dict = {"open+lookup+close direct": [], "open+lookup+close worker": [],
                     "lookup direct": [], "lookup worker": []}
    with Direct() as d, Worker() as w:
        for _ in range(repeat):
            samples["open+lookup+close direct"].append(_time(cycle(Direct)))
            samples["open+lookup+close worker"].append(_time(cycle(Worker)))
            samples["lookup direct"].append(_time(lambda: d.link_lookup(ifname="lo")))
            samples["lookup worker"].append(_time(lambda: w.link_lookup(ifname="lo")))
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}


def bench_netlink(table, repeat: int) -> None:
    """Add the row of ``bench/run.py``: one ``IPRoute`` opened, one lookup, closed, through
    the worker thread vs pyroute2 directly (interleaved, 100 × ``repeat`` samples each);
    target: at most 2 ms more per use (the local provider opens 1-3 per up/destroy)."""
    from pyroute2 import IPRoute as Direct
    from enos.local.netlink import IPRoute as Worker

    def cycle(cls):
        def go():
            with cls() as i:
                i.link_lookup(ifname="lo")
        return go
    ours, base = [], []
    for _ in range(100 * max(1, repeat)):
        ours.append(_time(cycle(Worker)))
        base.append(_time(cycle(Direct)))
    table.add("local netlink: `IPRoute` open + lookup + close on a loop-free worker thread (any caller)",
              ours, base, "≤ +2 ms", lambda e, r: r is not None and r <= 0.002, ratio_kind="enos-base",
              base_name="(pyroute2 called directly: fails under a running asyncio loop)")


def under_running_loop() -> List[str]:
    """Return what each implementation does when called inside ``asyncio.run``."""
    from pyroute2 import IPRoute as Direct
    from enos.local.netlink import IPRoute as Worker
    out = []
    for name, cls in (("direct", Direct), ("worker", Worker)):
        async def main():
            with cls() as i:
                return i.link_lookup(ifname="lo")
        try:
            out.append(f"{name}: ok {asyncio.run(main())}")
        except RuntimeError as e:
            out.append(f"{name}: RuntimeError: {e}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=300)
    args = ap.parse_args()
    med = measure(args.repeat)
    print(f"{'case':<28} {'direct ms':>10} {'worker ms':>10} {'ratio':>7}")
    for case in ("open+lookup+close", "lookup"):
        d, w = med[f"{case} direct"], med[f"{case} worker"]
        print(f"{case:<28} {d:>10.3f} {w:>10.3f} {w / d:>7.2f}")
    for line in under_running_loop():
        print("inside asyncio.run:", line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
