"""The local provider through its Python API: real namespaces, bridges, veths and sshds.

Root-only tests are marked ``root`` (skipped with a reason otherwise). Every env is
destroyed in a finaliser, and the module ends by checking that no namespace, link or
process of any run id it created is left."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from enos.errors import ConfigError, FailpointHit
from enos.provider import local as local_mod
from enos.local.plan import pick_subnet, plan_hosts
from enos.provider.local import LocalProvider
from enos.provider.provider import ProviderContext
from enos.state import MemoryJournal, State
from localhosts import RUN_IDS, alive, exists, free_run, leftovers, local_config, make_provider, ssh, wait_gone

REPO = Path(__file__).resolve().parent.parent
root = pytest.mark.root


@pytest.fixture(scope="module", autouse=True)
def nothing_left_at_the_end():
    """After the module: no namespace, link or process of any run id it used remains."""
    yield
    if os.geteuid() == 0:
        left = {r: leftovers(r) for r in set(RUN_IDS)}
        left = {r: v for r, v in left.items() if v}
        assert not left, f"leftovers after the local tests: {left}"


@pytest.fixture(autouse=True)
def free_what_the_test_made():
    """Whatever a test asserts or fails: every run id it created is freed after it (enos'
    sweep, then by hand), so one failing test never leaves hosts that fail the next one."""
    first = len(RUN_IDS)
    yield
    if os.geteuid() == 0:
        for run_id in set(RUN_IDS[first:]):
            free_run(run_id)


@pytest.fixture
def up4(tmp_path):
    """A local env of 1 control + 3 compute hosts, up; destroyed afterwards."""
    prov = make_provider(tmp_path / "env", local_config({"control": 1, "compute": 3}))
    try:
        res = prov.init()
        yield prov, res
    finally:
        prov.destroy()


# ---------------------------------------------------------------- no root needed
def test_import_is_lazy():
    """Importing the provider module must not import pyroute2 (enos --help stays fast)."""
    code = "import sys, enos.provider.local; assert 'pyroute2' not in sys.modules, 'pyroute2 imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pick_subnet_avoids_every_used_network():
    used = [ipaddress.ip_network(n) for n in ("10.200.0.0/16", "10.201.0.0/17", "10.201.128.0/24")]
    net = pick_subnet(used, seed=0)
    assert net.prefixlen == 24 and not any(net.overlaps(u) for u in used)
    assert str(net) == "10.201.129.0/24"
    # seeds spread envs over the range
    assert len({str(pick_subnet([], seed=s * 7919)) for s in range(50)}) == 50
    # a machine using all of 10.0.0.0/8 leaves nothing
    with pytest.raises(Exception, match="no free /24"):
        pick_subnet([ipaddress.ip_network("10.0.0.0/8")], seed=3)


def test_aliases_roles_and_addresses(tmp_path):
    cfg = local_config({"control": 1, "compute": 3})
    ctx = ProviderContext(config=cfg, journal=MemoryJournal(), env_dir=tmp_path, run_id="abcd1234")
    plans = plan_hosts(ctx.config, ctx.run_id, ipaddress.ip_network("10.9.8.0/24"), "10.9.8.1")
    assert [p.alias for p in plans] == ["control-1", "compute-1", "compute-2", "compute-3"]
    assert [p.address for p in plans] == ["10.9.8.2", "10.9.8.3", "10.9.8.4", "10.9.8.5"]
    assert [p.ns for p in plans] == [f"enos-abcd1234-{i}" for i in range(4)]
    assert all(len(p.veth) <= 15 for p in plans) and plans[3].veth == "evabcd12343"
    assert [p.roles for p in plans] == [["control"], ["compute"], ["compute"], ["compute"]]


def test_validate_rejects_bad_subnet_and_too_many_hosts():
    with pytest.raises(ConfigError, match="CIDR"):
        LocalProvider.validate(local_config({"a": 1}, subnet="10.1.2.300/24"))
    with pytest.raises(ConfigError, match="do not fit"):
        LocalProvider.validate(local_config({"a": 6}, subnet="10.1.2.0/29"))
    with pytest.raises(ConfigError, match="IPv4"):
        LocalProvider.validate(local_config({"a": 1}, extra_hosts={"x.example": "nope"}))
    LocalProvider.validate(local_config({"a": 5}, subnet="10.1.2.0/29"))  # 8 - net - bcast - gw = 5


def test_reservation_forms_through_the_loader(tmp_path):
    """Compact and explicit forms as the real loader makes them; errors are located."""
    from enos.task import reservation_from_data as config_from_data
    explicit = config_from_data({"provider": "local", "resources": {"machines": [
        {"roles": ["gw", "net"], "nodes": 1, "extra_hosts": {"api.example.org": "10.1.1.1"}},
        {"role": "compute", "nodes": 2}]}}, str(tmp_path / "r.yaml"))
    ctx = ProviderContext(config=explicit, journal=MemoryJournal(), env_dir=tmp_path, run_id="abcd1234")
    plans = plan_hosts(ctx.config, ctx.run_id, ipaddress.ip_network("10.9.8.0/24"), "10.9.8.1")
    assert [(p.alias, p.roles) for p in plans] == [("gw-net-1", ["gw", "net"]), ("compute-1", ["compute"]),
                                                   ("compute-2", ["compute"])]
    assert plans[0].extra_hosts == {"api.example.org": "10.1.1.1"} and plans[1].extra_hosts == {}
    bad = [({"provider": "local", "resources": {"machines": [{"roles": ["gw"], "extra_hosts": {"a.example": "x"}}]}},
            "resources.machines.0.extra_hosts.a.example: expected an IPv4 address like 10.20.0.7"),
           ({"provider": {"type": "local", "subnet": "ten"}, "resources": {"l": {"a": 1}}},
            "provider.subnet: expected a CIDR like 10.20.0.0/24, got 'ten'"),
           ({"provider": {"type": "local", "sbnet": "10.0.0.0/24"}, "resources": {"l": {"a": 1}}},
            "did you mean 'subnet'"),
           ({"provider": {"type": "local", "subnet": "10.0.0.0/30"}, "resources": {"l": {"a": 2}}},
            "provider.subnet: 2 hosts do not fit in 10.0.0.0/30")]
    for data, words in bad:
        with pytest.raises(ConfigError, match=re.escape(words)):
            config_from_data(data, str(tmp_path / "r.yaml"))


def test_locked_root_account_needs_pam():
    from enos.provider.local import root_login_needs_pam
    assert root_login_needs_pam("daemon:*:1:\nroot:!:19000:0:99999:7:::\n")            # Ubuntu: locked
    assert root_login_needs_pam("root:!$y$j9T$abc:19000::::::\n")
    assert not root_login_needs_pam("root:*:19000:0:99999:7:::\n")                      # Debian images
    assert not root_login_needs_pam("root:$y$j9T$abc:19000::::::\n")
    assert not root_login_needs_pam("")


def test_check_names_what_is_missing(tmp_path, monkeypatch):
    ctx = ProviderContext(config=local_config({"a": 1}), journal=MemoryJournal(), env_dir=tmp_path, run_id="c")
    monkeypatch.setenv("PATH", str(tmp_path))          # no ip, unshare, ssh-keygen, mount
    checks = {c.what: c for c in LocalProvider(ctx).check()}
    for what, fix in (("ip", "iproute2"), ("unshare", "util-linux"), ("ssh-keygen", "openssh-client")):
        assert not checks[what].ok and fix in checks[what].fix
    assert checks["root privileges"].ok == (os.geteuid() == 0)
    from enos.local import sshd as sshd_mod
    monkeypatch.setattr(sshd_mod, "SSHD_CANDIDATES", ())
    assert not {c.what: c for c in LocalProvider(ctx).check()}["sshd"].ok


# ---------------------------------------------------------------- real hosts
@root
def test_hosts_answer_ssh_with_own_name_hosts_file_and_scratch(up4):
    prov, res = up4
    key = prov.ctx.ssh_key
    assert [h.alias for h in res.hosts] == ["control-1", "compute-1", "compute-2", "compute-3"]
    for h in res.hosts:
        r = ssh(key, h.address, "hostname; cat /root/.bashrc | wc -c; getent hosts compute-3; "
                                 "ip -4 -o addr show eth0; test -d \"$SCRATCH\" || echo no-scratch".replace(
                                     "$SCRATCH", h.extra["enos_scratch"]))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == h.alias                       # own UTS namespace
        assert lines[1].strip() == "0"                   # empty .bashrc bind-mounted
        assert lines[2].split()[0] == res.hosts[3].address   # per-env /etc/hosts
        assert f"inet {h.address}/24" in lines[3]        # own network namespace
        assert "no-scratch" not in r.stdout
        assert h.extra["enos_netns"].startswith(f"enos-{prov.run_id}-")
        assert h.user == "root" and h.port == 22 and h.keyfile == str(key)
    scratches = {h.extra["enos_scratch"] for h in res.hosts}
    assert len(scratches) == 4


@root
def test_host_key_is_the_one_sshd_presents(up4):
    prov, res = up4
    h = res.hosts[0]
    scan = subprocess.run(["ssh-keyscan", "-t", "ed25519", h.address], capture_output=True, text=True, timeout=20)
    presented = [" ".join(line.split()[1:3]) for line in scan.stdout.splitlines() if not line.startswith("#")]
    assert presented == [h.host_key]
    assert len({x.host_key for x in res.hosts}) == 4       # one key per host


@root
def test_ip_pool_is_the_rest_of_the_subnet(up4):
    prov, res = up4
    (pool,) = res.networks
    net = ipaddress.ip_network(pool.cidr)
    addrs = {h.address for h in res.hosts}
    assert net.prefixlen == 24 and pool.gateway == str(next(net.hosts()))
    assert not addrs & set(pool.free) and pool.gateway not in pool.free
    assert len(pool.free) == 254 - 1 - 4
    assert all(ipaddress.ip_address(a) in net for a in list(pool.free) + list(addrs))
    # the subnet overlaps nothing else of this machine (its bridge holds the gateway)
    routes = subprocess.run(["ip", "-4", "-o", "route"], capture_output=True, text=True).stdout
    mine = [r for r in routes.splitlines() if r.startswith(pool.cidr)]
    assert len(mine) == 1 and f"eb{prov.run_id}" in mine[0]


@root
def test_second_init_reuses_everything_and_force_deploy_recreates(up4):
    prov, res = up4
    pids = [h["pid"] for h in prov.ctx.journal.get("local")["hosts"]]
    again = prov.init()
    assert [h.to_dict() for h in again.hosts] == [h.to_dict() for h in res.hosts]
    assert [h["pid"] for h in prov.ctx.journal.get("local")["hosts"]] == pids
    assert all(alive(p) for p in pids)
    fresh = prov.init(force_deploy=True)
    new_pids = [h["pid"] for h in prov.ctx.journal.get("local")["hosts"]]
    assert set(new_pids).isdisjoint(pids) and not any(alive(p) for p in pids)
    assert wait_gone(pids) == [], "the old sshds were killed but never reaped"
    assert [h.address for h in fresh.hosts] == [h.address for h in res.hosts]
    assert ssh(prov.ctx.ssh_key, fresh.hosts[2].address, "hostname").stdout.strip() == "compute-2"


@root
def test_dead_sshd_is_restarted_by_init(up4):
    prov, res = up4
    rec = prov.ctx.journal.get("local")["hosts"][1]
    os.kill(rec["pid"], 9)
    again = prov.init()
    assert prov.ctx.journal.get("local")["hosts"][1]["pid"] != rec["pid"]
    assert ssh(prov.ctx.ssh_key, again.hosts[1].address, "hostname").stdout.strip() == "compute-1"


@root
def test_hosts_work_with_pam_as_for_a_locked_root_account(tmp_path, monkeypatch):
    """The UsePAM path (chosen when root's password is locked, e.g. Ubuntu) logs in too."""
    monkeypatch.setattr(local_mod, "root_login_needs_pam", lambda: True)
    prov = make_provider(tmp_path / "env", local_config({"a": 1}))
    try:
        res = prov.init()
        cfg = (prov.host_dir("a-1") / "sshd_config").read_text()
        assert "UsePAM yes" in cfg
        assert ssh(prov.ctx.ssh_key, res.hosts[0].address, "hostname").stdout.strip() == "a-1"
    finally:
        prov.destroy()


@root
def test_fewer_hosts_on_reinit_removes_the_extra_ones(tmp_path):
    prov = make_provider(tmp_path / "env", local_config({"web": 3}))
    try:
        prov.init()
        gone_ns = f"enos-{prov.run_id}-2"
        prov.ctx.config = local_config({"web": 2})
        res = prov.init()
        assert [h.alias for h in res.hosts] == ["web-1", "web-2"]
        assert not any(gone_ns in x for x in leftovers(prov.run_id))
        assert len([x for x in leftovers(prov.run_id) if x.startswith("netns")]) == 2
    finally:
        prov.destroy()


@root
def test_cold_destroy_removes_everything_and_is_idempotent(tmp_path):
    env = tmp_path / "env"
    prov = make_provider(env, local_config({"a": 2, "b": 1}))
    prov.init()
    pids = [h["pid"] for h in prov.ctx.journal.get("local")["hosts"]]
    run_id = prov.run_id
    # what lasts, counted by name and by recorded PID (a ps scan would also count the
    # short-lived sshd a connection forks)
    made = [x for x in leftovers(run_id) if not x.startswith("process ")]
    assert sorted(made) == sorted([f"netns enos-{run_id}-{n}" for n in range(3)] + [f"link eb{run_id}"]
                                  + [f"link ev{run_id}{n}" for n in range(3)]), made
    assert len(pids) == 3 and all(alive(p) for p in pids)
    cold = make_provider(env, local_config({"a": 2, "b": 1}))   # new provider from the saved state
    cold.destroy()
    assert leftovers(run_id) == []
    assert wait_gone(pids) == [], "sshd zombies left after destroy"
    assert not (env / f"local-{run_id}").exists()
    cold.destroy()
    make_provider(env, local_config({"a": 2, "b": 1})).destroy()
    assert leftovers(run_id) == []


@root
def test_destroy_survives_hosts_removed_behind_its_back(tmp_path):
    prov = make_provider(tmp_path / "env", local_config({"a": 3}))
    prov.init()
    subprocess.run(["ip", "netns", "pids", f"enos-{prov.run_id}-1"], check=True, capture_output=True)
    subprocess.run(f"kill -9 $(ip netns pids enos-{prov.run_id}-1); ip netns del enos-{prov.run_id}-1",
                   shell=True, check=True)
    prov.destroy()
    assert leftovers(prov.run_id) == []


LOCAL_POINTS = ["local.subnet_picked", "local.bridge_created", "local.bridge_addressed",
                "local.hosts_planned", "local.netns_created", "local.veth_created",
                "local.netns_configured", "local.veth_attached", "local.sshd_started",
                "local.sshd_recorded"]


@root
def test_every_checkpoint_is_reached(tmp_path, monkeypatch):
    log = tmp_path / "points.log"
    monkeypatch.setenv("ENOS_FAILPOINT_LOG", str(log))
    prov = make_provider(tmp_path / "env", local_config({"a": 1, "b": 1}))
    try:
        prov.init()
    finally:
        prov.destroy()
    assert sorted(set(log.read_text().split())) == sorted(LOCAL_POINTS)


@root
@pytest.mark.parametrize("point", LOCAL_POINTS)
def test_error_at_checkpoint_then_destroy_leaves_nothing(tmp_path, monkeypatch, point):
    monkeypatch.setenv("ENOS_FAILPOINTS", f"{point}=raise")
    prov = make_provider(tmp_path / "env", local_config({"a": 1, "b": 2}))
    with pytest.raises(FailpointHit):
        prov.init()
    monkeypatch.delenv("ENOS_FAILPOINTS")
    assert leftovers(prov.run_id) or point == "local.subnet_picked"
    make_provider(tmp_path / "env", local_config({"a": 1, "b": 2})).destroy()
    assert leftovers(prov.run_id) == []


_INIT_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from localhosts import local_config, make_provider
    prov = make_provider({env!r}, local_config({{"a": 1, "b": 2}}, subnet={subnet!r}))
    res = prov.init()
    print(json.dumps({{"run_id": prov.run_id, "hosts": [h.to_dict() for h in res.hosts],
                      "cidr": res.networks[0].cidr}}))
""")


def _init_in_subprocess(env: Path, extra_env=None, subnet=None) -> subprocess.Popen:
    code = _INIT_SCRIPT.format(tests=str(REPO / "tests"), env=str(env), subnet=subnet)
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **(extra_env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@root
@pytest.mark.parametrize("point", LOCAL_POINTS)
def test_kill_at_checkpoint_then_cold_destroy_leaves_nothing(tmp_path, point):
    env = tmp_path / "env"
    p = _init_in_subprocess(env, {"ENOS_FAILPOINTS": f"{point}=kill"})
    out, err = p.communicate(timeout=60)
    assert p.returncode == -9, err
    run_id = State.load(env).run_id
    RUN_IDS.append(run_id)
    if point != "local.subnet_picked":
        assert leftovers(run_id), "the kill came before anything was created"
    make_provider(env, local_config({"a": 1, "b": 2})).destroy()
    assert leftovers(run_id) == []


@root
def test_sweep_finds_everything_without_state(tmp_path):
    env = tmp_path / "env"
    p = _init_in_subprocess(env)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    run_id = json.loads(out)["run_id"]
    RUN_IDS.append(run_id)
    assert leftovers(run_id)
    (env / "state.json").unlink()
    ctx = ProviderContext(config=local_config({"a": 1}), journal=MemoryJournal(),
                          env_dir=tmp_path / "elsewhere", run_id=run_id)
    removed = LocalProvider(ctx).sweep()
    assert leftovers(run_id) == []
    assert any(r.startswith("namespace") for r in removed) and f"link eb{run_id}" in removed
    assert LocalProvider(ctx).sweep() == []


@root
def test_two_envs_at_once_get_disjoint_subnets_and_do_not_interfere(tmp_path):
    procs = [_init_in_subprocess(tmp_path / f"env{i}") for i in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    RUN_IDS.extend(r["run_id"] for r in results)
    try:
        a, b = (ipaddress.ip_network(r["cidr"]) for r in results)
        assert not a.overlaps(b)
        key0 = tmp_path / "env0" / "ssh" / "id_ed25519"
        key1 = tmp_path / "env1" / "ssh" / "id_ed25519"
        # destroying env0 leaves env1 working
        make_provider(tmp_path / "env0", local_config({"a": 1, "b": 2})).destroy()
        assert leftovers(results[0]["run_id"]) == []
        for h in results[1]["hosts"]:
            assert ssh(key1, h["address"], "hostname").stdout.strip() == h["alias"]
        # and env0's key does not open env1's hosts
        assert ssh(key0, results[1]["hosts"][0]["address"], "true").returncode != 0
    finally:
        for i in range(2):
            make_provider(tmp_path / f"env{i}", local_config({"a": 1, "b": 2})).destroy()


@root
def test_subnet_option_is_used_and_a_clash_is_a_config_error(tmp_path):
    first = make_provider(tmp_path / "e1", local_config({"a": 2}, subnet="10.199.77.0/24"))
    try:
        res = first.init()
        assert [h.address for h in res.hosts] == ["10.199.77.2", "10.199.77.3"]
        assert res.networks[0].gateway == "10.199.77.1"
        clash = make_provider(tmp_path / "e2", local_config({"a": 1}, subnet="10.199.77.128/25"))
        with pytest.raises(ConfigError, match="overlaps 10.199.77.0/24"):
            clash.init()
        clash.destroy()
        assert leftovers(clash.run_id) == []
    finally:
        first.destroy()


@root
def test_resume_repicks_a_recorded_subnet_taken_meanwhile(tmp_path, monkeypatch):
    """kill -9 after recording the subnet but before the bridge held it; another env takes
    that subnet; the resumed init (a new process's journal) picks another one instead of
    sharing it."""
    env = tmp_path / "env"
    p = _init_in_subprocess(env, {"ENOS_FAILPOINTS": "local.subnet_picked=kill"})
    p.communicate(timeout=60)
    assert p.returncode == -9
    prov = make_provider(env, local_config({"a": 1, "b": 2}))
    taken = prov.ctx.journal.get("local")["subnet"]
    squatter = "eb" + os.urandom(4).hex()
    gw = str(next(ipaddress.ip_network(taken).hosts()))
    subprocess.run(["ip", "link", "add", squatter, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{gw}/24", "dev", squatter], check=True)
        res = prov.init()
        assert res.networks[0].cidr != taken
        assert not ipaddress.ip_network(res.networks[0].cidr).overlaps(ipaddress.ip_network(taken))
        assert ssh(prov.ctx.ssh_key, res.hosts[1].address, "hostname").stdout.strip() == "b-1"
    finally:
        subprocess.run(["ip", "link", "del", squatter], check=False)
        prov.destroy()


@root
def test_extra_hosts_are_resolvable_on_the_host(tmp_path):
    prov = make_provider(tmp_path / "env", local_config({"gw": 1}, extra_hosts={"node-1.rennes.grid5000.fr": "10.77.0.5"}))
    try:
        res = prov.init()
        r = ssh(prov.ctx.ssh_key, res.hosts[0].address, "getent hosts node-1.rennes.grid5000.fr")
        assert r.stdout.split()[0] == "10.77.0.5"
    finally:
        prov.destroy()


@root
def test_not_root_is_refused_before_anything_is_created(tmp_path):
    """In a user namespace (uid 65534, no capability on this machine's network) init
    refuses with NotRoot (exit code 2) and creates nothing."""
    env = tmp_path / "env"
    env.mkdir()
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from enos.errors import NotRoot
        from enos.provider.local import LocalProvider
        from enos.provider.provider import ProviderContext
        from enos.state import MemoryJournal
        from localhosts import local_config
        assert os.geteuid() != 0
        ctx = ProviderContext(config=local_config({{"a": 1}}), journal=MemoryJournal(), env_dir={str(env)!r},
                              run_id="0badf00d")
        try:
            LocalProvider(ctx).init()
        except NotRoot as e:
            print("exit", e.exit_code, e)
    """)
    r = subprocess.run(["unshare", "--user", sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.startswith("exit 2 ") and "needs root" in r.stdout, r.stdout + r.stderr
    assert leftovers("0badf00d") == [] and os.listdir(env) == []


@root
def test_twenty_hosts(tmp_path):
    """20 hosts come up (every sshd answers as its own host) and destroy leaves nothing.
    Their speed (target: up ≤ 3 s, destroy ≤ 1.5 s) is a row of bench/run.py, measured
    against a baseline in the same run, not a timing assertion here; the times are printed."""
    prov = make_provider(tmp_path / "env", local_config({"control": 2, "compute": 18}))
    try:
        t = time.monotonic()
        res = prov.init()
        t_up = time.monotonic() - t
        assert len(res.hosts) == 20
        r = ssh(prov.ctx.ssh_key, res.hosts[19].address, "hostname")
        assert r.stdout.strip() == "compute-18"
    finally:
        t = time.monotonic()
        prov.destroy()
        t_down = time.monotonic() - t
    assert leftovers(prov.run_id) == []
    print(f"\n20 local hosts: up {t_up:.2f}s, destroy {t_down:.2f}s (load {os.getloadavg()[0]:.1f})")
