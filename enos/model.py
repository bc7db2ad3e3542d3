"""The shared data types of enos: what a provider returns and everything above it reads.

:class:`Host` (a machine reachable over SSH), :class:`IpPool` (free addresses of a
network), :class:`Resources` (the hosts and pools of an env) and :class:`Check` (one line of
``enos check``). They sit below the SSH layer, the state and the providers, so every layer
can use them without importing upwards; :mod:`enos.provider.provider` re-exports them for
providers written against it. All are JSON-serialisable (``to_dict``/``from_dict``).
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional
from html import escape


@dataclass
class Host:
    """A machine reachable over SSH.

    ``alias`` is the name used in the inventory and by ``enos ssh``; ``address`` what SSH
    connects to; ``extra`` becomes Ansible host variables; ``jump`` an optional
    ``user@host[:port]`` to reach it through (one connection master per jump host, see
    :mod:`enos.ssh.jump`) and ``jump_keyfile`` the private key for that jump host (None: the
    user's agent and default keys); ``host_key`` its public host key
    (``"ssh-ed25519 AAAA..."``) when the provider knows it, pinned in the env's known_hosts.
    """

    alias: str
    address: str
    user: str = "root"
    port: int = 22
    keyfile: Optional[str] = None
    roles: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    jump: Optional[str] = None
    host_key: Optional[str] = None
    jump_keyfile: Optional[str] = None

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict of this host (lists and dicts copied: what
        ``dataclasses.asdict`` gives, without its deepcopy: 4x faster, ~1 ms per 100 hosts)."""
        return {f: _json_copy(getattr(self, f)) for f in _HOST_FIELDS}

    def __repr__(self) -> str:
        extra = f", extra={self.extra!r}" if self.extra else ""
        jump = f", jump={self.jump!r}" if self.jump else ""
        return f"Host({self.alias!r}, {self.user}@{self.address}:{self.port}, roles={self.roles!r}{extra}{jump})"

    def _repr_html_(self) -> str:
        cells = [self.alias, f"{self.user}@{self.address}:{self.port}", ", ".join(self.roles),
                 ", ".join(f"{k}={v}" for k, v in sorted(self.extra.items()))]
        return ("<table><tr><th>alias</th><th>address</th><th>roles</th><th>extra</th></tr><tr>"
                + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr></table>")

    @classmethod
    def from_dict(cls, data: dict) -> "Host":
        """Return a Host built from :meth:`to_dict` output."""
        return cls(**data)



_HOST_FIELDS = tuple(f.name for f in fields(Host))


def _json_copy(value):
    """Return ``value`` with its dicts, lists and tuples copied (the rest as is)."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_json_copy(v) for v in value)
    return value

@dataclass
class IpPool:
    """Free addresses of a network the experiment may use (for VIPs, containers, ...).

    ``ranges`` lists ``[first, last]`` address ranges (inclusive) inside ``cidr`` that no
    host uses — ranges, not addresses, so a /8 costs a few bytes, not 16 million strings;
    ``size`` is how many addresses they hold; ``roles`` the roles this network serves
    (empty: all). :attr:`free` enumerates the addresses (small pools), :meth:`take`
    gives the first ones.
    """

    cidr: str
    gateway: Optional[str] = None
    dns: Optional[str] = None
    ranges: List[List[str]] = field(default_factory=list)
    roles: List[str] = field(default_factory=list)
    name: Optional[str] = None

    @property
    def size(self) -> int:
        """How many free addresses the pool holds."""
        return sum(int(ipaddress.ip_address(b)) - int(ipaddress.ip_address(a)) + 1 for a, b in self.ranges)

    def take(self, n: int) -> List[str]:
        """Return the first ``n`` free addresses (fewer if the pool is smaller)."""
        out: List[str] = []
        for a, b in self.ranges:
            lo, hi = ipaddress.ip_address(a), ipaddress.ip_address(b)
            while lo <= hi and len(out) < n:
                out.append(str(lo))
                lo += 1
            if len(out) >= n:
                break
        return out

    @property
    def free(self) -> List[str]:
        """Every free address, in order (use :meth:`take` on large pools)."""
        return self.take(self.size)

    def __contains__(self, address) -> bool:
        a = ipaddress.ip_address(str(address))
        return any(ipaddress.ip_address(lo) <= a <= ipaddress.ip_address(hi) for lo, hi in self.ranges)

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict of this pool (``size`` included for readers)."""
        d = asdict(self)
        d["size"] = self.size
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "IpPool":
        """Return an IpPool built from :meth:`to_dict` output (a state written by an older
        enos, with a ``free`` list of addresses, is read too)."""
        data = dict(data)
        data.pop("size", None)
        free = data.pop("free", None)
        if free is not None and "ranges" not in data:
            data["ranges"] = _ranges([ipaddress.ip_address(a) for a in free])
        return cls(**data)

    @classmethod
    def from_range(cls, cidr: str, exclude=(), start: Optional[str] = None,
                   end: Optional[str] = None, **kw) -> "IpPool":
        """Return a pool of the host addresses of ``cidr`` (optionally ``start``..``end``)
        minus ``exclude`` and the gateway, as ranges (cost: the number of exclusions, not
        the size of the network). Raises ``ValueError`` on a malformed CIDR."""
        net = ipaddress.ip_network(cidr, strict=False)
        if net.num_addresses <= 2:
            lo_host, hi_host = net.network_address, net.broadcast_address
        else:
            lo_host, hi_host = net.network_address + 1, net.broadcast_address - (1 if net.version == 4 else 0)
        lo = max(lo_host, ipaddress.ip_address(start)) if start else lo_host
        hi = min(hi_host, ipaddress.ip_address(end)) if end else hi_host
        skip = {ipaddress.ip_address(str(a)) for a in exclude}
        if kw.get("gateway"):
            skip.add(ipaddress.ip_address(str(kw["gateway"])))
        ranges: List[List[str]] = []
        cur = lo
        for s in sorted(a for a in skip if a.version == lo.version and lo <= a <= hi):
            if s > cur:
                ranges.append([str(cur), str(s - 1)])
            cur = s + 1
        if lo <= hi and cur <= hi:
            ranges.append([str(cur), str(hi)])
        return cls(cidr=str(net), ranges=ranges, **kw)


def _ranges(addresses) -> List[List[str]]:
    """Return the sorted ``addresses`` as ``[first, last]`` runs of consecutive addresses."""
    out: List[List[str]] = []
    prev = None
    for a in sorted(set(addresses)):
        if prev is not None and int(a) == int(prev) + 1:
            out[-1][1] = str(a)
        else:
            out.append([str(a), str(a)])
        prev = a
    return out


@dataclass
class Resources:
    """What :meth:`Provider.init` returns: the hosts and the networks' IP pools."""

    hosts: List[Host] = field(default_factory=list)
    networks: List[IpPool] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return {"hosts": [h.to_dict() for h in self.hosts],
                "networks": [n.to_dict() for n in self.networks]}

    @classmethod
    def from_dict(cls, data: dict) -> "Resources":
        """Return Resources built from :meth:`to_dict` output."""
        return cls(hosts=[Host.from_dict(h) for h in data.get("hosts", [])],
                   networks=[IpPool.from_dict(n) for n in data.get("networks", [])])

    def roles(self) -> Dict[str, List[Host]]:
        """Return a mapping role → hosts having that role, in host order."""
        out: Dict[str, List[Host]] = {}
        for h in self.hosts:
            for r in h.roles:
                out.setdefault(r, []).append(h)
        return out


@dataclass
class Check:
    """One line of ``enos check``: what is needed, whether it is there, how to fix it.

    ``warn`` marks a need that is met in a degraded way (e.g. VMs under QEMU emulation
    because KVM is unusable): shown as a warning with its ``fix``, not counted as missing."""

    what: str
    ok: bool
    detail: str = ""
    fix: str = ""
    warn: bool = False
