"""Network constraints on real ``local`` hosts (sshd in network namespaces), through the
real CLI: a rate limit really takes effect (a TCP transfer between namespace hosts is
measured), delay/loss are refused before anything changes when the hosts' kernel lacks
sch_netem (as the facts enos gathered say; applied when it has it),
apply is idempotent and recorded, the failing tc command is named, --reset removes only
what enos created, and facts are gathered and cached."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from enoscli import enos
from localhosts import in_run, leftovers

pytestmark = pytest.mark.root

RATE_MBIT = 10


def _ns(state: dict, alias: str) -> str:
    """The namespace of a local host, from the provider's journal in the state file."""
    found = [v for v in _walk(state["journal"]["local"]) if isinstance(v, dict) and v.get("alias") == alias]
    return found[0]["ns"]


def _walk(value):
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _tc(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True,
                          check=True).stdout


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def _state(env: Path) -> dict:
    return json.loads((env / "state.json").read_text())


def test_destroy_removes_the_trees_first(tmp_path):
    """'enos destroy' removes enos' tc trees before freeing the machines (static hosts and
    testbed nodes outlive the env): here observed by the record and the hosts' qdiscs
    right before the provider frees them (a failpoint kills destroy just after)."""
    (tmp_path / "reservation.yaml").write_text("""provider: local
resources:
  local:
    a: 1
    b: 1
network_constraints:
  enable: true
  default_rate: 5mbit
""")
    env = tmp_path / "env"
    enos(tmp_path, "up", "--no-provision", "--env", str(env))
    st = _state(env)
    assert set(st["tc"]["hosts"]) == {"a-1", "b-1"}
    p = enos(tmp_path, "destroy", "--env", str(env), env={"ENOS_FAILPOINTS": "task.destroying=kill"}, check=False)
    assert p.returncode == -9, p.stderr
    assert _state(env)["tc"]["hosts"] == {}
    for a in ("a-1", "b-1"):
        assert "htb" not in _tc(_ns(st, a), "qdisc", "show", "dev", "eth0")
    enos(tmp_path, "destroy", "--env", str(env))
    assert leftovers(st["run_id"]) == []


@pytest.fixture
def env3(tmp_path):
    """A local env: client ×1, server ×2 with a 10mbit default rate between the roles,
    applied by 'enos up' (enable: true). Destroyed at the end; nothing left."""
    (tmp_path / "reservation.yaml").write_text(f"""provider: local
resources:
  local:
    client: 1
    server: 2
network_constraints:
  enable: true
  default_rate: {RATE_MBIT}Mbit
""")
    env = tmp_path / "env"
    p = enos(tmp_path, "up", "--no-provision", "--env", str(env), check=False)
    run_id = _state(env)["run_id"]
    try:
        assert p.returncode == 0, p.stderr
        yield tmp_path, env
    finally:
        enos(tmp_path, "destroy", "--env", str(env))
        assert leftovers(run_id) == []


def test_rate_limit_really_takes_effect_and_test_reports_it(env3):
    cwd, env = env3
    st = _state(env)
    # what the kernel of each namespace host holds (read with tc itself, not through enos)
    cls = _tc(_ns(st, "client-1"), "class", "show", "dev", "eth0")
    assert f"rate {RATE_MBIT}Mbit" in cls, cls
    filters = _tc(_ns(st, "client-1"), "filter", "show", "dev", "eth0")
    assert filters.count("flowid 1:10") == 2, filters            # one per server address
    t = enos(cwd, "tc", "--test", "--env", str(env), "-o", "json", check=False)
    report = json.loads(t.stdout)["test"]
    print(json.dumps(report, indent=2))
    pairs = {(m["src"], m["dst"]): m for m in report["measures"]}
    assert set(pairs) == {("client", "server"), ("server", "client")}
    for m in pairs.values():
        assert m["rate_requested_bit"] == RATE_MBIT * 10**6
        assert abs(m["rate_bit"] - RATE_MBIT * 10**6) <= 0.15 * RATE_MBIT * 10**6, m   # real transfer
        assert m["rtt_ms"] is not None and m["loss_pct"] == 0
    assert t.returncode == 0 and report["ok"], t.stderr
    # measured against a file asking 4× more: out of tolerance → exit 1, the pair named
    (cwd / "faster.yaml").write_text((cwd / "reservation.yaml").read_text().replace(f"{RATE_MBIT}Mbit",
                                                                                    f"{4 * RATE_MBIT}mbit"))
    bad = enos(cwd, "tc", "--test", "-f", "faster.yaml", "--env", str(env), check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "client→server" in bad.stderr and "OUT: rate" in bad.stdout and "Traceback" not in bad.stderr


def test_unshaped_after_reset_and_apply_is_idempotent(env3):
    cwd, env = env3
    st = _state(env)
    again = enos(cwd, "tc", "--env", str(env))
    assert again.stdout.count(": unchanged") == 3, again.stdout
    assert set(_state(env)["tc"]["hosts"]) == {"client-1", "server-1", "server-2"}
    r = enos(cwd, "tc", "--reset", "--env", str(env))
    assert r.stdout.count(": removed") == 3, r.stdout
    for alias in ("client-1", "server-1", "server-2"):
        assert "htb" not in _tc(_ns(st, alias), "qdisc", "show", "dev", "eth0")
    assert _state(env)["tc"]["hosts"] == {}
    # unshaped, the same transfer runs far above the limit
    t = enos(cwd, "tc", "--test", "--env", str(env), "-o", "json", check=False)
    m = json.loads(t.stdout)["test"]["measures"][0]
    assert m["rate_bit"] > 3 * RATE_MBIT * 10**6, m
    assert t.returncode == 1          # the constraint asked for is not there: out of tolerance


def _has_netem(ns: str) -> bool:
    """Whether the kernel of a namespace host takes a netem qdisc, found out by asking the
    kernel itself (a netem qdisc on the host's own loopback, removed at once)."""
    p = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                        "delay", "1ms"], capture_output=True, text=True)
    if p.returncode == 0:
        subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "lo", "root"], check=True)
    return p.returncode == 0


def test_delay_and_loss_refused_without_netem_nothing_changed(env3):
    """What enos does with delay/loss follows the hosts' kernel as its facts report it, and
    the facts agree with the kernel itself: without sch_netem, refused before anything
    changes; with it, applied."""
    cwd, env = env3
    st = _state(env)
    facts = json.loads(enos(cwd, "info", "--facts", "--env", str(env), "-o", "json").stdout)
    netem = {a: f["netem"] for a, f in facts.items()}
    assert set(netem) == {"client-1", "server-1", "server-2"} and len(set(netem.values())) == 1, netem
    has = _has_netem(_ns(st, "client-1"))
    assert (netem["client-1"] != "missing") == has, (netem, has)      # the facts tell the truth
    def tree(a):   # classes and filters (the qdisc line carries packet counters)
        return _tc(_ns(st, a), "class", "show", "dev", "eth0") + _tc(_ns(st, a), "filter", "show", "dev", "eth0")
    before = {a: tree(a) for a in ("client-1", "server-1")}
    assert all("rate 10Mbit" in t for t in before.values())
    for extra in ("  default_delay: 10ms\n", "  default_loss: 1%\n"):
        (cwd / "slow.yaml").write_text((cwd / "reservation.yaml").read_text() + extra)
        p = enos(cwd, "tc", "-f", "slow.yaml", "--env", str(env), check=False)
        assert "Traceback" not in p.stderr
        if has:
            assert p.returncode == 0 and "netem" in _tc(_ns(st, "client-1"), "qdisc", "show", "dev", "eth0")
            continue
        assert p.returncode == 1, p.stderr
        assert "sch_netem" in p.stderr and "Nothing was changed" in p.stderr
        assert {a: tree(a) for a in before} == before
    if has:
        enos(cwd, "tc", "--env", str(env))          # back to the rate-only tree the other tests expect
        return
    # --dry-run still shows the commands a netem kernel would get
    d = enos(cwd, "tc", "--dry-run", "-f", "slow.yaml", "--env", str(env))
    assert "netem limit 100000 loss 1%" in d.stdout and "warning" in d.stderr


def test_failing_tc_command_is_named_and_reset_spares_foreign_qdiscs(env3):
    cwd, env = env3
    st = _state(env)
    enos(cwd, "tc", "--reset", "--env", str(env))
    # someone else's root qdisc on server-2: enos' 'qdisc add root' there must fail, be
    # reported with tc's message, and the other hosts still get their tree
    ns2 = _ns(st, "server-2")
    subprocess.run(["ip", "netns", "exec", ns2, "tc", "qdisc", "add", "dev", "eth0", "root", "handle", "7:",
                    "tbf", "rate", "1gbit", "burst", "32kbit", "latency", "400ms"], check=True)
    p = enos(cwd, "tc", "--env", str(env), check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "server-2: 'tc qdisc add dev eth0 root handle 1: htb direct_qlen 10000':" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert "htb 1: root" in _tc(_ns(st, "client-1"), "qdisc", "show", "dev", "eth0")
    assert set(_state(env)["tc"]["hosts"]) == {"client-1", "server-1"}
    # after apply, the user replaces client-1's tree: reset leaves that one alone
    c1 = _ns(st, "client-1")
    subprocess.run(["ip", "netns", "exec", c1, "tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "8:",
                    "tbf", "rate", "1gbit", "burst", "32kbit", "latency", "400ms"], check=True)
    r = enos(cwd, "tc", "--reset", "--env", str(env))
    assert "client-1: already gone" in r.stdout and "server-1: removed" in r.stdout
    assert "tbf 8: root" in _tc(c1, "qdisc", "show", "dev", "eth0")
    assert "tbf 7: root" in _tc(ns2, "qdisc", "show", "dev", "eth0")


def test_facts_are_gathered_once_cached_and_refreshed(env3):
    cwd, env = env3
    st = _state(env)
    facts = st["facts"]["hosts"]            # gathered by 'enos up' (for tc)
    assert set(facts) == {"client-1", "server-1", "server-2"}
    bridge = st["resources"]["networks"][0]["name"]
    for h in st["resources"]["hosts"]:
        f = facts[h["alias"]]
        (eth0,) = [i for i in f["interfaces"] if i["name"] == "eth0"]
        v4 = [a for a in eth0["addresses"] if a["family"] == "ipv4"]
        assert v4[0]["address"] == h["address"] and v4[0]["network"] == bridge and v4[0]["ssh"]
        assert f["cpus"] >= 1 and f["memory_mb"] > 100 and f["kernel"] and f["os"] and "python3" in f["tools"]
    stamp = st["facts"]["gathered"]
    text = enos(cwd, "info", "--facts", "--env", str(env)).stdout
    assert "client-1" in text and "(ssh)" in text and "NETEM" in text
    assert _state(env)["facts"]["gathered"] == stamp                   # cached
    enos(cwd, "info", "--facts", "--refresh", "--env", str(env), "-o", "json")
    assert _state(env)["facts"]["gathered"] != stamp


def test_python_api_facts_tc_test_reset(tmp_path):
    """env.facts(), env.tc(dict), env.tc_test(), env.tc_reset() on real namespace hosts;
    a bad constraints dict raises ConfigError naming the key; a CLI env is used from Python."""
    import enos as enos_api
    from enos.errors import ConfigError
    from enos.experiment.netprobe import TcTestFailed
    reservation = {"provider": "local", "resources": {"local": {"a": 1, "b": 1}}}
    with enos_api.up(reservation, base=str(tmp_path), provision=False, quiet=True) as env:
        run_id = env.run_id
        facts = env.facts()
        assert set(facts) == {"a-1", "b-1"} and all(f["kernel"] for f in facts.values())
        with pytest.raises(ConfigError, match="default_rate"):
            env.tc({"default_rate": "fast"})
        with pytest.raises(ConfigError, match="unknown group or role 'c'"):
            env.tc({"constraints": [{"src": "a", "dst": "c", "rate": "1mbit"}]})
        nc = {"constraints": [{"src": "a", "dst": "b", "rate": "8mbit", "symmetric": True}]}
        assert env.tc(nc) == {"a-1": "applied", "b-1": "applied"}
        report = env.tc_test(nc, check=True)
        assert report.ok and len(report.measures) == 2, report.table()
        for m in report.measures:
            assert abs(m.rate_bit - 8e6) <= 0.15 * 8e6
        # a CLI process sees what Python applied: the same constraints from a file are
        # "unchanged" on both hosts (the CLI read the recorded trees and found them live),
        # and its measure agrees; then reset from Python removes them
        (tmp_path / "nc.yaml").write_text("provider: local\nresources:\n  local:\n    a: 1\n    b: 1\n"
                                          "network_constraints:\n  constraints:\n"
                                          "    - {src: a, dst: b, rate: 8mbit, symmetric: true}\n")
        p = enos(tmp_path, "tc", "--env", str(env.env_dir), "-f", str(tmp_path / "nc.yaml"))
        assert "a-1: unchanged" in p.stdout and "b-1: unchanged" in p.stdout, p.stdout
        assert env.tc_reset() == {"a-1": "removed", "b-1": "removed"}
        with pytest.raises(TcTestFailed):
            env.tc_test(nc, check=True)
    assert leftovers(run_id) == []


def test_ctrl_c_during_tc_test_exits_130_and_leaves_no_process(env3):
    """A real SIGINT to the process group of 'enos tc --test' (a terminal's Ctrl-C) while a
    probe runs: exit 130, no process of that group left, no probe left in the namespaces."""
    import os
    import signal
    import sys
    import time
    cwd, env = env3
    st = _state(env)
    e = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
    proc = subprocess.Popen([sys.executable, "-m", "enos", "tc", "--test", "--env", str(env)], cwd=str(cwd),
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    probe = "python3 -c"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:       # wait until both probe programs run (python, not the shell)
        ps = subprocess.run(["ps", "-ww", "-eo", "pid=,comm=,args="], capture_output=True, text=True).stdout
        # this env's probes only (another test run on the machine may probe at the same time:
        # a Ctrl-C sent when another run's probes are seen can reach enos while it starts)
        running = [line.split(None, 2) for line in ps.splitlines() if probe in line]
        kinds = {k for pid, comm, args in running if comm.startswith("python") and in_run(pid, st["run_id"])
                 for k in ("serve", "client") if f" {k} " in args}
        if kinds == {"serve", "client"}:
            break
        time.sleep(0.05)
    else:
        pytest.fail("no probe started")
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    print(f"exit {proc.returncode} {took:.2f}s after SIGINT")
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    group = subprocess.run(["ps", "-eo", "pgid="], capture_output=True, text=True).stdout.split()
    assert str(proc.pid) not in group
    deadline = time.monotonic() + 10        # the probe programs notice their session is gone
    while time.monotonic() < deadline:
        left = [line for a in ("client-1", "server-1", "server-2")
                for line in subprocess.run(["ip", "netns", "pids", _ns(st, a)], capture_output=True,
                                           text=True).stdout.split()
                if probe in _cmdline(line)]
        if not left:
            break
        time.sleep(0.2)
    assert not left, left
