"""The suite's own guards: a missing prerequisite fails under CI=true (skips otherwise), and
the network guard refuses, before any packet is sent, an ssh to the g5k provider's default
gateway or to a real Grid'5000 name, a name lookup of one, and a connection to a
non-local address; loopback stays allowed. Each check runs in a fresh Python process
that has the guard (as every process the tests and the benchmark start) and its own log."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from enos.provider.g5k import DEFAULT_GATEWAY

HERE = Path(__file__).resolve().parent


def _pytest_on(tmp_path, body: str, ci: bool) -> subprocess.CompletedProcess:
    t = tmp_path / "test_x.py"
    t.write_text(textwrap.dedent(body))
    env = dict(os.environ, CI="true" if ci else "")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "-c", "/dev/null", str(t)], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=300)


@pytest.mark.parametrize("ci", [True, False])
def test_missing_prerequisite_fails_under_ci(tmp_path, ci):
    body = f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from prereq import need_module, missing

        def test_module():
            need_module("enos_no_such_module_for_the_test")

        def test_binary():
            missing("no such binary")
    """
    p = _pytest_on(tmp_path, body, ci)
    if ci:
        assert p.returncode == 1 and "2 failed" in p.stdout and "missing prerequisite under CI=true" in p.stdout, p.stdout
    else:
        assert p.returncode == 0 and "2 skipped" in p.stdout, p.stdout


def _guarded(tmp_path, code: str) -> tuple:
    log = tmp_path / "guard.log"
    env = dict(os.environ, ENOS_NETGUARD="1", ENOS_NETGUARD_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(HERE / "netguard"), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                       timeout=120)
    return p, (log.read_text() if log.exists() else "")


@pytest.mark.parametrize("what,code", [
    ("ssh to the g5k default gateway", f"import subprocess; subprocess.run(['ssh', '-o', 'BatchMode=yes', "
                                       f"'{DEFAULT_GATEWAY}', 'true'])"),
    ("ssh through it as a jump host", "import subprocess; subprocess.run(['ssh', '-J', 'alice@access.grid5000.fr', "
                                      "'10.0.0.1', 'true'])"),
    ("ssh to a node by its real name", "import subprocess; subprocess.run(['ssh', 'paradoxe-1.rennes.grid5000.fr'])"),
    ("ssh through an ssh ProxyCommand to it", "import subprocess; subprocess.run(['ssh', '-o', 'ProxyCommand=ssh -W "
                                              "%h:%p alice@access.grid5000.fr', '127.0.0.1', 'true'])"),
    ("HTTP to the real API", "import urllib.request; urllib.request.urlopen('https://api.grid5000.fr/stable/', timeout=5)"),
    ("TCP to a public address", "import socket; socket.create_connection(('192.0.2.1', 22), timeout=5)"),
])
def test_network_guard_refuses(tmp_path, what, code):
    p, log = _guarded(tmp_path, code)
    assert p.returncode != 0 and "enos network guard: refused" in p.stderr, (what, p.stderr)
    assert "refused" in log, what


def test_network_guard_lets_loopback_through(tmp_path):
    code = """
        import socket, subprocess
        srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
        socket.create_connection(srv.getsockname(), timeout=5).close()
        subprocess.run(["ssh", "-V"], check=True, capture_output=True)
        print("ok")
    """
    p, log = _guarded(tmp_path, code)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
    assert log == ""


def test_network_guard_is_active_in_this_session():
    """The suite itself runs under the guard (conftest), as do the processes it starts."""
    assert os.environ.get("ENOS_NETGUARD") == "1" and os.environ.get("ENOS_NETGUARD_LOG")
    assert str(HERE / "netguard") in os.environ["PYTHONPATH"].split(os.pathsep)
    with pytest.raises(PermissionError, match="network guard"):
        import socket
        socket.getaddrinfo(DEFAULT_GATEWAY, 22)
    # that refusal was on purpose: take it out of the session's log
    log = Path(os.environ["ENOS_NETGUARD_LOG"])
    log.write_text("".join(line for line in log.read_text().splitlines(True) if DEFAULT_GATEWAY not in line))
