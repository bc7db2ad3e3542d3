"""Reuse checks (enos/g5k/reuse.py) on job answers of the fake API over the real data."""
import sys
import time
from pathlib import Path

import pytest

from enos.g5k import reuse
from enos.g5k.plan import Group, Network

sys.path.insert(0, str(Path(__file__).parent))
from g5kserver import FakeG5k  # noqa: E402

TYPES = {"1": "kavlan-local", "4": "kavlan", "5": "kavlan", "14": "kavlan-global"}


def test_needs_sum_clusters_servers_networks():
    groups = [Group(["a"], "gros", 2, site="nancy"), Group(["b"], "gros", 1, site="nancy"),
              Group(["c"], "gros", 1, servers=["gros-9.nancy.grid5000.fr"], site="nancy"),
              Group(["d"], "paradoxe", 3, site="rennes")]
    nets = [Network("v", "kavlan", site="nancy"), Network("s", "slash_22", site="rennes"), Network("p", "prod")]
    n = reuse.needs(groups, nets, deploy=True)
    assert n["nancy"].clusters == {"gros": 3} and n["nancy"].servers == ["gros-9.nancy.grid5000.fr"]
    assert n["nancy"].vlans == {"kavlan": 1} and n["rennes"].subnets == {"slash_22": 1} and n["rennes"].deploy


def test_missing_names_everything():
    need = reuse.SiteNeed({"gros": 3}, ["gros-9.nancy.grid5000.fr"], {"kavlan": 1}, {"slash_22": 2}, deploy=True)
    job = {"uid": 7, "state": "running", "types": [], "assigned_nodes": ["gros-1.nancy.grid5000.fr",
           "gros-2.nancy.grid5000.fr"], "resources_by_type": {"vlans": [1], "subnets": ["10.144.0.0/22"]}}
    lacks = reuse.missing(job, need, TYPES)
    assert lacks == ["node gros-9.nancy.grid5000.fr", "3 node(s) of gros (it has 2)",
                     "1 vlan(s) of type kavlan (it has 0)", "2 subnet(s) slash_22 (it has 1)",
                     "the job type 'deploy' (env_name deploys an environment)"]
    with pytest.raises(reuse.ReuseError, match="job 7 on nancy does not hold .* it lacks node gros-9"):
        reuse.check("nancy", job, need, TYPES)
    with pytest.raises(reuse.ReuseError, match="job 7 on nancy cannot be reused: it is terminated"):
        reuse.check("nancy", {**job, "state": "terminated"}, need, TYPES)
    ok = {**job, "types": ["deploy"], "assigned_nodes": [f"gros-{i}.nancy.grid5000.fr" for i in (1, 2, 3, 9)],
          "resources_by_type": {"vlans": ["4"], "subnets": ["10.144.0.0/22", "10.144.4.0/22"]}}
    reuse.check("nancy", ok, need, TYPES)


def test_pick_by_name_and_given_jobs():
    jobs = [{"uid": 1, "name": "night", "state": "running"}, {"uid": 2, "name": "night", "state": "error"},
            {"uid": 3, "name": "day", "state": "waiting"}]
    assert reuse.pick_by_name("nancy", "night", jobs)["uid"] == 1
    assert reuse.pick_by_name("nancy", "other", jobs) is None
    with pytest.raises(reuse.ReuseError, match=r"2 jobs named 'night' on nancy: 1 \(running\), 4 \(waiting\)"):
        reuse.pick_by_name("nancy", "night", jobs + [{"uid": 4, "name": "night", "state": "waiting"}])
    assert reuse.given_jobs({"job_ids": {"nancy": 5}, "oargrid_jobids": [["rennes", "6"], ["nancy", 5]]}) == \
        {"nancy": 5, "rennes": 6}
    with pytest.raises(reuse.ReuseError, match="oargrid_jobids.0 gives job 6 on nancy, provider.job_ids.nancy gives 5"):
        reuse.given_jobs({"job_ids": {"nancy": 5}, "oargrid_jobids": [["nancy", 6]]})


def test_checked_against_real_job_answers():
    srv = FakeG5k(sites={"nancy": {"gros": 6}}, waiting_s=0.05, launching_s=0.01)
    st, job = srv.submit("nancy", "alice", {"name": "night", "command": "sleep 1d", "types": ["deploy"],
                                             "resources": "{cluster='gros'}/nodes=4+{type='kavlan'}/vlan=1,walltime=8:00"})
    assert st == 201
    time.sleep(0.1)
    job = srv.jobs[job["uid"]].item(time.time(), srv.base)
    types = dict(srv.sites["nancy"].vlans)
    need = reuse.SiteNeed({"gros": 4}, [], {"kavlan": 1}, {}, deploy=True)
    reuse.check("nancy", job, need, types)
    bigger = reuse.SiteNeed({"gros": 5}, [], {"kavlan-global": 1}, {}, deploy=True)
    with pytest.raises(reuse.ReuseError, match=r"5 node\(s\) of gros \(it has 4\); 1 vlan\(s\) of type kavlan-global"):
        reuse.check("nancy", job, bigger, types)
