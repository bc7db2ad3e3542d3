"""Headless Chromium for the tests that check HTML a user opens: always in a network
namespace of its own with no interface up (``unshare --net``), so the browser cannot send a
single packet anywhere whatever its background services try (the network guard of
tests/netguard does not see non-Python programs)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from prereq import missing

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(args, tmp: Path, name: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run Chromium with ``args`` (a profile of its own under ``tmp``) in a network
    namespace with no link up; return the CompletedProcess. A missing Chromium or
    ``unshare`` skips (fails under CI=true)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe or not shutil.which("unshare"):
        missing("chromium and unshare are needed (bash scripts/setup.sh --test installs chromium)")
    argv = ["unshare", "--net", exe, *FLAGS, f"--user-data-dir={tmp / ('profile-' + name)}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
