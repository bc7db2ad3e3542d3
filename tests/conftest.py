"""Shared test setup: root-only tests are skipped with a reason for other users."""
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    skip_root = pytest.mark.skip(reason="needs root (network namespaces, bridges, libvirtd); run the suite as root")
    for item in items:
        if "root" in item.keywords and not IS_ROOT:
            item.add_marker(skip_root)


@pytest.fixture
def enos_cmd():
    """The enos CLI as a subprocess argv prefix (the venv's interpreter, this checkout)."""
    return [sys.executable, "-m", "enos"]


@pytest.fixture
def sshd_available():
    """Skip unless an sshd binary is installed."""
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()):
        pytest.skip("sshd not installed (apt-get install openssh-server)")
