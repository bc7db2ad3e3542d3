"""The jump-host testbed itself (tests/gatewaybed.py): a real sshd gateway with OpenSSH's
default limits, hosts that only it can reach, an ``ss`` sampler, and nothing left after."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gatewaybed import GatewayBed, SsSampler  # noqa: E402

pytestmark = [pytest.mark.root]


def ssh_config(bed, path: Path) -> Path:
    """An ssh_config reaching the hosts with ProxyJump through the gateway."""
    path.write_text(f"""Host h*
  ProxyJump root@{bed.gw_ip}
Host *
  User root
  IdentityFile {bed.client_key}
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  BatchMode yes
  LogLevel ERROR
  ConnectTimeout 10
""" + "".join(f"Host h{i}\n  HostName {ip}\n" for i, ip in enumerate(bed.host_ips, 1)))
    return path


def test_hosts_are_reachable_only_through_the_gateway(tmp_path, sshd_available):
    bed = GatewayBed(tmp_path, hosts=4)
    with bed:
        # the gateway runs OpenSSH's default limits
        eff = subprocess.run(["/usr/sbin/sshd", "-T", "-f", str(tmp_path / "gateway" / "sshd_config")],
                             capture_output=True, text=True).stdout
        assert "maxstartups 10:30:100" in eff and "maxsessions 10" in eff
        # from here: no route to a host (the range is unreachable: nothing leaves the machine)
        route = subprocess.run(["ip", "-o", "route", "get", bed.host_ips[0]], capture_output=True, text=True)
        assert route.returncode != 0 and "unreachable" in route.stderr.lower(), route
        gw_route = subprocess.run(["ip", "-o", "route", "get", bed.gw_ip], capture_output=True, text=True).stdout
        assert f"dev {bed.root_link}" in gw_route
        # through the gateway: each host answers with its own name
        cfg = ssh_config(bed, tmp_path / "ssh_config")
        names = [subprocess.run(["ssh", "-F", str(cfg), f"h{i}", "hostname"], capture_output=True,
                                text=True, timeout=60).stdout.strip() for i in (1, 2)]
        assert names == ["h1", "h2"]
        # the gateway itself does not route
        out = subprocess.run(["ip", "netns", "exec", bed.gw_ns, "sysctl", "-n", "net.ipv4.ip_forward"],
                             capture_output=True, text=True).stdout.strip()
        assert out == "0"
        # the sampler sees a held connection to the gateway
        held = subprocess.Popen(["ssh", "-F", str(cfg), bed.gw_ip, "sleep 3"], stdin=subprocess.DEVNULL)
        with SsSampler(bed.gw_ip, interval=0.05) as s:
            time.sleep(1.5)
        held.wait(timeout=30)
        assert s.peak >= 1 and len(s.samples) >= 5
        assert bed.accepted() >= 3
        pids = bed.ns_pids()
        assert pids, "sshds run in the namespaces"
    assert not [ns for ns in os.listdir("/run/netns") if ns.startswith(f"egw{bed.tag}")]
    assert all(not os.path.exists(f"/proc/{p}") for p in pids)
    assert subprocess.run(["ip", "link", "show", bed.root_link], capture_output=True).returncode != 0


def test_gateway_drops_connections_past_maxstartups(tmp_path, sshd_available):
    """40 TCP connections that never authenticate: sshd starts dropping past 10 (30 %
    at first, more as they pile up), as Grid'5000's gateway would."""
    with GatewayBed(tmp_path, hosts=1) as bed:
        socks = []
        try:
            for _ in range(40):
                socks.append(socket.create_connection((bed.gw_ip, 22), timeout=5))
            time.sleep(1.0)
        finally:
            for s in socks:
                s.close()
        deadline = time.time() + 5
        while bed.dropped() == 0 and time.time() < deadline:
            time.sleep(0.1)
        assert bed.dropped() >= 5
