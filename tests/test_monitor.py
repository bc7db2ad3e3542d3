"""The monitor (enos.experiment.monitor) on real ``local`` namespace hosts: exact totals
from the hosts' counters for blocks of 0.2 s and 20 s (checked against a known payload and
against the same counters read independently around the block), the samples as CSV,
DataFrame and figure, and nothing left on the hosts after a ``kill -9`` of enos (counted on
the hosts, which a static env on them leaves alive)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import enos
from enos.experiment.monitor import COLUMNS
from enoscli import enos as enos_cli
from localhosts import RUN_IDS, leftovers

pytestmark = pytest.mark.root

RESERVATION = {"provider": "local", "resources": {"local": {"server": 1, "client": 2}}}
PORT = 5301

SINK = textwrap.dedent("""\
    import socket, sys, threading
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
    got = []
    def drain(c):
        n = 0
        while True:
            b = c.recv(1 << 16)
            if not b:
                break
            n += len(b)
        got.append(n)
        c.close()
    threads = [threading.Thread(target=drain, args=(s.accept()[0],)) for _ in range(int(sys.argv[3]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(got))
""")

SOURCE = textwrap.dedent("""\
    import socket, sys, time
    addr, port, nbytes, chunks, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    c = socket.create_connection((addr, port))
    block = b"x" * (nbytes // chunks)
    for i in range(chunks):
        c.sendall(block)
        if i < chunks - 1:
            time.sleep(every)
    c.close()
""")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("monitor")
    e = enos.up(RESERVATION, keep=True, base=base, provision=False, quiet=True)
    RUN_IDS.append(e.run_id)
    scratch = Path(e.hosts[0].extra["enos_scratch"]).parent.parent    # the shared disk: one copy
    (scratch / "sink.py").write_text(SINK)
    (scratch / "source.py").write_text(SOURCE)
    e.scripts = scratch
    try:
        yield e
    finally:
        e.destroy()
        assert leftovers(e.run_id) == []


def totals_hosts(env):
    return [h.alias for h in env.hosts]


def _counters(env, aliases):
    """rx/tx bytes of eth0 of each host, read independently of the monitor (sysfs)."""
    res = env.run("cat /sys/class/net/eth0/statistics/rx_bytes /sys/class/net/eth0/statistics/tx_bytes",
                  roles=aliases)
    return {r.host.alias: tuple(int(x) for x in r.stdout.split()) for r in res}


@pytest.mark.slow
@pytest.mark.parametrize("seconds,chunks", [(0.2, 1), (20, 20)])
def test_totals_are_exact_for_short_and_long_blocks(env, seconds, chunks, tmp_path):
    server = env.roles["server"][0]
    clients = [h.alias for h in env.roles["client"]]
    payload = 3_000_000
    sink = env.run(f"python3 {env.scripts}/sink.py {server.address} {PORT} {len(clients)}",
                   roles="server", background=True)
    time.sleep(0.3)
    before = _counters(env, ["server"] + clients)
    with env.monitor(interval=1.0) as mon:
        t1 = time.monotonic()
        env.run(f"python3 {env.scripts}/source.py {server.address} {PORT} {payload} {chunks} "
                f"{seconds / chunks}", roles="client")
        time.sleep(max(0.0, seconds - (time.monotonic() - t1)))
        body = time.monotonic() - t1
    after = _counters(env, ["server"] + clients)
    assert _on_hosts(env, f"enos-monitor-{mon.id}") == {a: (0, 0) for a in totals_hosts(env)}   # stopped on exit
    received = int(sink.wait()[0].stdout)
    assert received == payload * len(clients)
    totals = mon.totals()
    assert mon.errors == {} and set(totals) == {"server-1", *clients}
    srv = totals["server-1"]
    # every payload byte is in the total, and nothing outside the block is
    assert received <= srv["net_rx_bytes"] <= after["server-1"][0] - before["server-1"][0], (srv, before, after)
    for c in clients:
        assert payload <= totals[c]["net_tx_bytes"] <= after[c][1] - before[c][1], (totals[c], before, after)
    # TCP/IP headers and the monitor's own SSH traffic: a few per cent, not more
    assert srv["net_rx_bytes"] <= received * 1.08 + 64_000
    for t in totals.values():
        assert body - 0.05 <= t["duration"] <= body + 2.0, (t, body)
        assert t["samples"] >= 2 and 0.0 <= t["cpu_percent"] <= 100.0
    rows = mon.rows
    for alias, t in totals.items():
        mine = [r for r in rows if r["host"] == alias]
        assert mine[0]["kind"] == "start" and mine[-1]["kind"] == "end"
        assert all(b["net_rx_bytes"] >= a["net_rx_bytes"] and b["elapsed"] >= a["elapsed"]
                   for a, b in zip(mine, mine[1:]))
        assert (mine[-1]["net_rx_bytes"], mine[-1]["net_tx_bytes"]) == (t["net_rx_bytes"], t["net_tx_bytes"])
        if seconds >= 20:
            assert len(mine) >= 15, len(mine)           # sampled along the way, about once a second
    # CSV, DataFrame and a figure per role
    path = mon.to_csv(tmp_path / "monitor.csv")
    import csv
    with open(path) as f:
        back = list(csv.DictReader(f))
    assert len(back) == len(rows) and list(back[0]) == list(COLUMNS)
    df = mon.to_dataframe()
    assert list(df.columns) == list(COLUMNS) and len(df) == len(rows)
    assert df.groupby("host")["net_rx_bytes"].max()["server-1"] == srv["net_rx_bytes"]
    png = tmp_path / "monitor.png"
    mon.plot(path=png)
    from PIL import Image, ImageStat
    with Image.open(png) as im:
        assert im.size[0] >= 600 and im.size[1] >= 600
        assert ImageStat.Stat(im.convert("L")).var[0] > 100       # not blank
    print(f"FIGURE monitor {seconds}s: server rx {srv['net_rx_bytes']} B for {received} B of payload, "
          f"independent counters {after['server-1'][0] - before['server-1'][0]} B, "
          f"{srv['samples']} samples, duration {srv['duration']} s (block {body:.2f} s)")


def _on_hosts(env, monitor_tag: str = "enos-monitor") -> dict:
    """Count, on each host, the processes whose command line holds ``monitor_tag`` and the
    files under /tmp whose name holds it. (Local hosts share this machine's PID space and
    disk: each host sees the same processes and files.)"""
    t1, t2 = monitor_tag[:4], monitor_tag[4:]
    script = (f"t='{t1}''{t2}'; n=0; for d in /proc/[0-9]*; do [ \"${{d#/proc/}}\" = \"$$\" ] && continue; "
              "c=$(tr '\\000' ' ' < $d/cmdline 2>/dev/null) || continue; "
              "case \"$c\" in *\"$t\"*) n=$((n+1));; esac; done; "
              "f=$(find /tmp -maxdepth 3 -name \"*$t*\" 2>/dev/null | wc -l); echo $n $f")
    return {r.host.alias: tuple(int(x) for x in r.stdout.split()) for r in env.run(script)}


KILLED = textwrap.dedent("""\
    import sys, time, enos
    env = enos.load(sys.argv[1])
    mon = env.monitor(interval=0.2).start()
    print("started", mon.id, flush=True)
    time.sleep(600)
""")


@pytest.fixture
def static_env(env, tmp_path):
    """A static env on two of the local hosts: destroying it leaves the hosts alive, so
    what it left on them can be counted on them."""
    key = env.hosts[0].keyfile
    static = {"provider": {"type": "static"},
              "resources": {h.roles[0]: [{"address": h.address, "alias": "s-" + h.alias, "user": "root",
                                          "keyfile": key, "host_key": h.host_key}] for h in env.hosts
                            if h.alias in ("server-1", "client-1")}}
    (tmp_path / "static.yaml").write_text(yaml.safe_dump(static))
    senv = enos.up(str(tmp_path / "static.yaml"), keep=True, base=tmp_path, provision=False, quiet=True)
    yield senv
    senv.destroy()


def _kill9_leaving_a_stopped_loop(env, senv, tmp_path) -> str:
    """Start a monitor on ``senv`` in another process, SIGSTOP its loop on client-1 (as if
    blocked on a dead connection), kill -9 the process; return the monitor's tag once the
    other loop has ended by itself (its session is gone)."""
    (tmp_path / "killed.py").write_text(KILLED)
    p = subprocess.Popen([sys.executable, str(tmp_path / "killed.py"), str(senv.env_dir)],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("started"), line
        mid = line.split()[1]
        tag = f"enos-monitor-{mid}"
        assert _on_hosts(env, tag)["server-1"] == (2, 0)       # one loop per static host, no file
        assert json.loads((senv.env_dir / "monitors" / f"{mid}.json").read_text())["pid"] == p.pid
        found = env.run(f"for d in /proc/[0-9]*; do case \"$(tr '\\000' ' ' < $d/cmdline 2>/dev/null)\" in "
                        f"sh*'{mid}'*) echo ${{d#/proc/}};; esac; done", roles="client-1")[0].stdout.split()
        stopped = [x for x in found if x.isdigit()]
        assert stopped
        os.kill(int(stopped[0]), signal.SIGSTOP)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    time.sleep(2.0)                          # the other loop's next sample meets a closed pipe
    counts = _on_hosts(env, tag)
    assert counts["server-1"] == (1, 0), counts                 # only the stopped one is left
    return tag


@pytest.mark.slow
def test_kill9_then_the_next_monitor_ends_what_was_left(env, static_env, tmp_path):
    tag = _kill9_leaving_a_stopped_loop(env, static_env, tmp_path)
    with static_env.monitor(roles="server") as mon:             # starts by ending the dead one's loops
        pass
    assert mon.totals()["s-server-1"]["samples"] == 2
    time.sleep(0.5)
    assert _on_hosts(env, tag) == {h.alias: (0, 0) for h in env.hosts}
    assert not list((static_env.env_dir / "monitors").glob("*.json"))


@pytest.mark.slow
def test_kill9_then_destroy_leaves_nothing_on_the_hosts(env, static_env, tmp_path):
    """The closing figure: after kill -9 then ``enos destroy``, nothing holds the tag on the
    hosts, process or file in /tmp, counted on the hosts (which outlive a static env)."""
    tag = _kill9_leaving_a_stopped_loop(env, static_env, tmp_path)
    p = enos_cli(tmp_path, "destroy", "--env", str(static_env.env_dir))
    assert "ended 1 monitor(s) left running" in p.stderr, p.stderr
    time.sleep(0.5)
    counts = _on_hosts(env, tag)
    assert counts == {h.alias: (0, 0) for h in env.hosts}, counts
    print(f"FIGURE monitor kill -9 + enos destroy: left on the hosts (processes, /tmp files): {counts}")


INTERRUPTED = textwrap.dedent("""\
    import sys, time, enos
    env = enos.load(sys.argv[1])
    with env.monitor(interval=float(sys.argv[2])) as mon:
        print("started", mon.id, flush=True)
        time.sleep(600)
""")


@pytest.mark.slow
def test_ctrl_c_ends_the_loops_at_once(env, tmp_path):
    """SIGINT to the process group of a script inside ``with env.monitor()`` (a terminal's
    Ctrl-C): the script is gone within 2 s and, counted on the hosts, no loop of that
    monitor is left nor its ``sleep`` — although the loops' next sample is ~29 s away, so
    they are ended, not left to die at their next sample — and its record is gone."""
    from promise import communicate_or_dump
    interval = "29.37"                  # an unusual 'sleep 29.37' to find on the hosts
    (tmp_path / "interrupted.py").write_text(INTERRUPTED)
    p = subprocess.Popen([sys.executable, "-X", "faulthandler", str(tmp_path / "interrupted.py"), str(env.env_dir), interval],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("started"), line + p.stderr.read()
        tag = f"enos-monitor-{line.split()[1]}"
        assert _on_hosts(env, tag)["server-1"] == (3, 0)          # a loop per host, no file
        deadline = time.monotonic() + 10          # each loop's text holds it, and each sleep
        while _on_hosts(env, f"sleep {interval}")["server-1"][0] != 6:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        t = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        _, err = communicate_or_dump(p, 30, "SIGINT inside env.monitor()")
        took = time.monotonic() - t
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    from promise import assert_interrupted_in_time
    assert_interrupted_in_time("SIGINT inside env.monitor()", took)
    assert "KeyboardInterrupt" in err
    counts = {"loops": _on_hosts(env, tag), "sleeps": _on_hosts(env, f"sleep {interval}")}
    assert counts == {k: {h.alias: (0, 0) for h in env.hosts} for k in counts}, counts
    assert not list((env.env_dir / "monitors").glob("*.json"))
    print(f"FIGURE monitor Ctrl-C: exit after {took:.2f} s; left on the hosts: {counts}")


def test_campaign_runs_sample_inside_their_own_sessions(env, tmp_path, monkeypatch):
    """``monitor: true`` in a campaign: one monitor for the whole campaign, and each run's
    start and end samples taken inside the run's own step sessions (taken out of the steps'
    output): no session of its own per run, except the end sample of a host the last step
    did not run on. Totals stay exact against a known payload."""
    from enos.campaign import run as run_campaign
    from enos.experiment.env import Env
    # the source waits for the sink's close: every byte was received when the step ends
    (env.scripts / "source_acked.py").write_text(
        SOURCE.replace("    c.close()\n", "    c.shutdown(socket.SHUT_WR)\n    c.recv(1)\n    c.close()\n"))
    # and the sink drains each connection as soon as it comes
    (env.scripts / "sink_each.py").write_text(SINK.replace(
        "threads = [threading.Thread(target=drain, args=(s.accept()[0],)) for _ in range(int(sys.argv[3]))]\n"
        "for t in threads:\n    t.start()\n",
        "threads = []\nfor _ in range(int(sys.argv[3])):\n"
        "    threads.append(threading.Thread(target=drain, args=(s.accept()[0],)))\n    threads[-1].start()\n"))
    assert "threads[-1].start()" in (env.scripts / "sink_each.py").read_text()
    server = env.roles["server"][0]
    clients = [h.alias for h in env.roles["client"]]
    payload, runs = 400_000, 2
    sink = env.run(f"python3 {env.scripts}/sink_each.py {server.address} {PORT + 1} {len(clients) * runs}",
                   roles="server", background=True)
    time.sleep(0.3)
    labels: list = []
    real = Env._run_sessions

    def spy(self, hosts, command, *a, **kw):
        kind = "monitor loop" if command.startswith("exec sh -c") else \
            command if command.startswith("monitor") else "step"
        labels.append((kind, len(hosts)))
        return real(self, hosts, command, *a, **kw)
    monkeypatch.setattr(Env, "_run_sessions", spy)
    camp = {"name": "folded samples", "parameters": {"n": list(range(runs))}, "monitor": True,
            "steps": [{"run": "echo hello"},
                      {"roles": ["client"],
                       # a step under 'set -eu' still gives its end sample in its own session
                       "run": f"set -eu; python3 {env.scripts}/source_acked.py {server.address} {PORT + 1} "
                              f"{payload} 1 0"}]}
    stats = run_campaign(camp, results=tmp_path / "results", env=str(env.env_dir))
    assert (stats["done"], stats["failed"]) == (runs, 0), stats
    assert int(sink.wait()[0].stdout) == payload * len(clients) * runs
    # per run: the 2 steps and one end-sample session for the server (not in the last step)
    assert labels.count(("step", 3)) == runs and labels.count(("step", 2)) == runs, labels
    assert [lb for lb in labels if lb[0] == "monitor end sample"] == [("monitor end sample", 1)] * runs, labels
    assert not any(lb.startswith("monitor start") for lb, _ in labels), labels
    # the campaign's loops: started and stopped once
    assert labels.count(("monitor loop", 3)) == 1 and labels.count(("monitor stop", 3)) == 1, labels
    for rdir in sorted((tmp_path / "results" / "runs").glob("*/1")):
        for h in env.hosts:
            assert (rdir / h.alias / "1.stdout").read_text() == "hello\n"     # marks taken out
        for c in clients:
            assert (rdir / c / "2.stdout").read_text() == ""
        mon = json.loads((rdir / "monitor.json").read_text())
        assert mon["errors"] == {}, mon
        totals = mon["totals"]
        srv = totals["server-1"]["net_rx_bytes"]
        assert payload * len(clients) <= srv <= payload * len(clients) * 1.08 + 64_000, totals
        for c in clients:
            assert payload <= totals[c]["net_tx_bytes"] <= payload * 1.08 + 64_000, totals
        import csv
        with open(rdir / "monitor.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for h in env.hosts:
            mine = [r for r in rows if r["host"] == h.alias]
            assert mine[0]["kind"] == "start" and mine[-1]["kind"] == "end", mine
    assert _on_hosts(env)["server-1"][0] == 0              # the campaign's loops ended
