"""Run a command on the hosts of an environment, in parallel.

One ``ssh -F <env>/ssh_config ALIAS COMMAND`` process per host, all started at once and
read through one ``selectors`` loop (no thread per host, no polling): connections go
through the env's ssh_config, so they reuse the connection masters opened by ``enos up``
(ControlMaster) and a command on an already-connected host costs ~10 ms.

Why not execo's ``Remote`` (which this module used first): its conductor thread and
per-process bookkeeping cost ~0.1 s on 20 hosts on this 2-core machine, about as much as the
whole fan-out itself (bench/RESULTS.md); this loop stays within a few ms of plain parallel
``ssh``. A process's exit is watched through a pidfd, so a connection master that a first
``ssh`` forks into the background (ControlPersist) and that inherits the pipes can never make
the loop wait for EOF.
"""
from __future__ import annotations

import os
import resource
import selectors
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from enos.errors import CommandFailed
from enos.provider.provider import Host

#: at most this many ssh processes at once (each holds 3 file descriptors)
MAX_PARALLEL = 256
_READ = 65536


@dataclass
class CommandResult:
    """One host's outcome: ``exit_code`` is None when the command could not run (timeout,
    SSH failure)."""

    host: str
    exit_code: Optional[int]
    stdout: str
    stderr: str
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True when the command exited with 0."""
        return self.exit_code == 0

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)


def select_hosts(hosts: Sequence[Host], roles: Optional[str]) -> List[Host]:
    """Return the hosts having one of the comma-separated ``roles`` (all hosts if None),
    also matching host aliases. Raises ValueError naming unknown roles."""
    if not roles:
        return list(hosts)
    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    known = {r for h in hosts for r in h.roles} | {h.alias for h in hosts}
    unknown = [r for r in wanted if r not in known]
    if unknown:
        raise ValueError(f"unknown role(s) or host(s): {', '.join(unknown)}; known roles: "
                         f"{', '.join(sorted({r for h in hosts for r in h.roles}))}")
    return [h for h in hosts if h.alias in wanted or set(h.roles) & set(wanted)]


class _Job:
    """One host's ssh process and what it has written so far."""

    __slots__ = ("alias", "proc", "pidfd", "out", "err", "open", "code", "timed_out")

    def __init__(self, alias: str, proc: subprocess.Popen):
        self.alias = alias
        self.proc = proc
        self.pidfd = os.pidfd_open(proc.pid)
        self.out: List[bytes] = []
        self.err: List[bytes] = []
        self.open = 2
        self.code: Optional[int] = None
        self.timed_out = False


def _max_parallel() -> int:
    """Return how many ssh processes may run at once given the open-file limit (raising the
    soft limit to the hard one when that helps)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MAX_PARALLEL * 3 + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return MAX_PARALLEL
    return max(1, min(MAX_PARALLEL, (soft - 64) // 3))


def _fan_out(argvs: Dict[str, List[str]], timeout: Optional[float]) -> Dict[str, _Job]:
    """Run every argv (keyed by host alias) at once, at most ``_max_parallel()`` at a time;
    return the finished jobs. Jobs still running at ``timeout`` are killed."""
    sel = selectors.DefaultSelector()
    pending = list(argvs.items())
    pending.reverse()
    running: Dict[str, _Job] = {}
    done: Dict[str, _Job] = {}
    limit = _max_parallel()
    deadline = None if timeout is None else time.monotonic() + timeout

    def start() -> None:
        while pending and len(running) < limit:
            alias, argv = pending.pop()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            job = _Job(alias, proc)
            for f in (proc.stdout, proc.stderr):
                os.set_blocking(f.fileno(), False)
            sel.register(proc.stdout, selectors.EVENT_READ, (job, job.out))
            sel.register(proc.stderr, selectors.EVENT_READ, (job, job.err))
            sel.register(job.pidfd, selectors.EVENT_READ, (job, None))
            running[alias] = job

    def drain(f, buf: List[bytes]) -> bool:
        """Read what is available; return True at EOF."""
        while True:
            try:
                chunk = os.read(f.fileno(), _READ)
            except BlockingIOError:
                return False
            if not chunk:
                return True
            buf.append(chunk)

    def finish(job: _Job) -> None:
        # the process has exited: take what it wrote, and stop listening even if a forked
        # connection master still holds the other end of the pipes
        for f, buf in ((job.proc.stdout, job.out), (job.proc.stderr, job.err)):
            if not f.closed:
                drain(f, buf)
                sel.unregister(f)
                f.close()
        sel.unregister(job.pidfd)
        os.close(job.pidfd)
        job.code = job.proc.wait()
        del running[job.alias]
        done[job.alias] = job

    try:
        start()
        while running:
            wait = None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    for job in list(running.values()):
                        job.timed_out = True
                        job.proc.kill()
                        finish(job)
                    start()
                    continue
            for key, _ in sel.select(wait):
                job, buf = key.data
                if job.alias not in running:
                    continue
                if buf is None:
                    finish(job)
                elif drain(key.fileobj, buf):
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
            start()
    finally:
        for job in list(running.values()):  # interrupted: leave no ssh behind
            try:
                job.proc.send_signal(signal.SIGKILL)
                job.proc.wait()
            except OSError:
                pass
            for f in (job.proc.stdout, job.proc.stderr):
                f.close()
            os.close(job.pidfd)
        sel.close()
    return done


def ensure_control_dirs(ssh_config: Path) -> None:
    """Create the directories of the ``ControlPath`` lines of ``ssh_config`` (they live in
    /tmp and vanish with a reboot or ``stop_masters``; ssh fails when they are missing).
    Returns None; unreadable files are ignored (ssh then reports the problem itself)."""
    try:
        lines = Path(ssh_config).read_text().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "controlpath" and parts[1].strip().lower() != "none":
            d = os.path.dirname(os.path.expanduser(parts[1].strip().strip('"')))
            if d and "%" not in d:
                os.makedirs(d, mode=0o700, exist_ok=True)


def run_command(ssh_config: Path, hosts: Sequence[Host], command: str, timeout: Optional[float] = None,
                tolerate_failures: bool = False) -> List[CommandResult]:
    """Run ``command`` on every host at once; return one CommandResult per host, in order.

    Raises :class:`CommandFailed` (naming the hosts) if any host exits non-zero or cannot
    be reached, unless ``tolerate_failures``."""
    ensure_control_dirs(ssh_config)
    base = ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "-T"]
    jobs = _fan_out({h.alias: base + [h.alias, command] for h in hosts}, timeout)
    results = []
    for h in hosts:
        j = jobs[h.alias]
        out = b"".join(j.out).decode(errors="replace")
        err_text = b"".join(j.err).decode(errors="replace")
        error = None
        code: Optional[int] = j.code
        if j.timed_out:
            error, code = f"timed out after {timeout}s", None
        elif j.code == 255:
            error = "ssh failed: " + (err_text.strip().splitlines() or ["?"])[-1]
        results.append(CommandResult(h.alias, code, out, err_text, error))
    failed = [r for r in results if not r.ok]
    if failed and not tolerate_failures:
        raise CommandFailed(command, failed, results)
    return results
