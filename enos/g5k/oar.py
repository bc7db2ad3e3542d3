"""OAR vocabulary: walltimes, reservation dates, resource expressions, refusal messages.

Pure functions, no network."""
from __future__ import annotations

import datetime as _dt
import re
from typing import Iterable, List, Optional, Sequence

ACTIVE_STATES = ("waiting", "launching", "running", "hold", "toLaunch", "toAckReservation")
ENDED_STATES = ("terminated", "error")
KAVLAN_TYPES = ("kavlan", "kavlan-local", "kavlan-global")
SUBNET_TYPES = ("slash_22", "slash_16")
NETWORK_TYPES = ("prod",) + KAVLAN_TYPES + SUBNET_TYPES

_WALLTIME = re.compile(r"^(\d+):([0-5]?\d)(?::([0-5]?\d))?$")
_DELTA = re.compile(r"^([+-]?)(\d+)(?::([0-5]?\d))?(?::([0-5]?\d))?$")
_COULD_RUN = re.compile(r"could\s+run\s+at\s+(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?)", re.I)
RESERVATION_FORMAT = "%Y-%m-%d %H:%M:%S"


def parse_walltime(text: str) -> int:
    """Return the seconds of an OAR walltime ``HH:MM[:SS]`` (hours may exceed 24).
    Raises ValueError on anything else."""
    m = _WALLTIME.match(str(text).strip())
    if not m:
        raise ValueError(f"expected a walltime HH:MM[:SS], got {text!r}")
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    return h * 3600 + mi * 60 + s


def format_walltime(seconds: int) -> str:
    """Return ``H:MM:SS`` for a number of seconds (≥ 0)."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def parse_extension(text: str) -> int:
    """Return the seconds of a walltime change ``+H[:MM[:SS]]`` (or ``-…``, or unsigned,
    read as an increase). Raises ValueError if malformed or zero."""
    m = _DELTA.match(str(text).strip())
    if not m:
        raise ValueError(f"expected a walltime change like +1:30, got {text!r}")
    sign = -1 if m.group(1) == "-" else 1
    secs = int(m.group(2)) * 3600 + int(m.group(3) or 0) * 60 + int(m.group(4) or 0)
    if secs == 0:
        raise ValueError(f"walltime change {text!r} is zero")
    return sign * secs


def format_extension(seconds: int) -> str:
    """Return the OAR form ``+H:MM:SS`` / ``-H:MM:SS`` of a walltime change."""
    return ("-" if seconds < 0 else "+") + format_walltime(abs(seconds))


def parse_reservation(text: str) -> _dt.datetime:
    """Return the naive datetime of a reservation date ``YYYY-MM-DD HH:MM:SS``.
    Raises ValueError otherwise."""
    try:
        return _dt.datetime.strptime(str(text).strip(), RESERVATION_FORMAT)
    except ValueError:
        raise ValueError(f"expected a date YYYY-MM-DD HH:MM:SS, got {text!r}") from None


#: Grid'5000's OAR reads and writes dates in the local time of its servers
OAR_TIMEZONE = "Europe/Paris"


def paris_date(ts: float) -> str:
    """Return Unix time ``ts`` as an OAR date ``YYYY-MM-DD HH:MM:SS`` (Europe/Paris time,
    seconds rounded up: a reservation never starts before ``ts``)."""
    from zoneinfo import ZoneInfo
    import math
    return _dt.datetime.fromtimestamp(math.ceil(ts), ZoneInfo(OAR_TIMEZONE)).strftime(RESERVATION_FORMAT)


def parse_paris_date(text: str) -> float:
    """Return the Unix time of an OAR date ``YYYY-MM-DD HH:MM:SS`` (Europe/Paris time).
    Raises ValueError."""
    from zoneinfo import ZoneInfo
    return parse_reservation(text).replace(tzinfo=ZoneInfo(OAR_TIMEZONE)).timestamp()


def could_run_at(message: str) -> Optional[str]:
    """Return the date in an OAR refusal "... could run at YYYY-MM-DD HH:MM:SS", or None."""
    m = _COULD_RUN.search(message or "")
    return m.group(1).replace("T", " ") if m else None


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "") + "'"


def cluster_term(cluster: str, nodes: int) -> str:
    """Return the OAR term asking ``nodes`` nodes of ``cluster``."""
    return "{cluster=%s}/nodes=%d" % (_quote(cluster), int(nodes))


def server_terms(servers: Iterable[str]) -> List[str]:
    """Return one OAR term per explicitly named server (FQDN)."""
    return ["{network_address=%s}/nodes=1" % _quote(s) for s in servers]


def network_term(net_type: str) -> Optional[str]:
    """Return the OAR term booking a network of ``net_type`` (None for ``prod``).
    Raises ValueError on an unknown type."""
    if net_type == "prod":
        return None
    if net_type in KAVLAN_TYPES:
        return "{type=%s}/vlan=1" % _quote(net_type)
    if net_type in SUBNET_TYPES:
        return f"{net_type}=1"
    raise ValueError(f"unknown Grid'5000 network type {net_type!r}")


def resource_expression(terms: Sequence[str], walltime: str) -> str:
    """Return the full ``resources`` string of a job: terms joined by ``+``, then the walltime."""
    if not terms:
        raise ValueError("a job needs at least one resource term")
    return "+".join(terms) + f",walltime={format_walltime(parse_walltime(walltime))}"


def node_cluster(fqdn: str) -> str:
    """Return the cluster of a node name (``paravance-12.rennes.grid5000.fr`` → ``paravance``)."""
    return fqdn.split(".")[0].rsplit("-", 1)[0]


def node_site(fqdn: str) -> Optional[str]:
    """Return the site of a node FQDN (second label), or None for a short name."""
    parts = fqdn.split(".")
    return parts[1] if len(parts) > 2 else None


def node_index(fqdn: str) -> int:
    """Return the number of a node (``paravance-12...`` → 12; 0 when there is none)."""
    tail = fqdn.split(".")[0].rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def kavlan_name(fqdn: str, vlan: str) -> str:
    """Return the node's name inside kavlan ``vlan`` (``paravance-1-kavlan-4.rennes...``)."""
    parts = fqdn.split(".")
    parts[0] = f"{parts[0]}-kavlan-{vlan}"
    return ".".join(parts)
