"""End to end: the g5k provider against the local Grid'5000 API server, whose nodes are real
``local`` namespace hosts reached through a gateway host (another namespace host) as the
SSH jump host. The gateway resolves the nodes' Grid'5000 FQDNs with its own /etc/hosts
(``extra_hosts``), so SSH through the gateway's connection master, Ansible preinstall and ``enos run`` are exercised for
real; nothing is written to this machine's /etc/hosts. The conformance suite runs on the
same testbed (with ``--no-provision``: SSH reachability is still waited for).

The gateway authenticates the client with an ssh-agent started by the test (holding the
local env's key), as a Grid'5000 user's agent would for access.grid5000.fr.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prereq import missing

from enos.testing.conformance import ConformanceSuite

sys.path.insert(0, str(Path(__file__).parent))
from enoscli import enos  # noqa: E402
from g5kserver import FakeG5k  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow]
PASSWORD = "e2e-pw-" + os.urandom(4).hex()
NODES = ["paradoxe-1.rennes.grid5000.fr", "paradoxe-2.rennes.grid5000.fr", "gros-1.nancy.grid5000.fr"]


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """Namespace hosts (gateway + 3 nodes), an ssh-agent, the API server; torn down after."""
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()) or not shutil.which("ssh-agent"):
        missing("needs sshd and ssh-agent (apt-get install openssh-server openssh-client)")
    work = tmp_path_factory.mktemp("g5k-e2e")
    rnd = random.Random()
    subnet = f"10.{rnd.randint(200, 254)}.{rnd.randint(0, 255)}"
    gw_ip = f"{subnet}.2"
    node_ips = {fq: f"{subnet}.{3 + i}" for i, fq in enumerate(NODES)}
    local_yaml = work / "local.yaml"
    local_yaml.write_text(
        "provider:\n  type: local\n  subnet: " + subnet + ".0/24\n"
        "resources:\n  machines:\n"
        "    - roles: [gateway]\n      nodes: 1\n      extra_hosts:\n"
        + "".join(f"        {fq}: {ip}\n" for fq, ip in node_ips.items())
        + "    - roles: [g5knode]\n      nodes: 3\n")
    local_env = work / "local-env"
    agent = None
    server = None
    try:
        enos(work, "up", "-f", str(local_yaml), "--env", str(local_env), "--no-provision")
        st = json.loads((local_env / "state.json").read_text())
        addrs = [h["address"] for h in st["resources"]["hosts"]]
        assert addrs == [gw_ip] + list(node_ips.values()), addrs
        key = local_env / "ssh" / "id_ed25519"
        sock = work / "agent.sock"
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.05)
        subprocess.run(["ssh-add", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)}, check=True,
                       capture_output=True)
        server = FakeG5k(sites={"rennes": {"paradoxe": 2}, "nancy": {"gros": 1}},
                         users={"alice": PASSWORD}, waiting_s=0.1, launching_s=0.05, deploy_s=0.1)
        server.start()
        creds = work / "g5k.yaml"
        creds.write_text(f"username: alice\npassword: {PASSWORD}\nuri: {server.url}\n")
        creds.chmod(0o600)
        yield {"work": work, "server": server, "gw": gw_ip, "key": key,
               "env": {"G5K_CREDENTIALS_FILE": str(creds), "SSH_AUTH_SOCK": str(sock)}}
    finally:
        if server is not None:
            server.stop()
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=10)
        if (local_env / "state.json").exists():
            enos(work, "destroy", "--env", str(local_env), check=False)


def g5k_yaml(path: Path, tb, extra: str = "", networks: str = "") -> Path:
    path.write_text(f"""provider:
  type: g5k
  job_name: e2e
  walltime: "1:00:00"
  gateway: root@{tb['gw']}
  ssh_user: root
  key: {tb['key']}.pub
  poll_interval: 0.05
  poll_max_interval: 0.2
  retry_base_delay: 0.05
{extra}resources:
  paradoxe:
    control: 1
    compute: 1
  gros:
    compute: 1
{networks}""")
    return path


def test_up_run_destroy_through_the_gateway(testbed, tmp_path):
    env_dir = tmp_path / "env"
    res = g5k_yaml(tmp_path / "reservation.yaml", testbed)
    enos(tmp_path, "up", "-f", str(res), "--env", str(env_dir), env=testbed["env"])
    try:
        st = json.loads((env_dir / "state.json").read_text())
        hosts = st["resources"]["hosts"]
        assert sorted(h["address"] for h in hosts) == sorted(NODES)
        assert all(h["jump"] == f"root@{testbed['gw']}" for h in hosts)
        cfg_text = (env_dir / "ssh_config").read_text()
        assert f"HostName {testbed['gw']}" in cfg_text and cfg_text.count("-W %h:%p enos-jump-") == 3
        out = enos(tmp_path, "run", "--env", str(env_dir), "-o", "json", "hostname", env=testbed["env"]).stdout
        results = json.loads(out)
        rows = results if isinstance(results, list) else results.get("results", [])
        assert len(rows) == 3 and all(r.get("exit_code", r.get("rc")) == 0 for r in rows), out
        info = enos(tmp_path, "info", "--env", str(env_dir), "-o", "json", env=testbed["env"]).stdout
        assert "remaining" in info
        # enos extend through the CLI: every job gets 1:30 more, as enos info then shows
        def secs(w):
            h, m, *rest = (int(x) for x in w.split(":"))
            return h * 3600 + m * 60 + (rest[0] if rest else 0)
        before = {j["site"]: secs(j["walltime"]) for j in json.loads(info)["provider_info"]["jobs"]}
        ext = enos(tmp_path, "extend", "--walltime", "+1:30", "--env", str(env_dir), env=testbed["env"]).stdout
        assert sorted(before) == ["nancy", "rennes"] and all(site in ext for site in before), ext
        info2 = enos(tmp_path, "info", "--env", str(env_dir), "-o", "json", env=testbed["env"]).stdout
        after = {j["site"]: secs(j["walltime"]) for j in json.loads(info2)["provider_info"]["jobs"]}
        assert after == {site: w + 5400 for site, w in before.items()}, (before, after)
        assert len(testbed["server"].active_jobs(st["run_id"])) == 2
        leaked = subprocess.run(["grep", "-rl", PASSWORD, str(env_dir)], capture_output=True, text=True).stdout
        assert leaked == "", f"password found in {leaked}"
    finally:
        enos(tmp_path, "destroy", "--env", str(env_dir), env=testbed["env"])
    assert testbed["server"].active_jobs(st["run_id"]) == []


def test_local_and_g5k_in_one_env(testbed, tmp_path):
    """providers: local namespace hosts + Grid'5000 nodes behind the gateway, one 'enos up'
    (with the preinstall playbook), one inventory, each reachable by provider name."""
    from enos.multi import part_run_id
    from localhosts import RUN_IDS, leftovers
    env_dir = tmp_path / "env"
    res = tmp_path / "reservation.yaml"
    res.write_text(f"""providers:
  - type: local
    resources: {{machines: {{web: 2}}}}
  - type: g5k
    job_name: e2e-multi
    walltime: "1:00:00"
    gateway: root@{testbed['gw']}
    ssh_user: root
    key: {testbed['key']}.pub
    poll_interval: 0.05
    poll_max_interval: 0.2
    resources:
      paradoxe: {{control: 1, compute: 1}}
      gros: {{compute: 1}}
""")
    enos(tmp_path, "up", "-f", str(res), "--env", str(env_dir), env=testbed["env"])
    st = json.loads((env_dir / "state.json").read_text())
    local_run, g5k_run = part_run_id(st["run_id"], "local"), part_run_id(st["run_id"], "g5k")
    RUN_IDS.append(local_run)
    try:
        assert st["provider"] == "multi" and {"part:local", "part:g5k"} <= set(st["journal"])
        inventory = (env_dir / "inventory.yml").read_text() if (env_dir / "inventory.yml").exists() else ""
        assert "local" in inventory and "g5k" in inventory
        for role, n in (("local", 2), ("g5k", 3), ("web", 2), ("compute", 2)):
            out = enos(tmp_path, "run", "--env", str(env_dir), "--roles", role, "-o", "json", "hostname",
                       env=testbed["env"]).stdout
            rows = json.loads(out)
            rows = rows if isinstance(rows, list) else rows.get("results", [])
            assert len(rows) == n and all(r["exit_code"] == 0 for r in rows), (role, out)
        assert len(testbed["server"].active_jobs(g5k_run)) == 2 and leftovers(local_run)
    finally:
        enos(tmp_path, "destroy", "--env", str(env_dir), env=testbed["env"])
    assert testbed["server"].active_jobs(g5k_run) == [] and leftovers(local_run) == []


class TestG5kConformance(ConformanceSuite):
    up_args = ("--no-provision", "--ssh-timeout", "60")
    command_timeout = 300.0

    @pytest.fixture
    def reservation(self, testbed, tmp_path) -> Path:
        self._server = testbed["server"]
        # a /22 subnet so that the declared ip_pool capability is exercised
        return g5k_yaml(tmp_path / "reservation.yaml", testbed,
                        networks="  networks:\n    - {id: vips, type: slash_22, roles: [vip], site: rennes}\n")

    @pytest.fixture
    def cli_env(self, testbed):
        return dict(testbed["env"])

    def leftovers(self, run_id):
        return [f"job {j['uid']} ({j['name']}) on {j['site']}: {j['state']}"
                for j in self._server.active_jobs(run_id)]


def test_archive_records_the_jobs_and_the_apis_description_of_their_nodes(testbed, tmp_path):
    """``enos archive`` of a Grid'5000 env: each job (site, uid, nodes) and each node's
    Reference API description are in the provider record; the password is nowhere."""
    import tarfile
    env_dir = tmp_path / "env"
    res = g5k_yaml(tmp_path / "reservation.yaml", testbed)
    enos(tmp_path, "up", "-f", str(res), "--env", str(env_dir), "--no-provision", env=testbed["env"])
    try:
        enos(tmp_path, "archive", "--env", str(env_dir), "-o", str(tmp_path / "g5k.tar.gz"), env=testbed["env"])
        with tarfile.open(tmp_path / "g5k.tar.gz") as tar:
            files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        rec = json.loads(files["env/provider.json"])["record"]
        jobs = {j["site"]: j for j in rec["jobs"]}
        assert sorted(jobs) == ["nancy", "rennes"] and all(j["uid"] and j["state"] == "running" for j in jobs.values())
        assert sorted(n for j in jobs.values() for n in j["assigned_nodes"]) == sorted(NODES)
        for fqdn in NODES:
            node = rec["nodes"][fqdn]
            assert node["uid"] == fqdn.split(".")[0] and node.get("network_adapters"), node.keys()
        assert not any(PASSWORD.encode() in data for data in files.values())
        check = enos(tmp_path, "archive", "--check", str(tmp_path / "g5k.tar.gz"))
        assert " ok — " in check.stdout, check.stdout
    finally:
        enos(tmp_path, "destroy", "--env", str(env_dir), env=testbed["env"])
