"""Secondary networks on Grid'5000, against the fake API over the real reference data: the
nodes' real secondary interfaces (network_adapters) really move into their kavlans through
POST /sites/{site}/vlans/{id}/nodes; each host names its interface and address per network;
a cluster without a second kavlan-capable interface is refused before anything is booked."""
import sys
from pathlib import Path

import pytest

from enos.errors import ConfigError
from enos.reservation.config import MachineSpec
from enos.state import State

sys.path.insert(0, str(Path(__file__).parent))
from g5khelpers import cfg, provider, write_creds  # noqa: E402
from g5kserver import FakeG5k  # noqa: E402

PASSWORD = "vlan-pw"
NETS = [{"id": "admin", "type": "prod", "site": "nancy"},
        {"id": "data", "type": "kavlan", "roles": ["data"], "site": "nancy"},
        {"id": "ctl", "type": "kavlan-local", "site": "nancy"}]


@pytest.fixture
def server(tmp_path, monkeypatch):
    srv = FakeG5k(sites={"nancy": {"gros": 6, "grele": 2}, "rennes": {"paradoxe": 4}},
                  users={"alice": PASSWORD}, waiting_s=0.1, launching_s=0.05, deploy_s=0.1)
    srv.start()
    monkeypatch.setenv("G5K_CREDENTIALS_FILE", str(write_creds(tmp_path / "creds.yaml", srv.url, PASSWORD)))
    monkeypatch.delenv("G5K_API_URL", raising=False)
    yield srv
    srv.stop()


def group(cluster, n, secondaries, primary="admin", i=0):
    return MachineSpec(["data"], n, label=None, keypath=f"provider.resources.machines.{i}",
                       options={"cluster": cluster, "primary_network": primary, "secondary_networks": secondaries})


def test_secondary_interfaces_move_into_their_vlan(server, tmp_path):
    env = tmp_path / "env"
    p = provider(env, cfg({"env_name": "debian12-min"}, machines=[group("gros", 3, ["data"])], networks=NETS[:2]))
    res = p.init()
    vlan = p.ctx.journal.get("vlans:nancy")["moved"]
    (vid, moved), = vlan.items()
    assert server.sites["nancy"].vlans[vid] == "kavlan"
    nodes = sorted(h.extra["g5k_fqdn"] for h in res.hosts)
    assert moved == sorted(n.replace(".nancy", "-eth1.nancy") for n in nodes)
    assert server.vlan_members("nancy", vid) == moved          # the fake's kavlan has them
    assert server.count("POST", rf"^/sites/nancy/vlans/{vid}/nodes$") == 1
    g1 = next(h for h in res.hosts if h.alias == "gros-1")
    assert g1.extra["g5k_networks"] == {
        "admin": {"type": "prod", "device": "eth0", "interface": "eno1", "address": "172.16.66.1"},
        "data": {"type": "kavlan", "vlan": vid, "device": "eth1", "interface": "eno2",
                 "address": f"10.16.{(int(vid) - 4) * 64 + 1}.1"}}
    rows = {(r["host"], r["network"]): r for r in p.info()["networks"]}
    assert rows[("gros-1", "data")]["interface"] == "eno2" and rows[("gros-1", "data")]["vlan"] == vid
    # a second 'enos up' of the env moves nothing again
    again = provider(env, p.ctx.config, state=State.load(env))
    again.init()
    assert server.count("POST", rf"^/sites/nancy/vlans/{vid}/nodes$") == 1
    again.destroy()
    assert server.vlan_members("nancy", vid) == []              # the job ended: back to DEFAULT


@pytest.mark.parametrize("machines,nets,message", [
    ([group("grele", 1, ["data"])], NETS[:2],
     "secondary_networks: cluster grele has 0 secondary kavlan-capable interface.s. .none.; 1 secondary network"),
    ([group("gros", 1, ["data", "ctl"])], NETS,
     r"cluster gros has 1 secondary kavlan-capable interface.s. .eth1.; 2 secondary network.s. asked .data, ctl."),
    ([group("gros", 1, ["admin"])], NETS[:2], "'admin' is not a kavlan network"),
    ([MachineSpec(["x"], 1, keypath="provider.resources.machines.0",
                  options={"cluster": "paradoxe", "secondary_networks": ["data"]})], NETS[:2],
     "network 'data' is on nancy, the machines on rennes"),
])
def test_refused_before_anything_is_booked(server, tmp_path, machines, nets, message):
    p = provider(tmp_path / "env", cfg(machines=machines, networks=nets))
    with pytest.raises(ConfigError, match=message) as e:
        p.init()
    assert e.value.keypath.startswith("provider.resources.machines.0")
    assert server.count("POST") == 0 and server.active_jobs() == []


def test_two_kavlans_get_vlans_of_their_own_types(server, tmp_path):
    machines = [group("gros", 2, ["data"], primary="ctl")]
    p = provider(tmp_path / "env", cfg({"env_name": "debian12-min"}, machines=machines, networks=NETS))
    res = p.init()
    nets = res.hosts[0].extra["g5k_networks"]
    types = server.sites["nancy"].vlans
    assert types[nets["ctl"]["vlan"]] == "kavlan-local" and types[nets["data"]["vlan"]] == "kavlan"
    assert res.hosts[0].address.startswith(f"gros-1-kavlan-{nets['ctl']['vlan']}.")
    p.destroy()
