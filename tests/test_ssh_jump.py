"""Gateway fan-in pieces (enos/ssh/jump.py) against the REAL sshd jump host of
tests/gatewaybed.py: one master per jump host, opened once even when many ask at once,
hosts' connections as channels through it, errors named per jump host."""
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from enos.model import Host
from enos.ssh import jump
from enos.ssh.client import ssh_config_value

sys.path.insert(0, str(Path(__file__).parent))
from gatewaybed import GatewayBed, SsSampler, ssh_config  # noqa: E402

pytestmark = [pytest.mark.root]


def test_parse_alias_and_render():
    assert jump.parse("alice@access.grid5000.fr") == ("alice", "access.grid5000.fr", 22)
    assert jump.parse("gw:2222") == (None, "gw", 2222)
    assert jump.parse("root@[fe80::1]:22") == ("root", "fe80::1", 22)
    with pytest.raises(ValueError):
        jump.parse("a b")
    a = jump.alias_of("alice@gw")
    assert a == jump.alias_of("alice@gw") != jump.alias_of("alice@gw", "/k") and a.startswith("enos-jump-")
    hosts = [Host("n1", "10.0.0.1", jump="alice@gw"), Host("n2", "10.0.0.2", jump="alice@gw"), Host("n3", "10.0.0.3")]
    table = jump.jump_hosts(hosts)
    assert set(table) == {"n1", "n2"} and table["n1"] == table["n2"]
    text = "\n".join(jump.render_blocks(table.values(), ssh_config_value))
    assert text.count("Host enos-jump-") == 1 and "HostName gw" in text and "User alice" in text
    cmd = jump.proxy_command(Path("/e nv/ssh_config"), table["n1"])
    assert cmd == f"ssh -F '/e nv/ssh_config' -W %h:%p {table['n1'].alias}"


def write_config(bed, path: Path, cdir: Path, port: int = 22) -> dict:
    return ssh_config(bed, path, cdir, fanin=True, port=port)


def close_all(cfg: Path, aliases):
    for a in aliases:
        subprocess.run(["ssh", "-F", str(cfg), "-O", "exit", a], capture_output=True)


@pytest.fixture
def cdir():
    """A short control-socket dir (socket paths are limited to ~100 characters)."""
    import shutil
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="ej-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_one_master_many_askers_and_hosts_through_it(tmp_path, cdir, sshd_available):
    with GatewayBed(tmp_path / "bed", hosts=12) as bed:
        cfg = tmp_path / "ssh_config"
        table = write_config(bed, cfg, cdir)
        j = next(iter(table.values())).alias
        assert jump.jumps_in_config(cfg) == {h: j for h in table}
        before = bed.accepted()
        try:
            # 20 threads ask at once: one connection is opened
            results = []
            ts = [threading.Thread(target=lambda: results.append(jump.ensure_master(cfg, j))) for _ in range(20)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            assert results == [None] * 20 and bed.accepted() - before == 1
            assert jump.master_alive(jump._master_socket(cfg, j))
            # every host through it, all at once: no new connection to the gateway
            with SsSampler(bed.gw_ip, interval=0.05) as s:
                ps = [subprocess.Popen(["ssh", "-F", str(cfg), h, "hostname"], stdout=subprocess.PIPE, text=True)
                      for h in table]
                outs = [p.communicate(timeout=60)[0].strip() for p in ps]
            assert outs == [f"h{i}" for i in range(1, 13)]
            assert bed.accepted() - before == 1 and s.peak == 1 and bed.dropped() == 0
            assert jump.ensure_for(cfg, list(table)) == {}
        finally:
            close_all(cfg, [j] + list(table))


def test_unreachable_jump_host_is_named(tmp_path, cdir, sshd_available):
    with GatewayBed(tmp_path / "bed", hosts=1) as bed:
        cfg = tmp_path / "ssh_config"
        table = write_config(bed, cfg, cdir, port=2222)      # nothing listens there
        errors = jump.ensure_for(cfg, ["h1"], timeout=20)
        assert list(errors) == ["h1"] and "Connection refused" in errors["h1"], errors
        assert errors["h1"].startswith(f"jump host root@{bed.gw_ip}:2222: ")
        assert jump.Masters(cfg, timeout=20).ready("h1").startswith(f"jump host root@{bed.gw_ip}:2222: ")
