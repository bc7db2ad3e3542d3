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


def _pytest_on(tmp_path, body: str, ci) -> subprocess.CompletedProcess:
    t = tmp_path / "test_x.py"
    t.write_text(textwrap.dedent(body))
    env = dict(os.environ, CI=ci if isinstance(ci, str) else "true" if ci else "")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "-c", "/dev/null", str(t)], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=300)


@pytest.mark.parametrize("ci", [True, False, "1", "TRUE"])
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


def test_no_test_decides_about_ci_by_itself():
    """Every skip for a missing prerequisite goes through tests/prereq.py (which reads CI=1,
    CI=true, CI=yes alike): a test reading the variable itself (``CI == "true"``) would
    skip under ``CI=1``."""
    import re
    found = [f"{p.name}:{n}" for p in sorted(HERE.glob("*.py")) if p.name not in ("prereq.py", "test_guards.py")
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"""environ(\.get\(|\[)\s*["']CI["']""", line)]
    assert not found, f"read CI through prereq.missing/need_module instead: {found}"


def _guarded(tmp_path, code: str, netns_setup: str = "") -> tuple:
    """Run ``code`` in a fresh Python with the guard and its own log; with ``netns_setup``
    (shell commands), in a new network namespace set up by them (nothing can leave it)."""
    log = tmp_path / "guard.log"
    env = dict(os.environ, ENOS_NETGUARD="1", ENOS_NETGUARD_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(HERE / "netguard"), os.environ.get("PYTHONPATH", "")]))
    argv = [sys.executable, "-c", textwrap.dedent(code)]
    if netns_setup:
        argv = ["unshare", "--net", "sh", "-ec", f"ip link set lo up; {netns_setup}; exec \"$@\"", "sh", *argv]
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
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
    ("ssh whose destination ssh -G cannot resolve",
     "import subprocess; subprocess.run(['ssh', '-o', 'NoSuchOption=1', '10.0.0.1', 'true'])"),
    ("ssh with no destination", "import subprocess; subprocess.run(['ssh', '-o', 'BatchMode=yes'])"),
    ("ssh through os.posix_spawn", "import os; os.posix_spawn('/usr/bin/ssh', ['ssh', 'paravance-1.rennes.grid5000.fr'], "
                                   "dict(os.environ))"),
    ("ssh through os.execv", "import os; os.execv('/usr/bin/ssh', ['ssh', 'access.grid5000.fr'])"),
])
def test_network_guard_refuses(tmp_path, what, code):
    p, log = _guarded(tmp_path, code)
    assert p.returncode != 0 and "enos network guard: refused" in p.stderr, (what, p.stderr)
    assert "refused" in log, what


@pytest.mark.root
@pytest.mark.parametrize("what,setup,address", [
    ("an address routed through a gateway on a non-default device",
     "ip link add v0 type veth peer name v1; ip addr add 10.77.0.1/24 dev v0; ip link set v0 up; "
     "ip link set v1 up; ip route add 10.88.0.0/24 via 10.77.0.2 dev v0", "10.88.0.5"),
    ("an address directly on a tunnel device (a VPN)",
     "ip tuntap add t0 mode tun; ip addr add 10.66.0.1/24 dev t0; ip link set t0 up", "10.66.0.5"),
    ("an address with no route at all", "true", "10.55.0.5"),
])
def test_network_guard_fails_closed_on_non_local_routes(tmp_path, what, setup, address):
    """In a namespace of its own (nothing can leave it), the guard refuses what it cannot
    show to be local, while an address directly on a bridge or dummy link passes."""
    code = f"""
        import socket
        try:
            socket.create_connection(({address!r}, 22), timeout=2)
        except PermissionError as e:
            print("refused")
        except OSError as e:
            print("sent", e)
    """
    p, log = _guarded(tmp_path, code, netns_setup=setup)
    assert p.returncode == 0 and p.stdout.strip() == "refused", (what, p.stdout, p.stderr)
    assert address in log, (what, log)


@pytest.mark.root
def test_network_guard_lets_a_test_bridge_through(tmp_path):
    """An address directly on a bridge that is not the default route's device is local
    (as the bridges of the local provider's hosts)."""
    code = """
        import socket
        srv = socket.socket(); srv.bind(("10.99.0.1", 0)); srv.listen(1)
        socket.create_connection(srv.getsockname(), timeout=5).close()
        try:
            socket.create_connection(("10.99.0.7", 9), timeout=1)
        except PermissionError:
            raise
        except OSError:
            pass
        print("ok")
    """
    p, log = _guarded(tmp_path, code, netns_setup="ip link add b0 type bridge; ip addr add 10.99.0.1/24 dev b0; "
                                                  "ip link set b0 up")
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
    assert log == ""


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


def test_network_guard_is_active_in_this_session(tmp_path, monkeypatch):
    """The suite itself runs under the guard (conftest), as do the processes it starts. The
    refusal provoked here goes to a log of this test's own (the guard reads the log's name
    when it refuses): the session's log, which fails the run on any refusal, is untouched."""
    shared = Path(os.environ["ENOS_NETGUARD_LOG"])
    assert os.environ.get("ENOS_NETGUARD") == "1" and shared
    assert str(HERE / "netguard") in os.environ["PYTHONPATH"].split(os.pathsep)
    before = shared.read_bytes() if shared.exists() else b""
    own = tmp_path / "own-guard.log"
    monkeypatch.setenv("ENOS_NETGUARD_LOG", str(own))
    with pytest.raises(PermissionError, match="network guard"):
        import socket
        socket.getaddrinfo(DEFAULT_GATEWAY, 22)
    assert DEFAULT_GATEWAY in own.read_text()
    assert (shared.read_bytes() if shared.exists() else b"") == before


def test_ctrl_c_reaches_scripts_when_the_suite_starts_with_it_ignored():
    """The suite started as a background job of a non-interactive shell (``bash .ci/run &``)
    inherits SIGINT ignored; conftest gives it back its default, so a Python script a test
    starts and sends Ctrl-C to gets KeyboardInterrupt (without this, the Ctrl-C tests of
    API scripts hung for 120 s in such runs). Checked in a process started with SIGINT
    ignored, with and without conftest loaded."""
    import signal
    child = ("import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")

    def script_sees_ctrl_c(load_conftest: bool) -> str:
        code = (f"import sys, subprocess; sys.path.insert(0, {str(HERE)!r}); "
                + ("import conftest; " if load_conftest else "")
                + f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, "
                  "text=True).stdout.strip())")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)).stdout.strip()

    assert script_sees_ctrl_c(load_conftest=False) == "False"      # the condition is reproduced
    assert script_sees_ctrl_c(load_conftest=True) == "True"
