"""The Python API (``import enos``) on real ``local`` namespace hosts: up/load/current and
the CLI on the same env dirs, ``Env.run`` (a result for every host, CommandFailed carrying
them all, timeouts, environment variables, streaming, background runs killed for real)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import enos
from enos.errors import CommandFailed, ConfigError, NoEnvironment, Timeout, UsageError
from enoscli import enos as enos_cli
from localhosts import RUN_IDS, alive, leftovers

pytestmark = pytest.mark.root

RESERVATION = {"provider": {"type": "local"}, "resources": {"local": {"control": 1, "compute": 2}}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Three hosts (control: 1, compute: 2) brought up by ``enos.up`` from a dict, kept
    for the module, destroyed (and checked for leftovers) at its end."""
    base = tmp_path_factory.mktemp("api")
    e = enos.up(RESERVATION, keep=True, base=base, provision=False, quiet=True)
    RUN_IDS.append(e.run_id)
    try:
        yield e
    finally:
        e.destroy()
        assert leftovers(e.run_id) == []


def test_env_shape_and_json(env):
    assert env.phase == "ready" and env.provider == "local"
    assert sorted(env.roles) == ["compute", "control"]
    assert [h.alias for h in env.roles["compute"]] == ["compute-1", "compute-2"]
    assert sorted(h.alias for h in env.hosts) == ["compute-1", "compute-2", "control-1"]
    h = env.roles["compute"][0]
    assert h.address and h.user == "root" and h.port == 22 and "enos_scratch" in h.extra
    assert "compute-1" in repr(h) and h.address in repr(h)
    d = json.loads(env.to_json())
    assert d["run_id"] == env.run_id and d["roles"]["compute"] == ["compute-1", "compute-2"]
    assert {x["alias"] for x in d["hosts"]} == {"compute-1", "compute-2", "control-1"}
    assert env.run_id in repr(env) and "compute: 2" in repr(env)


def test_run_returns_a_result_for_every_host(env):
    res = env.run("hostname", roles="compute")
    assert isinstance(res, enos.Results) and len(res) == 2
    for r in res:
        assert r.rc == 0 and r.ok and r.stdout.strip() == r.host.alias
        assert r.ended >= r.started and r.duration >= 0
    assert res["compute-2"].stdout == "compute-2\n"
    assert res[0].host.alias == "compute-1"
    assert len(res.ok) == 2 and len(res.failed) == 0 and res.all_ok
    every = env.run("hostname")
    assert set(every.by_role) == {"compute", "control"}
    assert every.by_role["control"].aliases == ["control-1"]
    d = json.loads(every.to_json())
    assert d["ok"] is True and [x["host"] for x in d["results"]] == every.aliases
    assert all(x["exit_code"] == 0 and x["stdout"] == x["host"] + "\n" for x in d["results"])
    # a list of roles and aliases, Host objects
    assert env.run("true", roles=["control", "compute-2"]).aliases == ["control-1", "compute-2"]
    assert env.run("true", roles=env.roles["compute"][1]).aliases == ["compute-2"]
    with pytest.raises(UsageError, match="unknown role.*nope.*known roles: compute, control"):
        env.run("true", roles="nope")
    with pytest.raises(KeyError, match="no result for host 'x'"):
        res["x"]


def test_failure_carries_every_hosts_result(env):
    """The failure path: CommandFailed names the failed host and carries the Results of all
    three, the successful ones with their output (EnOSlib's error drops them)."""
    with pytest.raises(CommandFailed) as e:
        env.run("hostname; test $(hostname) != compute-1")
    err = e.value
    assert "compute-1 (exit 1)" in str(err) and "1 of 3" in str(err)
    assert isinstance(err.results, enos.Results) and len(err.results) == 3
    assert err.results.failed.aliases == ["compute-1"]
    assert sorted(err.results.ok.aliases) == ["compute-2", "control-1"]
    assert err.results["control-1"].stdout == "control-1\n" and err.results["compute-1"].rc == 1
    # check=False: the same Results, returned
    res = env.run("exit 3", roles="control", check=False)
    assert res["control-1"].rc == 3 and not res.all_ok and res.failed.aliases == ["control-1"]


def test_timeout_env_vars_and_sudo(env):
    res = env.run("sleep 20", roles="compute", timeout=0.5, check=False)
    assert all(r.rc is None and "timed out" in r.error for r in res)
    tricky = "a b 'c' \"d\" $HOME `x`\nline2"
    res = env.run('printf "%s|%s" "$ONE" "$TWO"', env={"ONE": tricky, "TWO": 2}, roles="control")
    assert res["control-1"].stdout == f"{tricky}|2"
    with pytest.raises(UsageError, match="not a valid environment variable name"):
        env.run("true", env={"A-B": "x"})
    # root hosts: sudo is a no-op; for another user the command goes through 'sudo -n'
    assert env.run("id -u", sudo=True, roles="control")["control-1"].stdout == "0\n"
    from enos.experiment.command import wrap_command
    assert wrap_command("id -u", sudo=True, user="debian") == "sudo -n -- sh -c 'id -u'"


def test_streaming_delivers_lines_while_the_command_runs(env, tmp_path):
    """Each host prints a line, then waits until the callback for that line has created a
    file (the hosts share this machine's filesystem): without streaming the command would
    never see its file and would time out."""
    seen = []

    def on_output(host, stream, line):
        seen.append((host.alias, stream, line))
        if line == "ready":
            (tmp_path / host.alias).touch()
    cmd = (f'echo ready; echo warn >&2; i=0; while [ ! -e "{tmp_path}/$(hostname)" ]; do '
           f'sleep 0.05; i=$((i+1)); [ $i -gt 400 ] && exit 9; done; printf "done"')
    res = env.run(cmd, on_output=on_output, timeout=60)
    assert all(r.stdout == "ready\ndone" for r in res)
    for h in env.hosts:
        mine = [(s, line) for a, s, line in seen if a == h.alias]
        assert mine.index(("stdout", "ready")) < mine.index(("stdout", "done"))   # the last, unterminated line too
        assert ("stderr", "warn") in mine


def test_background_wait_and_kill(env):
    bg = env.run("sleep 0.3; hostname", background=True)
    res = bg.wait(timeout=60)
    assert [r.stdout for r in res] == [f"{h.alias}\n" for h in env.hosts]
    assert all("enos-bg-pid" not in r.stderr for r in res)

    bg = env.run("sleep 300 & sleep 301; echo never", roles="compute", background=True)
    pids = bg.pids()
    assert sorted(pids) == ["compute-1", "compute-2"] and bg.running
    with pytest.raises(Timeout):
        bg.wait(timeout=0.2)
    # the hosts share this machine's PID space: the session's process group is visible here
    group = {a: [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if _pgid(p) == pid] for a, pid in pids.items()}
    assert all(len(g) >= 3 for g in group.values()), group      # sh + two sleeps
    res = bg.kill()
    assert not bg.running
    assert all(r.rc == 143 and r.error == "killed by SIGTERM" and "never" not in r.stdout for r in res)
    deadline = time.monotonic() + 10
    while any(alive(p) for g in group.values() for p in g) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for g in group.values() for p in g), "the background command survived kill()"


def _pgid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return -1


def test_up_validates_like_the_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider:\n  type: local\nresources:\n  local:\n    compute: zero\n")
    with pytest.raises(ConfigError) as e:
        enos.up(bad, base=tmp_path)
    assert e.value.file == str(bad) and e.value.line == 5
    with pytest.raises(ConfigError, match="compute"):
        enos.up({"provider": {"type": "local"}, "resources": {"local": {"compute": 0}}}, base=tmp_path)
    with pytest.raises(ConfigError, match="provision"):
        enos.up({**RESERVATION, "provision": ["missing.yml"]}, base=tmp_path)
    with pytest.raises(UsageError):
        enos.up(42, base=tmp_path)
    assert not any(tmp_path.glob("enos_*")), "an env dir was created for an invalid reservation"
    with pytest.raises(NoEnvironment):
        enos.current(tmp_path)


def test_cli_env_used_from_python_and_python_env_from_the_cli(tmp_path):
    """``enos up`` (CLI) → ``enos.current()``/``enos.load()`` run on it and destroy it;
    ``enos.up(keep=True)`` → ``enos info``/``run``/``destroy`` (CLI) on it."""
    (tmp_path / "r.yaml").write_text(json.dumps(RESERVATION))
    enos_cli(tmp_path, "up", "-f", "r.yaml", "--no-provision")
    e = enos.current(tmp_path)
    RUN_IDS.append(e.run_id)
    assert e.env_dir == (tmp_path / "current").resolve()
    assert enos.load(e.env_dir).run_id == e.run_id == enos.load(tmp_path).run_id
    assert e.run("hostname", roles="control")["control-1"].stdout == "control-1\n"
    with enos.load(e.env_dir, keep=False) as loaded:
        assert len(loaded.hosts) == 3
    assert e.reload().phase == "destroyed" and leftovers(e.run_id) == []
    with pytest.raises(NoEnvironment, match="destroyed"):
        e.run("true")

    other = tmp_path / "py"
    other.mkdir()
    env = enos.up(tmp_path / "r.yaml", keep=True, base=other, provision=False, quiet=True)
    RUN_IDS.append(env.run_id)
    try:
        info = json.loads(enos_cli(other, "info", "-o", "json").stdout)
        assert info["run_id"] == env.run_id and info["env_dir"] == str(env.env_dir)
        rows = json.loads(enos_cli(other, "run", "-o", "json", "--roles", "compute", "hostname").stdout)
        assert [(r["host"], r["exit_code"], r["stdout"]) for r in rows] == \
            [("compute-1", 0, "compute-1\n"), ("compute-2", 0, "compute-2\n")]
        failed = enos_cli(other, "run", "exit 4", check=False)
        assert failed.returncode == 1 and "failed on 3 of 3 host(s)" in failed.stderr
    finally:
        enos_cli(other, "destroy")
    assert env.reload().phase == "destroyed" and leftovers(env.run_id) == []


def test_context_manager_destroys_even_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with enos.up(RESERVATION, base=tmp_path, provision=False, quiet=True) as env:
            RUN_IDS.append(env.run_id)
            assert env.run("true").all_ok
            raise RuntimeError("boom")
    assert env.reload().phase == "destroyed" and leftovers(env.run_id) == []


def test_import_enos_is_lazy():
    import subprocess
    import sys
    code = ("import sys, enos; heavy = [m for m in sys.modules if m.startswith(('enos.', 'yaml', "
            "'ansible_runner', 'jsonschema', 'docopt'))]; print(heavy); "
            "enos.up; print('enos.experiment.env' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "True"], out
