"""Issue 23, input side: what the campaign and reservation layers accepted and should not,
through the REAL command (``python -m enos`` as a subprocess): each case must exit 2 within
a time limit, name the file, line and key, print no traceback, and create nothing (no
results directory, no env, no ``current``).

The figures of the whole hostile run are made by ``bench/hostile_inputs.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

RESERVATION = "provider: static\nresources:\n  db:\n    - address: 127.0.0.1\n      port: 1\n"
HEAD = "reservation: static.yaml\nparameters:\n  a: [1, 2]\n"


def _step(run: str, extra: str = "") -> str:
    return HEAD + f"steps:\n  - run: {run}\n{extra}"


def enos(cwd, *args, timeout=60, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "enos", *args], cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=e,
                          preexec_fn=lambda: __import__("resource").setrlimit(
                              __import__("resource").RLIMIT_AS, (3 << 30, 3 << 30)))


def _listing(d: Path) -> set:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


CAMPAIGNS = [
    # (id, campaign text, "FILE:LINE: key" expected in the error, words)
    ("20 parameters x 10 values", "reservation: static.yaml\nparameters:\n"
     + "".join(f"  p{i}: [0,1,2,3,4,5,6,7,8,9]\n" for i in range(20)) + "steps:\n  - run: \"true\"\n",
     ":2: parameters", "more than 100000 combination(s)"),
    # a campaign key given twice was silently dropped (the reservation's Enos-compatible
    # "last one wins"); found by bench/hostile_inputs.py
    ("reservation given twice", HEAD + "reservation: other.yaml\nsteps:\n  - run: \"true\"\n", ":4: reservation",
     "duplicate key (first written at line 1)"),
    ("repeat 10^12", HEAD + "repeat: 1000000000000\nsteps:\n  - run: \"true\"\n", ":4: repeat", "from 1 to 100000"),
    ("2 x 60000 runs", HEAD + "repeat: 60000\nsteps:\n  - run: \"true\"\n", ":4: repeat",
     "2 combination(s) × 60000 repetition(s)"),
    ("'A' * 10^9", _step("\"{{ 'A' * 1000000000 }}\""), ":5: steps.0.run", "would build more than"),
    ("format width 10^9", _step("\"{{ '{:>1000000000}'.format(1) }}\""), ":5: steps.0.run", "a width of 1000000000"),
    ("center(10^9)", _step("\"{{ 'a' | center(1000000000) }}\""), ":5: steps.0.run", "larger than 100000"),
    ("9 ** (9 ** 9)", _step("\"{{ 9 ** (9 ** 9) }}\""), ":5: steps.0.run", "more than 4096 bits"),
    ("loops of loops", _step("\"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\""),
     ":5: steps.0.run", "rendering took more than 2 s"),
    ("output of 10^9 chars", _step("\"{% for i in range(100000) %}{{ 'A' * 10000 }}{% endfor %}\""),
     ":5: steps.0.run", "longer than 100000 characters"),
    ("class list (sandbox)", _step("\"{{ ''.__class__.__mro__[1].__subclasses__() }}\""), ":5: steps.0.run",
     "not allowed in a template"),
    ("globals through cycler", _step("\"{{ cycler.__init__.__globals__.os.popen('id').read() }}\""),
     ":5: steps.0.run", "not allowed in a template"),
    ("include", _step("\"{% include '/etc/passwd' %}\""), ":5: steps.0.run", "cannot use '{% include %}'"),
    ("network constraints bomb", HEAD + "network_constraints:\n  default_delay: \"{{ '1' * 1000000000 }}ms\"\n"
     "steps:\n  - run: \"true\"\n", ":5: network_constraints.default_delay", "would build more than"),
    ("collect file bomb", _step("\"true\"", "    collect:\n      files: [\"{{ 'A' * 1000000000 }}\"]\n"),
     ":7: steps.0.collect.files.0", "would build more than"),
    ("step timeout .nan", _step("\"true\"", "    timeout: .nan\n"), ":6: steps.0.timeout", "a finite number"),
    ("step timeout 10^20", _step("\"true\"", "    timeout: 99999999999999999999\n"), ":6: steps.0.timeout",
     "cannot be right"),
    ("roles [nope]", _step("\"true\"", "    roles: [nope]\n"), ":6: steps.0.roles.0",
     "no role, group or host 'nope' in the reservation"),
    ("hosts.nope in a template", _step("\"ping {{ hosts.nope[0].address }}\""), ":5: steps.0.run",
     "has no attribute 'nope'"),
    ("python metric nomod:f", _step("\"echo 1\"", "    collect: stdout\nmetrics:\n  m: {python: \"nomod:f\"}\n"),
     ":8: metrics.m.python", "no Python module 'nomod'"),
    ("python metric os:nope", _step("\"echo 1\"", "    collect: stdout\nmetrics:\n  m: {python: \"os:nope\"}\n"),
     ":8: metrics.m.python", "has no function 'nope'"),
    ("default_delay 10^20 ms", HEAD + "network_constraints:\n  default_delay: 99999999999999999999ms\n"
     "steps:\n  - run: \"true\"\n", ":4: network_constraints.default_delay", "at most 1 hour"),
    ("values sharing a directory name", "reservation: static.yaml\nparameters:\n  a: [\"x/y\", \"x_y\"]\n"
     "steps:\n  - run: \"true\"\n", ":3: parameters.a.1", "would share the results directory name"),
    ("value NaN", "reservation: static.yaml\nparameters:\n  a: [.nan]\nsteps:\n  - run: \"true\"\n",
     ":3: parameters.a.0", "a finite number"),
]


#: checks against the campaign's reservation (its roles, groups, hosts): by validate and
#: run; status and report read results and need only the sweep's definition
NEEDS_RESERVATION = ("roles [nope]", "hosts.nope in a template", "default_delay 10^20 ms")


_CAMPAIGN_RUNS = [(cmd, *c) for c in CAMPAIGNS for cmd in ("validate", "status", "run")
                  if not (cmd == "status" and c[0] in NEEDS_RESERVATION)]


@pytest.mark.parametrize("command,name,text,where,words", _CAMPAIGN_RUNS,
                         ids=[f"{r[0]}-{r[1]}" for r in _CAMPAIGN_RUNS])
def test_bad_campaign_refused_before_anything(tmp_path, command, name, text, where, words):
    (tmp_path / "static.yaml").write_text(RESERVATION)
    (tmp_path / "camp.yaml").write_text(text)
    before = _listing(tmp_path)
    t = time.monotonic()
    p = enos(tmp_path, "campaign", command, "camp.yaml")
    took = time.monotonic() - t
    assert p.returncode == 2, (p.stdout, p.stderr[-2000:])
    assert "Traceback" not in p.stderr and f"camp.yaml{where}" in p.stderr and words in p.stderr, p.stderr
    assert _listing(tmp_path) == before, "something was created"
    assert took < 30, took


@pytest.mark.parametrize("what", ["fifo", "/dev/zero", "link to /dev/zero", "big", "link loop", "directory"])
@pytest.mark.parametrize("command", ["validate", "status", "report"])
def test_campaign_file_goes_through_the_bounded_reader(tmp_path, what, command):
    """A FIFO, a device, a link to one, 2 MB, a link loop, a directory: refused at once
    (a FIFO must not block the open), exit 2."""
    p = tmp_path / "camp.yaml"
    if what == "fifo":
        os.mkfifo(p)
    elif what == "/dev/zero":
        p = Path("/dev/zero")
    elif what == "link to /dev/zero":
        os.symlink("/dev/zero", p)
    elif what == "big":
        p.write_text(HEAD + "steps:\n  - run: \"true\"\n" + "# pad\n" * 400_000)
    elif what == "link loop":
        os.symlink("camp.yaml", p)
    else:
        p.mkdir()
    r = enos(tmp_path, "campaign", command, str(p), timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert {"fifo": "is a FIFO", "/dev/zero": "is a device", "link to /dev/zero": "is a device",
            "big": "may be at most 1048576 bytes", "link loop": "Too many levels of symbolic links",
            "directory": "Is a directory"}[what] in r.stderr, r.stderr


def test_valid_campaign_still_counts_and_validates(tmp_path):
    """The bounds leave a normal campaign alone: 5000 values with 5000 exclude rules are
    counted at once (not enumerated), and the templates render with the reservation's hosts."""
    (tmp_path / "static.yaml").write_text(RESERVATION)
    text = ("reservation: static.yaml\nparameters:\n  a: [" + ",".join(map(str, range(5000))) + "]\n  b: [1, 2]\n"
            "exclude:\n" + "".join(f"  - {{a: {i}, b: 1}}\n" for i in range(5000))
            + "steps:\n  - run: \"ping -c1 {{ hosts.db[0].address }} # {{ a }} {{ b }}\"\n    roles: [db]\n")
    (tmp_path / "camp.yaml").write_text(text)
    p = enos(tmp_path, "campaign", "validate", "camp.yaml")
    assert p.returncode == 0 and "5000 combination(s) × 1 repetition(s) = 5000 run(s)" in p.stdout, p.stderr


RESERVATIONS = [
    ("static compact counts", "provider: static\nresources:\n  local:\n    compute: 1\n",
     ":3: resources.local", "takes existing hosts by address"),
    ("static topology counts", "provider: static\ntopology:\n  g1:\n    local:\n      compute: 1\n",
     ":4: topology.g1.local", "takes existing hosts by address"),
    ("local subnet 224.0.0.0/24", "provider:\n  type: local\n  subnet: 224.0.0.0/24\nresources:\n  local:\n    db: 1\n",
     ":3: provider.subnet", "a multicast range"),
    ("local subnet 127.0.0.0/24", "provider:\n  type: local\n  subnet: 127.0.0.0/24\nresources:\n  local:\n    db: 1\n",
     ":3: provider.subnet", "the loopback range"),
    ("static network 0.0.0.0/1", "provider:\n  type: static\n  networks:\n    - cidr: 0.0.0.0/1\n"
     "resources:\n  db:\n    - address: 127.0.0.1\n", ":4: provider.networks.0.cidr", "starting at 0.0.0.0"),
    ("default_delay 10^20 ms", "provider: local\nresources:\n  local:\n    db: 1\nnetwork_constraints:\n"
     "  default_delay: 99999999999999999999ms\n", ":6: network_constraints.default_delay", "at most 1 hour"),
    ("default_rate 10^20 mbit", "provider: local\nresources:\n  local:\n    db: 1\nnetwork_constraints:\n"
     "  default_rate: 99999999999999999999mbit\n", ":6: network_constraints.default_rate", "at most 10tbit"),
    ("retry delay .inf", "provider:\n  type: g5k\n  retry_max_delay: .inf\nresources:\n  paravance:\n    db: 1\n",
     ":3: provider.retry_max_delay", "a finite number"),
    ("wait timeout 10^20", "provider:\n  type: g5k\n  wait_timeout: 99999999999999999999\nresources:\n"
     "  paravance:\n    db: 1\n", ":3: provider.wait_timeout", "cannot be right"),
    ("a newline in a project", "provider:\n  type: g5k\n  project: \"a\\nb\"\nresources:\n  paravance:\n    db: 1\n",
     ":3: provider.project", "a control character"),
]


@pytest.mark.parametrize("text,where,words", [c[1:] for c in RESERVATIONS], ids=[c[0] for c in RESERVATIONS])
@pytest.mark.parametrize("command", ["validate", "up"])
def test_bad_reservation_refused_before_anything(tmp_path, command, text, where, words):
    (tmp_path / "r.yaml").write_text(text)
    before = _listing(tmp_path)
    argv = ["validate", "-f", "r.yaml"] if command == "validate" else ["up", "-f", "r.yaml", "--ssh-timeout", "5"]
    p = enos(tmp_path, *argv)
    assert p.returncode == 2, (p.stdout, p.stderr[-2000:])
    assert "Traceback" not in p.stderr and f"r.yaml{where}" in p.stderr and words in p.stderr, p.stderr
    assert _listing(tmp_path) == before, "something was created"
