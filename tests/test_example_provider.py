"""The example provider of "Writing a provider" (examples/provider, type ``loopback``):
installed with pip (offline, from its directory) into a directory of its own, found by
enos through its entry point only, and run through the provider conformance suite with the
real CLI — sshds on loopback ports, kill -9 at every checkpoint, cold destroy, sweep."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from enos.testing.conformance import ConformanceSuite

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "provider"
pytestmark = pytest.mark.root      # sshd runs as root here (its privilege separation needs it)

RESERVATION = """\
provider:
  type: loopback
resources:
  loopback:
    server: 1
    client: 2
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """pip install the example into a fresh directory (no index, no build isolation: nothing
    is fetched) and put it on sys.path; return the directory."""
    target = tmp_path_factory.mktemp("loopback-site")
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        "--no-build-isolation", "--target", str(target), str(EXAMPLE)],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    eps = list(target.glob("enos_loopback-*.dist-info/entry_points.txt"))
    assert eps and "loopback = enos_loopback:LoopbackProvider" in eps[0].read_text()
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("enos_loopback", None)


def sshds_of(run_id: str) -> list:
    """The sshd processes of ``run_id``, found with ps (their config path holds the run id)."""
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in ps.splitlines()
            if "sshd" in line and f"/loopback-{run_id}/" in line and "ps -ww" not in line]


def test_found_by_entry_point_only(installed):
    """The registry finds 'loopback' through the entry point (it is not a built-in)."""
    from enos.provider import available_providers, builtin_providers, load_provider_class
    assert "loopback" not in builtin_providers()
    assert "loopback" in available_providers()
    cls = load_provider_class("loopback")
    assert cls.__module__ == "enos_loopback" and Path(sys.modules["enos_loopback"].__file__).parent == installed


class TestLoopbackConformance(ConformanceSuite):
    """The conformance suite, unchanged, against the example provider."""

    up_args = ("--no-provision",)
    min_crash_points = 8
    command_timeout = 120.0

    @pytest.fixture
    def cli_env(self, installed):
        return {"PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])}

    @pytest.fixture
    def reservation(self, tmp_path, installed) -> Path:
        p = tmp_path / "reservation.yaml"
        p.write_text(RESERVATION)
        return p

    def leftovers(self, run_id: str):
        return sshds_of(run_id)
