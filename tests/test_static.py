"""The static provider: parsing of Enos' static format (through the real config loader),
and end to end against real SSH hosts brought up by the local provider in a fixture,
including the conformance suite. Destroy must touch nothing: the local hosts still answer
after every static env was destroyed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prereq import missing
import yaml

from enos.task import reservation_from_data as config_from_data
from enos.errors import ConfigError, Unsupported
from enos.provider.provider import ProviderContext
from enos.provider.static import StaticProvider
from enos.state import MemoryJournal
from enos.testing.conformance import ConformanceSuite
from enoscli import enos
from localhosts import leftovers, local_config, make_provider, ssh

REPO = Path(__file__).resolve().parent.parent


EXP = Path("/tmp") / f"enos-static-test-{os.getpid()}"   # holds keys/id for BASE's keyfile


@pytest.fixture(autouse=True, scope="module")
def exp_dir():
    """The experiment dir BASE's relative keyfile resolves in (keys/id exists)."""
    (EXP / "keys").mkdir(parents=True, exist_ok=True)
    (EXP / "keys" / "id").write_text("not a real key\n")
    yield EXP
    import shutil
    shutil.rmtree(EXP, ignore_errors=True)


def cfg(data: dict, file=None):
    """Return the Config the real loader makes of ``data`` (file in EXP by default)."""
    return config_from_data(data, file or str(EXP / "reservation.yaml"))


def provider(data: dict) -> StaticProvider:
    """Return a StaticProvider on ``data`` with a memory journal."""
    return StaticProvider(ProviderContext(config=cfg(data), journal=MemoryJournal(), env_dir=Path("/tmp"),
                                          run_id="5a71c000"))


BASE = {
    "provider": {"type": "static",
                 "networks": [{"cidr": "192.168.143.0/24", "start": "192.168.143.8", "end": "192.168.143.14",
                               "gateway": "192.168.143.1", "dns": "8.8.8.8", "roles": ["network_interface"]}]},
    "resources": {
        "control": [{"address": "192.168.143.10", "alias": "ctl", "user": "debian", "keyfile": "keys/id",
                     "port": 2222}],
        "compute": [{"address": "192.168.143.11"},
                    {"address": "192.168.143.10", "extra": {"network_interface": "eth1"}}],
    },
}


# ---------------------------------------------------------------- parsing (no root)
def test_hosts_roles_merge_and_defaults():
    res = provider(BASE).init()
    by = {h.alias: h for h in res.hosts}
    assert list(by) == ["ctl", "192.168.143.11"]
    ctl = by["ctl"]
    assert ctl.roles == ["control", "compute"] and ctl.user == "debian" and ctl.port == 2222
    assert ctl.keyfile == str(EXP / "keys" / "id")      # relative to the reservation file
    assert ctl.extra == {"network_interface": "eth1"}
    other = by["192.168.143.11"]
    assert other.user == "root" and other.port == 22 and other.keyfile is None and other.roles == ["compute"]


def test_ip_pool_is_start_to_end_minus_hosts_and_gateway():
    (pool,) = provider(BASE).init().networks
    assert pool.cidr == "192.168.143.0/24" and pool.gateway == "192.168.143.1" and pool.dns == "8.8.8.8"
    assert pool.free == ["192.168.143.8", "192.168.143.9", "192.168.143.12", "192.168.143.13", "192.168.143.14"]
    assert pool.roles == ["network_interface"]


def test_no_networks_means_no_pool():
    data = {"provider": "static", "resources": {"r": [{"address": "h1.example.org"}]}}
    res = provider(data).init()
    assert res.networks == [] and res.hosts[0].alias == "h1.example.org"


@pytest.mark.parametrize("change, keypath, words", [
    (lambda d: d["provider"]["networks"][0].update(start="192.168.143.20"), "provider.networks.0.end",
     "comes before start"),
    (lambda d: d["provider"]["networks"][0].update(gateway="10.0.0.1"), "provider.networks.0.gateway",
     "not inside 192.168.143.0/24"),
    (lambda d: d["resources"]["compute"][1].update(user="root"), "resources.compute.1.user",
     "also listed at resources.control.0"),
    (lambda d: d["resources"]["compute"][0].update(alias="ctl"), "resources.compute.0",
     "alias 'ctl' is already used"),
    (lambda d: d["resources"]["compute"][0].pop("address"), "resources.compute.0", "address"),
    (lambda d: d["resources"]["compute"][0].update(port=0), "resources.compute.0.port", ""),
    (lambda d: d["provider"].update(subnet="10.0.0.0/24"), "provider", "subnet"),
])
def test_inconsistent_reservations_are_located_config_errors(change, keypath, words):
    data = json.loads(json.dumps(BASE))
    change(data)
    with pytest.raises(ConfigError) as e:
        cfg(data)
    assert e.value.keypath and e.value.keypath.startswith(keypath), str(e.value)
    assert words in str(e.value)


def test_missing_keyfile_is_reported_by_check_and_init(tmp_path):
    key = tmp_path / "id"
    data = {"provider": "static", "resources": {"r": [{"address": "10.0.0.9", "keyfile": str(key)}]}}
    p = provider(data)
    (c,) = p.check()
    assert not c.ok and str(key) in c.what
    with pytest.raises(ConfigError, match="does not exist"):
        p.init()
    key.write_text("x")
    assert p.check()[0].ok and p.init().hosts[0].keyfile == str(key)


def test_sample_from_enos_new_validates(tmp_path):
    subprocess.run([sys.executable, "-m", "enos", "new", "--provider", "static"], cwd=str(tmp_path), check=True,
                   capture_output=True)
    v = subprocess.run([sys.executable, "-m", "enos", "validate", "-f", "reservation.yaml"], cwd=str(tmp_path),
                       capture_output=True, text=True)
    assert v.returncode == 0 and "3 host(s) in 2 role(s)" in v.stdout, v.stdout + v.stderr


def test_destroy_forgets_and_capabilities_are_honest():
    p = provider(BASE)
    p.init()
    assert p.ctx.journal.get("static") == {"hosts": ["ctl", "192.168.143.11"]}
    p.destroy()
    p.destroy()
    assert p.ctx.journal.get("static") is None
    assert "reserve" not in p.capabilities         # it books nothing
    with pytest.raises(Unsupported):
        p.sweep()
    with pytest.raises(Unsupported):
        p.extend("1:00")


# ---------------------------------------------------------------- against real hosts
@pytest.fixture(scope="module")
def local_hosts(tmp_path_factory):
    """Three real SSH hosts (local provider, Python API) for the static provider to use;
    asserts at the end that they still answer (static destroy touched nothing)."""
    if os.geteuid() != 0:
        missing("needs root (network namespaces, bridges); run the suite as root")
    env = tmp_path_factory.mktemp("static-backing") / "env"
    prov = make_provider(env, local_config({"a": 1, "b": 2}))
    try:
        res = prov.init()
        yield prov, res
        for h in res.hosts:
            r = ssh(prov.ctx.ssh_key, h.address, "hostname")
            assert r.stdout.strip() == h.alias, f"{h.alias} no longer answers after the static tests: {r.stderr}"
    finally:
        prov.destroy()
    assert leftovers(prov.run_id) == []


def static_reservation(path: Path, local_hosts, pin_keys=True, merged=True) -> Path:
    """Write a static reservation naming the local hosts in two roles; with ``merged``, one
    address is listed under both roles (one host with both)."""
    prov, res = local_hosts
    key = str(prov.ctx.ssh_key)
    pool = res.networks[0]

    def entry(h, alias):
        e = {"address": h.address, "alias": alias, "user": "root", "keyfile": key, "port": 22}
        if pin_keys:
            e["host_key"] = h.host_key
        return e

    a1, b1, b2 = res.hosts
    data = {"provider": {"type": "static",
                         "networks": [{"cidr": pool.cidr, "start": pool.free[0], "end": pool.free[9],
                                       "gateway": pool.gateway, "roles": ["exp"]}]},
            "resources": {"server": [entry(a1, "srv")],
                          "client": [entry(b1, "cli1"), entry(b2, "cli2")]}}
    if merged:
        data["resources"]["client"].append({"address": a1.address, "extra": {"also_client": True}})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.root
def test_static_end_to_end_on_real_hosts(tmp_path, local_hosts):
    """up (with the preinstall playbook) → run hostname → destroy: the hosts stay untouched."""
    prov, res = local_hosts
    pids = [h["pid"] for h in prov.ctx.journal.get("local")["hosts"]]
    r = static_reservation(tmp_path / "static.yaml", local_hosts)
    enos(tmp_path, "up", "-f", str(r), "--env", "env")
    st = json.loads((tmp_path / "env" / "state.json").read_text())
    hosts = {h["alias"]: h for h in st["resources"]["hosts"]}
    assert hosts["srv"]["roles"] == ["server", "client"] and hosts["srv"]["extra"] == {"also_client": True}
    # host keys given in the reservation are pinned in the env's known_hosts
    known = (tmp_path / "env" / "known_hosts").read_text()
    for h in res.hosts:
        assert h.host_key in known
    out = enos(tmp_path, "run", "hostname", "--env", "env").stdout
    for alias, real in (("srv", "a-1"), ("cli1", "b-1"), ("cli2", "b-2")):
        assert f"── {alias} (ok)\n{real}\n" in out, out
    import yaml
    inv = yaml.safe_load((tmp_path / "env" / "inventory.yml").read_text())
    assert inv["all"]["hosts"]["srv"]["also_client"] is True
    pool = st["resources"]["networks"][0]
    assert pool["size"] == 10 and pool["roles"] == ["exp"]
    enos(tmp_path, "destroy", "--env", "env")
    enos(tmp_path, "destroy", "--env", "env")
    assert [h["pid"] for h in prov.ctx.journal.get("local")["hosts"]] == pids
    for h in res.hosts:
        assert ssh(prov.ctx.ssh_key, h.address, "hostname").stdout.strip() == h.alias


@pytest.mark.root
def test_wrong_pinned_host_key_is_refused(tmp_path, local_hosts):
    """A host key that is not the host's makes SSH fail instead of trusting the host."""
    prov, res = local_hosts
    r = static_reservation(tmp_path / "static.yaml", local_hosts)
    data = yaml.safe_load(r.read_text())
    data["resources"]["server"][0]["host_key"] = res.hosts[1].host_key   # b-1's key for a-1
    r.write_text(yaml.safe_dump(data))
    p = enos(tmp_path, "up", "-f", str(r), "--env", "env", "--no-provision", "--ssh-timeout", "5", check=False)
    assert p.returncode != 0 and "srv" in p.stderr, p.stderr
    enos(tmp_path, "destroy", "--env", "env")


def ssh_masters_left(run_id: str) -> list:
    """Return the env's SSH masters still running and its socket dir if it still exists."""
    import tempfile
    cdirs = [f"{tempfile.gettempdir()}/enos-ssh-{os.getuid()}/{run_id}"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        cdirs.append(f"{os.environ['XDG_RUNTIME_DIR']}/enos-ssh/{run_id}")
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    out = [f"ssh master {line.strip()}" for line in ps.splitlines()
           if "[mux]" in line and any(f"{d}/" in line for d in cdirs)]
    for d in cdirs:
        if os.path.isdir(d) and os.listdir(d):
            out.append(f"control sockets in {d}: {os.listdir(d)}")
    return out


def test_masters_probe_sees_a_live_master(tmp_path, local_hosts):
    """The probe above sees a master that enos did not close (the way it would be left if
    destroy forgot to): one opened by hand with the env's ssh_config, then closed."""
    r = static_reservation(tmp_path / "static.yaml", local_hosts, merged=False)
    enos(tmp_path, "up", "-f", str(r), "--env", "env", "--no-provision")
    rid = json.loads((tmp_path / "env" / "state.json").read_text())["run_id"]
    assert ssh_masters_left(rid), "up left no master: the probe sees nothing"
    enos(tmp_path, "destroy", "--env", "env")
    assert ssh_masters_left(rid) == []


@pytest.mark.root
class TestStaticConformance(ConformanceSuite):
    """The conformance suite on static hosts (the local provider's, made by the fixture)."""

    up_args = ("--no-provision",)
    min_crash_points = 6
    command_timeout = 120.0

    @pytest.fixture
    def reservation(self, tmp_path, local_hosts) -> Path:
        # the suite counts one host per entry: no merged address here (tested above)
        return static_reservation(tmp_path / "static.yaml", local_hosts, merged=False)

    def leftovers(self, run_id: str):
        # static books no machine; what an env of static hosts holds is its SSH connection
        # masters (ssh processes titled "ssh: <control dir>/<hash> [mux]") and their socket
        # dir: found with ps and the file system, not with enos' code
        return leftovers(run_id) + ssh_masters_left(run_id)


def test_static_topology_host_lists(tmp_path):
    """Enos' static topology: GROUP: {ROLE: [hosts] or one host}; hosts get role and group."""
    from enos.provider.static import StaticProvider
    from enos.task import load_reservation
    f = tmp_path / "reservation.yaml"
    f.write_text("provider: static\ntopology:\n  grp1:\n    control:\n      - address: 10.0.0.1\n"
                 "  grp[2-3]:\n    compute:\n      address: 10.0.0.2\n      alias: c\n")
    cfg = load_reservation(str(f))
    hosts = {h.alias: sorted(h.roles) for h in StaticProvider._hosts(cfg)}
    assert hosts == {"10.0.0.1": ["control", "grp1"], "c": ["compute", "grp2", "grp3"]}
