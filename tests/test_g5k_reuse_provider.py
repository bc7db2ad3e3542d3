"""Reusing Grid'5000 jobs across environments (job_name, job_ids, oargrid_jobids) with the
g5k provider against the fake API over the real reference data, driven by the real
python-grid5000 client."""
import sys
import time
from pathlib import Path

import pytest

from enos.errors import ConfigError, UsageError
from enos.g5k.reuse import ReuseError
from enos.reservation.config import MachineSpec
from enos.state import State

sys.path.insert(0, str(Path(__file__).parent))
from g5khelpers import cfg, provider, write_creds  # noqa: E402
from g5kserver import FakeG5k  # noqa: E402

PASSWORD = "reuse-pw"


@pytest.fixture(params=["str", "int"])
def server(request):
    """The fake API; vlan ids in job answers as strings and as integers (both are seen)."""
    srv = FakeG5k(sites={"rennes": {"paradoxe": 8, "parasilo": 4}, "nancy": {"gros": 6}},
                  users={"alice": PASSWORD, "bob": "bob-pw"}, waiting_s=0.1, launching_s=0.05,
                  deploy_s=0.1, vlan_ids=request.param)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def creds(server, tmp_path, monkeypatch):
    monkeypatch.setenv("G5K_CREDENTIALS_FILE", str(write_creds(tmp_path / "g5k-creds.yaml", server.url, PASSWORD)))
    monkeypatch.delenv("G5K_API_URL", raising=False)


def mapping(res):
    return [(h.alias, h.roles, h.address) for h in res.hosts]


def test_job_name_is_reused_by_a_new_env_and_kept_by_its_destroy(server, creds, tmp_path):
    a = provider(tmp_path / "a", cfg({"job_name": "night", "walltime": "8:00"}))
    ra = a.init()
    assert server.count("POST", r"/jobs$") == 2
    assert {j["name"] for j in server.active_jobs()} == {"night"}
    # a second env, same reservation: finds the jobs, submits nothing, same node -> role mapping
    before = server.count()
    t = time.perf_counter()
    b = provider(tmp_path / "b", cfg({"job_name": "night", "walltime": "8:00"}))
    rb = b.init()
    took = time.perf_counter() - t
    assert server.count("POST") == 0 + 2 and mapping(rb) == mapping(ra)
    recs = {s: b.ctx.journal.get(f"job:{s}") for s in ("rennes", "nancy")}
    assert all(r["reused"] for r in recs.values())
    print(f"\nreuse by job_name in a new env: {took:.2f} s, {server.count() - before} API requests")
    info = {j["site"]: j for j in b.info()["jobs"]}
    assert info["rennes"]["reused"] and info["rennes"]["state"] == "running" and "remaining" in info["rennes"]
    assert not {j["site"]: j for j in a.info()["jobs"]}["rennes"]["reused"]
    # b's destroy keeps the jobs it reused; a's (which submitted them) deletes them
    b.destroy()
    assert len(server.active_jobs()) == 2 and not [k for k in b.ctx.journal.data if k.startswith("job:")]
    a.destroy()
    assert server.active_jobs() == []


def test_release_jobs_deletes_a_reused_job(server, creds, tmp_path):
    a = provider(tmp_path / "a", cfg({"job_name": "night"}))
    a.init()
    b = provider(tmp_path / "b", cfg({"job_name": "night"}))
    b.init()
    b.ctx.release_reused = True
    b.destroy()
    assert server.active_jobs() == []
    a.destroy()        # already gone: idempotent


def test_second_up_of_the_same_env_submits_and_deploys_nothing(server, creds, tmp_path):
    env = tmp_path / "env"
    options = {"job_name": "day", "env_name": "debian12-min"}
    p = provider(env, cfg(options))
    first = mapping(p.init())
    assert server.count("POST", r"/deployments$") == 2
    posts, total = server.count("POST"), server.count()
    t = time.perf_counter()
    again = provider(env, cfg(options), state=State.load(env))
    second = mapping(again.init())
    took = time.perf_counter() - t
    assert server.count("POST") == posts and second == first
    print(f"\nsecond up of the same env: {took:.2f} s, {server.count() - total} API requests, "
          f"{again.api.requests} sent by the provider")
    # a NEW env reusing the deployed job: the API's deployment history says the nodes run
    # the environment already: nothing is deployed again
    other = provider(tmp_path / "other", cfg(options))
    assert mapping(other.init()) == first and server.count("POST") == posts
    other.destroy()
    again.destroy()
    assert server.active_jobs() == []


def test_a_reused_job_must_hold_what_is_asked(server, creds, tmp_path):
    server.submit("nancy", "alice", {"name": "small", "command": "sleep 1d",
                                      "resources": "{cluster='gros'}/nodes=1,walltime=2:00"})
    server.submit("rennes", "alice", {"name": "small", "command": "sleep 1d",
                                       "resources": "{cluster='paradoxe'}/nodes=3,walltime=2:00"})
    p = provider(tmp_path / "env", cfg({"job_name": "small", "env_name": "debian12-min"},
                                       networks=[{"id": "v", "type": "kavlan", "site": "rennes"}]))
    with pytest.raises(ReuseError, match=r"on rennes does not hold .*1 vlan\(s\) of type kavlan \(it has 0\); "
                                         r"the job type 'deploy'"):
        p.init()
    assert server.count("POST", r"/jobs$") == 0             # enos submitted nothing
    assert len(server.active_jobs("small")) == 2             # left alone


def test_two_jobs_of_that_name_are_both_named(server, creds, tmp_path):
    for _ in range(2):
        server.submit("rennes", "alice", {"name": "twice", "command": "sleep 1d",
                                          "resources": "{cluster='paradoxe'}/nodes=3,walltime=2:00"})
    uids = sorted(j["uid"] for j in server.active_jobs("twice"))
    p = provider(tmp_path / "env", cfg({"job_name": "twice"},
                                       machines=[MachineSpec(["a"], 3, label="paradoxe", keypath="resources.paradoxe.a")]))
    with pytest.raises(ReuseError, match=f"2 jobs named 'twice' on rennes: {uids[1]} .*, {uids[0]} "):
        p.init()
    assert server.count("POST", r"/jobs$") == 0


def test_job_ids_and_oargrid_jobids(server, creds, tmp_path):
    _, r = server.submit("rennes", "alice", {"command": "sleep 1d", "resources": "{cluster='paradoxe'}/nodes=3"})
    _, n = server.submit("nancy", "alice", {"command": "sleep 1d", "resources": "{cluster='gros'}/nodes=1"})
    p = provider(tmp_path / "a", cfg({"job_ids": {"rennes": r["uid"], "nancy": n["uid"]}}))
    res = p.init()
    assert {h.extra["g5k_job"] for h in res.hosts} == {r["uid"], n["uid"]} and server.count("POST", r"/jobs$") == 0
    p.destroy()
    assert len(server.active_jobs()) == 2                     # given jobs are kept
    q = provider(tmp_path / "b", cfg({"oargrid_jobids": [["rennes", r["uid"]], ["nancy", n["uid"]]]}))
    assert len(q.init().hosts) == 4
    with pytest.raises(ConfigError, match="job_ids: no job given on nancy"):
        provider(tmp_path / "c", cfg({"job_ids": {"rennes": r["uid"]}})).init()
    with pytest.raises(ConfigError, match="job_ids: job.s. given on lyon, where the reservation asks for nothing"):
        provider(tmp_path / "d", cfg({"job_ids": {"rennes": r["uid"], "nancy": n["uid"], "lyon": 5}})).init()
    with pytest.raises(ConfigError, match="oargrid_jobids.0 gives job 7 on rennes, provider.job_ids.rennes gives"):
        provider(tmp_path / "e", cfg({"job_ids": {"rennes": r["uid"], "nancy": n["uid"]},
                                      "oargrid_jobids": [["rennes", 7]]})).init()
    with pytest.raises(ReuseError, match="job 424242 on rennes .job_ids. does not exist"):
        provider(tmp_path / "f", cfg({"job_ids": {"rennes": 424242, "nancy": n["uid"]}})).init()
    _, bob = server.submit("rennes", "bob", {"command": "sleep 1d", "resources": "{cluster='paradoxe'}/nodes=3"})
    with pytest.raises(ReuseError, match=f"job {bob['uid']} on rennes belongs to bob, not to alice"):
        provider(tmp_path / "g", cfg({"job_ids": {"rennes": bob["uid"], "nancy": n["uid"]}})).init()
    server.jobs[r["uid"]].stop(time.time(), "error", "killed")
    with pytest.raises(ReuseError, match=f"job {r['uid']} on rennes cannot be reused: it is error"):
        provider(tmp_path / "h", cfg({"job_ids": {"rennes": r["uid"], "nancy": n["uid"]}})).init()
    assert server.count("POST", r"/jobs$") == 0            # nothing ever submitted by enos


def test_a_reservation_that_moved_away_from_a_site_is_refused(server, creds, tmp_path):
    env = tmp_path / "env"
    p = provider(env, cfg({"job_name": "x"}))
    p.init()
    only_rennes = [MachineSpec(["a"], 1, label="paradoxe", keypath="resources.paradoxe.a")]
    with pytest.raises(UsageError, match="holds a job on nancy"):
        provider(env, cfg({"job_name": "x"}, machines=only_rennes), state=State.load(env)).init()
    p.destroy()


@pytest.mark.parametrize("release", [False, True])
def test_kill_9_after_reusing_then_destroy_keeps_or_releases(tmp_path, release):
    """enos killed -9 once it holds a reused job: 'enos destroy' keeps the user's job (it
    was not enos'), 'enos destroy --release-jobs' deletes it."""
    import os
    import signal
    import subprocess
    from enoscli import enos
    srv = FakeG5k(sites={"nancy": {"gros": 4}}, users={"alice": PASSWORD}, waiting_s=0.05, launching_s=0.02)
    srv.start()
    try:
        creds = write_creds(tmp_path / "c.yaml", srv.url, PASSWORD)
        _, night = srv.submit("nancy", "alice", {"name": "night", "command": "sleep 1d",
                                                  "resources": "{cluster='gros'}/nodes=2,walltime=8:00"})
        (tmp_path / "r.yaml").write_text("provider: {type: g5k, job_name: night, gateway: false, poll_interval: 0.05}\n"
                                         "resources: {gros: {db: 2}}\n")
        env = {**os.environ, "G5K_CREDENTIALS_FILE": str(creds), "ENOS_FAILPOINTS": "g5k.jobs_running=kill"}
        p = subprocess.run([sys.executable, "-m", "enos", "up", "-f", "r.yaml", "--env", "env"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == -signal.SIGKILL, p.stderr
        assert srv.count("POST", r"/jobs$") == 0
        args = ["destroy", "--env", "env"] + (["--release-jobs"] if release else [])
        out = enos(tmp_path, *args, env={"G5K_CREDENTIALS_FILE": str(creds)})
        alive = [j["uid"] for j in srv.active_jobs("night")]
        assert alive == ([] if release else [night["uid"]]), out.stderr
        if not release:
            assert f"kept your job {night['uid']} on nancy" in out.stderr
    finally:
        srv.stop()
