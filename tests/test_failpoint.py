"""Failpoints: named checkpoints that crash the process on demand."""
import subprocess
import sys

import pytest

from enos import failpoint
from enos.errors import FailpointHit


def test_no_spec_does_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("ENOS_FAILPOINTS", raising=False)
    log = tmp_path / "log"
    monkeypatch.setenv("ENOS_FAILPOINT_LOG", str(log))
    failpoint.checkpoint("a.b")
    failpoint.checkpoint("c.d")
    assert log.read_text().split() == ["a.b", "c.d"]


def test_raise_interrupt_and_prefix(monkeypatch):
    monkeypatch.delenv("ENOS_FAILPOINT_LOG", raising=False)
    monkeypatch.setenv("ENOS_FAILPOINTS", "x.one=raise, y.*=interrupt")
    with pytest.raises(FailpointHit, match="x.one"):
        failpoint.checkpoint("x.one")
    with pytest.raises(KeyboardInterrupt):
        failpoint.checkpoint("y.anything")
    failpoint.checkpoint("x.two")   # not named: passes


def test_kill_kills_the_process():
    code = "import enos.failpoint as f; f.checkpoint('here'); print('survived')"
    p = subprocess.run([sys.executable, "-c", code], env={"ENOS_FAILPOINTS": "here=kill", "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True)
    assert p.returncode == -9 and "survived" not in p.stdout
