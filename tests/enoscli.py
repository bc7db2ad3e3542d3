"""Running the enos CLI from tests."""
from __future__ import annotations

import os
import subprocess
import sys


def enos(cwd, *args, env=None, timeout=600, check=True) -> subprocess.CompletedProcess:
    """Run ``python -m enos ARGS`` in ``cwd`` (failpoint variables of the test process
    removed, ``env`` added); return the CompletedProcess, asserting exit 0 when ``check``."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "enos", *args], cwd=str(cwd), env=e, capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, f"enos {' '.join(args)}: rc {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p
