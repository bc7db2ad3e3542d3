"""Shell text of a remote command (environment variables, sudo) and the types the
experiment layer's calls accept."""
from __future__ import annotations

import re
import shlex
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

from enos.errors import UsageError
from enos.model import Host

#: what ``roles=`` accepts: a role or alias, comma-separated names, a list of them, Host(s)
RoleSelector = Union[None, str, Host, Sequence[Union[str, Host]]]
#: ``on_output(host, "stdout" | "stderr", line)``
OutputCallback = Callable[[Host, str, str], None]

_ENV_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def wrap_command(command: str, env: Optional[Mapping[str, Any]] = None, sudo: bool = False,
                 user: str = "root") -> str:
    """Return the shell text that runs ``command`` with the variables ``env`` exported and,
    with ``sudo`` and a ``user`` other than root, as root through ``sudo -n``.
    Raises UsageError for a variable name that is not a shell identifier."""
    text = command
    if env:
        exports = []
        for k, v in env.items():
            if not isinstance(k, str) or not _ENV_NAME_OK.match(k):
                raise UsageError(f"env: '{k}' is not a valid environment variable name")
            exports.append(f"export {k}={shlex.quote(str(v))}")
        text = "; ".join(exports) + "\n" + text
    if sudo and user != "root":
        text = "sudo -n -- sh -c " + shlex.quote(text)
    return text


#: the first line a session prints on stderr when its PID is asked for
PID_MARK = "enos-pid"
_PID_RE = re.compile(r"^" + PID_MARK + r" (\d+)\n")


def with_pid(command: str) -> str:
    """Return shell text that first prints ``enos-pid PID`` on stderr — the PID of the
    session's shell, which sshd made the leader of its own session and process group — then
    runs ``command`` (already wrapped by :func:`wrap_command`, so the mark comes from the
    outer shell even with sudo)."""
    return f"printf '{PID_MARK} %s\\n' \"$$\" >&2\n{command}"


def take_pid(stderr: str) -> Tuple[Optional[int], str]:
    """Return (the PID of a :func:`with_pid` mark at the start of ``stderr``, the rest)."""
    m = _PID_RE.match(stderr)
    return (int(m.group(1)), stderr[m.end():]) if m else (None, stderr)


#: the last thing a session prints on stderr: the command's own exit status
STATUS_MARK = "enos-rc"
_STATUS_RE = re.compile(STATUS_MARK + r" (\d{1,3})\n?\Z")


def with_status(command: str) -> str:
    """Return shell text that runs ``command`` in a subshell, then prints ``enos-rc N`` (its
    exit status) last on stderr and exits with N. ssh exits 255 on its own failures too: a
    255 with the mark is the command's, without it ssh's (the session never got there)."""
    return f"(\n{command}\n)\nenos_rc=$?; printf '{STATUS_MARK} %s\\n' \"$enos_rc\" >&2; exit $enos_rc"


def take_status(stderr: str) -> Tuple[Optional[int], str]:
    """Return (the status a :func:`with_status` mark gives at the end of ``stderr``, the
    rest of stderr); (None, stderr) when there is no mark."""
    m = _STATUS_RE.search(stderr)
    return (int(m.group(1)), stderr[:m.start()]) if m else (None, stderr)


def kill_group(pid: int, signal: str = "TERM") -> str:
    """Return shell text sending ``signal`` to the process group ``pid`` (quiet if gone)."""
    return f"kill -{signal} -- -{int(pid)} 2>/dev/null; true"
