"""Commands left running in the background: ``env.run(cmd, background=True)`` returns a
:class:`Background` handle at once; ``wait()`` for the results or ``kill()`` the command.

The sessions go through the env's SSH masters like any ``run``, read by one thread. On the
host, the session's shell is the leader of its own process group (sshd starts each session
in a new session): it reports its PID first, on stderr (:func:`~enos.experiment.command.with_pid`;
the mark is taken out of the output), and ``kill()`` signals that whole group
(``kill -TERM -- -PID``), so the command's children go with it.
"""
from __future__ import annotations

import atexit
import os
import signal as signals
import threading
import time
import weakref
from html import escape
from typing import Dict, List, Optional

from enos.errors import CommandFailed, Timeout, UsageError
from enos.experiment.command import OutputCallback, with_pid
from enos.model import Host
from enos.results import Results

_NO_STATUS = "enos: the connection master closed the session without an exit status\n"
_SIGNALS = ("TERM", "KILL", "INT", "HUP", "QUIT", "USR1", "USR2")


#: the Background runs still going: ended (sessions dropped) when the interpreter exits, so
#: no ``ssh`` process of a fallback session outlives the script
_LIVE: "weakref.WeakSet[Background]" = weakref.WeakSet()


@atexit.register
def _end_all() -> None:
    for bg in list(_LIVE):
        bg._cancel()


class Background:
    """A command running on several hosts, started by ``env.run(..., background=True)``.

    ``running`` (bool), ``pids`` (alias → PID of the session's shell, the process group
    that :meth:`kill` signals), :meth:`wait`, :meth:`kill`, ``results`` (None until done)."""

    def __init__(self, env, hosts: List[Host], command: str, commands: Dict[str, str],
                 sudo: bool = False, on_output: Optional[OutputCallback] = None):
        self.env = env
        self.hosts = list(hosts)
        self.command = command
        self.sudo = sudo
        self.results: Optional[Results] = None
        self._pids: Dict[str, int] = {}
        self._pid_seen = threading.Condition()
        self._error: Optional[BaseException] = None
        self._cancel_r, self._cancel_w = os.pipe()
        self._on_output = on_output
        wrapped = {a: with_pid(c) for a, c in commands.items()}
        self._thread = threading.Thread(target=self._main, args=(wrapped,), daemon=True,
                                        name=f"enos-bg-{command[:20]}")
        self._thread.start()
        _LIVE.add(self)

    def _pid(self, alias: str, pid: int) -> None:
        with self._pid_seen:
            self._pids[alias] = pid
            self._pid_seen.notify_all()

    def _main(self, commands: Dict[str, str]) -> None:
        try:
            self.results = self.env._run_sessions(self.hosts, self.command, commands, on_output=self._on_output,
                                                  cancel_fd=self._cancel_r, on_pid=self._pid)
        except BaseException as e:  # handed to wait()
            self._error = e
        finally:
            with self._pid_seen:
                self._pid_seen.notify_all()

    def _cancel(self, wait: float = 5.0) -> None:
        """Drop every session still open (their ``ssh`` processes are killed) and wait up to
        ``wait`` seconds for the reading thread to end."""
        if self.running and self._cancel_w >= 0:
            try:
                os.write(self._cancel_w, b"x")
            except OSError:
                pass
            self._thread.join(wait)

    def _close(self) -> None:
        """Close the cancel pipe (only once the thread has ended)."""
        if self._cancel_r >= 0 and not self._thread.is_alive():
            os.close(self._cancel_r)
            os.close(self._cancel_w)
            self._cancel_r = self._cancel_w = -1

    def __del__(self):
        try:
            self._close()
        except Exception:
            pass

    @property
    def running(self) -> bool:
        """True while some host's session has not ended."""
        return self._thread.is_alive()

    def pids(self, timeout: float = 10.0) -> Dict[str, int]:
        """Return alias → PID of the command's shell on each host (its process group), waiting
        up to ``timeout`` seconds for the hosts to report it (hosts that did not are left out)."""
        end = time.monotonic() + timeout
        with self._pid_seen:
            while len(self._pids) < len(self.hosts) and self.running:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._pid_seen.wait(left)
            return dict(self._pids)

    def wait(self, timeout: Optional[float] = None, check: bool = True) -> Results:
        """Wait until the command ended on every host; return its :class:`Results`.

        Raises Timeout if it still runs after ``timeout`` seconds (it keeps running),
        CommandFailed (with every host's Result) if it failed somewhere and ``check``."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise Timeout(f"'{self.command}' still runs on {len(self.hosts)} host(s) after {timeout}s")
        self._close()
        if self._error is not None:
            raise self._error
        assert self.results is not None
        if check and self.results.failed:
            raise CommandFailed(self.command, self.results.failed, self.results)
        return self.results

    def kill(self, signal: str = "TERM", grace: float = 5.0) -> Results:
        """Send ``signal`` (TERM, KILL, INT, HUP, ...) to the command's process group on every
        host where it runs, then SIGKILL after ``grace`` seconds if it still runs; return the
        Results (the killed hosts' ``rc`` is 128 + the signal number). Never raises
        CommandFailed; raises UsageError for an unknown signal name."""
        sig = signal.upper().removeprefix("SIG")
        if sig not in _SIGNALS:
            raise UsageError(f"kill: unknown signal '{signal}' (one of {', '.join(_SIGNALS)})")
        sent: Dict[str, str] = {}
        for s in (sig, "KILL"):
            if not self.running:
                break
            for alias in self._signal(s):
                sent[alias] = s
            self._thread.join(grace)
        if self.running:        # the hosts do not answer: drop the sessions
            self._cancel()
        results = self.wait(check=False)
        for r in results:
            # a session ended by a signal has no exit status: the master just closes it
            if r.host.alias in sent and r.rc in (None, 255):
                name = sent[r.host.alias]
                r.rc = 128 + int(getattr(signals, "SIG" + name))
                r.error = f"killed by SIG{name}"
                r.stderr = r.stderr.replace(_NO_STATUS, "")
        return results

    def _signal(self, sig: str) -> List[str]:
        """Send ``sig`` to the command's process group on every host that reported it;
        return their aliases."""
        return self.env._kill_groups(self.pids(timeout=5.0), sig, sudo=self.sudo)

    def __repr__(self) -> str:
        state = "running" if self.running else ("done" if self.results is not None else "failed")
        return f"<Background {self.command!r} on {len(self.hosts)} host(s): {state}>"

    def _repr_html_(self) -> str:
        if self.results is not None:
            return self.results._repr_html_()
        return f"<p>{escape(repr(self))}</p>"
