"""vagrant provider with real Vagrant + vagrant-libvirt + a real private libvirtd (QEMU/TCG).

The module fixture starts a private libvirtd in its own network + mount namespaces
(tests/libvirtd_fixture.py) and builds (or finds) the box of ``enos build vagrant``. Vagrant
must run in the network namespace of the libvirtd it talks to (it SSHes to the VMs on the
management network, which lives there), so every ``enos`` subprocess runs through
``ip netns exec`` in that namespace; vagrant-libvirt reaches the daemon by ``provider.uri``
(its socket). Everything started is killed by PID and the namespace deleted at the end.

Without root, vagrant, vagrant-libvirt or the daemons the tests skip with the reason —
with ``CI=true`` they fail instead (scripts/setup.sh --test installs everything).
Measured here (2 shared cores, TCG, load 10+): ``enos up`` of two machines 6–10 min,
``enos destroy`` ~9 s.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from libvirtd_fixture import FixtureUnavailable, ensure_packages, start_libvirtd  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.libvirtd]
def _missing(why: str):
    from prereq import missing
    missing(why)


@pytest.fixture(scope="module")
def lvd():
    if os.geteuid() != 0:
        _missing("needs root")
    for tool in ("vagrant",):
        if not shutil.which(tool):
            _missing(f"{tool} not installed (apt-get install vagrant vagrant-libvirt)")
    from enos.vagrant.command import libvirt_plugin
    if not libvirt_plugin():
        _missing("vagrant-libvirt not installed (apt-get install vagrant-libvirt)")
    try:
        ensure_packages()
    except FixtureUnavailable as e:
        _missing(f"cannot install libvirtd/QEMU: {e}")
    try:
        import libvirt  # noqa: F401
        import vagrant  # noqa: F401
    except ImportError as e:
        _missing(f"python library missing: {e}")
    from enos.vagrant.box import build_box
    build_box()
    d = start_libvirtd()
    try:
        yield d
    finally:
        problems = d.stop()
        assert not problems, problems


def _enos(d, cwd, *args, extra_env=None, timeout=1800):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
    env.update(d.env)
    env.update(extra_env or {})
    return subprocess.run(d.ns_exec(sys.executable, "-m", "enos", *args), cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _reservation(d, path: Path) -> Path:
    path.write_text(f"""provider:
  type: vagrant
  backend: libvirt
  uri: "{d.uri}"
  boot_timeout: 1500
resources:
  machines:
    - roles: [control]
      flavour: tiny
      number: 1
    - roles: [compute]
      flavour_desc: {{core: 1, mem: 512}}
      number: 1
  networks:
    - roles: [data]
      cidr: 192.168.142.0/24
    - roles: [admin]
      cidr: 192.168.143.0/24
""")
    return path


def leftovers(d, run_id: str):
    """Domains, volumes and networks ``enos-<run>-*`` on the fixture's daemon, vagrant
    processes of the run, and Vagrant machine-index entries of its directory."""
    from enos.vagrant import libvirt_side
    from enos.process import pids_of_run
    from enos.libvirt.connection import connect
    conn = connect(d.uri)
    try:
        out = libvirt_side.leftovers(conn, f"enos-{run_id}-")
    finally:
        conn.close()
    out += [f"vagrant process {pid}" for pid in pids_of_run(run_id)]
    from enos.vagrant.box import vagrant_home
    index = vagrant_home() / "data" / "machine-index" / "index"
    machines = {}
    for _ in range(50):             # vagrant rewrites the index in place: retry a torn read
        try:
            machines = json.loads(index.read_text()).get("machines", {}) if index.exists() else {}
            break
        except ValueError:
            time.sleep(0.1)
    else:
        raise AssertionError(f"{index} stays unreadable")
    if machines:
        for mid, m in machines.items():
            if f"enos-{run_id}" in json.dumps(m) or f"/{run_id}" in m.get("vagrantfile_path", ""):
                out.append(f"vagrant machine {m.get('name')} ({mid})")
    return out


def _run_id(env: Path) -> str:
    return json.loads((env / "state.json").read_text())["run_id"]


def _archive_records_the_box(lvd, tmp_path, env):
    """``enos archive`` of the env: the provider record names the box and carries enos'
    build manifest of it (as installed) and the Vagrantfile enos wrote; ``--check`` accepts it."""
    from enos.vagrant.box import box_manifest
    from enoscli import archived_provider_record
    rec = archived_provider_record(lambda *a: _enos(lvd, tmp_path, *a), env, tmp_path / "boxes.tar.gz")
    box = rec["box"]
    assert box["name"] == rec["info"]["box"] and box["manifest"] == box_manifest(box["name"]), box
    assert box["manifest"], box                              # built by 'enos build vagrant': its recipe
    assert rec["vagrantfile"] == (env / "vagrant" / "Vagrantfile").read_text()
    assert sorted(rec["info"]["machines"]) == ["compute-1", "control-1"], rec["info"]


def test_two_machines_two_networks_up_run_info_destroy(lvd, tmp_path):
    res = _reservation(lvd, tmp_path / "reservation.yaml")
    env = tmp_path / "env"
    p = _enos(lvd, tmp_path, "up", "-f", str(res), "--env", str(env))
    run_id = _run_id(env)
    try:
        assert p.returncode == 0, p.stderr[-4000:]
        st = json.loads((env / "state.json").read_text())
        assert st["phase"] == "ready"                     # preinstall hooks ran
        assert (env / "vagrant" / "Vagrantfile").exists()
        left = leftovers(lvd, run_id)
        assert sum(x.startswith("domain ") for x in left) == 2, left
        assert sum(x.startswith("network ") for x in left) == 3, left   # mgmt + 2 private
        r = _enos(lvd, tmp_path, "run", "--env", str(env), "-o", "json",
                  "hostname; ip -4 -o addr show eth1; ip -4 -o addr show eth2; python3 -c 'print(6*7)'")
        assert r.returncode == 0, r.stderr[-2000:]
        for ip in ("192.168.142.10", "192.168.142.11", "192.168.143.10", "192.168.143.11"):
            assert ip in r.stdout
        assert r.stdout.count("42") >= 2 and "control-1" in r.stdout and "compute-1" in r.stdout
        info = json.loads(_enos(lvd, tmp_path, "info", "--env", str(env), "-o", "json").stdout)
        pools = {n["name"]: n for n in info["networks"]}
        assert len(pools) == 2 and all(n["size"] > 200 for n in pools.values()), pools
        hosts = {h["alias"]: h for h in info["hosts"]}
        assert hosts["control-1"]["extra"]["data"] == "eth1" and hosts["control-1"]["host_key"]
        _archive_records_the_box(lvd, tmp_path, env)
    finally:
        d = _enos(lvd, tmp_path, "destroy", "--env", str(env))
        assert d.returncode == 0, d.stderr[-2000:]
    assert leftovers(lvd, run_id) == []
    assert _enos(lvd, tmp_path, "destroy", "--env", str(env)).returncode == 0     # idempotent


def test_kill_9_during_vagrant_up_then_destroy(lvd, tmp_path):
    """A real SIGKILL of enos while 'vagrant up' creates the machines; the orphaned vagrant
    is found by its marker and killed, and destroy leaves nothing."""
    res = _reservation(lvd, tmp_path / "reservation.yaml")
    env = tmp_path / "env"
    envvars = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
    envvars.update(lvd.env)
    log = open(tmp_path / "up.log", "w")
    p = subprocess.Popen(lvd.ns_exec(sys.executable, "-m", "enos", "up", "-f", str(res), "--env", str(env)),
                         cwd=str(tmp_path), env=envvars, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 1200
        run_id = None
        while time.monotonic() < deadline and p.poll() is None:
            if run_id is None and (env / "state.json").exists():
                run_id = _run_id(env)
            if run_id and any(x.startswith("domain ") for x in leftovers(lvd, run_id)):
                break
            time.sleep(1)
        assert p.poll() is None, (tmp_path / "up.log").read_text()[-2000:]
        assert run_id and any(x.startswith("vagrant process") for x in leftovers(lvd, run_id))
        os.kill(p.pid, signal.SIGKILL)          # ip netns exec execs enos: this is enos itself
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
    assert p.returncode == -signal.SIGKILL
    d = _enos(lvd, tmp_path, "destroy", "--env", str(env))
    assert d.returncode == 0, d.stderr[-2000:]
    assert leftovers(lvd, run_id) == []


def test_ctrl_c_during_vagrant_up_exits_130_then_destroy(lvd, tmp_path):
    """SIGINT to enos' process group (a terminal's Ctrl-C) while 'vagrant up' creates the
    machines: exit 130, no vagrant process left, and destroy frees everything."""
    res = _reservation(lvd, tmp_path / "reservation.yaml")
    env = tmp_path / "env"
    envvars = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
    envvars.update(lvd.env)
    p = subprocess.Popen(lvd.ns_exec(sys.executable, "-m", "enos", "up", "-f", str(res), "--env", str(env)),
                         cwd=str(tmp_path), env=envvars, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    run_id = None
    try:
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline and p.poll() is None:
            if run_id is None and (env / "state.json").exists():
                run_id = _run_id(env)
            if run_id and any(x.startswith("domain ") for x in leftovers(lvd, run_id)):
                break
            time.sleep(1)
        assert p.poll() is None and run_id
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "enos destroy" in err
    assert not any(x.startswith("vagrant process") for x in leftovers(lvd, run_id))
    d = _enos(lvd, tmp_path, "destroy", "--env", str(env))
    assert d.returncode == 0, d.stderr[-2000:]
    assert leftovers(lvd, run_id) == []


def test_sweep_by_run_id_without_state(lvd, tmp_path):
    """Killed (kill -9) right after 'vagrant up' returned (the VMs run: domains, their
    volumes and the run's networks exist, Vagrant's machine index lists them), state
    deleted: the sweep by run id removes all of it."""
    res = _reservation(lvd, tmp_path / "reservation.yaml")
    env = tmp_path / "env"
    p = _enos(lvd, tmp_path, "up", "-f", str(res), "--env", str(env),
              extra_env={"ENOS_FAILPOINTS": "vagrant.up_done=kill"})
    assert p.returncode == -9, p.stderr[-2000:]
    run_id = _run_id(env)
    before = leftovers(lvd, run_id)
    kinds = {x.split()[0] for x in before}
    assert {"domain", "volume", "network"} <= kinds, before          # there is something to sweep
    (env / "state.json").unlink()
    s = _enos(lvd, tmp_path, "destroy", "--sweep", "--run-id", run_id, "-f", str(res))
    assert s.returncode == 0, s.stderr[-2000:]
    assert leftovers(lvd, run_id) == []


from enos.testing.conformance import ConformanceSuite  # noqa: E402


class TestVagrantConformance(ConformanceSuite):
    """The provider conformance suite, every enos process run in the daemon's namespace.
    Crash injection is limited to the checkpoints around 'vagrant up' (each crash costs a
    boot of two VMs under TCG: several minutes here)."""

    crash_points = ("vagrant.seed_created", "vagrant.vagrantfile", "vagrant.up_done")
    min_crash_points = 3
    command_timeout = 1800.0

    @pytest.fixture
    def reservation(self, lvd, tmp_path):
        self.lvd = lvd
        return _reservation(lvd, tmp_path / "reservation.yaml")

    @pytest.fixture
    def cli_env(self, lvd):
        return dict(lvd.env)

    def enos(self, cwd, cli_env, *args, extra_env=None, expect=0):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
        env.update(cli_env)
        env.update(extra_env or {})
        p = subprocess.run(self.lvd.ns_exec(sys.executable, "-m", "enos", *args), cwd=str(cwd), env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=self.command_timeout)
        if expect is not None:
            assert p.returncode == expect, (f"enos {' '.join(args)} exited {p.returncode}, expected {expect}\n"
                                            f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
        return p

    def leftovers(self, run_id):
        return leftovers(self.lvd, run_id)
