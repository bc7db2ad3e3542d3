"""What a string must look like before it reaches an ``ssh_config``, an inventory or a
command line.

A reservation is often copied from someone else's repository: a host ``address`` of
``"10.0.0.1\\n  ProxyCommand touch /tmp/x"`` would be a second ssh_config line, an alias
``-oProxyCommand=...`` an ssh option. Every such string is checked twice: by the providers'
schemas (:data:`HOST_NAME`, :data:`ALIAS`, ... are JSON Schema fragments, so ``enos
validate`` names the file, line and key), and again by the writers of the env's files
(:func:`unsafe_host_fields`), whatever the provider returned.
"""
from __future__ import annotations

import re
from typing import List

#: a host name or an IPv4/IPv6 address: letters, digits, '.', '-', '_', ':'; not starting with '-'
HOST_NAME_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,252}$"
#: an alias (inventory name, ssh_config ``Host``): letters, digits, '.', '_', '-'; not starting with '-'
ALIAS_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
#: a login name
USER_RE = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
#: a jump host, ``[user@]host[:port]``
JUMP_RE = r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}@)?[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}(?::[0-9]{1,5})?$"
#: a public key line: type, base64 blob, optional comment without control characters
HOST_KEY_RE = r"^(?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}(?: [^\x00-\x1f\x7f]*)?$"
#: a path: no control character (newlines included), not starting with '-'
PATH_RE = r"^[^\x00-\x1f\x7f-][^\x00-\x1f\x7f]*$"

HOST_NAME = {"type": "string", "pattern": HOST_NAME_RE,
             "x-expected": "a host name or IP address (letters, digits, '.', '-', '_', ':'; no spaces, "
                           "not starting with '-')"}
ALIAS = {"type": "string", "pattern": ALIAS_RE,
         "x-expected": "a host alias (letters, digits, '.', '_', '-'; not starting with '-')"}
USER = {"type": "string", "pattern": USER_RE,
        "x-expected": "a user name (letters, digits, '.', '_', '-'; not starting with '-')"}
JUMP = {"type": "string", "pattern": JUMP_RE, "x-expected": "a jump host, [user@]host[:port]"}
HOST_KEY = {"type": "string", "pattern": HOST_KEY_RE,
            "x-expected": "a public host key like 'ssh-ed25519 AAAA...' on one line"}
PATH = {"type": "string", "pattern": PATH_RE,
        "x-expected": "a file path (on one line, not starting with '-')"}

_CHECKS = (("alias", ALIAS_RE), ("address", HOST_NAME_RE), ("user", USER_RE), ("jump", JUMP_RE),
           ("host_key", HOST_KEY_RE), ("keyfile", PATH_RE), ("jump_keyfile", PATH_RE))


def _ok(rx: str, value: str) -> bool:
    return re.match(rx[:-1] + r"\Z", value) is not None


def unsafe_host_fields(host) -> List[str]:
    """Return ``"field 'value'"`` for each field of ``host`` (an :class:`enos.provider.
    provider.Host`) that cannot be written safely into an ssh_config, a known_hosts line or
    an inventory (empty list: all safe)."""
    bad = []
    for name, rx in _CHECKS:
        value = getattr(host, name, None)
        if value is None and name in ("jump", "host_key", "keyfile", "jump_keyfile"):
            continue
        if not isinstance(value, str) or not _ok(rx, value):
            bad.append(f"{name} {value!r}")
    port = getattr(host, "port", None)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        bad.append(f"port {port!r}")
    return bad

