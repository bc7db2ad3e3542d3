"""Keep every packet for the local provider's addresses on this machine.

A process that outlives a destroyed local env (an orphaned ``ansible-playbook``, a
retrying ``ssh``) would send packets for the env's 10.2xx addresses out through the
default route once the env's bridge is gone. Two policy rules prevent it without hiding
live envs (the trick WireGuard's ``wg-quick`` uses)::

    ip rule add lookup main suppress_prefixlength 0 priority 1000
    ip rule add to 10.200.0.0/13 unreachable priority 1001      # ... one per block of RANGE

The first looks the main table up but ignores its default route (prefix length 0), so a
live env's bridge route (a /24) still wins; what it does not route falls to the second,
which answers "unreachable" (``connect()`` fails at once with EHOSTUNREACH/ENETUNREACH)
instead of reaching the default route at priority 32766. The machine's resolver
(10.255.255.53) stays outside :data:`RANGE`.

:func:`ensure_rules` installs them idempotently (the local provider calls it before
creating anything); :func:`missing_rules` says which are absent (``enos check``).
"""
from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from typing import List

#: the addresses the local provider picks subnets from (see enos.provider.local)
RANGE_FIRST = ipaddress.ip_address("10.200.0.0")
RANGE_LAST = ipaddress.ip_address("10.254.255.255")
RANGE = list(ipaddress.summarize_address_range(RANGE_FIRST, RANGE_LAST))
PRIO_MAIN = 1000
PRIO_UNREACHABLE = 1001
RANGE_TEXT = f"{RANGE_FIRST}-{RANGE_LAST}"


class GuardError(OSError):
    """The rules could not be read or installed (message says what ``ip`` answered)."""


def _ip() -> str:
    return shutil.which("ip") or "/usr/sbin/ip"


def rule_commands() -> List[List[str]]:
    """Return the ``ip rule add`` argvs (without the ``ip`` binary) of every rule."""
    cmds = [["rule", "add", "lookup", "main", "suppress_prefixlength", "0", "priority", str(PRIO_MAIN)]]
    for net in RANGE:
        cmds.append(["rule", "add", "to", str(net), "unreachable", "priority", str(PRIO_UNREACHABLE)])
    return cmds


def _rules() -> list:
    p = subprocess.run([_ip(), "-4", "-j", "rule", "show"], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=10)
    if p.returncode != 0:
        raise GuardError(f"ip rule show: {p.stderr.strip() or p.returncode}")
    try:
        return json.loads(p.stdout or "[]")
    except ValueError as e:
        raise GuardError(f"ip -j rule show: unreadable output ({e})") from None


def missing_rules() -> List[str]:
    """Return the rules (as ``ip rule add`` text) that are not installed in this network
    namespace (empty when all are). Raises GuardError if the rules cannot be read."""
    have_main = False
    unreachable = set()
    for r in _rules():
        if r.get("priority") == PRIO_MAIN and r.get("table") == "main" \
                and str(r.get("suppress_prefixlen")) == "0":
            have_main = True
        if r.get("priority") == PRIO_UNREACHABLE and r.get("action") == "unreachable" and r.get("dst"):
            unreachable.add(f"{r['dst']}/{r.get('dstlen', 32)}")
    out = []
    for cmd in rule_commands():
        text = "ip " + " ".join(cmd)
        if "suppress_prefixlength" in cmd:
            if not have_main:
                out.append(text)
        elif cmd[3] not in unreachable:
            out.append(text)
    return out


def ensure_rules() -> List[str]:
    """Install the missing rules; return those it added (empty when all were there).
    Raises GuardError naming the rule ``ip`` refused. Needs root (CAP_NET_ADMIN); callers
    serialise concurrent calls (the local provider holds its subnet lock)."""
    added = []
    for text in missing_rules():
        p = subprocess.run([_ip(), *text.split()[1:]], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=10)
        if p.returncode != 0:
            raise GuardError(f"{text}: {p.stderr.strip() or 'exit ' + str(p.returncode)}")
        added.append(text)
    return added
