"""Run a command on the hosts of an environment, in parallel.

Connections go through the env's connection masters (ControlMaster, opened by ``enos up``,
kept by ControlPersist). For each host whose master runs, the session is asked for directly
on the master's control socket (:mod:`enos.ssh.mux`): no ``ssh`` process at all, ~5 ms per
host. Other hosts (master gone, unknown ControlPath token, master refusing) get a plain
``ssh -F <env>/ssh_config ALIAS COMMAND`` process, which also re-opens their master; the
masters of jump hosts are opened first (:mod:`enos.ssh.jump`): one connection per jump host.
Everything is read through one ``selectors`` loop (no thread per host, no polling).

Why not execo's ``Remote`` (which this module used first): its conductor thread and
per-process bookkeeping cost ~0.1 s on 20 hosts on this 2-core machine, about as much as the
whole fan-out itself (bench/RESULTS.md). A process's exit is watched through a pidfd, so a
connection master that a first ``ssh`` forks into the background (ControlPersist) and that
inherits the pipes can never make the loop wait for EOF.

The pieces: :class:`SshProcess` and :class:`MuxChannel` carry one session (an ``ssh``
process, or a session asked of the host's master); :class:`HostCommand` is one command on one
host (its channel, what it wrote, how it ended); :class:`FanOut` the set running at once (one
selector, a limit, a deadline, cancel). Every host's outcome is an :class:`enos.results.Result`.
"""
from __future__ import annotations

import errno
import os
import resource
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from enos.errors import CommandFailed
from enos.model import Host
from enos.results import Result, Results
from enos.ssh import mux as sshmux
from enos.ssh.client import secure_dir
from enos.ssh.files import read_ssh_config
from enos.ssh.jump import Masters

#: at most this many ssh processes at once (each holds 3 file descriptors)
MAX_PARALLEL = 256
#: after an ssh process exits, wait at most this long for the end of its output (a mux
#: session's output ends when its master closes the channel: no limit but ``timeout``)
GRACE = 2.0
_READ = 65536


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



PIDFD, SOCK, CANCEL = "pidfd", "sock", "cancel"


class SshProcess:
    """A session carried by an ``ssh`` process (its Popen; a pidfd watches its exit)."""

    __slots__ = ("proc", "pidfd")

    def __init__(self, argv: List[str], sink: Optional[int]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if sink is None else sink, stderr=subprocess.PIPE)
        self.pidfd = _open_pidfd(self.proc.pid)

    def pipes(self) -> Tuple[Optional[int], int]:
        """Return the read ends of its stdout (None when it goes to a sink) and stderr."""
        out = self.proc.stdout.fileno() if self.proc.stdout is not None else None
        return out, self.proc.stderr.fileno()

    def release(self, sel, close: bool = True) -> None:
        """Stop watching its exit (the pipes are closed with :meth:`close_pipes`)."""
        if self.pidfd >= 0:
            sel.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = -1

    def close_pipes(self) -> None:
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass


class MuxChannel:
    """A session asked of the host's connection master on its control socket: no process;
    the master sends the exit status on the socket."""

    __slots__ = ("sock", "replies", "fds")

    def __init__(self, target: Tuple[str, str], sink: Optional[int]):
        self.sock, out_fd, err_fd = sshmux.open_session(*target, stdout_fd=sink)
        self.replies = sshmux.Replies()
        self.sock.setblocking(False)
        self.fds = (out_fd, err_fd)

    def release(self, sel, close: bool = True) -> None:
        """Stop watching the socket; ``close`` it too (not while output may still come:
        closing would make the master drop the channel)."""
        if self.sock is None:
            return
        if sel.get_map().get(self.sock.fileno()) is not None:
            sel.unregister(self.sock)
        if close:
            self.sock.close()
            self.sock = None

    def kill(self) -> None:
        """Nothing to kill here: dropping the socket makes the master close the session."""


class HostCommand:
    """One command on one host: its channel, what it wrote (stdout/stderr chunks, and for
    ``on_output`` the incomplete last line of each stream), how and when it ended."""

    __slots__ = ("alias", "argv", "channel", "fds", "out", "err", "partial", "code", "timed_out",
                 "cancelled", "mux_error", "exit_seen", "started_at", "ended_at")

    def __init__(self, alias: str, argv: List[str]):
        self.alias, self.argv = alias, argv
        self.channel = None                     # SshProcess | MuxChannel
        self.fds: Dict[int, List[bytes]] = {}   # read ends still open -> their buffer
        self.out: List[bytes] = []
        self.err: List[bytes] = []
        self.partial: Dict[str, bytes] = {}
        self.code: Optional[int] = None
        self.timed_out = self.cancelled = False
        self.mux_error: Optional[str] = None
        self.exit_seen: Optional[float] = None  # monotonic time the exit status came
        self.started_at = time.time()           # wall clock: the session was asked for
        self.ended_at = 0.0

    @property
    def process(self) -> Optional[SshProcess]:
        return self.channel if isinstance(self.channel, SshProcess) else None

    def stream_of(self, buf: List[bytes]) -> str:
        return "stdout" if buf is self.out else "stderr"

    def result(self, host: Host, command: str, timeout: Optional[float]) -> Result:
        """Return this host's :class:`Result` (``rc`` None and ``error`` set when it never
        ended: timeout, cancel; ``error`` "ssh failed: ..." for ssh's own exit 255)."""
        err = b"".join(self.err).decode(errors="replace")
        error, rc = None, self.code
        if self.timed_out:
            error, rc = f"timed out after {timeout}s", None
        elif self.cancelled:
            error, rc = "cancelled", None
        elif self.code == 255:
            error = "ssh failed: " + (err.strip().splitlines() or ["?"])[-1]
        return Result(host, command, rc, b"".join(self.out).decode(errors="replace"), err,
                      self.started_at, self.ended_at, error)


class FanOut:
    """The sessions running at once: one ``selectors`` loop over every pipe, pidfd and
    control socket, at most ``limit`` sessions at a time, a deadline, a cancel fd."""

    def __init__(self, argvs: Dict[str, List[str]], timeout: Optional[float],
                 mux: Optional[Dict[str, Tuple[str, str]]] = None,
                 on_output: Optional[Callable[[str, str, str], None]] = None,
                 stdout_to: Optional[Dict[str, int]] = None, cancel_fd: Optional[int] = None):
        self.argvs, self.mux, self.sinks = argvs, mux or {}, stdout_to or {}
        self.on_output = on_output
        self.sel = selectors.DefaultSelector()
        self.pending = list(reversed(list(argvs)))
        self.running: Dict[str, HostCommand] = {}
        self.done: Dict[str, HostCommand] = {}
        self.limit = _max_parallel()
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.cancelled = False
        if cancel_fd is not None:
            self.sel.register(cancel_fd, selectors.EVENT_READ, (None, CANCEL))

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> Dict[str, HostCommand]:
        """Run every session to its end (or the deadline, or cancel); return them by alias.
        Sessions still running when this is interrupted are killed (no ssh left behind)."""
        try:
            self.start_pending()
            while self.running and self.step():
                pass
        finally:
            for cmd in list(self.running.values()):
                if cmd.process is not None:
                    try:
                        cmd.process.proc.send_signal(signal.SIGKILL)
                        cmd.process.proc.wait()
                    except OSError:
                        pass
                self.release(cmd)
            self.sel.close()
        return self.done

    def step(self) -> bool:
        """One turn of the loop: exits, grace periods, deadline, new sessions, then wait for
        events. Return False when there is nothing left to run."""
        now = time.monotonic()
        if self.cancelled:
            self.pending.clear()
            self.end_all(lambda cmd: setattr(cmd, "cancelled", True))
            return False
        for cmd in [c for c in self.running.values() if self.polled(c)]:   # no pidfd: poll
            code = cmd.process.proc.poll()
            if code is not None:
                self.exit_known(cmd, code)
        for cmd in [c for c in self.running.values()
                    if c.exit_seen is not None and c.process is not None and now - c.exit_seen >= GRACE]:
            self.finish(cmd)
        if self.deadline is not None and now >= self.deadline:
            self.end_all(lambda cmd: setattr(cmd, "timed_out", True))
        self.start_pending()
        if not self.running:
            return False
        for key, _ in self.sel.select(self.wait_time(now)):
            self.dispatch(key)
        return True

    def wait_time(self, now: float) -> Optional[float]:
        """Seconds until the next thing the loop must do without an event (None: none)."""
        wakes = [c.exit_seen + GRACE for c in self.running.values()
                 if c.exit_seen is not None and c.process is not None]
        if self.deadline is not None:
            wakes.append(self.deadline)
        if any(self.polled(c) for c in self.running.values()):
            wakes.append(now + POLL)
        return max(0.0, min(wakes) - now) if wakes else None

    @staticmethod
    def polled(cmd: HostCommand) -> bool:
        """True for a running ssh process whose exit has no pidfd to watch."""
        return cmd.process is not None and cmd.process.pidfd < 0 and cmd.exit_seen is None

    def dispatch(self, key) -> None:
        cmd, what = key.data
        if cmd is None:
            self.cancelled = True
        elif self.running.get(cmd.alias) is not cmd:
            return
        elif what is SOCK:
            if key.fileobj is getattr(cmd.channel, "sock", None):
                self.mux_event(cmd)
        elif what is PIDFD:
            if key.fd == getattr(cmd.channel, "pidfd", -1):
                self.exit_known(cmd, cmd.channel.proc.wait())
        elif key.fd in cmd.fds and self.drain(cmd, key.fd, what):
            self.close_fd(cmd, key.fd)
            if cmd.exit_seen is not None and not cmd.fds:
                self.finish(cmd)

    def end_all(self, mark: Callable[[HostCommand], None]) -> None:
        """End every running session at once (timeout, cancel): ``mark`` those that had not
        ended, kill their ssh processes, take what they wrote."""
        for cmd in list(self.running.values()):
            if cmd.exit_seen is None:
                mark(cmd)
                cmd.channel.kill()
            self.finish(cmd)

    # -- starting sessions -------------------------------------------------------------
    def start_pending(self) -> None:
        """Start queued sessions while fewer than ``limit`` run: through the host's master
        when it answers, else as an ssh process."""
        while self.pending and len(self.running) < self.limit:
            alias = self.pending.pop()
            cmd = HostCommand(alias, self.argvs[alias])
            self.running[alias] = cmd
            target = self.mux.get(alias)
            if target is not None and os.path.exists(target[0]):
                try:
                    cmd.channel = MuxChannel(target, self.sinks.get(alias))
                except OSError as e:
                    cmd.mux_error = str(e)
                else:
                    for fd, buf in zip(cmd.channel.fds, (cmd.out, cmd.err)):
                        self.watch(cmd, fd, buf)
                    self.sel.register(cmd.channel.sock, selectors.EVENT_READ, (cmd, SOCK))
                    continue
            self.spawn(cmd)

    def spawn(self, cmd: HostCommand) -> None:
        cmd.channel = SshProcess(cmd.argv, self.sinks.get(cmd.alias))
        for fd, buf in zip(cmd.channel.pipes(), (cmd.out, cmd.err)):
            self.watch(cmd, fd, buf)
        if cmd.channel.pidfd >= 0:
            self.sel.register(cmd.channel.pidfd, selectors.EVENT_READ, (cmd, PIDFD))

    def watch(self, cmd: HostCommand, fd: Optional[int], buf: List[bytes]) -> None:
        if fd is not None:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, (cmd, buf))
            cmd.fds[fd] = buf

    # -- output ------------------------------------------------------------------------
    def drain(self, cmd: HostCommand, fd: int, buf: List[bytes]) -> bool:
        """Read what ``fd`` has; return True at EOF."""
        while True:
            try:
                chunk = os.read(fd, _READ)
            except BlockingIOError:
                return False
            if self.on_output is not None:
                self.lines(cmd, cmd.stream_of(buf), chunk, last=not chunk)
            if not chunk:
                return True
            buf.append(chunk)

    def lines(self, cmd: HostCommand, stream: str, chunk: bytes, last: bool = False) -> None:
        """Hand ``on_output`` every complete line (and at EOF, ``last``, the rest)."""
        data = cmd.partial.get(stream, b"") + chunk
        *complete, rest = data.split(b"\n")
        if last and rest:
            complete.append(rest)
            rest = b""
        cmd.partial[stream] = rest
        for line in complete:
            self.on_output(cmd.alias, stream, line.decode(errors="replace"))

    # -- ending sessions ---------------------------------------------------------------
    def mux_event(self, cmd: HostCommand) -> None:
        """The master wrote on the control socket: the exit status, a refusal (fall back to
        an ssh process) or EOF without a status (the session failed)."""
        try:
            data = cmd.channel.sock.recv(_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        replies = cmd.channel.replies
        if data:
            replies.feed(data)
        if replies.exit_code is not None:
            self.exit_known(cmd, replies.exit_code)
        elif replies.refused is not None and not replies.opened:
            cmd.mux_error = replies.refused      # e.g. MaxSessions: use a plain ssh
            self.release(cmd)
            del cmd.out[:], cmd.err[:]
            self.spawn(cmd)
        elif not data:
            cmd.code = 255
            cmd.err.append(b"enos: the connection master closed the session without an exit status\n")
            self.finish(cmd)

    def exit_known(self, cmd: HostCommand, code: Optional[int]) -> None:
        """The exit status is known; the output may still be on its way (the master flushes
        the channel after the status): finish at EOF of both pipes, or after GRACE."""
        cmd.code = code
        cmd.exit_seen = time.monotonic()
        cmd.channel.release(self.sel, close=False)
        if not cmd.fds:
            self.finish(cmd)

    def close_fd(self, cmd: HostCommand, fd: int) -> None:
        self.sel.unregister(fd)
        del cmd.fds[fd]
        if cmd.process is None:          # Popen's pipes are closed with their file objects
            os.close(fd)

    def release(self, cmd: HostCommand) -> None:
        """Close everything the session holds here (pipes, pidfd, socket)."""
        for fd in list(cmd.fds):
            self.close_fd(cmd, fd)
        if cmd.channel is not None:
            cmd.channel.release(self.sel)
        if cmd.process is not None:
            cmd.process.close_pipes()

    def finish(self, cmd: HostCommand) -> None:
        """Take what is left in the pipes and stop listening, even if something (an old
        OpenSSH's forked master) still holds their other end; reap the ssh process."""
        for fd, buf in list(cmd.fds.items()):
            self.drain(cmd, fd, buf)
        if self.on_output is not None:
            for stream in list(cmd.partial):
                self.lines(cmd, stream, b"", last=True)
        self.release(cmd)
        proc = cmd.process.proc if cmd.process is not None else None
        if proc is not None and cmd.code is None and not cmd.timed_out:
            cmd.code = proc.wait()
        elif proc is not None:
            proc.wait()
        cmd.ended_at = time.time()
        del self.running[cmd.alias]
        self.done[cmd.alias] = cmd


def _mux_targets(config_text: str, hosts: Sequence[Host], commands: Dict[str, str]) -> Dict[str, Tuple[str, str]]:
    """Return {alias: (control socket path, command)} for the hosts whose master can be
    addressed directly (the ssh_config's global ControlPath; behind a jump host or not)."""
    template = None
    for line in config_text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "controlpath":
            if template is not None:      # more than one: let ssh decide per host
                return {}
            template = parts[1].strip().strip('"')
    if not template or template.lower() == "none":
        return {}
    out = {}
    for h in hosts:
        # a jump host is a ProxyCommand (enos.ssh.jump): not part of %C, same socket path
        path = sshmux.control_path(template, h.address, h.port, h.user)
        if path:
            out[h.alias] = (path, commands[h.alias])
    return out


def ensure_control_dirs(ssh_config: Path, config_text: Optional[str] = None) -> None:
    """Create the directories of the ``ControlPath`` lines of ``ssh_config`` (they live in
    /tmp and vanish with a reboot or ``stop_masters``; ssh fails when they are missing),
    or check they are safely ours. Returns None. Raises StateDamaged when the ssh_config is
    missing or not a regular file (ssh would block on a FIFO), UnsafeValue for a dir
    another user made or can reach (see :func:`enos.ssh.client.secure_dir`)."""
    text = read_ssh_config(ssh_config) if config_text is None else config_text
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "controlpath" and parts[1].strip().lower() != "none":
            d = os.path.dirname(os.path.expanduser(parts[1].strip().strip('"')))
            if d and "%" not in d:
                secure_dir(Path(d).parent)     # raises UnsafeValue: another user's dir
                secure_dir(Path(d))


def run_sessions(ssh_config: Path, hosts: Sequence[Host], command, timeout: Optional[float] = None,
                 use_masters: bool = True,
                 on_output: Optional[Callable[[str, str, str], None]] = None,
                 stdout_to: Optional[Dict[str, int]] = None,
                 cancel_fd: Optional[int] = None, label: Optional[str] = None) -> Results:
    """Run ``command`` (a string, or {alias: string} for per-host commands) on every host at
    once; return their :class:`~enos.results.Results` (one Result per host, in host order,
    also indexable by alias; ``label`` is the command they name, default ``command`` when it
    is a string). Never raises for a host's failure: a failed host's Result says what
    happened (``rc``, ``error``). ``use_masters=False`` starts one ``ssh`` process per host
    even where a master runs. ``on_output(alias, "stdout"|"stderr", line)`` is called for
    each line as it arrives; ``stdout_to`` maps aliases to a file descriptor that gets the
    session's stdout directly (nothing is buffered); when ``cancel_fd`` becomes readable,
    every running session is ended as at a timeout (error "cancelled").
    Raises StateDamaged when ``ssh_config`` is missing or not a regular file, OSError only
    if no process can be started."""
    config_text = read_ssh_config(ssh_config)
    ensure_control_dirs(ssh_config, config_text)
    commands = command if isinstance(command, dict) else {h.alias: command for h in hosts}
    label = label if label is not None else (command if isinstance(command, str) else "")
    # jump hosts' masters first (at most 8 opened at once), never one connection per host
    down = Masters(ssh_config).ready_all([h.alias for h in hosts if h.jump])
    base = ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "-T"]
    go = [h for h in hosts if h.alias not in down]
    done = FanOut({h.alias: base + [h.alias, commands[h.alias]] for h in go}, timeout,
                  mux=_mux_targets(config_text, go, commands) if use_masters else None,
                  on_output=on_output, stdout_to=stdout_to, cancel_fd=cancel_fd).run()
    now = time.time()
    return Results([done[h.alias].result(h, label, timeout) if h.alias in done
                    else Result(h, label, None, "", "", now, now, down[h.alias]) for h in hosts], label)


def run_command(ssh_config: Path, hosts: Sequence[Host], command: str, timeout: Optional[float] = None,
                tolerate_failures: bool = False, use_masters: bool = True) -> Results:
    """Run ``command`` on every host at once; return their Results (one per host, in order).
    ``use_masters=False`` starts one ``ssh`` process per host even where a master runs.

    Raises :class:`CommandFailed` (naming the hosts) if any host exits non-zero or cannot
    be reached, unless ``tolerate_failures``."""
    results = run_sessions(ssh_config, hosts, command, timeout=timeout, use_masters=use_masters)
    if results.failed and not tolerate_failures:
        raise CommandFailed(command, results.failed, results)
    return results
