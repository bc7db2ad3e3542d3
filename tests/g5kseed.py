"""Seed a fake Grid'5000 (tests/g5kserver.py) with other users' jobs: a plausible gantt of
busy nodes over the coming days on the real reference clusters, reproducible from a seed."""
from __future__ import annotations

import random
import time
from typing import Dict, List, Optional

import g5kmodel as M


def seed_gantt(server, sites: Dict[str, List[str]], jobs_per_site: int = 60, seed: int = 1,
               horizon_h: float = 72.0, now: Optional[float] = None) -> int:
    """Put ``jobs_per_site`` jobs of other users on the given clusters of each site: each
    takes a random share of one cluster's nodes (those free then), starts between 2 hours
    ago and ``horizon_h`` from now and lasts 1-14 hours; one job in ten is best effort.
    Jobs never overlap on a node (as OAR would place them). Returns how many were seeded."""
    rnd = random.Random(seed)
    now = time.time() if now is None else now
    made = 0
    for site, clusters in sites.items():
        for _ in range(jobs_per_site):
            cluster = rnd.choice(clusters)
            pool = [n.fqdn for n in server.sites[site].cluster_nodes(cluster)]
            start = now + rnd.uniform(-2, horizon_h) * 3600
            wall = int(rnd.uniform(1, 14) * 3600)
            with server.lock:
                busy = M.busy_intervals(server._site_jobs(site), now)
            free = [n for n in pool if all(e <= start or s >= start + wall for s, e in busy.get(n, ()))]
            if not free:
                continue
            take = rnd.sample(free, max(1, int(len(free) * rnd.uniform(0.1, 0.8))))
            server.seed_job(site, nodes=sorted(take), start=start, walltime=wall,
                            user=rnd.choice(["bob", "carol", "dave"]), besteffort=rnd.random() < 0.1)
            made += 1
    return made
