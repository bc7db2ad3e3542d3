"""The benchmark harness (bench/run.py) works end to end in quick mode: 3 local hosts, one
repetition of every case, a table with every case, and every host it created destroyed.
No timing assertion: the figures of a quick run on a busy test machine mean nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CASES = ["`enos up` 3 local hosts", "`enos destroy` 3 local hosts", "start-up: `enos --help`",
         "start-up: `enos validate`", "start-up: `enos info`", "`enos run hostname` CLI, 3 hosts, hot",
         "`run_command` API, 3 hosts, hot", "`run_command` API, 3 hosts, cold",
         "start-up: `import enos` (in the interpreter)", "`env.run` experiment API, 3 hosts, hot",
         "`run_command` API with ssh processes (use_masters=False), 3 hosts, hot",
         "provisioning 3 hosts (preinstall + 3 tasks)", "provisioning 3 hosts vs ansible-runner defaults"]


@pytest.mark.root
@pytest.mark.slow
def test_quick_benchmark_runs_and_cleans_up(tmp_path):
    out_json = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json", str(out_json)],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path)
    # 0 = every target met, 1 = some missed (allowed in quick mode); 2/130 = the harness broke
    assert p.returncode in (0, 1), p.stdout + p.stderr
    data = json.loads(out_json.read_text())
    assert data["rc"] == 0 and data["error"] is None
    cases = [r["case"] for r in data["rows"]]
    for c in CASES:
        assert any(x.startswith(c) for x in cases), (c, cases)
    for r in data["rows"]:
        assert r["enos"] > 0 and r["n"] >= 1
        assert r["pass"] in (True, False, None)
        if r["baseline"] is not None:
            assert r["baseline"] > 0 and r["ratio"] > 0
    assert "| case | enos (s) | baseline (s) | ratio | target | result |" in p.stdout
    # every env it brought up (2: the up/destroy one and the fan-out one) is gone
    assert len(data["run_ids"]) == 2 and data["left_alive"] == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    for rid in data["run_ids"]:
        assert f"enos-{rid}-" not in netns
        assert f"eb{rid}" not in links
