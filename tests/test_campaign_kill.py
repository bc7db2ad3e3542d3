"""A finished run is never redone, whatever moment a real ``kill -9`` hits ``enos campaign
run`` (issue 23): once exactly between a run's ``result.json`` and the sweep's record of it
(a failpoint that SIGKILLs the process there), then many times at random moments. Every
run whose ``result.json`` said ok when its process died keeps that very result (its start
time) to the end, and each run is counted once.

The campaign runs on a local env brought up once (namespace hosts, real sshd)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enoscli import enos
from localhosts import RUN_IDS, leftovers

pytestmark = pytest.mark.root

CAMPAIGN = """\
parameters:
  a: [1, 2, 3, 4, 5, 6, 7, 8]
repeat: 3
steps:
  - run: "sleep 0.3; echo {{ a }}-{{ repeat }}"
    collect: stdout
"""
TOTAL = 24
#: random kills before the campaign is let to end
KILLS = 10


@pytest.fixture(scope="module")
def local_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill9")
    (d / "r.yaml").write_text("provider: local\nresources:\n  local:\n    node: 1\n")
    enos(d, "up", "-f", "r.yaml", "--env", "env", "--no-provision", timeout=300)
    run_id = json.loads((d / "env" / "state.json").read_text())["run_id"]
    RUN_IDS.append(run_id)
    try:
        yield d / "env"
    finally:
        enos(d, "destroy", "--env", str(d / "env"), check=False, timeout=300)
        assert leftovers(run_id) == []


def _finished(results: Path) -> dict:
    """{run dir: start time} of every run whose result.json says ok (read from the files)."""
    out = {}
    for r in results.glob("runs/*/*/result.json"):
        try:
            if json.loads(r.read_text())["status"] == "ok":
                out[str(r.parent.relative_to(results))] = json.loads((r.parent / "timing.json").read_text())["start"]
        except (OSError, ValueError, KeyError):
            pass
    return out


def _start(cwd: Path, env: Path, extra=None) -> subprocess.Popen:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
    e.update(extra or {})
    return subprocess.Popen([sys.executable, "-m", "enos", "-q", "campaign", "run", "camp.yaml", "--env", str(env)],
                            cwd=str(cwd), env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _kill(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.communicate()


def test_kill_between_the_result_and_its_record_does_not_redo_the_run(local_env, tmp_path):
    (tmp_path / "camp.yaml").write_text(CAMPAIGN)
    results = tmp_path / "camp.results"
    p = _start(tmp_path, local_env, {"ENOS_FAILPOINTS": "campaign.result_written=kill"})
    out, err = p.communicate(timeout=300)
    assert p.returncode == -9, err
    finished = _finished(results)
    assert len(finished) == 1, finished            # the first run wrote ok, then died unrecorded
    status = json.loads(enos(tmp_path, "campaign", "status", "camp.yaml", "-o", "json").stdout)
    assert status["done"] == 0
    r = enos(tmp_path, "campaign", "run", "camp.yaml", "--env", str(local_env), timeout=600)
    assert r.returncode == 0
    after = _finished(results)
    assert len(after) == TOTAL
    for run, start in finished.items():
        assert after[run] == start, f"{run} had finished before the kill and was redone"


def test_many_random_kill_9_never_redo_a_finished_run(local_env, tmp_path):
    """kill -9 of the whole process group at random moments (KILLS times, each after the
    process finished a run, then the campaign is let to end); each time, the runs finished
    so far are noted and must keep their result to the end."""
    rng = random.Random(int(os.environ.get("ENOS_TEST_SEED", "23")))
    (tmp_path / "camp.yaml").write_text(CAMPAIGN)
    results = tmp_path / "camp.results"
    seen: dict = {}
    kills = 0
    for _ in range(KILLS):
        p = _start(tmp_path, local_env)
        # wait for this process to finish a run (whatever the machine's load), then a random
        # instant within the next ones: the kill lands anywhere in a run, including between
        # its result.json and the sweep's record of it
        before = len(_finished(results))
        deadline = time.monotonic() + 120
        while len(_finished(results)) <= before and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.8))
        if p.poll() is not None:
            out, err = p.communicate()
            assert p.returncode == 0, err
            break
        _kill(p)
        kills += 1
        now = _finished(results)
        for run, start in seen.items():
            assert now.get(run) == start, f"{run} had finished before a kill and was redone (kill {kills})"
        seen.update(now)
    r = enos(tmp_path, "campaign", "run", "camp.yaml", "--env", str(local_env), timeout=600)
    assert r.returncode == 0
    final = _finished(results)
    assert len(final) == TOTAL and kills >= 5 and len(seen) >= 5, (len(final), kills, len(seen))
    for run, start in seen.items():
        assert final[run] == start, f"{run} had finished before a kill and was redone"
    status = json.loads(enos(tmp_path, "campaign", "status", "camp.yaml", "-o", "json").stdout)
    assert status["done"] == TOTAL and status["in_progress"] == 0
    print(f"\nFIGURE campaign kill -9: {kills} kills, {len(seen)} finished runs checked, none redone",
          file=sys.stderr)
