"""The earliest-slot search (enos/g5k/slot.py) over the status answers of the fake Grid'5000
API serving the real reference data, with other users' jobs seeded on several sites. The
answer is checked against the fake's own OAR: advance reservations at the slot are
accepted on every site, one a minute earlier is refused somewhere."""
import sys
import time
from pathlib import Path

import pytest

from enos.g5k import slot
from enos.g5k.slot import Demand, Timeline

sys.path.insert(0, str(Path(__file__).parent))
from g5kmodel import paris_date  # noqa: E402
from g5kseed import seed_gantt  # noqa: E402
from g5kserver import FakeG5k  # noqa: E402
from prereq import need_module  # noqa: E402

PW = "slot-pw"
SITES = {"nancy": {"gros": None, "grvingt": None}, "rennes": {"paradoxe": None, "parasilo": None},
         "lyon": {"nova": None, "taurus": None}, "grenoble": {"dahu": None}}
DEMANDS = [Demand("nancy", 60, "gros"), Demand("rennes", 30, "paradoxe"), Demand("rennes", 10, "parasilo"),
           Demand("lyon", 8, "nova"), Demand("grenoble", 16, "dahu"),
           Demand("nancy", 1, kind="vlan", vlan_type="kavlan")]


def test_timeline_merges_and_answers_by_bisection():
    tl = Timeline([(10, 20), (15, 30), (40, 50), (5, 5)])
    assert tl.starts == [10, 40] and tl.ends == [30, 50]
    assert tl.free(0, 10) and not tl.free(0, 11) and tl.free(30, 40) and not tl.free(29, 31)
    assert tl.free(50, 1e9) and not tl.free(35, 45)


def test_reservation_intervals():
    assert slot.busy_interval({"started_at": 100, "scheduled_at": 50, "walltime": 10}) == (100, 110)
    assert slot.busy_interval({"started_at": 0, "scheduled_at": 50, "walltime": 10}) == (50, 60)
    assert slot.busy_interval({"scheduled_at": 50, "walltime": 10, "queue": "besteffort"}) is None
    assert slot.busy_interval({"walltime": 10}) is None


def test_pure_search_on_a_small_status():
    T = 1_800_000_000                # Unix times: 0 means "no start yet" in OAR answers

    def node(res=(), hard="alive"):
        return {"hard": hard, "reservations": [{"scheduled_at": T + s, "walltime": w} for s, w in res]}
    st = {"nodes": {"a-1.x.grid5000.fr": node([(0, 100)]), "a-2.x.grid5000.fr": node([(50, 100)]),
                    "a-3.x.grid5000.fr": node(hard="dead"), "b-1.x.grid5000.fr": node([(0, 400)])}}
    s = slot.earliest([Demand("x", 2, "a")], {"x": st}, 30, T)
    assert (s.start, s.end) == (T + 150, T + 180)     # a-2 frees at 150 (a-3 is dead)
    assert slot.earliest([Demand("x", 1, "a")], {"x": st}, 30, T).start == T       # a-2 is free until 50
    assert slot.earliest([Demand("x", 1, "a")], {"x": st}, 60, T).start == T + 100  # then a-1 frees first
    assert slot.earliest([Demand("x", 1, "a")], {"x": st}, 50, T - 50).start == T - 50  # before a-1's job
    assert slot.earliest([Demand("x", 1, "a")], {"x": st}, 101, T - 50).start == T + 100
    assert slot.earliest([Demand("x", 3, "a")], {"x": st}, 30, T) is None
    assert slot.earliest([Demand("x", 2, "a")], {"x": st}, 30, T, until=T + 179) is None
    assert slot.earliest([Demand("x", 2, "a")], {"x": st}, 30, T, until=T + 180).start == T + 150
    assert slot.earliest([Demand("x", 1, servers=("b-1.x.grid5000.fr",)), Demand("x", 2)],
                         {"x": st}, 10, T).start == T + 400    # b-1 named, plus 2 others
    assert slot.earliest([Demand("x", 1, servers=("b-1.x.grid5000.fr",)), Demand("x", 3)], {"x": st}, 10, T) is None
    with pytest.raises(KeyError):
        slot.earliest([Demand("y", 1)], {"x": st}, 10, T)


@pytest.fixture(scope="module")
def busy_testbed():
    srv = FakeG5k(sites=SITES, users={"alice": PW}, waiting_s=0.1)
    srv.start()
    now = time.time()
    n = seed_gantt(srv, {s: list(c) for s, c in SITES.items()}, jobs_per_site=80, seed=11, now=now)
    yield srv, n, now
    srv.stop()


def statuses(srv, sites):
    grid5000 = need_module("grid5000")
    gk = grid5000.Grid5000(uri=srv.url, username="alice", password=PW)
    return {s: gk.sites[s].status.list(disks="no").to_dict() for s in sites}


def reserve_all(srv, demands, at: float):
    """Submit one advance reservation per site at ``at``; return {site: (status, body)}."""
    per_site = {}
    for d in demands:
        if d.kind == "vlan":
            per_site.setdefault(d.site, []).append(f"{{type='{d.vlan_type}'}}/vlan={d.count}")
        else:
            per_site.setdefault(d.site, []).append(f"{{cluster='{d.cluster}'}}/nodes={d.count}")
    return {s: srv.submit(s, "alice", {"name": "slot-check", "reservation": paris_date(at),
                                        "resources": "+".join(t) + ",walltime=3:00"})
            for s, t in per_site.items()}


def test_earliest_slot_over_seeded_sites_is_what_oar_accepts(busy_testbed, record_property):
    srv, seeded, now = busy_testbed
    assert seeded >= 200
    st = statuses(srv, SITES)
    t0 = time.perf_counter()
    found = slot.earliest(DEMANDS, st, 3 * 3600, now + 120)
    took = time.perf_counter() - t0
    record_property("slot_search_s", round(took, 4))
    print(f"\nslot search over {len(SITES)} sites, {sum(len(s['nodes']) for s in st.values())} nodes, "
          f"{seeded} seeded jobs: {took * 1000:.1f} ms, {found.tried} instants tried")
    assert found is not None and found.start > now + 120          # the seeded gantt makes it wait
    assert found.free["nancy"]["gros"] >= 60 and found.free["rennes"]["paradoxe"] >= 30
    # a minute earlier: OAR refuses on at least one site (its own "could run at" answer)
    early = reserve_all(srv, DEMANDS, found.start - 60)
    refused = {s: b for s, (code, b) in early.items() if code != 201}
    assert refused and all("Reservation not valid --> KO (This reservation could run at" in b
                           for b in refused.values())
    for s, (code, b) in early.items():
        if code == 201:
            srv.jobs[b["uid"]].stop(time.time(), "error", "test cleanup")
    # at the slot: every site accepts
    at = reserve_all(srv, DEMANDS, found.start)
    assert {s: code for s, (code, _) in at.items()} == {s: 201 for s in at}, {s: b for s, (c, b) in at.items() if c != 201}
    for _, b in at.values():
        srv.jobs[b["uid"]].stop(time.time(), "error", "test cleanup")


def test_bounds_and_unusable_nodes(busy_testbed):
    srv, _, now = busy_testbed
    st = statuses(srv, ["nancy"])
    first = slot.earliest([Demand("nancy", 20, "gros")], st, 3600, now)
    later = slot.earliest([Demand("nancy", 20, "gros")], st, 3600, first.start + 1)
    assert later.start > first.start
    assert slot.earliest([Demand("nancy", 20, "gros")], st, 3600, now, until=first.start + 3599) is None
    assert slot.earliest([Demand("nancy", 125, "gros")], st, 3600, now) is None     # gros has 124 nodes
    # every gros node but 10 dead: 11 can never be had
    for i in range(11, 125):
        st["nancy"]["nodes"][f"gros-{i}.nancy.grid5000.fr"]["hard"] = "dead"
    assert slot.earliest([Demand("nancy", 11, "gros")], st, 3600, now) is None
    assert slot.earliest([Demand("nancy", 10, "gros")], st, 3600, now) is not None
