"""ssh_config, known_hosts and inventory generation; SSH wait timeouts."""
import time

import pytest
import yaml

from enos.errors import SshUnreachable
from enos.inventory import build_inventory
from enos.provider.provider import Host, IpPool, Resources
from enos.ssh.client import render_known_hosts, render_ssh_config, wait_for_ssh, write_ssh_files


def hosts():
    return [Host("web-1", "10.0.0.2", roles=["web"], keyfile="/k", host_key="ssh-ed25519 AAAA1",
                 extra={"enos_scratch": "/s/web-1"}),
            Host("db-1", "10.0.0.3", user="bob", port=2222, roles=["db", "web"], jump="me@gw:22")]


def test_ssh_config_pins_known_keys_and_never_disables_checking(tmp_path):
    text = render_ssh_config(hosts(), tmp_path / "known_hosts", "abcd1234")
    assert "StrictHostKeyChecking no" not in text
    web = text.split("Host web-1\n")[1].split("\n\n")[0]
    assert "HostName 10.0.0.2" in web and "StrictHostKeyChecking yes" in web and "IdentityFile /k" in web
    db = text.split("Host db-1\n")[1].split("\n\n")[0]
    from enos.ssh.jump import alias_of
    j = alias_of("me@gw:22")
    assert "Port 2222" in db and "User bob" in db and "ProxyJump" not in text
    assert f"ProxyCommand ssh -F {tmp_path / 'ssh_config'} -W %h:%p {j}" in db
    gw = text.split(f"Host {j}\n")[1].split("\n\n")[0]     # the jump host, named once
    assert gw.splitlines() == ["  HostName gw", "  User me", "  Port 22"] and text.count(f"Host {j}\n") == 1
    assert "StrictHostKeyChecking accept-new" in db
    assert f"UserKnownHostsFile {tmp_path / 'known_hosts'}" in text
    assert "ControlMaster auto" in text and "abcd1234/%C" in text


def test_known_hosts_pins_and_keeps_learnt(tmp_path):
    prev = "db-1 ssh-ed25519 LEARNT\nweb-1 ssh-ed25519 OLD\n"
    text = render_known_hosts(hosts(), prev)
    assert text.splitlines() == ["db-1 ssh-ed25519 LEARNT", "web-1 ssh-ed25519 AAAA1"]
    cfg = write_ssh_files(tmp_path, hosts(), "abcd1234")
    assert cfg.exists() and (tmp_path / "known_hosts").read_text().endswith("web-1 ssh-ed25519 AAAA1\n")


def test_inventory_groups_and_hostvars(tmp_path):
    res = Resources(hosts(), [IpPool.from_range("10.0.0.0/29", exclude=["10.0.0.2", "10.0.0.3"], gateway="10.0.0.1")])
    inv = build_inventory(res, tmp_path / "ssh_config")
    assert set(inv["all"]["children"]) == {"db", "web"}
    assert set(inv["all"]["children"]["web"]["hosts"]) == {"web-1", "db-1"}
    assert inv["all"]["hosts"]["web-1"]["enos_scratch"] == "/s/web-1"
    assert inv["all"]["vars"]["ansible_ssh_common_args"] == f"-F {tmp_path / 'ssh_config'}"
    assert inv["all"]["vars"]["enos_networks"][0]["ranges"] == [["10.0.0.4", "10.0.0.6"]]
    assert inv["all"]["vars"]["enos_networks"][0]["size"] == 3
    yaml.safe_dump(inv)


def test_inventory_text_reads_as_pyyaml_writes_it_in_ansible(tmp_path):
    """The inventory's YAML (one line of JSON per host) is the document PyYAML writes, for
    YAML and for Ansible itself (``ansible-inventory --list`` of both files), strings that
    YAML 1.1 would read as booleans or numbers included; a float falls back to PyYAML."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    from enos.inventory import inventory_yaml, write_inventory
    extra = {"enos_scratch": "/s/web-1", "tricky": ["yes", "no", "on", "1e3", "0x10", "~", "null", "#x",
                                                    "caf\u00e9 \"q\" \\ :x", "- a", "{b}", ""],
             "n": 7, "flag": True, "none": None}
    hs = hosts()
    hs[0].extra.update(extra)
    res = Resources(hs, [IpPool.from_range("10.0.0.0/29", exclude=["10.0.0.2", "10.0.0.3"], gateway="10.0.0.1")])
    inv = build_inventory(res, tmp_path / "ssh config")
    path = write_inventory(tmp_path, res, tmp_path / "ssh config")
    text = path.read_text()
    assert '"web-1": {"ansible_host": "web-1"' in text          # the fast writer, not PyYAML
    assert yaml.safe_load(text) == inv
    (tmp_path / "pyyaml.yml").write_text(yaml.safe_dump(inv, sort_keys=False))
    listed = []
    for f in (path, tmp_path / "pyyaml.yml"):
        p = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(f), "--list"],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        listed.append(json.loads(p.stdout))
    assert listed[0] == listed[1] and listed[0]["_meta"]["hostvars"]["web-1"]["tricky"] == extra["tricky"]
    inv["all"]["hosts"]["web-1"]["ratio"] = 1e20                 # YAML 1.1 reads JSON's 1e+20 as a string
    back = yaml.safe_load(inventory_yaml(inv))
    assert back == inv and back["all"]["hosts"]["web-1"]["ratio"] == 1e20


def test_wait_for_ssh_times_out_naming_hosts(tmp_path):
    # 192.0.2.0/24 is TEST-NET-1, and the port is closed on loopback: use loopback with a
    # port nobody listens on, so nothing leaves the machine.
    h = [Host("late-1", "127.0.0.1", port=1, keyfile=None)]
    cfg = write_ssh_files(tmp_path, h, "feedf00d")
    t0 = time.monotonic()
    with pytest.raises(SshUnreachable) as e:
        wait_for_ssh(cfg, ["late-1"], timeout=2, interval=0.2)
    assert time.monotonic() - t0 < 10
    assert "late-1" in e.value.hosts and "did not answer SSH within 2s" in str(e.value)
