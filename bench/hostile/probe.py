"""What of a run id is left on this machine, seen from outside enos (``ip``, ``ps``, the
file system), and the harness' own last-resort cleanup of a run id it created."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import List


def socket_dir(run_id: str) -> Path:
    """The directory of a run's SSH control sockets (as enos.ssh.client documents it)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "enos-ssh" / run_id
    return Path(f"/tmp/enos-ssh-{os.getuid()}") / run_id


def _lines(argv) -> List[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines()


def namespaces(run_id: str) -> List[str]:
    return [ln.split()[0] for ln in _lines(["ip", "netns", "list"]) if ln.startswith(f"enos-{run_id}-")]


def links(run_id: str) -> List[str]:
    out = []
    for line in _lines(["ip", "-o", "link"]):
        name = line.split(":")[1].strip().split("@")[0]
        if name == f"eb{run_id}" or name.startswith(f"ev{run_id}"):
            out.append(name)
    return out


def processes(run_id: str) -> List[tuple]:
    """(pid, args) of processes started from the run's ``local-R/`` dir or naming the run."""
    out = []
    for line in _lines(["ps", "-ww", "-eo", "pid=,args="]):
        pid, _, args = line.strip().partition(" ")
        if f"local-{run_id}/" in args or f"enos-ssh-{os.getuid()}/{run_id}/" in args \
                or f"enos-ssh/{run_id}/" in args:
            out.append((int(pid), args))
    return out


def leftovers(run_id: str) -> List[str]:
    """Everything of ``run_id`` still on this machine, one line each."""
    out = [f"netns {n}" for n in namespaces(run_id)]
    out += [f"link {n}" for n in links(run_id)]
    out += [f"process {pid} {args[:80]}" for pid, args in processes(run_id)]
    if socket_dir(run_id).exists():
        out.append(f"socket dir {socket_dir(run_id)}")
    return out


def force_clean(run_id: str) -> None:
    """Remove what is left of ``run_id`` by hand (the harness' own resources only: their
    names carry the run id it created): processes by PID, namespaces, links, socket dir."""
    for ns in namespaces(run_id):
        for pid in _lines(["ip", "netns", "pids", ns]):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass
    for pid, _ in processes(run_id):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for name in links(run_id):
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    for ns in namespaces(run_id):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    d = socket_dir(run_id)
    if d.exists():
        subprocess.run(["rm", "-rf", "--", str(d)], check=False)
