"""Shell text of a remote command (environment variables, sudo) and the types the
experiment layer's calls accept."""
from __future__ import annotations

import re
import shlex
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from enos.errors import UsageError
from enos.provider.provider import Host

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
