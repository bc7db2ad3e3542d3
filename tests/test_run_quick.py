"""`enos run` on one host takes a short path (enos/experiment/quick.py: the state, the
host's connection master, nothing of the task runner) — real namespace hosts, the real CLI.

It prints and exits exactly as the full path (the fan-out, forced here with ``--timeout``)
for a success, a failure with output on both streams, non-UTF-8 and large output on both
streams at once; it really is taken (the task runner is never imported) and it hands over
to the full path — having run nothing — whenever the case is not plain: two hosts, JSON
output, an unknown role, a master that is gone (the command still runs exactly once)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enoscli import enos
from localhosts import leftovers

pytestmark = pytest.mark.root

RESERVATION = "provider:\n  type: local\nresources:\n  local:\n    a: 1\n    b: 1\n"
COMMANDS = [
    "hostname",
    "echo out; echo err >&2; exit 3",
    "printf 'caf\\351\\n'; printf 'bad \\377 byte' >&2; exit 1",
    # 2 MB on each stream at once: a reader of one pipe only would never see the end
    "head -c 2000000 /dev/zero | tr '\\0' o; head -c 2000000 /dev/zero | tr '\\0' e >&2",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A 2-host local env (aliases a-1, b-1), destroyed at the end."""
    d = tmp_path_factory.mktemp("quick")
    (d / "r.yaml").write_text(RESERVATION)
    enos(d, "up", "-f", "r.yaml", "--env", "env", "--no-provision", timeout=300)
    run_id = json.loads((d / "env" / "state.json").read_text())["run_id"]
    try:
        yield d / "env"
    finally:
        enos(d, "destroy", "--env", "env", timeout=300, check=False)
        assert not leftovers(run_id)


def run(env_dir: Path, *args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    argv = [sys.executable] + (["-X", "importtime"] if importtime else []) + ["-m", "enos", "run",
                                                                              "--env", str(env_dir), *args]
    return subprocess.run(argv, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)


def taken(env_dir: Path, *args: str) -> bool:
    """True when ``enos run ARGS`` took the short path (the task runner never imported)."""
    p = run(env_dir, *args, importtime=True)
    modules = {ln.split("|")[-1].strip() for ln in p.stderr.decode(errors="replace").splitlines()
               if ln.startswith("import time:")}
    assert "enos.cli.hosts" in modules, p.stderr[-2000:]
    return "enos.task" not in modules


@pytest.mark.parametrize("command", COMMANDS)
def test_same_output_and_exit_as_the_full_path(env, command):
    quick = run(env, "--roles", "a-1", command)
    full = run(env, "--roles", "a-1", "--timeout", "600", command)
    assert (quick.returncode, quick.stdout, quick.stderr) == (full.returncode, full.stdout, full.stderr)
    assert quick.stdout.startswith("── a-1 (".encode())
    assert taken(env, "--roles", "a-1", command)
    assert not taken(env, "--roles", "a-1", "--timeout", "600", command)


def test_not_plain_cases_take_the_full_path(env):
    for args in (["--roles", "a,b"], ["-o", "json", "--roles", "a-1"], ["--roles", "nope"], []):
        assert not taken(env, *args, "true"), args
    p = run(env, "--roles", "nope", "true")
    assert p.returncode == 2 and b"unknown role(s) or host(s): nope" in p.stderr
    assert taken(env, "--roles", "b", "true") and taken(env, "--roles", "b-1,b", "--tolerate-failures", "true")


def test_a_master_gone_hands_over_without_running_twice(env, tmp_path):
    """The master of a-1 is stopped: the short path finds no socket, runs nothing, and the
    full path runs the command once (through a new connection)."""
    st = json.loads((env / "state.json").read_text())
    scratch = next(h for h in st["resources"]["hosts"] if h["alias"] == "a-1")["extra"]["enos_scratch"]
    marks = Path(scratch) / "marks"
    marks.unlink(missing_ok=True)
    subprocess.run(["ssh", "-F", str(env / "ssh_config"), "-O", "exit", "a-1"], capture_output=True, timeout=30)
    p = run(env, "--roles", "a-1", f"echo once >> {marks}; cat {marks}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "── a-1 (ok)\nonce\n"
    assert marks.read_text() == "once\n"
    assert taken(env, "--roles", "a-1", "true")       # the full path opened a master again
    os.unlink(marks)
