"""The short way of ``enos run`` on one host: a command through the host's connection
master, loading nothing but the standard library's core, the bounded reader and the mux
client (issue 22: ``enos run`` on one host within 1.5x of ``ssh -F <env>/ssh_config
ALIAS CMD``; the full path loads the task runner, the provider registry and the fan-out,
~100 ms of imports before the first byte is sent).

It only takes the plain case — the env's state readable, hosts booked, the roles naming
exactly one host, no jump host, the host's master running, one ``ControlPath`` — and
returns None for anything else *before anything runs on the host*: the caller then takes
the full path (:meth:`enos.experiment.env.Env.run`), which handles and reports every other
case (opening an expired master, jump hosts, damaged state, unknown roles, ...).
"""
from __future__ import annotations

import json
import os
import select

from enos.errors import UnreadableFile
from enos.reader import MAX_STATE_BYTES, read_bounded
from enos.ssh import mux

TYPE_CHECKING = False   # annotations only: typing is not loaded on this path
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional

#: the largest ssh_config read (as enos.ssh.files.MAX_SSH_FILE_BYTES)
MAX_SSH_CONFIG_BYTES = 16 << 20
_READ = 65536


class QuickResult:
    """What the command did on the host (the fields of :class:`enos.results.Result` that
    ``enos run`` prints)."""
    __slots__ = ("alias", "rc", "stdout", "stderr", "error")

    def __init__(self, alias: str, rc: Optional[int], stdout: str, stderr: str, error: Optional[str]):
        self.alias, self.rc, self.stdout, self.stderr, self.error = alias, rc, stdout, stderr, error

    @property
    def ok(self) -> bool:
        """True when the command exited with 0."""
        return self.rc == 0

    @property
    def exit_code(self) -> Optional[int]:
        """Same as :attr:`rc`."""
        return self.rc

    @property
    def status(self) -> str:
        """``ok``, ``exit N`` or the error (as :attr:`enos.results.Result.status`)."""
        if self.ok:
            return "ok"
        return self.error or (f"exit {self.rc}" if self.rc is not None else "failed")


def _state_dir(env_dir: Optional[str], base: str) -> Optional[str]:
    """The env dir as :func:`enos.state.resolve_env` finds it, or None (let it explain)."""
    if env_dir:
        for d in (env_dir, os.path.join(env_dir, "current")):
            if os.path.lexists(os.path.join(d, "state.json")):
                return d
        return None
    cur = os.path.join(base, "current")
    return cur if os.path.lexists(os.path.join(cur, "state.json")) else None


def _the_host(env_dir: str, roles: Optional[str]) -> Optional[dict]:
    """The one host of ``roles`` in the env's state (as :meth:`Env.select`), or None."""
    try:
        state = json.loads(read_bounded(os.path.join(env_dir, "state.json"), MAX_STATE_BYTES, "state file"))
        if state.get("phase") in ("destroying", "destroyed"):
            return None
        hosts = state["resources"]["hosts"]
        if not isinstance(hosts, list) or not all(isinstance(h, dict) for h in hosts):
            return None
    except (UnreadableFile, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        # (the full path reads it again and says what is wrong)
        return None
    if roles is None:
        chosen = hosts
    else:
        names = {x.strip() for x in roles.split(",") if x.strip()}
        chosen = [h for h in hosts if h.get("alias") in names or names & set(h.get("roles") or ())]
        known = {h.get("alias") for h in hosts} | {r for h in hosts for r in (h.get("roles") or ())}
        if not names or names - known:
            return None
    if len(chosen) != 1 or chosen[0].get("jump"):
        return None
    host = chosen[0]
    ok = (isinstance(host.get("alias"), str) and isinstance(host.get("address"), str)
          and isinstance(host.get("port"), int) and isinstance(host.get("user"), str))
    return host if ok else None


def _control_path(env_dir: str, host: dict) -> Optional[str]:
    """The host's control socket, from the env's ssh_config (one ``ControlPath``), or None."""
    try:
        text = read_bounded(os.path.join(env_dir, "ssh_config"), MAX_SSH_CONFIG_BYTES,
                            "ssh_config").decode("utf-8", "replace")
    except UnreadableFile:
        return None
    paths = [p[1].strip().strip('"') for p in (ln.split(None, 1) for ln in text.splitlines())
             if len(p) == 2 and p[0].lower() == "controlpath"]
    if len(paths) != 1 or paths[0].lower() == "none":
        return None
    return mux.control_path(paths[0], host["address"], host["port"], host["user"])


def run_one(env_dir: Optional[str], roles: Optional[str], command: str,
            base: str = ".") -> Optional[QuickResult]:
    """Run ``command`` on the one host ``roles`` names (None: the env's only host) in the
    env ``env_dir`` (None: ``<base>/current``) through its running connection master;
    return its :class:`QuickResult`, or None — nothing was run — when this is not the
    plain case (see the module's docstring). Raises nothing else; KeyboardInterrupt ends
    the session (the master closes it)."""
    d = _state_dir(env_dir, base)
    host = _the_host(d, roles) if d else None
    path = _control_path(d, host) if host else None
    if not path:
        return None
    try:
        sock, out_fd, err_fd = mux.open_session(path, command)
    except (OSError, PermissionError):
        return None                   # no master (or not ours): nothing was asked of it
    try:
        return _wait(host["alias"], sock, out_fd, err_fd)
    finally:
        sock.close()
        for fd in (out_fd, err_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _wait(alias: str, sock, out_fd: int, err_fd: int) -> Optional[QuickResult]:
    """Read the session's output and the master's replies to the end; return the result
    (None if the master refused the session: it did not run)."""
    replies = mux.Replies()
    bufs = {out_fd: [], err_fd: []}
    poll = select.poll()
    for fd in (sock.fileno(), out_fd, err_fd):
        poll.register(fd, select.POLLIN)
    open_fds = {sock.fileno(), out_fd, err_fd}
    lost = False
    while out_fd in open_fds or err_fd in open_fds or (replies.exit_code is None and not lost):
        for fd, _ev in poll.poll():
            data = (sock.recv(_READ) if fd == sock.fileno() else os.read(fd, _READ))
            if fd == sock.fileno():
                replies.feed(data)
                if replies.refused is not None and not replies.opened:
                    return None
                if not data:
                    lost = replies.exit_code is None
            else:
                bufs[fd].append(data)
            if not data or (fd == sock.fileno() and replies.exit_code is not None):
                poll.unregister(fd)
                open_fds.discard(fd)
    err = b"".join(bufs[err_fd]).decode(errors="replace")
    rc, error = replies.exit_code, None
    if lost:        # the master's exit message is the command's own status: only a lost session is ssh's
        err += "enos: the connection master closed the session without an exit status\n"
        rc, error = 255, "ssh failed: the connection master closed the session without an exit status"
    return QuickResult(alias, rc, b"".join(bufs[out_fd]).decode(errors="replace"), err, error)
