"""Run a command on the hosts of an environment, in parallel.

Connections go through the env's connection masters (ControlMaster, opened by ``enos up``,
kept by ControlPersist). For each host whose master runs, the session is asked for directly
on the master's control socket (:mod:`enos.ssh.mux`): no ``ssh`` process at all, ~5 ms per
host. Other hosts (master gone, jump host, unknown ControlPath token, master refusing) get
a plain ``ssh -F <env>/ssh_config ALIAS COMMAND`` process, which also re-opens their master.
Everything is read through one ``selectors`` loop (no thread per host, no polling).

Why not execo's ``Remote`` (which this module used first): its conductor thread and
per-process bookkeeping cost ~0.1 s on 20 hosts on this 2-core machine, about as much as the
whole fan-out itself (bench/RESULTS.md). A process's exit is watched through a pidfd, so a
connection master that a first ``ssh`` forks into the background (ControlPersist) and that
inherits the pipes can never make the loop wait for EOF.
"""
from __future__ import annotations

import errno
import os
import resource
import selectors
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from enos.errors import CommandFailed
from enos.model import Host

#: at most this many ssh processes at once (each holds 3 file descriptors)
MAX_PARALLEL = 256
#: after an ssh process exits, wait at most this long for the end of its output (a mux
#: session's output ends when its master closes the channel: no limit but ``timeout``)
GRACE = 2.0
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
    if roles is None:
        return list(hosts)
    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    if not wanted:
        raise ValueError(f"--roles {roles!r} names no role; give comma-separated roles or host aliases")
    known = {r for h in hosts for r in h.roles} | {h.alias for h in hosts}
    unknown = [r for r in wanted if r not in known]
    if unknown:
        raise ValueError(f"unknown role(s) or host(s): {', '.join(unknown)}; known roles: "
                         f"{', '.join(sorted({r for h in hosts for r in h.roles}))}")
    return [h for h in hosts if h.alias in wanted or set(h.roles) & set(wanted)]


class _Job:
    """One host's session (an ssh process, or a mux session on its master's socket) and
    what it has written so far."""

    __slots__ = ("alias", "proc", "pidfd", "sock", "replies", "fds", "out", "err", "code",
                 "timed_out", "mux_error", "ended", "started_at", "ended_at", "partial", "cancelled")

    def __init__(self, alias: str):
        self.alias = alias
        self.proc: Optional[subprocess.Popen] = None
        self.pidfd = -1
        self.sock = None
        self.replies = None
        self.fds: Dict[int, List[bytes]] = {}   # pipe read ends still open -> their buffer
        self.out: List[bytes] = []
        self.err: List[bytes] = []
        self.code: Optional[int] = None
        self.timed_out = False
        self.mux_error: Optional[str] = None
        self.ended: Optional[float] = None   # when the session ended (exit status known)
        self.started_at = 0.0                  # wall-clock time the session was asked for
        self.ended_at = 0.0                    # wall-clock time the job finished
        self.partial: Dict[str, bytes] = {}    # an incomplete last line per stream (on_output)
        self.cancelled = False


def _max_parallel() -> int:
    """Return how many sessions may run at once given the open-file limit (raising the
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


#: how often the exit of an ssh process is polled when the kernel has no pidfd_open
POLL = 0.05


def _open_pidfd(pid: int) -> int:
    """Return a pidfd for ``pid``, or -1 when this kernel or Python has none (Linux < 5.3
    answers ENOSYS, a seccomp filter EPERM; the caller then polls the process)."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return -1
    try:
        return opener(pid)
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
            return -1
        raise


def _fan_out(argvs: Dict[str, List[str]], timeout: Optional[float],
             mux: Optional[Dict[str, Tuple[str, str]]] = None,
             on_output: Optional[Callable[[str, str, str], None]] = None,
             stdout_to: Optional[Dict[str, int]] = None,
             cancel_fd: Optional[int] = None) -> Dict[str, _Job]:
    """Run every host's session at once (at most ``_max_parallel()`` at a time); return the
    finished jobs by alias. ``mux`` maps aliases to (control socket path, command): those
    go through their master when it answers, else through their argv. Sessions still
    running at ``timeout`` are killed (process) or dropped (mux: the master then closes them).

    ``on_output(alias, "stdout"|"stderr", line)`` is called for each line as it arrives
    (text, without its newline). ``stdout_to`` maps aliases to a file descriptor that gets
    the session's stdout directly (e.g. a local ``tar x``'s stdin; nothing is buffered).
    When ``cancel_fd`` becomes readable, every running session is ended as at a timeout
    (``cancelled`` set)."""
    from enos.ssh import mux as sshmux
    mux = mux or {}
    sinks = stdout_to or {}
    sel = selectors.DefaultSelector()
    pending = list(argvs)
    pending.reverse()
    running: Dict[str, _Job] = {}
    done: Dict[str, _Job] = {}
    limit = _max_parallel()
    deadline = None if timeout is None else time.monotonic() + timeout
    PIDFD, SOCK = "pidfd", "sock"

    def watch(job: _Job, out_fd: Optional[int], err_fd: int) -> None:
        for fd, buf in ((out_fd, job.out), (err_fd, job.err)):
            if fd is None:
                continue
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, (job, buf))
            job.fds[fd] = buf

    def spawn(job: _Job) -> None:
        sink = sinks.get(job.alias)
        proc = subprocess.Popen(argvs[job.alias], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if sink is None else sink, stderr=subprocess.PIPE)
        job.proc = proc
        job.pidfd = _open_pidfd(proc.pid)
        watch(job, proc.stdout.fileno() if sink is None else None, proc.stderr.fileno())
        if job.pidfd >= 0:
            sel.register(job.pidfd, selectors.EVENT_READ, (job, PIDFD))

    def start() -> None:
        while pending and len(running) < limit:
            alias = pending.pop()
            job = _Job(alias)
            job.started_at = time.time()
            running[alias] = job
            target = mux.get(alias)
            if target is not None and os.path.exists(target[0]):
                try:
                    sock, out_fd, err_fd = sshmux.open_session(*target, stdout_fd=sinks.get(alias))
                except OSError as e:
                    job.mux_error = str(e)
                else:
                    job.sock, job.replies = sock, sshmux.Replies()
                    sock.setblocking(False)
                    watch(job, out_fd, err_fd)
                    sel.register(sock, selectors.EVENT_READ, (job, SOCK))
                    continue
            spawn(job)

    def lines(job: _Job, stream: str, chunk: bytes, last: bool = False) -> None:
        data = job.partial.get(stream, b"") + chunk
        *complete, rest = data.split(b"\n")
        if last and rest:
            complete.append(rest)
            rest = b""
        job.partial[stream] = rest
        for line in complete:
            on_output(job.alias, stream, line.decode(errors="replace"))

    def drain(fd: int, buf: List[bytes], job: Optional[_Job] = None) -> bool:
        """Read what is available; return True at EOF."""
        while True:
            try:
                chunk = os.read(fd, _READ)
            except BlockingIOError:
                return False
            if not chunk:
                if on_output is not None and job is not None:
                    lines(job, "stdout" if buf is job.out else "stderr", b"", last=True)
                return True
            buf.append(chunk)
            if on_output is not None and job is not None:
                lines(job, "stdout" if buf is job.out else "stderr", chunk)

    def close_fd(job: _Job, fd: int) -> None:
        sel.unregister(fd)
        del job.fds[fd]
        if job.proc is None:          # Popen's pipes are closed with their file objects
            os.close(fd)

    def release_session(job: _Job, close: bool = True) -> None:
        if job.proc is not None and job.pidfd >= 0:
            sel.unregister(job.pidfd)
            os.close(job.pidfd)
            job.pidfd = -1
        if job.sock is not None:
            if sel.get_map().get(job.sock.fileno()) is not None:
                sel.unregister(job.sock)
            if close:
                job.sock.close()
                job.sock = None

    def release(job: _Job) -> None:
        for fd in list(job.fds):
            close_fd(job, fd)
        release_session(job)
        if job.proc is not None:
            job.proc.stdout.close()
            job.proc.stderr.close()

    def finish(job: _Job) -> None:
        # take what is left in the pipes and stop listening, even if something (an old
        # OpenSSH's forked master) still holds their other end
        for fd, buf in list(job.fds.items()):
            drain(fd, buf, job)
        if on_output is not None:
            for stream in list(job.partial):
                lines(job, stream, b"", last=True)
        release(job)
        if job.proc is not None and job.code is None and not job.timed_out:
            job.code = job.proc.wait()
        elif job.proc is not None:
            job.proc.wait()
        job.ended_at = time.time()
        del running[job.alias]
        done[job.alias] = job

    def ended(job: _Job, code: Optional[int]) -> None:
        # exit status known: the output may still be on its way (the master flushes the
        # channel after sending the status); finish at EOF of both pipes or after GRACE
        job.code = code
        job.ended = time.monotonic()
        # a mux session stays open until its output ends: closing the control socket
        # would make the master drop the channel (and output still on its way)
        release_session(job, close=False)
        if not job.fds:
            finish(job)

    def mux_event(job: _Job) -> None:
        try:
            data = job.sock.recv(_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            job.replies.feed(data)
        r = job.replies
        if r.exit_code is not None:
            ended(job, r.exit_code)
        elif r.refused is not None and not r.opened:
            # the master would not open a session (e.g. MaxSessions): use a plain ssh
            job.mux_error = r.refused
            release(job)
            job.replies = None
            del job.out[:], job.err[:]
            spawn(job)
        elif not data:
            job.code = 255
            job.err.append(b"enos: the connection master closed the session without an exit status\n")
            finish(job)

    cancelled = [False]
    if cancel_fd is not None:
        sel.register(cancel_fd, selectors.EVENT_READ, (None, "cancel"))
    try:
        start()
        while running:
            now = time.monotonic()
            if cancelled[0]:
                pending.clear()
                for job in list(running.values()):
                    if job.ended is None:
                        job.cancelled = True
                        if job.proc is not None:
                            job.proc.kill()
                    finish(job)
                break
            polled = [j for j in running.values() if j.proc is not None and j.pidfd < 0 and j.ended is None]
            for job in polled:              # no pidfd on this kernel: poll the exit
                code = job.proc.poll()
                if code is not None:
                    ended(job, code)
            for job in [j for j in running.values()
                        if j.ended is not None and j.proc is not None and now - j.ended >= GRACE]:
                finish(job)
            if deadline is not None and now >= deadline:
                for job in list(running.values()):
                    if job.ended is None:
                        job.timed_out = True
                        if job.proc is not None:
                            job.proc.kill()
                    finish(job)
            start()
            if not running:
                break
            wakes = [j.ended + GRACE for j in running.values() if j.ended is not None and j.proc is not None]
            if deadline is not None:
                wakes.append(deadline)
            if any(j.proc is not None and j.pidfd < 0 and j.ended is None for j in running.values()):
                wakes.append(now + POLL)
            wait = max(0.0, min(wakes) - now) if wakes else None
            for key, _ in sel.select(wait):
                job, what = key.data
                if job is None:
                    cancelled[0] = True
                    continue
                if running.get(job.alias) is not job:
                    continue
                if what is SOCK:
                    if key.fileobj is job.sock:
                        mux_event(job)
                elif what is PIDFD:
                    if key.fd == job.pidfd:
                        ended(job, job.proc.wait())
                elif key.fd in job.fds and drain(key.fd, what, job):
                    close_fd(job, key.fd)
                    if job.ended is not None and not job.fds:
                        finish(job)
    finally:
        for job in list(running.values()):  # interrupted: leave no ssh behind
            if job.proc is not None:
                try:
                    job.proc.send_signal(signal.SIGKILL)
                    job.proc.wait()
                except OSError:
                    pass
            release(job)
        sel.close()
    return done


def _mux_targets(ssh_config: Path, hosts: Sequence[Host], commands: Dict[str, str]) -> Dict[str, Tuple[str, str]]:
    """Return {alias: (control socket path, command)} for the hosts whose master can be
    addressed directly (the ssh_config's global ControlPath, no jump host)."""
    template = None
    try:
        for line in Path(ssh_config).read_text().splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0].lower() == "controlpath":
                if template is not None:      # more than one: let ssh decide per host
                    return {}
                template = parts[1].strip().strip('"')
    except OSError:
        return {}
    if not template or template.lower() == "none":
        return {}
    from enos.ssh import mux as sshmux
    out = {}
    for h in hosts:
        if h.jump:
            continue
        path = sshmux.control_path(template, h.address, h.port, h.user)
        if path:
            out[h.alias] = (path, commands[h.alias])
    return out


def ensure_control_dirs(ssh_config: Path) -> None:
    """Create the directories of the ``ControlPath`` lines of ``ssh_config`` (they live in
    /tmp and vanish with a reboot or ``stop_masters``; ssh fails when they are missing),
    or check they are safely ours. Returns None; unreadable files are ignored (ssh then
    reports the problem itself). Raises UnsafeValue for a dir another user made or can
    reach (see :func:`enos.ssh.client.secure_dir`)."""
    try:
        lines = Path(ssh_config).read_text().splitlines()
    except OSError:
        return
    from enos.ssh.client import secure_dir
    for line in lines:
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "controlpath" and parts[1].strip().lower() != "none":
            d = os.path.dirname(os.path.expanduser(parts[1].strip().strip('"')))
            if d and "%" not in d:
                secure_dir(Path(d).parent)     # raises UnsafeValue: another user's dir
                secure_dir(Path(d))


@dataclass
class Session:
    """What one host's session gave: ``exit_code`` (None if it never ended: timeout,
    cancelled), raw ``stdout``/``stderr`` bytes, ``error`` (why it could not run, if so),
    and wall-clock ``started``/``ended`` times (seconds since the epoch)."""

    host: str
    exit_code: Optional[int]
    stdout: bytes
    stderr: bytes
    error: Optional[str]
    started: float
    ended: float
    timed_out: bool = False
    cancelled: bool = False


def run_sessions(ssh_config: Path, hosts: Sequence[Host], command, timeout: Optional[float] = None,
                 use_masters: bool = True,
                 on_output: Optional[Callable[[str, str, str], None]] = None,
                 stdout_to: Optional[Dict[str, int]] = None,
                 cancel_fd: Optional[int] = None) -> Dict[str, Session]:
    """Run ``command`` (a string, or {alias: string} for per-host commands) on every host at
    once; return {alias: Session}. Never raises for a host's failure: a failed host's
    Session says what happened (``exit_code``, ``error``). ``on_output``, ``stdout_to`` and
    ``cancel_fd``: see :func:`_fan_out`. Raises OSError only if no process can be started."""
    ensure_control_dirs(ssh_config)
    commands = command if isinstance(command, dict) else {h.alias: command for h in hosts}
    base = ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "-T"]
    jobs = _fan_out({h.alias: base + [h.alias, commands[h.alias]] for h in hosts}, timeout,
                    mux=_mux_targets(ssh_config, hosts, commands) if use_masters else None,
                    on_output=on_output, stdout_to=stdout_to, cancel_fd=cancel_fd)
    out: Dict[str, Session] = {}
    for h in hosts:
        j = jobs[h.alias]
        err = b"".join(j.err)
        error = None
        code: Optional[int] = j.code
        if j.timed_out:
            error, code = f"timed out after {timeout}s", None
        elif j.cancelled:
            error, code = "cancelled", None
        elif j.code == 255:
            error = "ssh failed: " + (err.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        out[h.alias] = Session(h.alias, code, b"".join(j.out), err, error, j.started_at, j.ended_at,
                               j.timed_out, j.cancelled)
    return out


def run_command(ssh_config: Path, hosts: Sequence[Host], command: str, timeout: Optional[float] = None,
                tolerate_failures: bool = False, use_masters: bool = True) -> List[CommandResult]:
    """Run ``command`` on every host at once; return one CommandResult per host, in order.
    ``use_masters=False`` starts one ``ssh`` process per host even where a master runs.

    Raises :class:`CommandFailed` (naming the hosts) if any host exits non-zero or cannot
    be reached, unless ``tolerate_failures``."""
    sessions = run_sessions(ssh_config, hosts, command, timeout=timeout, use_masters=use_masters)
    results = []
    for h in hosts:
        s = sessions[h.alias]
        results.append(CommandResult(h.alias, s.exit_code, s.stdout.decode(errors="replace"),
                                     s.stderr.decode(errors="replace"), s.error))
    failed = [r for r in results if not r.ok]
    if failed and not tolerate_failures:
        raise CommandFailed(command, failed, results)
    return results
