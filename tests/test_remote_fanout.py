"""``enos.ssh.remote.run_command`` on real namespace hosts: through the connection masters
(mux protocol, no ssh process), through ssh processes (no masters), and the semantics both
keep: per-host stdout/stderr/exit code, late output, timeouts, CommandFailed naming hosts."""
from __future__ import annotations

import socket
import struct
import subprocess
from pathlib import Path

import pytest

from prereq import missing

from enos.ssh import mux as sshmux
from enos.errors import CommandFailed


def test_control_path_matches_openssh_hash():
    """Our %C is the one OpenSSH computes itself (``ssh -G`` prints the resolved ControlPath
    without connecting; it hashes this machine's host name in)."""
    for host, port, user in (("10.0.0.5", 22, "root"), ("node-7.example", 2222, "alice")):
        g = subprocess.run(["ssh", "-G", "-F", "/dev/null", "-o", "ControlPath=/tmp/x/%C", "-p", str(port),
                            "-l", user, host], capture_output=True, text=True, check=True).stdout
        theirs = next(line.split(None, 1)[1] for line in g.splitlines() if line.startswith("controlpath "))
        assert sshmux.control_path("/tmp/x/%C", host, port, user, local_host=socket.gethostname()) == theirs
    assert sshmux.control_path("/t/%r@%h:%p%%", "h", 2222, "u", local_host="l") == "/t/u@h:2222%"
    assert sshmux.control_path("/t/%n", "h", 22, "u") is None      # unknown token: let ssh do it


def test_replies_parser_handles_split_frames():
    def frame(*u32, s=None):
        body = b"".join(struct.pack(">I", x) for x in u32) + (struct.pack(">I", len(s)) + s if s else b"")
        return struct.pack(">I", len(body)) + body
    data = frame(1, 4) + frame(0x80000006, 1, 7) + frame(0x80000004, 7, 3)
    r = sshmux.Replies()
    for i in range(len(data)):          # one byte at a time
        r.feed(data[i:i + 1])
    assert r.opened and r.exit_code == 3 and r.refused is None
    r = sshmux.Replies()
    r.feed(frame(1, 4) + frame(0x80000003, 1, s=b"too many sessions"))
    assert not r.opened and r.refused == "too many sessions"


@pytest.fixture(scope="module")
def env3(tmp_path_factory):
    import os
    import sys
    if os.geteuid() != 0:
        missing("needs root (network namespaces)")
    d = tmp_path_factory.mktemp("fanout")
    (d / "r.yaml").write_text("provider:\n  type: local\nresources:\n  local:\n    a: 2\n    b: 1\n")
    cmd = [sys.executable, "-m", "enos", "-q"]
    p = subprocess.run(cmd + ["up", "-f", "r.yaml", "--env", "env", "--no-provision"], cwd=d,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    import enos
    try:
        env = enos.load(str(d / "env"))
        env.require_hosts()
        yield env.envdir
    finally:
        subprocess.run(cmd + ["destroy", "--env", "env"], cwd=d, capture_output=True, timeout=120)


def _sessions_via_processes(monkeypatch):
    """Count ssh processes started by run_command."""
    started = []
    real = subprocess.Popen

    def popen(argv, *a, **kw):
        started.append(argv)
        return real(argv, *a, **kw)
    monkeypatch.setattr(subprocess, "Popen", popen)
    return started


@pytest.mark.root
@pytest.mark.parametrize("use_masters", [True, False])
def test_results_per_host(env3, monkeypatch, use_masters):
    from enos.ssh.remote import run_command
    started = _sessions_via_processes(monkeypatch)
    hosts = env3.resources.hosts
    res = run_command(env3.ssh_config, hosts, "hostname; echo oops >&2; exit 4",
                      tolerate_failures=True, use_masters=use_masters)
    assert [r.alias for r in res] == [h.alias for h in hosts] and [r.host for r in res] == list(hosts)
    assert [r.stdout for r in res] == [h.alias + "\n" for h in hosts]
    assert all(r.stderr == "oops\n" and r.exit_code == 4 and not r.ok for r in res)
    # masters are open (enos up opened them): no ssh process at all through the mux path
    assert len(started) == (0 if use_masters else len(hosts))


@pytest.mark.root
@pytest.mark.parametrize("err", ["ENOSYS", "EPERM", "absent"])
def test_kernel_without_pidfd_open(env3, monkeypatch, err):
    """On a kernel without pidfd_open (Linux < 5.3: ENOSYS; a seccomp filter: EPERM; a
    Python without it) the exit of each ssh process is polled: same results. (An older
    kernel cannot run here: pidfd_open is made to fail as it would there.)"""
    import errno
    import os
    from enos.ssh.remote import run_command
    if err == "absent":
        monkeypatch.delattr(os, "pidfd_open")
    else:
        def no_pidfd(pid, flags=0):
            raise OSError(getattr(errno, err), os.strerror(getattr(errno, err)))
        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    hosts = env3.resources.hosts
    res = run_command(env3.ssh_config, hosts, "hostname; exit 3", tolerate_failures=True, use_masters=False)
    assert [(r.stdout, r.exit_code) for r in res] == [(h.alias + "\n", 3) for h in hosts]
    late = run_command(env3.ssh_config, hosts, "echo a; (sleep 0.3; echo late) & exit 0", use_masters=False)
    assert all(r.stdout == "a\nlate\n" for r in late)


@pytest.mark.root
def test_failure_names_hosts_and_big_and_late_output(env3):
    from enos.ssh.remote import run_command
    hosts = env3.resources.hosts
    with pytest.raises(CommandFailed) as e:
        run_command(env3.ssh_config, hosts, f"test $(hostname) != {hosts[1].alias}")
    assert [r.alias for r in e.value.failed] == [hosts[1].alias] and hosts[1].alias in str(e.value)
    big = run_command(env3.ssh_config, hosts, "head -c 500000 /dev/zero | tr '\\0' x")
    assert all(len(r.stdout) == 500000 for r in big)
    late = run_command(env3.ssh_config, hosts, "echo a; (sleep 0.3; echo late) & exit 0")
    assert all(r.stdout == "a\nlate\n" for r in late)


@pytest.mark.root
def test_timeout_and_masters_gone(env3, monkeypatch):
    from enos.ssh.remote import run_command
    from enos.ssh.client import stop_masters
    hosts = env3.resources.hosts
    res = run_command(env3.ssh_config, hosts, "sleep 5", timeout=0.5, tolerate_failures=True)
    assert all(r.exit_code is None and "timed out" in r.error for r in res)
    stop_masters(env3.run_id)          # also removes the control dir
    started = _sessions_via_processes(monkeypatch)
    res = run_command(env3.ssh_config, hosts, "hostname")
    assert [r.stdout.strip() for r in res] == [h.alias for h in hosts]
    assert len(started) == len(hosts)  # no master: ssh processes, which re-open them
    started.clear()
    run_command(env3.ssh_config, hosts, "true")
    assert started == []               # masters back: mux again
