"""The g5k provider against the local Grid'5000 API server (tests/g5kserver.py), driven by the
real python-grid5000 client: booking, reconnection, faults, deployments, pools, destroy,
sweep, extend, info, check, credentials and secrets."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enos.reservation.config import Config, MachineSpec
from enos.errors import (AuthError, ConfigError, DestroyIncomplete, ProviderError, RateLimited,
                         ReservationUnavailable, Timeout, Unavailable, UsageError)
from enos.g5k import oar
from enos.g5k.credentials import load_credentials
from enos.g5k.plan import Group, assign_nodes
from enos.provider.g5k import G5k
from enos.provider.provider import ProviderContext
from enos.retry import retry
from enos.ssh.keys import ensure_keypair
from enos.state import State

sys.path.insert(0, str(Path(__file__).parent))
from g5kserver import FakeG5k  # noqa: E402
from g5kmodel import paris_date as paris  # noqa: E402

PASSWORD = "s3cret-pw-7f1c"
FAST = {"poll_interval": 0.05, "poll_max_interval": 0.2, "retry_base_delay": 0.02,
        "retry_max_delay": 0.1, "api_timeout": 2}


@pytest.fixture
def server():
    srv = FakeG5k(sites={"rennes": {"paradoxe": 6, "parasilo": 2}, "nancy": {"gros": 4}},
                  users={"alice": PASSWORD}, waiting_s=0.15, launching_s=0.05, deploy_s=0.1, seed=7)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def creds(server, tmp_path, monkeypatch):
    f = tmp_path / "g5k-creds.yaml"
    f.write_text(f"username: alice\npassword: {PASSWORD}\nuri: {server.url}\n")
    monkeypatch.setenv("G5K_CREDENTIALS_FILE", str(f))
    monkeypatch.delenv("G5K_API_URL", raising=False)
    return f


def cfg(options=None, machines=None, networks=None):
    opts = {"type": "g5k", **FAST, **(options or {})}
    ms = machines if machines is not None else [
        MachineSpec(roles=["control"], count=1, label="paradoxe", keypath="resources.paradoxe.control"),
        MachineSpec(roles=["compute"], count=2, label="paradoxe", keypath="resources.paradoxe.compute"),
        MachineSpec(roles=["compute"], count=1, label="gros", keypath="resources.gros.compute")]
    return Config(file="reservation.yaml", provider_type="g5k", options=opts, machines=ms,
                  networks=networks or [])


def mark(p) -> str:
    """The command enos gives the jobs it submits (its run mark in it)."""
    return f": enos-run-{p.ctx.run_id}; sleep 31536000"


def provider(env_dir: Path, config: Config, state=None) -> G5k:
    env_dir.mkdir(parents=True, exist_ok=True)
    st = state or State.create(env_dir, "reservation.yaml", {}, "g5k")
    key = ensure_keypair(env_dir / "ssh", f"enos-{st.run_id}")
    ctx = ProviderContext(config=config, journal=st.journal, env_dir=env_dir, run_id=st.run_id, ssh_key=key)
    return G5k(ctx)


# --- pure parts --------------------------------------------------------------------------

def test_walltime_reservation_and_refusal_parsing():
    assert oar.parse_walltime("30:00") == 30 * 3600
    assert oar.parse_walltime("2:30:15") == 2 * 3600 + 30 * 60 + 15
    assert oar.parse_walltime("100:00:00") == 100 * 3600
    for bad in ("1h", "2:75", "", "1:2:3:4"):
        with pytest.raises(ValueError):
            oar.parse_walltime(bad)
    assert oar.parse_extension("+1:30") == 5400 and oar.parse_extension("-0:10") == -600
    assert oar.format_extension(5400) == "+1:30:00"
    with pytest.raises(ValueError):
        oar.parse_extension("+0")
    assert oar.parse_reservation("2030-01-01 19:00:00").hour == 19
    with pytest.raises(ValueError):
        oar.parse_reservation("2030-01-01T19:00")
    assert oar.could_run_at("OAR: your job could run at 2031-05-06 07:08:09 (...)") == "2031-05-06 07:08:09"
    assert oar.could_run_at("Bad resources request") is None


def test_resource_expression():
    terms = [oar.cluster_term("paradoxe", 3), *oar.server_terms(["gros-1.nancy.grid5000.fr"]),
             oar.network_term("kavlan"), oar.network_term("slash_22")]
    assert oar.network_term("prod") is None
    assert oar.resource_expression(terms, "26:00") == (
        "{cluster='paradoxe'}/nodes=3+{network_address='gros-1.nancy.grid5000.fr'}/nodes=1"
        "+{type='kavlan'}/vlan=1+slash_22=1,walltime=26:00:00")


def test_assign_nodes_by_cluster_order_and_servers():
    groups = [Group(["a"], "paradoxe", 1, site="rennes"), Group(["b"], "paradoxe", 2, site="rennes"),
              Group(["c"], "paradoxe", 1, servers=["paradoxe-9.rennes.grid5000.fr"], site="rennes")]
    got = [n for n in ["paradoxe-10.rennes.grid5000.fr", "paradoxe-2.rennes.grid5000.fr",
                       "paradoxe-9.rennes.grid5000.fr", "paradoxe-1.rennes.grid5000.fr"]]
    pairs = assign_nodes(groups, {"rennes": got})
    assert [(g.roles[0], n.split(".")[0]) for g, n in pairs] == [
        ("a", "paradoxe-1"), ("b", "paradoxe-2"), ("b", "paradoxe-10"), ("c", "paradoxe-9")]
    with pytest.raises(ValueError):
        assign_nodes([Group(["a"], "paradoxe", 5, site="rennes")], {"rennes": got})


def test_retry_only_retryable_and_gives_up():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise Unavailable("503")
        return "ok"
    assert retry(flaky, attempts=5, base_delay=0, sleep=lambda d: None) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(Unavailable):
        retry(lambda: (calls.append(1), (_ for _ in ()).throw(Unavailable("x")))[1],
              attempts=4, base_delay=0, sleep=lambda d: None)
    assert len(calls) == 4
    calls.clear()
    with pytest.raises(ProviderError):
        retry(lambda: (calls.append(1), (_ for _ in ()).throw(ProviderError("no")))[1],
              attempts=4, base_delay=0, sleep=lambda d: None)
    assert len(calls) == 1
    waits = []
    err = RateLimited("429")
    err.retry_after = 3.0
    with pytest.raises(RateLimited):
        retry(lambda: (_ for _ in ()).throw(err), attempts=2, base_delay=0.01, max_delay=10, sleep=waits.append)
    assert waits == [3.0]


# --- credentials -------------------------------------------------------------------------

def test_credentials_missing_bad_and_env(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(AuthError, match=str(missing)):
        load_credentials({"G5K_CREDENTIALS_FILE": str(missing)})
    bad = tmp_path / "bad.yaml"
    bad.write_text("username: [unclosed\n")
    with pytest.raises(AuthError, match="not valid YAML"):
        load_credentials({"G5K_CREDENTIALS_FILE": str(bad)})
    nopw = tmp_path / "nopw.yaml"
    nopw.write_text("username: bob\n")
    with pytest.raises(AuthError, match="lacks password"):
        load_credentials({"G5K_CREDENTIALS_FILE": str(nopw)})
    c = load_credentials({"G5K_USERNAME": "bob", "G5K_PASSWORD": "pw", "G5K_API_URL": "http://127.0.0.1:9/x"})
    assert (c.username, c.uri) == ("bob", "http://127.0.0.1:9/x")
    assert "pw" not in repr(c) and "pw" not in str(c)


def test_default_credentials_file_missing_is_an_auth_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(AuthError, match=r"\.python-grid5000\.yaml does not exist"):
        load_credentials({})


def test_wrong_password_is_auth_error(server, tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text(f"username: alice\npassword: wrong\nuri: {server.url}\n")
    monkeypatch.setenv("G5K_CREDENTIALS_FILE", str(f))
    p = provider(tmp_path / "env", cfg())
    with pytest.raises(AuthError, match="refused the credentials"):
        p.init()
    assert server.count("POST") == 0


# --- booking -------------------------------------------------------------------------------

def test_init_books_one_job_per_site_and_reconnects(server, creds, tmp_path):
    env = tmp_path / "env"
    p = provider(env, cfg({"job_name": "exp1", "walltime": "1:00"}))
    res = p.init()
    assert [(h.alias, h.roles) for h in res.hosts] == [
        ("paradoxe-1", ["control"]), ("paradoxe-2", ["compute"]), ("paradoxe-3", ["compute"]),
        ("gros-1", ["compute"])]
    h = res.hosts[0]
    assert h.address == "paradoxe-1.rennes.grid5000.fr" and h.user == "alice"
    assert h.jump == "alice@access.grid5000.fr" and h.extra["g5k_site"] == "rennes"
    jobs = server.active_jobs(p.ctx.run_id)
    assert len(jobs) == 2 and {j["name"] for j in jobs} == {"exp1"}
    spec = {j["site"]: j for j in jobs}
    assert spec["rennes"]["walltime"] == 3600 and spec["rennes"]["types"] == []
    assert server.count("POST", r"/jobs$") == 2
    # a second init (same journal, new process) re-finds the jobs: no new POST
    st = State.load(env)
    res2 = provider(env, cfg({"job_name": "exp1", "walltime": "1:00"}), state=st).init()
    assert [x.address for x in res2.hosts] == [x.address for x in res.hosts]
    assert server.count("POST", r"/jobs$") == 2
    # secrets never reach the state
    assert PASSWORD not in (env / "state.json").read_text()
    p.destroy()
    assert server.active_jobs(p.ctx.run_id) == []
    p.destroy()   # idempotent
    assert not [k for k in State.load(env).data["journal"] if k.startswith("job:")]


def test_reconnect_by_name_after_crash_between_post_and_record(server, creds, tmp_path):
    env = tmp_path / "env"
    p = provider(env, cfg())
    name = p.job_name
    # the journal says "submitting" on rennes, the job exists on the server (POST went through)
    p.ctx.journal.record("job:rennes", {"site": "rennes", "name": name, "submitting": True})
    status, job = server.submit("rennes", "alice", {"name": name, "command": mark(p), "resources": "{cluster='paradoxe'}/nodes=3,walltime=1:00"})
    assert status == 201
    res = p.init()
    assert server.count("POST", r"/rennes/jobs$") == 0      # reused, not booked twice
    assert p.ctx.journal.get("job:rennes")["uid"] == job["uid"]
    assert len(res.hosts) == 4
    p.destroy()
    assert server.active_jobs(p.ctx.run_id) == []


def test_destroy_finds_job_by_name_when_uid_was_never_recorded(server, creds, tmp_path):
    p = provider(tmp_path / "env", cfg())
    p.ctx.journal.record("job:nancy", {"site": "nancy", "name": p.job_name, "submitting": True})
    server.submit("nancy", "alice", {"name": p.job_name, "command": mark(p), "resources": "nodes=1,walltime=1:00"})
    assert len(server.active_jobs(p.ctx.run_id)) == 1
    p.destroy()
    assert server.active_jobs(p.ctx.run_id) == []


def test_two_jobs_with_the_same_name_is_an_error_listing_both(server, creds, tmp_path):
    p = provider(tmp_path / "env", cfg())
    p.ctx.journal.record("job:rennes", {"site": "rennes", "name": p.job_name, "submitting": True})
    a = server.inject_job("rennes", p.job_name, command=mark(p))
    b = server.inject_job("rennes", p.job_name, command=mark(p))
    with pytest.raises(ProviderError) as e:
        p.init()
    assert str(a["uid"]) in str(e.value) and str(b["uid"]) in str(e.value)
    p.destroy()   # deletes both
    assert server.active_jobs(p.ctx.run_id) == []


def test_unknown_cluster_is_a_config_error(server, creds, tmp_path):
    p = provider(tmp_path / "env", cfg(machines=[MachineSpec(["x"], 1, label="nosuch", keypath="resources.nosuch.x")]))
    with pytest.raises(ConfigError, match="nosuch"):
        p.init()
    assert server.count("POST") == 0


# --- faults --------------------------------------------------------------------------------

def test_up_survives_20_percent_injected_5xx_and_timeouts(server, creds, tmp_path):
    server.add_fault("*", r"^/sites", "5xx", probability=0.15, status=503)
    server.add_fault("*", r"^/sites", "5xx", probability=0.05, status=502)
    server.add_fault("GET", r"^/sites/[^/]+/jobs/\d+$", "slow", probability=0.05, delay=2.5)
    p = provider(tmp_path / "env", cfg({"api_timeout": 1, "api_attempts": 10}))
    res = p.init()
    assert len(res.hosts) == 4
    assert sum(f.hits for f in server.faults) > 0
    assert any(st in (502, 503) for _, _, st in server.requests)
    assert len(server.active_jobs(p.ctx.run_id)) == 2        # exactly one job per site, no duplicate
    p.destroy()
    assert server.active_jobs(p.ctx.run_id) == []


def _answered(server, method: str, pattern: str, count: int, timeout: float = 10) -> None:
    """Wait until the fake API has answered ``count`` requests matching (a slow one too)."""
    deadline = time.monotonic() + timeout
    while server.count(method, pattern) < count:
        assert time.monotonic() < deadline, server.requests
        time.sleep(0.05)


def test_failed_post_that_created_the_job_is_not_posted_twice(server, creds, tmp_path):
    # the POST's answer is lost (slow → client timeout at 0.5 s) but the server creates the
    # job at 0.8 s: enos looks for it by name (up to api_timeout) instead of posting again.
    # Counted once the slow POST was answered (until then a second job could not be seen:
    # this test passed while enos booked the job twice, when init ended before 1.5 s)
    server.add_fault("POST", r"^/sites/rennes/jobs$", "slow", delay=0.8, times=1)
    p = provider(tmp_path / "env", cfg({"api_timeout": 0.5}))
    p.init()
    _answered(server, "POST", r"^/sites/rennes/jobs$", 1)
    time.sleep(0.2)
    assert server.count("POST", r"^/sites/rennes/jobs$") == 1, server.requests
    assert len([j for j in server.active_jobs(p.ctx.run_id) if j["site"] == "rennes"]) == 1
    p.destroy()
    assert server.active_jobs(p.ctx.run_id) == []


def test_a_job_created_after_enos_posted_again_is_deleted_by_destroy(server, creds, tmp_path):
    # the lost POST's job comes after the wait (2 s, api_timeout 0.5): enos posted again, so
    # the run has two jobs on rennes; destroy deletes both (it deleted the recorded one only)
    server.add_fault("POST", r"^/sites/rennes/jobs$", "slow", delay=2.0, times=1)
    p = provider(tmp_path / "env", cfg({"api_timeout": 0.5}))
    p.init()
    _answered(server, "POST", r"^/sites/rennes/jobs$", 2)
    assert len([j for j in server.active_jobs(p.ctx.run_id) if j["site"] == "rennes"]) == 2
    p.destroy()
    assert server.active_jobs(p.ctx.run_id) == []


def test_could_run_at_becomes_reservation_unavailable_and_leaves_no_job(server, creds, tmp_path):
    server.add_fault("POST", r"^/sites/nancy/jobs$", "could_run")
    p = provider(tmp_path / "env", cfg())
    with pytest.raises(ReservationUnavailable) as e:
        p.init()
    assert e.value.next_slot and oar.parse_reservation(e.value.next_slot)
    assert server.active_jobs(p.ctx.run_id) == []               # rennes' job was deleted
    assert not [k for k in p.ctx.journal.data if k.startswith("job:")]


def test_busy_nodes_give_the_servers_could_run_date(server, creds, tmp_path):
    # someone else holds every gros node served for 3 hours: an advance reservation in 10
    # minutes is refused by OAR with the date it could run at (Europe/Paris time)
    busy = server.seed_job("nancy", cluster="gros", walltime=3 * 3600)
    end = busy["scheduled_at"] + 3 * 3600
    at = paris(time.time() + 600)
    p = provider(tmp_path / "env", cfg({"reservation": at}))
    with pytest.raises(ReservationUnavailable, match="could run at") as e:
        p.init()
    assert e.value.next_slot == paris(end)
    assert server.active_jobs(p.ctx.run_id) == []


def test_batch_job_on_busy_nodes_waits_for_them(server, creds, tmp_path):
    # without a reservation date OAR queues the job: it waits with a predicted start
    busy = server.seed_job("nancy", cluster="gros", walltime=2 * 3600)
    p = provider(tmp_path / "env", cfg({"wait_timeout": 0.5}))
    with pytest.raises(Timeout, match="not running"):
        p.init()
    waiting = {j["site"]: j for j in server.active_jobs(p.ctx.run_id)}
    assert waiting["nancy"]["state"] == "waiting"
    assert waiting["nancy"]["scheduled_at"] == busy["scheduled_at"] + 2 * 3600
    p.destroy()
    assert server.active_jobs(p.ctx.run_id) == []


def test_permanent_5xx_gives_unavailable_and_no_job(server, creds, tmp_path):
    server.add_fault("POST", r"^/sites/nancy/jobs$", "5xx", status=500)
    p = provider(tmp_path / "env", cfg({"api_attempts": 3}))
    with pytest.raises(Unavailable):
        p.init()
    assert server.active_jobs(p.ctx.run_id) == []


def test_429_is_retried(server, creds, tmp_path):
    server.add_fault("GET", r"^/sites$", "429", times=2)
    p = provider(tmp_path / "env", cfg())
    assert len(p.init().hosts) == 4
    assert server.count("GET", r"^/sites$") == 3
    p.destroy()


def test_job_dying_while_waiting_deletes_the_other_sites(server, creds, tmp_path):
    p = provider(tmp_path / "env", cfg())
    server.die_while_waiting.append(p.ctx.run_id)
    server.waiting_s = 0.6
    with pytest.raises(ProviderError, match="ended \\(error\\) while waiting"):
        p.init()
    assert server.active_jobs(p.ctx.run_id) == []


def test_journal_is_written_before_the_post(server, creds, tmp_path, monkeypatch):
    seen = {}
    p = provider(tmp_path / "env", cfg(machines=[MachineSpec(["a"], 1, label="gros")]))
    real = p.api.submit

    def spy(site, spec):
        seen[site] = dict(State.load(tmp_path / "env").data["journal"].get(f"job:{site}") or {})
        return real(site, spec)
    monkeypatch.setattr(p.api, "submit", spy)
    p.init()
    assert seen["nancy"] == {"site": "nancy", "name": p.job_name, "submitting": True}
    assert p.ctx.journal.get("job:nancy")["uid"]
    p.destroy()


# --- deployments, networks ------------------------------------------------------------------

def test_deploy_retries_failed_nodes_and_skips_deployed_ones(server, creds, tmp_path):
    env = tmp_path / "env"
    c = cfg({"env_name": "debian12-min", "deploy_retries": 2})
    p = provider(env, c)
    server.deploy_failures["paradoxe-2.rennes.grid5000.fr"] = 1
    res = p.init()
    assert all(h.user == "root" and h.keyfile == str(p.ctx.ssh_key) for h in res.hosts)
    deps = list(server.deployments.values())
    assert sum(1 for d in deps if d["site_uid"] == "rennes") == 2          # one retry for the failed node
    assert [d["nodes"] for d in deps if d["site_uid"] == "rennes"][1] == ["paradoxe-2.rennes.grid5000.fr"]
    assert all("deploy" in j["types"] for j in server.active_jobs(p.ctx.run_id))
    assert all(p.ctx.ssh_pubkey in (d["_key"] or "") for d in deps)    # the env key goes to every node
    # the record 'enos archive' keeps: each deployment as the API answered, kadeploy's uid first
    rec = {j["site"]: j["deployment"] for j in p.record()["jobs"]}
    mine = [d for d in deps if d["site_uid"] == "rennes"]
    assert [(d["uid"], d["environment"], d["status"], d["ko"]) for d in rec["rennes"]["deployments"]] == \
        [(mine[0]["uid"], "debian12-min", "terminated", ["paradoxe-2.rennes.grid5000.fr"]),
         (mine[1]["uid"], "debian12-min", "terminated", [])]
    assert rec["rennes"]["deployments"][1]["ok"] == ["paradoxe-2.rennes.grid5000.fr"]
    assert rec["rennes"]["environment"] == "debian12-min" and sorted(rec) == sorted({d["site_uid"] for d in deps})
    assert rec["rennes"]["version"].startswith("not pinned: kadeploy's latest")
    assert all("version" not in d for d in deps)                # nothing pinned, nothing sent
    n = len(server.deployments)
    provider(env, c, state=State.load(env)).init()       # already deployed → no new deployment
    assert len(server.deployments) == n
    provider(env, c, state=State.load(env)).init(force_deploy=True)
    assert len(server.deployments) == n + 2
    p.destroy()


def test_env_version_is_deployed_recorded_and_a_new_one_redeploys(server, creds, tmp_path):
    """``env_version`` goes to kadeploy with the environment, the archive's record names it,
    and the nodes are deployed again when the version asked changes (not when it stays)."""
    env = tmp_path / "env"
    c = cfg({"env_name": "debian12-min", "env_version": 2023110817})
    p = provider(env, c)
    p.init()
    deps = list(server.deployments.values())
    assert deps and {d.get("version") for d in deps} == {2023110817}
    rec = {j["site"]: j["deployment"] for j in p.record()["jobs"]}
    assert {r["version"] for r in rec.values()} == {2023110817}
    assert {d["version"] for r in rec.values() for d in r["deployments"]} == {2023110817}   # as the API answered
    n = len(server.deployments)
    provider(env, c, state=State.load(env)).init()               # same version: nothing deployed
    assert len(server.deployments) == n
    provider(env, cfg({"env_name": "debian12-min", "env_version": 2024010112}), state=State.load(env)).init()
    assert len(server.deployments) > n
    assert {d.get("version") for d in list(server.deployments.values())[n:]} == {2024010112}
    p.destroy()


def test_env_version_without_env_name_is_refused(tmp_path):
    """An ``env_version`` with nothing to deploy is refused, naming the key (never ignored)."""
    (tmp_path / "r.yaml").write_text("provider:\n  type: g5k\n  env_version: 3\nresources:\n"
                                     "  paradoxe:\n    control: 1\n")
    out = subprocess.run([sys.executable, "-m", "enos", "validate", "-f", "r.yaml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 2, out
    assert "env_version" in out.stderr and "env_name" in out.stderr and "Traceback" not in out.stderr


def test_deploy_failing_beyond_retries_is_an_error(server, creds, tmp_path):
    p = provider(tmp_path / "env", cfg({"env_name": "debian12-min", "deploy_retries": 1},
                                        machines=[MachineSpec(["a"], 1, label="gros")]))
    server.deploy_failures["gros-1.nancy.grid5000.fr"] = 5
    with pytest.raises(ProviderError, match="gros-1.nancy.grid5000.fr after 2 attempt"):
        p.init()
    assert len(server.active_jobs(p.ctx.run_id)) == 1      # kept for a retry; destroy frees it
    p.destroy()
    assert server.active_jobs(p.ctx.run_id) == []


def test_kavlan_and_subnet_pools(server, creds, tmp_path):
    machines = [MachineSpec(["control"], 1, label="paradoxe", keypath="provider.resources.machines.0",
                            options={"primary_network": "v"}),
                MachineSpec(["compute"], 2, label=None, keypath="provider.resources.machines.1",
                            options={"servers": ["gros-2.nancy.grid5000.fr", "gros-3.nancy.grid5000.fr"],
                                     "primary_network": "prod"})]
    nets = [{"id": "v", "type": "kavlan", "roles": ["exp"], "site": "rennes"},
            {"id": "ips", "type": "slash_22", "roles": ["vips"], "site": "rennes"},
            {"id": "prod", "type": "prod", "roles": ["admin"], "site": "nancy"}]
    p = provider(tmp_path / "env", cfg({"env_name": "debian12-min"}, machines=machines, networks=nets))
    res = p.init()
    by = {h.alias: h for h in res.hosts}
    assert by["paradoxe-1"].address.startswith("paradoxe-1-kavlan-") and by["paradoxe-1"].extra["g5k_vlan"]
    assert by["gros-2"].address == "gros-2.nancy.grid5000.fr"
    import ipaddress
    pools = {n.name: n for n in res.networks}
    assert set(pools) == {"v", "ips"}
    for pool in pools.values():
        net = ipaddress.ip_network(pool.cidr)
        assert pool.free and all(ipaddress.ip_address(a) in net for a in pool.free)
        assert pool.gateway not in pool.free
        # the reference data has no servers/dns.json (its README): the API answers 404 and
        # the pools say no DNS server rather than inventing one
        assert pool.dns is None
    assert server.count("GET", r"^/sites/rennes/servers/dns$") >= 1
    assert str(ipaddress.ip_network(pools["v"].cidr)) == server.sites["rennes"].data["kavlans"][by["paradoxe-1"].extra["g5k_vlan"]]["network"]
    assert ipaddress.ip_network(pools["ips"].cidr).prefixlen == 22 and pools["ips"].roles == ["vips"]
    vdep = [d for d in server.deployments.values() if d["site_uid"] == "rennes"][0]
    assert vdep["vlan"] == by["paradoxe-1"].extra["g5k_vlan"]
    p.destroy()


# --- extend, info, sweep, check --------------------------------------------------------------

def test_extend_and_info(server, creds, tmp_path):
    p = provider(tmp_path / "env", cfg({"walltime": "1:00"}))
    p.init()
    before = {j["site"]: j["walltime"] for j in server.active_jobs(p.ctx.run_id)}
    out = p.extend("+0:30")
    assert {s: v["walltime"] for s, v in out.items()} == {s: "1:30:00" for s in before}
    assert server.count("POST", r"/jobs/\d+/walltime$") == 2
    info = p.info()
    assert {j["site"] for j in info["jobs"]} == {"rennes", "nancy"}
    for j in info["jobs"]:
        assert j["state"] == "running" and j["walltime"] == "1:30:00"
        assert oar.parse_walltime(j["remaining"]) > 3600
    with pytest.raises(UsageError):
        p.extend("soon")
    p.destroy()


@pytest.mark.parametrize("kind", ["drop_after", "drop", "5xx"])
def test_extend_whose_answer_is_lost_is_not_granted_twice(server, creds, tmp_path, kind):
    """The walltime POST fails once: after it was applied (answer lost), before it was
    applied (connection dropped), or with a 503. Each job gets exactly the +0:30 asked for:
    enos reads the job's walltime record before posting again."""
    p = provider(tmp_path / "env", cfg({"walltime": "1:00"}))
    p.init()
    server.add_fault("POST", r"/jobs/\d+/walltime$", kind, times=1)
    out = p.extend("+0:30")
    assert {v["walltime"] for v in out.values()} == {"1:30:00"}
    assert {j["walltime"] for j in server.active_jobs(p.ctx.run_id)} == {5400}
    assert server.faults[-1].hits == 1
    p.destroy()


def test_submit_whose_answer_is_lost_books_one_job(server, creds, tmp_path):
    """The job POST is applied but its answer is lost (connection closed): one job per
    site, found by name instead of posted again."""
    server.add_fault("POST", r"^/sites/rennes/jobs$", "drop_after", times=1)
    p = provider(tmp_path / "env", cfg())
    p.init()
    assert len([j for j in server.active_jobs(p.ctx.run_id) if j["site"] == "rennes"]) == 1
    assert server.count("POST", r"^/sites/rennes/jobs$") == 1
    p.destroy()


def test_sweep_finds_jobs_by_run_id_without_state(server, creds, tmp_path):
    p = provider(tmp_path / "env", cfg())
    p.init()
    other = server.inject_job("rennes", "enos-ffffffff-enos")
    fresh = provider(tmp_path / "env2", cfg(), state=None)
    fresh.ctx.run_id = p.ctx.run_id       # same run id, empty journal
    removed = fresh.sweep()
    assert len(removed) == 2 and server.active_jobs(p.ctx.run_id) == []
    assert [j["uid"] for j in server.active_jobs("ffffffff")] == [other["uid"]]


def test_check_reports_credentials_key_and_gateway(server, creds, tmp_path, monkeypatch):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    pub = tmp_path / "id.pub"
    pub.write_text("ssh-ed25519 AAAA test\n")
    (tmp_path / "id").write_text("private\n")
    try:
        p = provider(tmp_path / "env", cfg({"gateway": f"bob@127.0.0.1:{port}", "key": str(pub)}))
        checks = {c.what: c for c in p.check()}
        assert all(c.ok for c in checks.values()), checks
        assert len(checks) == 4
    finally:
        lsock.close()
    p = provider(tmp_path / "env3", cfg({"gateway": f"127.0.0.1:{port}", "key": str(tmp_path / "none.pub")}))
    checks = {c.what: c for c in p.check()}
    assert not checks["SSH key"].ok and not checks["SSH gateway reachable"].ok
    creds.write_text(f"username: alice\npassword: nope\nuri: {server.url}\n")
    p = provider(tmp_path / "env4", cfg({"gateway": False}))
    checks = {c.what: c for c in p.check()}
    assert checks["Grid'5000 credentials"].ok and not checks["Grid'5000 API accepts the credentials"].ok
    assert "nope" not in json.dumps([c.__dict__ for c in checks.values()])


def test_destroy_reports_leftovers_when_the_api_is_down(server, creds, tmp_path):
    p = provider(tmp_path / "env", cfg({"api_attempts": 2}))
    p.init()
    server.add_fault("DELETE", r".", "5xx", status=503)
    with pytest.raises(DestroyIncomplete) as e:
        p.destroy()
    assert len(e.value.leftovers) == 2
    server.faults.clear()
    p.destroy()
    assert server.active_jobs(p.ctx.run_id) == []


def test_importing_the_provider_does_not_import_grid5000():
    code = "import sys, enos.provider.g5k; print('grid5000' in sys.modules, 'requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
