"""Benchmark (not a test): the earliest-slot search (enos/g5k/slot.py) over the status
answers of the fake Grid'5000 API serving the real reference data (4 sites, every
default-queue cluster), with other users' jobs seeded over the next 3 days.

Baseline, in the same run: EnOSlib's way (``can_start_on_cluster`` in
``enoslib/infra/enos_g5k/g5k_api_utils.py``, as API-SHAPES.md §4 describes it): at each
candidate instant, for each cluster, scan every node's reservations for an overlap.

    .venv/bin/python bench/g5k_slot.py [--jobs 200] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))


def naive_earliest(demands, statuses, walltime, start):
    """EnOSlib-style search: every instant, every node, every reservation."""
    from enos.g5k.oar import node_cluster
    instants = {start}
    for st in statuses.values():
        for e in st["nodes"].values():
            for r in e.get("reservations") or []:
                s = r.get("started_at") or r.get("scheduled_at")
                if s and s + r["walltime"] > start:
                    instants.add(s + r["walltime"])
    for t in sorted(instants):
        ok = True
        for d in demands:
            free = 0
            for fq, e in statuses[d.site]["nodes"].items():
                if node_cluster(fq) != d.cluster or e["hard"] in ("dead", "suspected", "absent"):
                    continue
                if all(r.get("queue") == "besteffort" or not (r.get("started_at") or r.get("scheduled_at"))
                       or (r.get("started_at") or r["scheduled_at"]) + r["walltime"] <= t
                       or (r.get("started_at") or r["scheduled_at"]) >= t + walltime
                       for r in e.get("reservations") or []):
                    free += 1
            if free < d.count:
                ok = False
                break
        if ok:
            return t
    return None


def main(argv=None) -> int:
    """Run; print the figures; return 0 when both searches agree."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=200, help="seeded jobs per site")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    from g5kref import need_reference
    from g5kseed import seed_gantt
    from g5kserver import FakeG5k
    from enos.g5k import slot
    from enos.g5k.slot import Demand
    ref = need_reference()
    sites = {s: [c for c in ref.cluster_uids(s) if "default" in ref.cluster(s, c)["queues"]
                 and not ref.cluster(s, c).get("exotic")] for s in ref.site_uids}
    srv = FakeG5k(sites={s: {c: None for c in cs} for s, cs in sites.items()})
    now = time.time()
    seeded = seed_gantt(srv, sites, jobs_per_site=args.jobs, seed=5, now=now)
    statuses = {s: srv.status(s, {"disks": "no", "subnets": "no"}) for s in sites}
    demands = [Demand("nancy", 80, "gros"), Demand("rennes", 40, "paradoxe"), Demand("rennes", 12, "parasilo"),
               Demand("lyon", 12, "nova"), Demand("grenoble", 20, "dahu")]
    ours, base = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        found = slot.earliest(demands, statuses, 4 * 3600, now)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        naive = naive_earliest(demands, statuses, 4 * 3600, float(int(now) + 1))
        base.append(time.perf_counter() - t)
    n_nodes = sum(len(st["nodes"]) for st in statuses.values())
    m, b = statistics.median(ours), statistics.median(base)
    print(f"sites {len(sites)}, nodes {n_nodes}, seeded jobs {seeded}, instants tried {found.tried}")
    print(f"slot search (enos.g5k.slot):   {m * 1000:8.1f} ms  (median of {args.repeat})")
    print(f"naive search (EnOSlib's way):  {b * 1000:8.1f} ms  ratio {b / m:.1f}x")
    print(f"slot starts in {(found.start - now) / 3600:.2f} h; naive agrees: {naive == found.start}")
    return 0 if naive == found.start else 1


if __name__ == "__main__":
    raise SystemExit(main())
