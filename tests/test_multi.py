"""Several providers in one environment (``providers:``), with real parts: ``local``
namespace hosts, libvirt's ``test:///default`` driver, and Grid'5000 through the fake API
over the real reference data. Booked at once, merged into one inventory (hosts also reachable
by their provider's name), journalled apart, all freed by ``enos destroy`` even when one
part failed or enos was killed -9 / interrupted while booking; the common slot of the parts
that book ahead; bad input refused before anything exists."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enos.errors import ConfigError, DestroyIncomplete
from enos.multi import Providers, part_run_id, provider_class
from enos.provider.provider import ProviderContext
from enos.ssh.keys import ensure_keypair
from enos.state import State
from enos.task import reservation_from_data

sys.path.insert(0, str(Path(__file__).parent))
from enoscli import enos  # noqa: E402
from g5khelpers import write_creds  # noqa: E402
from g5kserver import FakeG5k  # noqa: E402
from localhosts import RUN_IDS, leftovers, ssh  # noqa: E402
from prereq import need_module  # noqa: E402

PASSWORD = "multi-pw"


def composite(data: dict, env_dir: Path) -> Providers:
    """The Providers of ``data`` on a real State in ``env_dir``."""
    config = reservation_from_data(data, "reservation.yaml")
    env_dir.mkdir(parents=True, exist_ok=True)
    st = State.create(env_dir, "reservation.yaml", data, config.provider_type, config_state=config.to_state())
    key = ensure_keypair(env_dir / "ssh", f"enos-{st.run_id}")
    RUN_IDS.extend(part_run_id(st.run_id, n) for n, _ in config.parts)
    return provider_class(config)(ProviderContext(config=config, journal=st.journal, env_dir=env_dir,
                                                  run_id=st.run_id, ssh_key=key))


# --- reservation ------------------------------------------------------------------------------

@pytest.mark.parametrize("body,where,message", [
    ("provider: local\nproviders:\n  - {type: local, resources: {m: {a: 1}}}\n", "provider",
     "'provider' cannot be used with 'providers'"),
    ("providers:\n  - {type: local, resources: {m: {a: 1}}}\n  - {type: local, resources: {m: {b: 1}}}\n",
     "providers.1.type", "provider name 'local' is already used by providers.0"),
    ("providers:\n  - {type: local, resources: {m: {a: 1}}}\n  - {type: nosuch, resources: {m: {b: 1}}}\n",
     "providers.1.type", "unknown provider type 'nosuch'"),
    ("providers:\n  - {type: local, resources: {m: {a: 1}}}\n  - {type: g5k, walltime: 2h, resources: {gros: {b: 1}}}\n",
     "providers.1.walltime", "expected a walltime"),
    ("providers:\n  - {type: local}\n", "providers.0", "missing key 'resources'"),
    ("providers: []\n", "providers", "expected a non-empty list"),
])
def test_bad_providers_block_exit_2_nothing_created(tmp_path, body, where, message):
    (tmp_path / "r.yaml").write_text(body)
    p = enos(tmp_path, "up", "-f", "r.yaml", "--env", "env", check=False)
    assert p.returncode == 2 and f"r.yaml:" in p.stderr and f"{where}: " in p.stderr and message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "env").exists() and not (tmp_path / "current").exists()


def test_validate_names_the_parts(tmp_path):
    (tmp_path / "r.yaml").write_text("providers:\n  - {type: local, resources: {m: {web: 2}}}\n"
                                     "  - {type: g5k, name: grid, resources: {gros: {db: 1}}}\n")
    out = enos(tmp_path, "validate", "-f", "r.yaml").stdout
    assert "providers local, grid, 3 host(s) in 2 role(s) (db, web)" in out
    with pytest.raises(ConfigError, match="providers.1.resources.gros.db: expected an integer"):
        reservation_from_data({"providers": [{"type": "local", "resources": {"m": {"a": 1}}},
                                             {"type": "g5k", "resources": {"gros": {"db": "x"}}}]}, "r.yaml")


# --- local + libvirt (test driver) ----------------------------------------------------------------

@pytest.fixture
def hypervisor(tmp_path):
    libvirt = need_module("libvirt")
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open("test:///default")
    img = tmp_path / "img" / "base.qcow2"
    img.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
    (img.parent / "base.vmlinuz").write_bytes(b"kernel")
    (img.parent / "base.initrd").write_bytes(b"initrd")
    yield conn, img
    conn.close()


def local_libvirt(img, libvirt_resources=None):
    return {"providers": [
        {"type": "local", "resources": {"machines": {"web": 2}}},
        {"type": "libvirt", "uri": "test:///default", "image": str(img), "wait_ssh": False,
         "resources": libvirt_resources or {"tiny": {"db": 1}}}]}


def libvirt_domains(conn, run_id):
    return sorted(d.name() for d in conn.listAllDomains(0) if d.name().startswith(f"enos-{run_id}-"))


@pytest.mark.root
def test_local_and_libvirt_booked_together_merged_and_destroyed(hypervisor, tmp_path, sshd_available):
    conn, img = hypervisor
    p = composite(local_libvirt(img), tmp_path / "env")
    res = p.init()
    by_role = {r: sorted(h.alias for h in res.hosts if r in h.roles) for r in ("web", "db", "local", "libvirt")}
    assert len(by_role["web"]) == 2 and by_role["web"] == by_role["local"] and len(by_role["libvirt"]) == 1
    assert all(h.extra["enos_provider"] in ("local", "libvirt") for h in res.hosts)
    journal = p.ctx.journal.data
    assert journal["parts"] == ["libvirt", "local"] and {"part:local", "part:libvirt"} <= set(journal)
    lrun, vrun = part_run_id(p.ctx.run_id, "local"), part_run_id(p.ctx.run_id, "libvirt")
    assert lrun != vrun and leftovers(lrun) and libvirt_domains(conn, vrun)
    web = next(h for h in res.hosts if "web" in h.roles)
    assert ssh(p.ctx.ssh_key, web.address, "true").returncode == 0
    # destroyed cold, from the saved state only
    again = provider_class(p.ctx.config)(ProviderContext(
        config=p.ctx.config, journal=State.load(tmp_path / "env").journal, env_dir=tmp_path / "env",
        run_id=p.ctx.run_id, ssh_key=p.ctx.ssh_key))
    again.destroy()
    assert leftovers(lrun) == [] and libvirt_domains(conn, vrun) == []
    again.destroy()      # idempotent


@pytest.mark.root
def test_one_part_failing_leaves_the_other_destroyable(hypervisor, tmp_path, sshd_available):
    conn, img = hypervisor
    p = composite(local_libvirt(img, {"tiny": {"db": 1}}), tmp_path / "env")
    p.parts["libvirt"].ctx.config.options["pool"] = "no-such-pool"       # the libvirt part fails
    with pytest.raises(Exception, match="libvirt: .*no-such-pool"):
        p.init()
    lrun = part_run_id(p.ctx.run_id, "local")
    assert leftovers(lrun)                                   # local booked meanwhile, journalled
    p.destroy()
    assert leftovers(lrun) == []


# --- local + g5k (fake API), through the CLI: kill -9 and Ctrl-C while booking ---------------------

@pytest.fixture
def g5k(tmp_path):
    srv = FakeG5k(sites={"nancy": {"gros": 4}}, users={"alice": PASSWORD}, waiting_s=600, launching_s=0.02)
    srv.start()
    (tmp_path / "r.yaml").write_text(
        "providers:\n  - {type: local, resources: {machines: {web: 2}}}\n"
        "  - type: g5k\n    gateway: false\n    poll_interval: 0.2\n    poll_max_interval: 0.5\n"
        "    resources: {gros: {db: 2}}\n")
    yield srv, {"G5K_CREDENTIALS_FILE": str(write_creds(tmp_path / "c.yaml", srv.url, PASSWORD))}
    srv.stop()


def _run_id(env: Path) -> str:
    return json.loads((env / "state.json").read_text())["run_id"]


@pytest.mark.root
@pytest.mark.parametrize("how", ["kill -9", "SIGINT"])
def test_interrupted_while_booking_then_destroy_frees_everything(tmp_path, g5k, how, sshd_available):
    srv, env = g5k
    envdir = tmp_path / "env"
    e = {**os.environ, **env}
    if how == "kill -9":
        e["ENOS_FAILPOINTS"] = "g5k.job_submitted=kill"      # the g5k part dies right after its POST
    p = subprocess.Popen([sys.executable, "-m", "enos", "up", "-f", "r.yaml", "--env", str(envdir)],
                         cwd=tmp_path, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        if how == "SIGINT":
            deadline = time.time() + 60
            while not srv.active_jobs() and time.time() < deadline:     # the job waits (600 s)
                time.sleep(0.1)
            time.sleep(0.5)
            t = time.monotonic()
            os.killpg(p.pid, signal.SIGINT)
            p.wait(timeout=10)
            assert p.returncode == 130 and time.monotonic() - t < 2.5, p.stderr
        else:
            p.wait(timeout=120)
            assert p.returncode == -signal.SIGKILL
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    run = _run_id(envdir)
    RUN_IDS.append(part_run_id(run, "local"))
    assert len(srv.active_jobs(part_run_id(run, "g5k"))) == 1
    journal = json.loads((envdir / "state.json").read_text())["journal"]
    assert "job:nancy" in journal["part:g5k"]
    enos(tmp_path, "destroy", "--env", str(envdir), env=env)
    assert srv.active_jobs() == [] and leftovers(part_run_id(run, "local")) == []


# --- the common slot ---------------------------------------------------------------------------

def test_common_slot_of_two_parts_that_book_ahead(tmp_path, monkeypatch):
    srv = FakeG5k(sites={"nancy": {"gros": 4}, "rennes": {"paradoxe": 4}}, users={"alice": PASSWORD})
    srv.start()
    try:
        monkeypatch.setenv("G5K_CREDENTIALS_FILE", str(write_creds(tmp_path / "c.yaml", srv.url, PASSWORD)))
        now = time.time()
        a = srv.seed_job("nancy", cluster="gros", start=now, end=now + 7200)          # nancy: busy 0-2 h
        b = srv.seed_job("rennes", cluster="paradoxe", start=now + 3600, end=now + 3 * 3600)   # rennes: 1-3 h
        data = {"providers": [
            {"type": "g5k", "name": "n", "walltime": "1:00", "resources": {"gros": {"x": 4}}},
            {"type": "g5k", "name": "r", "walltime": "1:00", "resources": {"paradoxe": {"y": 4}}},
            {"type": "local", "resources": {"machines": {"z": 1}}}]}
        p = composite(data, tmp_path / "env")
        slot = p.earliest_slot(None, now)
        # n alone: 2 h; r alone: now; r from 2 h: 3 h; n from 3 h: 3 h -> agreed at 3 h
        assert slot["start"] == b["scheduled_at"] + b["walltime"]
        assert slot["providers"]["n"]["start"] == slot["providers"]["r"]["start"] == slot["start"]
        assert a["scheduled_at"] + a["walltime"] < slot["start"]
        assert "local" not in slot["providers"]
    finally:
        srv.stop()


def test_up_at_the_common_slot_books_every_part_for_it(tmp_path, monkeypatch):
    srv = FakeG5k(sites={"nancy": {"gros": 4}, "rennes": {"paradoxe": 4}}, users={"alice": PASSWORD})
    srv.start()
    try:
        monkeypatch.setenv("G5K_CREDENTIALS_FILE", str(write_creds(tmp_path / "c.yaml", srv.url, PASSWORD)))
        now = time.time()
        srv.seed_job("nancy", cluster="gros", start=now, end=now + 7200)
        common = {"walltime": "1:00", "wait_timeout": 0.3, "poll_interval": 0.05, "gateway": False}
        data = {"providers": [{"type": "g5k", "name": "n", **common, "resources": {"gros": {"x": 4}}},
                              {"type": "g5k", "name": "r", **common, "resources": {"paradoxe": {"y": 4}}}]}
        p = composite(data, tmp_path / "env")
        p.ctx.start_at = p.earliest_slot(None, now)["start"]
        with pytest.raises(Exception, match="not running after"):
            p.init()
        mine = srv.active_jobs("enos-run-")
        assert {j["scheduled_at"] for j in mine} == {int(p.ctx.start_at)} and len(mine) == 2
        p.destroy()
        assert srv.active_jobs("enos-run-") == []
    finally:
        srv.stop()


@pytest.mark.root
def test_sweep_by_the_env_run_id_finds_every_part(tmp_path, g5k, sshd_available):
    """The env dir is gone: 'enos destroy --sweep --run-id R -f FILE' derives every part's
    run id from R and sweeps each part that can (local namespaces, Grid'5000 jobs)."""
    import shutil
    srv, env = g5k
    envdir = tmp_path / "env"
    e = {**os.environ, **env, "ENOS_FAILPOINTS": "g5k.job_submitted=kill"}
    p = subprocess.run([sys.executable, "-m", "enos", "up", "-f", "r.yaml", "--env", str(envdir)], cwd=tmp_path,
                       env=e, capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    run = _run_id(envdir)
    RUN_IDS.append(part_run_id(run, "local"))
    deadline = time.time() + 30
    while not leftovers(part_run_id(run, "local")) and time.time() < deadline:
        time.sleep(0.1)
    shutil.rmtree(envdir)
    out = enos(tmp_path, "destroy", "--sweep", "--run-id", run, "-f", "r.yaml", env=env).stdout
    assert "g5k: job" in out
    assert srv.active_jobs() == [] and leftovers(part_run_id(run, "local")) == []
