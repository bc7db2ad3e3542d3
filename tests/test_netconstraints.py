"""The ``network_constraints:`` key of reservation.yaml and the tc planner, without hosts:
real files of the corpus validate, units and spellings, group ranges, file:line errors
through the real CLI (exit 2), Enos' merge of defaults and constraints, and the tc
commands generated from (recorded) facts."""
from __future__ import annotations

import glob
from pathlib import Path

import pytest
import yaml


from enos.experiment import tc
from enos.experiment.facts import parse_facts
from enos.provider.provider import Host, IpPool
from enos.reservation.netconstraints import parse_delay, parse_loss, parse_rate
from enos.task import reservation_from_data
from enoscli import enos
from corpus import corpus_dir

CORPUS = (corpus_dir() or Path("/nonexistent")) / "accept"


def _files():
    return sorted(f for f in glob.glob(str(CORPUS / "*")) if "network_constraints" in Path(f).read_text())


def test_every_corpus_file_with_network_constraints_validates():
    """Each real file using network_constraints is accepted, its constraints parsed into
    group rules. Files of a provider enos does not have (vagrant) are checked with their
    provider section swapped for 'local' (the rest of the file as is)."""
    from enos.errors import ProviderNotFound
    from enos.provider import load_provider_class
    files = _files()
    assert len(files) >= 20, f"corpus not found at {CORPUS}"
    for f in files:
        data = yaml.safe_load(Path(f).read_text())
        ptype = data["provider"]["type"] if isinstance(data["provider"], dict) else data["provider"]
        try:
            load_provider_class(ptype, check=False)
        except ProviderNotFound:
            data["provider"] = {"type": "local"}
        cfg = reservation_from_data(data, f)
        nc = cfg.network_constraints
        assert nc is not None and nc.enable is True, f
        assert "network_constraints" not in cfg.variables      # no longer an Ansible variable
        rules = nc.group_rules(cfg.constraint_groups())
        assert {(r.src, r.dst) for r in rules} == {("grp1", "grp2"), ("grp2", "grp1")}, f
        explicit = data["network_constraints"].get("constraints")
        if explicit:   # 50ms / 1gbit, symmetric: overrides the defaults both ways
            assert {(r.delay_ms, r.rate_bit, r.loss_pct) for r in rules} == {(50.0, 10**9, 0.0)}, f
        else:
            assert {(r.delay_ms, r.rate_bit) for r in rules} == {(10.0, 10**8)}, f


def test_units_are_case_insensitive_and_strict():
    assert parse_rate("1Gbit") == parse_rate("1gbit") == parse_rate("1GBIT") == 10**9
    assert parse_rate("100mbit") == 10**8 and parse_rate("10kbps") == 80_000   # tc: bps = bytes/s
    assert parse_delay("10ms") == 10 and parse_delay("1.5S") == 1500 and parse_delay("500us") == 0.5
    assert parse_delay(0) == 0 and parse_loss(0) == 0 and parse_loss("0.1%") == 0.1 and parse_loss(2) == 2
    for bad, fn in (("10", parse_delay), (10, parse_delay), ("fast", parse_rate), (100, parse_rate),
                    ("10mb", parse_rate), ("120%", parse_loss), ("1x", parse_loss)):
        with pytest.raises(ValueError):
            fn(bad)


BASE = """provider: local
topology:
  grp1: {local: {control: 1}}
  "grp[2-4]": {local: {compute: 1}}
"""


def _cfg(tmp_path, nc_yaml: str):
    from enos.task import load_reservation
    p = tmp_path / "reservation.yaml"
    p.write_text(BASE + nc_yaml)
    return load_reservation(p)


def test_ranges_spellings_except_and_intra_group(tmp_path):
    cfg = _cfg(tmp_path, """network_constraints:
  default_delay: 10ms
  default_rate: 1Gbit
  except: [grp4]
  constraints:
    - {src: grp1, dst: "grp[2-3]", rate: 20Mbit, symetric: true}
    - {src: grp2, dst: grp2, delay: 1ms}
    - {src: grp3, dst: grp1, loss: 1, symmetric: false}
""")
    nc = cfg.network_constraints
    assert nc.enable is False and cfg.constraint_groups() == ["grp1", "grp2", "grp3", "grp4"]
    rules = {(r.src, r.dst): r for r in nc.group_rules(cfg.constraint_groups())}
    assert not any("grp4" in k for k in rules)                              # except
    assert rules[("grp1", "grp2")].rate_bit == 20 * 10**6 and rules[("grp2", "grp1")].rate_bit == 20 * 10**6
    assert rules[("grp1", "grp2")].delay_ms == 10                           # default kept
    assert rules[("grp2", "grp2")].delay_ms == 1                            # within a group, asked
    assert ("grp3", "grp3") not in rules                                    # not asked
    assert rules[("grp3", "grp1")].loss_pct == 1 and rules[("grp3", "grp1")].rate_bit == 20 * 10**6
    assert rules[("grp2", "grp3")].rate_bit == 10**9                        # plain default


@pytest.mark.parametrize("nc_yaml, line, words", [
    ("network_constraints:\n  default_rate: 10 fast\n", 6, "expected a rate such as 100mbit"),
    ("network_constraints:\n  default_delay: 10\n", 6, "needs a unit"),
    ("network_constraints:\n  constraints:\n    - {src: grp1, dst: grp9}\n", 7, "unknown group or role 'grp9'"),
    ("network_constraints:\n  constraints:\n    - {src: grp1, dst: grp2, symmetric: true, symetric: true}\n", 7,
     "either 'symmetric' or 'symetric'"),
    ("network_constraints:\n  constraints:\n    - {src: grp1, dst: grp2, delai: 5ms}\n", 7, "did you mean 'delay'"),
    ("network_constraints:\n  default_loss: 0.1\n  enabled: true\n", 7, "did you mean 'enable'"),
    ("network_constraints:\n  constraints:\n    - {src: grp1, dst: \"grp[4-2]\"}\n", 7, "reversed"),
    ("network_constraints:\n  constraints:\n    - {dst: grp2, rate: 1gbit}\n", 7, "missing key 'src'"),
])
def test_errors_name_file_line_and_key_through_the_cli(tmp_path, nc_yaml, line, words):
    (tmp_path / "reservation.yaml").write_text(BASE + nc_yaml)
    p = enos(tmp_path, "validate", check=False)
    assert p.returncode == 2, p.stderr
    assert f"reservation.yaml:{line}: network_constraints" in p.stderr and words in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


# --- the planner, on facts parsed from real `ip -o` output ----------------------------

def _facts(host: Host, ifaces: dict, netem: str, pools) -> dict:
    addr, link = [], []
    for i, (name, addrs) in enumerate(ifaces.items(), start=1):
        link.append(f"{i}: {name}: <BROADCAST,UP> mtu 1500 qdisc noqueue state UP mode DEFAULT "
                    f"group default qlen 1000\\    link/ether 02:00:00:00:00:0{i} brd ff:ff:ff:ff:ff:ff")
        for a in addrs:
            addr.append(f"{i}: {name}    inet {a} brd 0.0.0.0 scope global {name}\\       valid_lft forever")
    text = "\n".join(["@@addr", *addr, "@@link", *link, "@@cpus", "4", "@@mem", "MemTotal: 8167000 kB",
                      "@@os", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"', "ID=debian",
                      "@@kernel", "6.1.0-57-amd64", "x86_64", "@@netem", netem, "@@tools", "tc", "@@end"])
    return parse_facts(text, host, pools)


def _two_networks(netem="module"):
    pools = [IpPool(cidr="10.0.0.0/24", name="admin"), IpPool(cidr="10.9.0.0/24", name="data", roles=["n1"])]
    hosts = [Host("a-1", "10.0.0.2", roles=["a"]), Host("b-1", "10.0.0.3", roles=["b"]),
             Host("b-2", "10.0.0.4", roles=["b"])]
    facts = {h.alias: _facts(h, {"eth0": [h.address + "/24"], "eth1": ["10.9.0." + h.address.split(".")[-1] + "/24"]},
                             netem, pools) for h in hosts}
    return hosts, facts


def test_facts_name_the_env_network_of_each_address():
    hosts, facts = _two_networks()
    f = facts["a-1"]
    assert f["cpus"] == 4 and f["memory_mb"] == 7975 and f["os_id"] == "debian" and f["kernel"] == "6.1.0-57-amd64"
    eth = {i["name"]: i for i in f["interfaces"]}
    assert eth["eth0"]["addresses"][0]["network"] == "admin" and eth["eth0"]["addresses"][0]["ssh"]
    assert eth["eth1"]["addresses"][0]["network"] == "data" and eth["eth1"]["mac"] == "02:00:00:00:00:02"


def test_plan_uses_the_named_network_and_one_class_per_destination_group(tmp_path):
    hosts, facts = _two_networks()
    cfg = reservation_from_data({"provider": "local", "resources": {"local": {"a": 1, "b": 2}},
                                 "network_constraints": {"default_rate": "10mbit", "constraints": [
                                     {"src": "a", "dst": "b", "delay": "20ms", "loss": "1%", "network": "n1"}]}},
                                "r.yaml")
    plans = tc.plan(cfg.network_constraints, cfg.constraint_groups(), hosts, facts)
    a = plans["a-1"]
    assert [d.device for d in a.devices] == ["eth1"]            # network n1 = pool 'data' = eth1
    (cls,) = a.devices[0].classes
    assert cls.destinations == ["10.9.0.3", "10.9.0.4"] and cls.dst_group == "b"
    cmds = [" ".join(c) for c in a.commands()]
    assert cmds[0] == "tc qdisc add dev eth1 root handle 1: htb direct_qlen 10000"
    assert "tc class add dev eth1 parent 1: classid 1:10 htb rate 10000000bit ceil 10000000bit quantum 125000" in cmds
    assert "tc qdisc add dev eth1 parent 1:10 handle 10: netem limit 100000 delay 20ms loss 1%" in cmds
    assert cmds[-1] == "tc filter add dev eth1 parent 1: protocol ip prio 1 u32 match ip dst 10.9.0.4/32 flowid 1:10"
    b = plans["b-1"]                                             # b → a: the default, on the SSH interface
    assert [d.device for d in b.devices] == ["eth0"] and b.devices[0].classes[0].delay_ms is None
    assert not any("netem" in " ".join(c) for c in b.commands())


def test_plan_refuses_delay_without_netem_and_an_unknown_network():
    hosts, facts = _two_networks(netem="missing")
    data = {"provider": "local", "resources": {"local": {"a": 1, "b": 2}},
            "network_constraints": {"default_delay": "5ms"}}
    cfg = reservation_from_data(data, "r.yaml")
    with pytest.raises(tc.NetemMissing) as e:
        tc.plan(cfg.network_constraints, cfg.constraint_groups(), hosts, facts)
    assert "sch_netem" in str(e.value) and "6.1.0-57-amd64" in str(e.value) and e.value.exit_code == 1
    data["network_constraints"] = {"default_rate": "5mbit"}      # rate only: fine without netem
    cfg = reservation_from_data(data, "r.yaml")
    assert tc.plan(cfg.network_constraints, cfg.constraint_groups(), hosts, facts)
    data["network_constraints"] = {"default_rate": "5mbit", "default_network": "nowhere"}
    cfg = reservation_from_data(data, "r.yaml")
    with pytest.raises(tc.PlanError, match="no address on network 'nowhere'"):
        tc.plan(cfg.network_constraints, cfg.constraint_groups(), hosts, facts)
