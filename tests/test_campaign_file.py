"""Campaign files: a table of bad ones (exit 2 with file:line, nothing booked), and the
sweep's persistence without hosts (deterministic order, a real kill -9 of a script using
``enos.campaign.sweep``)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enoscli import enos

RESERVATION = "provider: local\nresources:\n  local:\n    worker: 2\n"

GOOD = """\
reservation: reservation.yaml
parameters:
  rate: [10mbit, 100mbit]
  clients: [1, 2]
repeat: 2
steps:
  - roles: [worker]
    run: "echo {{ rate }} {{ clients }} {{ repeat }} {{ hosts.worker[0].address }}"
    collect: stdout
metrics:
  m: {regex: "([0-9]+)"}
"""

# (name, campaign text, expected line, words expected in the message)
BAD = [
    ("unknown top-level key", GOOD + "stepz: []\n", 12, "unknown key"),
    ("typo in a step key", GOOD.replace("    collect: stdout", "    colect: stdout"), 9, "colect"),
    ("undefined template variable", GOOD.replace("{{ rate }} {{ clients }}", "{{ rat }} {{ clients }}"), 8,
     "'rat'"),
    ("parameter used in setup", GOOD.replace("steps:", "setup:\n  - run: \"echo {{ rate }}\"\nsteps:"), 7,
     "only 'hosts'"),
    ("template syntax error", GOOD.replace("{{ repeat }}", "{{ repeat "), 8, "template syntax error"),
    ("empty sweep", GOOD.replace("repeat: 2", "exclude:\n  - {rate: 10mbit}\n  - {rate: 100mbit}\nrepeat: 2"), 5,
     "empty sweep"),
    ("empty parameter list", GOOD.replace("clients: [1, 2]", "clients: []"), 4, "non-empty list"),
    ("exclude names no parameter", GOOD.replace("repeat: 2", "exclude:\n  - {speed: 1}\nrepeat: 2"), 6,
     "unknown parameter 'speed'"),
    ("exclude value not swept", GOOD.replace("repeat: 2", "exclude:\n  - {clients: 3}\nrepeat: 2"), 6,
     "not a value of 'clients'"),
    ("repeat zero", GOOD.replace("repeat: 2", "repeat: 0"), 5, "from 1 to 100000, got 0"),
    ("no steps", GOOD.split("steps:")[0] + "steps: []\n", 6, "non-empty list of at most 1000 steps"),
    ("collect stderr", GOOD.replace("collect: stdout", "collect: stderr"), 9, "'stdout'"),
    ("regex without a group", GOOD.replace('regex: "([0-9]+)"', 'regex: "[0-9]+"'), 11, "one group"),
    ("metric with nothing collected", GOOD.replace("    collect: stdout\n", ""), 10, "collect"),
    ("missing reservation file", GOOD.replace("reservation.yaml", "nowhere.yaml"), 1, "no reservation file"),
    ("missing playbook", GOOD.replace("steps:", "setup:\n  - play: nowhere.yml\nsteps:"), 7, "no playbook"),
    ("network constraint template", GOOD + "network_constraints:\n  default_rate: \"{{ bandwidth }}\"\n", 13,
     "'bandwidth'"),
    ("network constraint value", GOOD + "network_constraints:\n  default_rate: \"{{ rate }}s\"\n", 12,
     "default_rate"),
    ("YAML syntax", GOOD.replace("clients: [1, 2]", "clients: [1, 2"), 5, "YAML syntax error"),
    ("bad inline reservation", GOOD.replace("reservation: reservation.yaml",
                                            "reservation:\n  provider: local\n  resources: {local: {worker: 0}}"),
     3, "resources.local.worker"),
    ("parameter named repeat", GOOD.replace("  clients: [1, 2]", "  repeat: [1, 2]"), 4, "parameter name"),
]


@pytest.mark.parametrize("name,text,line,words", BAD, ids=[b[0] for b in BAD])
def test_bad_campaign_file_exits_2_with_file_line_and_books_nothing(tmp_path, name, text, line, words):
    (tmp_path / "reservation.yaml").write_text(RESERVATION)
    f = tmp_path / "camp.yaml"
    f.write_text(text)
    before = set(os.listdir(tmp_path))
    p = enos(tmp_path, "campaign", "run", "camp.yaml", check=False, timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert f"camp.yaml:{line}:" in p.stderr, p.stderr
    assert words in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert set(os.listdir(tmp_path)) == before      # no results dir, no env dir: nothing booked


def test_good_campaign_validates(tmp_path):
    (tmp_path / "reservation.yaml").write_text(RESERVATION)
    (tmp_path / "camp.yaml").write_text(GOOD)
    p = enos(tmp_path, "campaign", "validate", "camp.yaml")
    assert "4 combination(s) × 2 repetition(s) = 8 run(s)" in p.stdout


def test_the_example_validates():
    repo = Path(__file__).resolve().parent.parent
    p = enos(repo, "campaign", "validate", "examples/iperf-campaign/campaign.yaml")
    assert "8 combination(s) × 3 repetition(s) = 24 run(s)" in p.stdout


ORDER = """\
import sys
from enos.experiment.sweep import Sweep
s = Sweep(sys.argv[1], [{"a": a, "b": b} for a in (1, 2, 3) for b in "xyz"], 2).open()
print([s.next() for _ in range(18)])
"""


def test_sweep_order_does_not_depend_on_the_hash_seed(tmp_path):
    outs = []
    for seed in ("1", "2", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.append(subprocess.run([sys.executable, "-c", ORDER, str(tmp_path / seed)], env=env,
                                   capture_output=True, text=True, check=True).stdout)
    assert outs[0] == outs[1] == outs[2]
    first = eval(outs[0])          # the order of the file: first parameter slowest, repeat innermost
    assert first[:3] == [{"a": 1, "b": "x", "repeat": 1}, {"a": 1, "b": "x", "repeat": 2},
                         {"a": 1, "b": "y", "repeat": 1}]


SCRIPT = """\
import sys, time
import enos.campaign
log, results = sys.argv[1], sys.argv[2]
for p in enos.campaign.sweep({"n": [1, 2, 3, 4, 5]}, results=results):
    with open(log, "a") as f:
        f.write(f"start {p['n']}\\n")
    if p["n"] == 3 and len(sys.argv) > 3:
        time.sleep(60)          # killed here
    with open(log, "a") as f:
        f.write(f"end {p['n']}\\n")
"""


def test_python_sweep_resumes_after_kill_9(tmp_path):
    """A user's script looping on enos.campaign.sweep is killed -9 inside the third
    combination: the next run of the script does 3, 4, 5 only (1 and 2 are not redone)."""
    script = tmp_path / "s.py"
    script.write_text(SCRIPT)
    log, results = tmp_path / "log", tmp_path / "results"
    p = subprocess.Popen([sys.executable, str(script), str(log), str(results), "hang"])
    deadline = time.monotonic() + 60
    while "start 3" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    subprocess.run([sys.executable, str(script), str(log), str(results)], check=True, timeout=60)
    text = log.read_text().splitlines()
    assert text == ["start 1", "end 1", "start 2", "end 2", "start 3",
                    "start 3", "end 3", "start 4", "end 4", "start 5", "end 5"], text
    # a third run does nothing
    subprocess.run([sys.executable, str(script), str(log), str(results)], check=True, timeout=60)
    assert log.read_text().splitlines() == text


def test_status_of_a_campaign_not_started(tmp_path):
    (tmp_path / "reservation.yaml").write_text(RESERVATION)
    (tmp_path / "camp.yaml").write_text(GOOD)
    p = enos(tmp_path, "campaign", "status", "camp.yaml", "-o", "json")
    st = json.loads(p.stdout)
    assert {k: st[k] for k in ("done", "remaining", "in_progress", "failed", "total")} == \
        {"done": 0, "remaining": 8, "in_progress": 0, "failed": 0, "total": 8}


def test_campaign_help_and_no_heavy_import_in_enos_help():
    code = ("import sys, enos.cli; enos.cli.main(['--help']); "
            "print([m for m in ('execo_engine', 'matplotlib', 'jinja2') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert "campaign" in out
