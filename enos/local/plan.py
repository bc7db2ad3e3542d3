"""What a local env will be, decided before anything is created: the subnet (a free /24 of
10.200–10.254 derived from the run id, or ``provider.subnet``), and per host its alias,
roles, address, namespace, veth and hostname. Every name carries the run id."""
from __future__ import annotations

import fcntl
import ipaddress
import itertools
import os
import re
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from enos.errors import ConfigError, ProviderError

LOCK_PATH = "/run/enos/local-subnets.lock"
#: the auto-picked /24s come from here (10.200.0.0/24 .. 10.254.255.0/24)
AUTO_FIRST = ipaddress.ip_network("10.200.0.0/24")
AUTO_COUNT = 55 * 256          # /24s up to 10.254.255.0/24
_HOSTNAME_BAD = re.compile(r"[^a-z0-9-]+")


def bridge_name(run_id: str) -> str:
    """The env's bridge: ``eb<run id>``."""
    return f"eb{run_id}"


def veth_name(run_id: str, n: int) -> str:
    """The bridge side of host ``n``'s veth pair: ``ev<run id><n>``."""
    return f"ev{run_id}{n}"


def ns_name(run_id: str, n: int) -> str:
    """Host ``n``'s network namespace: ``enos-<run id>-<n>``."""
    return f"enos-{run_id}-{n}"


def hostname(alias: str) -> str:
    """The hostname of a host (its alias, lower-case letters, digits and '-')."""
    return _HOSTNAME_BAD.sub("-", alias.lower()).strip("-")[:63] or "host"


def our_link(run_id: str, name: str) -> bool:
    """True for this run's bridge or veths: ``eb<run id>``, ``ev<run id><n>`` (exact run
    id, then only digits: another run's id is never matched by its prefix)."""
    return name == f"eb{run_id}" or (name.startswith(f"ev{run_id}") and name[2 + len(run_id):].isdigit())


def our_netns(run_id: str, name: str) -> bool:
    """True for this run's namespaces ``enos-<run id>-<n>`` (exact run id)."""
    return name.startswith(f"enos-{run_id}-") and name[len(f"enos-{run_id}-"):].isdigit()


def our_arg(run_id: str, arg: str) -> bool:
    """True for a command-line argument naming a file of this run's host dirs
    (``.../local-<run id>/<alias>/sshd_config``, exact run id)."""
    parts = Path(arg).parts
    return len(parts) >= 3 and parts[-3] == f"local-{run_id}" and parts[-1] == "sshd_config"


@dataclass
class HostPlan:
    """One namespace host as planned from the reservation (JSON form in the journal)."""

    n: int
    alias: str
    roles: List[str]
    address: str
    ns: str
    veth: str
    hostname: str
    extra_hosts: Dict[str, str] = field(default_factory=dict)
    pid: Optional[int] = None
    #: the sshd's start time (/proc/PID/stat): with ``pid``, names that very process
    start: Optional[int] = None

    def to_dict(self) -> dict:
        """Return the journal form of this plan."""
        return dict(self.__dict__)

    @classmethod
    def from_journal(cls, entry, run_id: str) -> "HostPlan":
        """Return the plan recorded in a journal ``entry``. Raises ValueError saying why
        when it is not a host record of run ``run_id`` (a wrong type, a field missing, a
        namespace or veth that is not this run's): destroy never acts on such names."""
        if not isinstance(entry, dict):
            raise ValueError(f"a {type(entry).__name__} where a host record should be")
        types = {"n": int, "alias": str, "roles": list, "address": str, "ns": str, "veth": str,
                 "hostname": str, "extra_hosts": dict}
        for key, typ in types.items():
            if key == "extra_hosts" and key not in entry:
                continue
            if not isinstance(entry.get(key), typ) or isinstance(entry.get(key), bool):
                raise ValueError(f"its '{key}' is {entry.get(key)!r}, not a {typ.__name__}")
        for key in ("pid", "start"):
            v = entry.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise ValueError(f"its '{key}' is {v!r}, not a process number")
        if not our_netns(run_id, entry["ns"]):
            raise ValueError(f"its namespace {entry['ns']!r} is not one of run {run_id}'s")
        if not (our_link(run_id, entry["veth"]) and entry["veth"] != bridge_name(run_id)):
            raise ValueError(f"its veth {entry['veth']!r} is not one of run {run_id}'s")
        known = set(types) | {"pid", "start"}
        return cls(**{k: v for k, v in entry.items() if k in known})


def journal_hosts(rec, run_id: str):
    """Return (the host plans a local journal record ``rec`` holds, what is wrong with it):
    every entry that is not a host record of this run is left out and said, as is a record
    that is not a mapping, a host list that is not a list, a bridge that is not this run's,
    a subnet recorded without its bridge or gateway, or one that is not a network."""
    if not isinstance(rec, dict):
        return [], [f"the journal record is a {type(rec).__name__}, not a mapping"]
    problems: List[str] = []
    hosts = rec.get("hosts", [])
    if not isinstance(hosts, list):
        return [], [f"its hosts are a {type(hosts).__name__}, not a list"]
    plans = []
    for i, entry in enumerate(hosts):
        try:
            plans.append(HostPlan.from_journal(entry, run_id))
        except ValueError as e:
            problems.append(f"host record {i}: {e}")
    if "bridge" in rec and rec["bridge"] != bridge_name(run_id):
        problems.append(f"its bridge {rec['bridge']!r} is not run {run_id}'s")
    for key in ("subnet", "gateway", "dir"):
        if rec.get(key) is not None and not isinstance(rec.get(key), str):
            problems.append(f"its '{key}' is {rec.get(key)!r}, not a text")
    problems.extend(_network_problems(rec))
    return plans, problems


def _network_problems(rec: dict) -> List[str]:
    """What is wrong with the network part of a journal record: a recorded subnet comes
    with its bridge and gateway (all three are journaled at once), the subnet is a
    network and the gateway an address inside it."""
    subnet = rec.get("subnet")
    if not isinstance(subnet, str):
        return []
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError:
        return [f"its subnet {subnet!r} is not a network"]
    out = [f"its subnet has no {key}" for key in ("bridge", "gateway") if rec.get(key) is None]
    gateway = rec.get("gateway")
    if isinstance(gateway, str):
        try:
            inside = ipaddress.ip_address(gateway) in net
        except ValueError:
            inside = False
        if not inside:
            out.append(f"its gateway {gateway!r} is not an address of {subnet}")
    return out


@contextmanager
def subnet_lock() -> Iterator[None]:
    """Hold the machine-wide lock serialising subnet choice + bridge addressing."""
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def used_networks(ipr, skip_index: Optional[int] = None) -> List[ipaddress.IPv4Network]:
    """Return the IPv4 networks in use in this namespace: every address's network and every
    route's destination (default routes excluded), except those of interface
    ``skip_index``."""
    nets = []
    for a in ipr.get_addr(family=socket.AF_INET):
        addr = a.get_attr("IFA_ADDRESS") or a.get_attr("IFA_LOCAL")
        if addr and a["index"] != skip_index:
            nets.append(ipaddress.ip_network(f"{addr}/{a['prefixlen']}", strict=False))
    for r in ipr.get_routes(family=socket.AF_INET, table=254) + ipr.get_routes(family=socket.AF_INET, table=255):
        dst = r.get_attr("RTA_DST")
        if dst and r["dst_len"] > 0 and (skip_index is None or r.get_attr("RTA_OIF") != skip_index):
            nets.append(ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False))
    return nets


def pick_subnet(used: List[ipaddress.IPv4Network], seed: int) -> ipaddress.IPv4Network:
    """Return a free /24 of 10.200.0.0–10.254.255.0 overlapping none of ``used``, starting the
    search at a place derived from ``seed``. Raises ProviderError if all are taken."""
    first = int(AUTO_FIRST.network_address)
    count = AUTO_COUNT
    start = seed % count
    for i in range(count):
        net = ipaddress.IPv4Network((first + ((start + i) % count) * 256, 24))
        if not any(net.overlaps(u) for u in used):
            return net
    raise ProviderError("no free /24 left in 10.200.0.0-10.254.255.255; set provider.subnet")


def subnet_option(config) -> Optional[ipaddress.IPv4Network]:
    """Return the ``subnet`` option as a network (None when not given). Raises ConfigError."""
    raw = (config.options or {}).get("subnet")
    if raw is None:
        return None
    try:
        net = ipaddress.ip_network(str(raw), strict=False)
    except ValueError:
        raise config.error("provider.subnet", f"expected a CIDR like 10.20.0.0/24, got '{raw}'") from None
    if net.version != 4:
        raise config.error("provider.subnet", f"expected an IPv4 CIDR, got '{raw}'")
    return net

def check_config(config) -> None:
    """Check the subnet option and that the hosts fit in it. Raises ConfigError."""
    net = subnet_option(config)
    total = sum(int(m.count) for m in config.machines)
    if total < 1:
        raise config.error("resources", "the local provider needs at least one host")
    room = (net.num_addresses - 3) if net is not None else 253
    if total > room:
        where = "provider.subnet" if net is not None else "resources"
        raise config.error(where, f"{total} hosts do not fit in {net or 'a /24'} "
                                  f"({room} addresses besides the gateway)")
    for m in config.machines:
        for name, ip in (m.options.get("extra_hosts") or {}).items():
            try:
                ipaddress.IPv4Address(str(ip))
            except ValueError:
                raise config.error(f"{m.keypath}.extra_hosts.{name}" if m.keypath else "extra_hosts",
                                   f"expected an IPv4 address, got '{ip}'") from None

def plan_hosts(config, run_id: str, subnet: ipaddress.IPv4Network, gateway: str) -> List[HostPlan]:
    """Return the hosts of the reservation: alias, roles, address in ``subnet`` (the
    gateway excepted), namespace and veth names, hostname, extra /etc/hosts entries.
    Raises ConfigError when they do not fit."""
    total = sum(int(m.count) for m in config.machines)
    # only as many addresses as hosts: a /8 subnet must not be listed
    hosts = list(itertools.islice((a for a in subnet.hosts() if str(a) != gateway), total))
    counters: Dict[str, int] = {}
    plans: List[HostPlan] = []
    for m in config.machines:
        roles = list(m.roles)
        key = "-".join(roles) if roles else (m.label or "host")
        for _ in range(int(m.count)):
            counters[key] = counters.get(key, 0) + 1
            alias = f"{key}-{counters[key]}"
            n = len(plans)
            if n >= len(hosts):
                raise ConfigError(f"{n + 1} hosts do not fit in {subnet}", keypath="provider.subnet")
            plans.append(HostPlan(n=n, alias=alias, roles=roles, address=str(hosts[n]),
                                  ns=ns_name(run_id, n), veth=veth_name(run_id, n),
                                  hostname=hostname(alias),
                                  extra_hosts={str(k): str(v) for k, v in
                                               (m.options.get("extra_hosts") or {}).items()}))
    return plans