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


def archived_provider_record(run, env, out) -> dict:
    """Archive ``env`` to ``out`` with ``enos archive`` and accept it with ``enos archive
    --check``, both through ``run(*args)`` (the test's CLI runner, returning a
    CompletedProcess); assert both succeed and return the provider record the archive
    holds (``env/provider.json``'s ``record``)."""
    import json
    import tarfile
    a = run("archive", "--env", str(env), "-o", str(out))
    assert a.returncode == 0, a.stderr[-2000:]
    check = run("archive", "--check", str(out))
    assert check.returncode == 0 and " ok — " in check.stdout, check.stdout + check.stderr
    with tarfile.open(out) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/env/provider.json"))
        return json.loads(tar.extractfile(member).read())["record"]
