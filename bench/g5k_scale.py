"""Benchmark (not a test): book every node of the default-queue, non-exotic clusters of the
real reference data (4 sites, ~290 nodes; tests/g5kref.py) against the local Grid'5000 API
server and print the g5k provider's own overhead (wall time minus the time spent waiting
for the server: HTTP round trips and poll sleeps) and the number of API requests.

Targets: overhead ≤ 2 s; requests O(sites) plus polls.

    .venv/bin/python bench/g5k_scale.py [--sites 4] [--nodes N]   (N: at most that many)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    """Run the benchmark; return 0 if the overhead target is met, 1 otherwise."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--nodes", type=int, default=0, help="book at most this many nodes (0: all)")
    args = ap.parse_args(argv)

    from g5kserver import FakeG5k
    from g5kref import need_reference
    from enos.reservation.config import Config, MachineSpec
    from enos.provider import g5k as g5kmod
    from enos.provider.provider import ProviderContext
    from enos.ssh.keys import ensure_keypair
    from enos.state import State

    sites = default_queue_clusters(need_reference(), args.sites, args.nodes)
    srv = FakeG5k(sites=sites, users={"alice": "pw"}, waiting_s=0.5, launching_s=0.1)
    srv.start()
    tmp = Path(tempfile.mkdtemp(prefix="enos-g5k-bench-"))
    creds = tmp / "creds.yaml"
    creds.write_text(f"username: alice\npassword: pw\nuri: {srv.url}\n")
    os.environ["G5K_CREDENTIALS_FILE"] = str(creds)
    machines = [MachineSpec(roles=[f"r{i}"], count=n, label=c)
                for i, clusters in enumerate(sites.values()) for c, n in clusters.items()]
    wanted = sum(m.count for m in machines)
    config = Config(file="bench.yaml", provider_type="g5k",
                    options={"type": "g5k", "poll_interval": 0.2, "poll_max_interval": 1.0}, machines=machines)
    st = State.create(tmp, "bench.yaml", {}, "g5k")
    key = ensure_keypair(tmp / "ssh", "bench")
    prov = g5kmod.G5k(ProviderContext(config=config, journal=st.journal, env_dir=tmp, run_id=st.run_id, ssh_key=key))

    # measure time spent inside HTTP round trips and sleeps (the server's side of things)
    waited = {"http": 0.0, "sleep": 0.0}
    import requests.adapters
    real_send = requests.adapters.HTTPAdapter.send

    def timed_send(self, *a, **kw):
        t = time.perf_counter()
        try:
            return real_send(self, *a, **kw)
        finally:
            waited["http"] += time.perf_counter() - t
    requests.adapters.HTTPAdapter.send = timed_send
    real_sleep = time.sleep

    def timed_sleep(s):
        t = time.perf_counter()
        real_sleep(s)
        waited["sleep"] += time.perf_counter() - t
    g5kmod.time.sleep = timed_sleep

    import grid5000  # noqa: F401  (import cost is not part of the per-run overhead)
    c0 = time.process_time()
    t0 = time.perf_counter()
    res = prov.init()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0   # includes the in-process server's CPU: an upper bound
    n_req = prov.api.requests
    t1 = time.perf_counter()
    prov.destroy()
    destroy_s = time.perf_counter() - t1
    polls = srv.count("GET", r"/jobs/\d+$")
    srv.stop()
    overhead = wall - waited["sleep"] - waited["http"]
    print(f"hosts booked:          {len(res.hosts)} on {len(sites)} sites")
    print(f"init wall time:        {wall:.2f} s (sleeping between polls {waited['sleep']:.2f} s, "
          f"in HTTP round trips {waited['http']:.2f} s)")
    print(f"provider overhead:     {max(0.0, overhead):.2f} s (target ≤ 2 s)")
    print(f"CPU time during init:  {cpu:.2f} s (provider + the in-process server)")
    print(f"API requests (init):   {n_req} = sites lookup {1 + len(sites)} + submissions {len(sites)} "
          f"+ job polls {polls}")
    print(f"destroy:               {destroy_s:.2f} s")
    return 0 if min(overhead, cpu) <= 2.0 and len(res.hosts) == wanted else 1


def default_queue_clusters(ref, n_sites: int, cap: int) -> dict:
    """Return {site: {cluster: node count}}: every node of the non-exotic clusters of the
    default queue of the first ``n_sites`` sites, at most ``cap`` nodes in all (0: no cap)."""
    out: dict = {}
    left = cap or 10 ** 9
    for site in ref.site_uids[:n_sites]:
        for c in ref.cluster_uids(site):
            data = ref.cluster(site, c)
            if data.get("exotic") or "default" not in (data.get("queues") or []) or left <= 0:
                continue
            n = min(len(ref.nodes(site, c)), left)
            out.setdefault(site, {})[c] = n
            left -= n
    return out


if __name__ == "__main__":
    raise SystemExit(main())
