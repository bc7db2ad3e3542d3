"""Gateway fan-in, for real: 200 hosts reachable ONLY through one real sshd jump host that
enforces OpenSSH's defaults (MaxStartups 10:30:100, MaxSessions 10; tests/gatewaybed.py).
``enos up`` (with a playbook), ``enos run`` with the connection masters open and after
they were all closed: every host answers, the gateway drops nothing, and ``ss`` never
samples more than 8 TCP connections to it (one master per jump host, enos/ssh/jump.py).

Before that module (bench/gateway_fanin.py, ProxyJump per host): 51-53 connections at once
and 37-40 of them dropped past MaxStartups during ``enos up`` of the same 200 hosts."""
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from enoscli import enos  # noqa: E402
from gatewaybed import GatewayBed, SsSampler, start_agent  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]
HOSTS = 200
MAX_CONNECTIONS = 8

PLAYBOOK = """\
- name: through the gateway
  hosts: all
  gather_facts: false
  tasks:
    - name: write a per-host file
      ansible.builtin.copy:
        content: "{{ inventory_hostname }}\\n"
        dest: "OUT/{{ inventory_hostname }}.txt"
        mode: "0644"
"""


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    import shutil
    from prereq import missing
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()) or not shutil.which("ssh-agent"):
        missing("needs sshd and ssh-agent (apt-get install openssh-server openssh-client)")
    work = tmp_path_factory.mktemp("fanin")
    b = GatewayBed(work / "bed", hosts=HOSTS)
    b.start()
    sock = work / "agent.sock"
    agent = None
    try:
        agent = start_agent(b.client_key, sock)
        yield b, work, {"SSH_AUTH_SOCK": str(sock)}
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=10)
        b.stop()


def reservation(b, work: Path) -> Path:
    (work / "out").mkdir(exist_ok=True)
    (work / "fanin.yml").write_text(PLAYBOOK.replace("OUT", str(work / "out")))   # hosts share this disk
    lines = ["provider:", "  type: static", "provision:", f"  - {work / 'fanin.yml'}", "resources:", "  node:"]
    lines += [f"    - {{address: {ip}, alias: h{i}, keyfile: {b.client_key}, jump: root@{b.gw_ip}}}"
              for i, ip in enumerate(b.host_ips, 1)]
    path = work / "reservation.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def sampled(b, cwd, *args, env, timeout=900):
    """Run ``enos ARGS`` while sampling TCP connections to the gateway; return (process,
    peak, drops during it)."""
    drops = b.dropped()
    with SsSampler(b.gw_ip, interval=0.05) as s:
        p = enos(cwd, *args, env=env, timeout=timeout, check=False)
    return p, s.peak, b.dropped() - drops


def test_200_hosts_through_one_real_gateway(bed, record_property):
    b, work, env = bed
    envdir = work / "env"
    res = reservation(b, work)
    accepted = b.accepted()
    figures = {}
    try:
        t = time.monotonic()
        p, peak, drops = sampled(b, work, "up", "-f", str(res), "--env", str(envdir), "--ssh-timeout", "300", env=env)
        figures["up"] = (round(time.monotonic() - t, 1), peak, drops)
        assert p.returncode == 0, p.stderr[-3000:]
        written = sorted(f.name for f in (work / "out").iterdir())      # the play ran on every host
        assert written == sorted(f"h{i}.txt" for i in range(1, HOSTS + 1))
        cfg = (envdir / "ssh_config").read_text()
        assert cfg.count("Host enos-jump-") == 1 and cfg.count("-W %h:%p enos-jump-") == HOSTS

        for name in ("run-hot", "run-cold"):
            if name == "run-cold":        # the next morning: every master gone (ControlPersist)
                from enos.ssh.client import stop_masters
                stop_masters(json.loads((envdir / "state.json").read_text())["run_id"])
            t = time.monotonic()
            p, peak, drops = sampled(b, work, "run", "--env", str(envdir), "-o", "json", "hostname", env=env)
            figures[name] = (round(time.monotonic() - t, 1), peak, drops)
            assert p.returncode == 0, p.stderr[-3000:]
            rows = json.loads(p.stdout)
            rows = rows if isinstance(rows, list) else rows["results"]
            assert sorted(r["stdout"].strip() for r in rows) == sorted(f"h{i}" for i in range(1, HOSTS + 1))
        record_property("gateway_fanin", figures)
        print(f"\n{HOSTS} hosts through one gateway (seconds, peak TCP connections, drops): {figures}; "
              f"gateway accepted {b.accepted() - accepted} connections in all")
        assert all(peak <= MAX_CONNECTIONS for _, peak, _ in figures.values()), figures
        assert all(drops == 0 for _, _, drops in figures.values()) and b.dropped() == 0, figures
        assert b.accepted() - accepted <= 2 * len(figures), b.accepted() - accepted
    finally:
        enos(work, "destroy", "--env", str(envdir), env=env, check=False)
