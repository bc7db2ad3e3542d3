"""The earliest slot and advance reservations on Grid'5000, end to end against the fake API
over the real reference data with other users' jobs seeded on several sites: ``enos slot``
finds the start OAR accepts on every site, ``enos up --at earliest|DATE`` books every site
for it, and OAR's "could run at" answer is followed once, never looped."""
import json
import sys
import time
from pathlib import Path

import pytest

from enos.errors import ReservationUnavailable, Timeout
from enos.g5k import oar
from enos.reservation.config import MachineSpec

sys.path.insert(0, str(Path(__file__).parent))
from enoscli import enos  # noqa: E402
from g5khelpers import cfg, provider, write_creds  # noqa: E402
from g5kseed import seed_gantt  # noqa: E402
from g5kserver import FakeG5k  # noqa: E402

PASSWORD = "advance-pw"
SITES = {"nancy": {"gros": None}, "rennes": {"paradoxe": None, "parasilo": None}, "lyon": {"nova": None}}
RESERVATION = """provider:
  type: g5k
  walltime: "3:00"
  poll_interval: 0.05
  poll_max_interval: 0.2
  wait_timeout: 1
  gateway: false
resources:
  machines:
    - {cluster: gros, nodes: 40, roles: [a]}
    - {cluster: paradoxe, nodes: 20, roles: [b]}
    - {cluster: parasilo, nodes: 5, roles: [b]}
    - {cluster: nova, nodes: 6, roles: [c]}
  networks:
    - {id: v, type: kavlan, site: nancy, roles: [a]}
"""


@pytest.fixture
def busy(tmp_path):
    srv = FakeG5k(sites=SITES, users={"alice": PASSWORD}, waiting_s=0.05, launching_s=0.02)
    srv.start()
    seeded = seed_gantt(srv, {s: list(c) for s, c in SITES.items()}, jobs_per_site=60, seed=3)
    env = {"G5K_CREDENTIALS_FILE": str(write_creds(tmp_path / "creds.yaml", srv.url, PASSWORD))}
    (tmp_path / "reservation.yaml").write_text(RESERVATION)
    yield srv, env, seeded
    srv.stop()


def reserve_all(srv, at: float) -> dict:
    """Advance reservations of what RESERVATION asks, per site, at ``at``: {site: (status, body)}."""
    per_site = {"nancy": "{cluster='gros'}/nodes=40+{type='kavlan'}/vlan=1",
                "rennes": "{cluster='paradoxe'}/nodes=20+{cluster='parasilo'}/nodes=5",
                "lyon": "{cluster='nova'}/nodes=6"}
    out = {s: srv.submit(s, "carol", {"reservation": oar.paris_date(at), "resources": r + ",walltime=3:00"})
           for s, r in per_site.items()}
    for code, body in out.values():
        if code == 201:
            srv.jobs[body["uid"]].stop(time.time(), "error", "test cleanup")
    return out


def test_enos_slot_finds_what_oar_accepts_on_every_site(busy, tmp_path):
    srv, env, seeded = busy
    assert seeded >= 120
    t = time.perf_counter()
    p = enos(tmp_path, "slot", "-o", "json", env=env)
    took = time.perf_counter() - t
    found = json.loads(p.stdout)
    assert found["found"] and found["start"] > time.time() + 60      # the seeded gantt delays it
    assert found["sites"]["nancy"]["gros"] >= 40 and found["end"] - found["start"] == 3 * 3600
    assert found["oar_date"] == oar.paris_date(found["start"]) + " Europe/Paris"
    print(f"\nenos slot over 3 sites ({seeded} seeded jobs): {took:.2f} s for the command, "
          f"{found['instants_tried']} instants tried, {srv.count('GET', '/status')} status requests")
    assert srv.count("GET", r"/status$") == 3 and srv.count("POST") == 0
    at = reserve_all(srv, found["start"])
    assert {s: c for s, (c, _) in at.items()} == {"nancy": 201, "rennes": 201, "lyon": 201}
    early = reserve_all(srv, found["start"] - 60)
    assert any(c == 400 and "could run at" in b for c, b in early.values())
    text = enos(tmp_path, "slot", env=env).stdout
    assert "earliest start" in text and "enos up --at earliest" in text
    # bounds: a window ending before the slot has none (exit 1); --from after it moves it
    none = enos(tmp_path, "slot", "-o", "json", "--until",
                time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(found["start"] + 3 * 3600 - 1)),
                env=env, check=False)
    assert none.returncode == 1 and json.loads(none.stdout) == {"found": False}
    later = json.loads(enos(tmp_path, "slot", "-o", "json", "--walltime", "1:00", "--from",
                            time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(found["start"] + 7200)),
                            env=env).stdout)
    assert later["start"] >= found["start"] + 7200


@pytest.mark.parametrize("args,message", [
    (["--from", "tomorrow"], "--from: expected a date like"),
    (["--walltime", "3h"], "--walltime: expected a walltime"),
    (["--from", "2030-01-02 10:00", "--until", "2030-01-02 09:00"], "--until: must be after --from"),
])
def test_enos_slot_bad_input(busy, tmp_path, args, message):
    srv, env, _ = busy
    p = enos(tmp_path, "slot", *args, env=env, check=False)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr
    assert srv.count("POST") == 0


def test_up_at_earliest_books_every_site_for_the_slot(busy, tmp_path):
    srv, env, _ = busy
    found = json.loads(enos(tmp_path, "slot", "-o", "json", env=env).stdout)
    p = enos(tmp_path, "up", "--at", "earliest", "--env", str(tmp_path / "env"), env=env, check=False)
    assert p.returncode == 1 and "not running after" in p.stderr, p.stderr       # wait_timeout: 1
    mine = srv.active_jobs("enos-run-")
    assert len(mine) == 3 and {j["scheduled_at"] for j in mine} == {int(found["start"])}
    assert all(j["state"] == "waiting" for j in mine)
    info = json.loads(enos(tmp_path, "info", "--env", str(tmp_path / "env"), "-o", "json", env=env).stdout)
    assert len(info["provider_info"]["jobs"]) == 3
    enos(tmp_path, "destroy", "--env", str(tmp_path / "env"), env=env)
    assert srv.active_jobs("enos-run-") == []


def test_up_at_a_date_and_bad_dates(busy, tmp_path):
    srv, env, _ = busy
    p = enos(tmp_path, "up", "--at", "someday", "--env", str(tmp_path / "env"), env=env, check=False)
    assert p.returncode == 2 and "--at: expected earliest or a date" in p.stderr
    assert not (tmp_path / "env").exists() and srv.count("POST") == 0


def test_could_run_at_is_followed_once(tmp_path, monkeypatch):
    srv = FakeG5k(sites={"nancy": {"gros": 4}, "rennes": {"paradoxe": 4}}, users={"alice": PASSWORD},
                  waiting_s=0.05, launching_s=0.02)
    srv.start()
    try:
        monkeypatch.setenv("G5K_CREDENTIALS_FILE", str(write_creds(tmp_path / "c.yaml", srv.url, PASSWORD)))
        now = time.time()
        busy = srv.seed_job("nancy", cluster="gros", start=now - 60, end=now + 7200)   # nancy busy 2 hours
        free_at = busy["scheduled_at"] + busy["walltime"]
        machines = [MachineSpec(["a"], 2, label="gros"), MachineSpec(["b"], 2, label="paradoxe")]
        p = provider(tmp_path / "env", cfg({"wait_timeout": 0.3}, machines=machines))
        p.ctx.start_at = now + 600
        with pytest.raises(Timeout):
            p.init()
        mine = {j["site"]: j for j in srv.active_jobs(p.ctx.run_id)}
        assert {s: j["scheduled_at"] for s, j in mine.items()} == {"nancy": free_at, "rennes": free_at}
        assert srv.count("POST", r"/rennes/jobs$") == 2 and srv.count("POST", r"/nancy/jobs$") == 2
        p.destroy()
        # refused again at the date OAR gave: raised, not looped, nothing left
        srv.add_fault("POST", r"^/sites/nancy/jobs$", "could_run", times=2)
        q = provider(tmp_path / "env2", cfg({"wait_timeout": 0.3}, machines=machines))
        q.ctx.start_at = now + 600
        with pytest.raises(ReservationUnavailable):
            q.init()
        assert srv.count("POST", r"/nancy/jobs$") == 4 and srv.active_jobs(q.ctx.run_id) == []
    finally:
        srv.stop()
