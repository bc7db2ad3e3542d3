"""The provider contract.

A provider books machines on one kind of testbed and gives them back. The core finds it
by the ``provider.type`` key of reservation.yaml (``enos.provider.<type>`` or the
``enos.providers`` entry-point group), instantiates it with a :class:`ProviderContext`,
and calls, in order:

* :meth:`Provider.init` — book (or re-find) the resources and return :class:`Resources`;
* :meth:`Provider.before_preinstall` / :meth:`Provider.after_preinstall` — hooks around
  the Ansible provisioning;
* :meth:`Provider.destroy` — release everything, using only what the journal recorded.

Rules every provider follows (the conformance suite in :mod:`enos.testing` checks them):

* **Journal before side effects**: record what you are about to create
  (``ctx.journal.record(...)``) before creating it, and its handle the moment it exists,
  so that a crash at any line leaves enough for :meth:`destroy`.
* **Tag everything with** ``ctx.run_id`` so :meth:`sweep` can find leftovers without state.
* :meth:`destroy` **is idempotent**: not-found counts as destroyed; it goes on past one
  failure and raises one :class:`~enos.errors.DestroyIncomplete` listing what is left.
* :meth:`init` **is idempotent**: called again on the same journal it re-finds what it
  booked instead of booking twice.
* Only declared ``capabilities`` may be used; the others raise
  :class:`~enos.errors.Unsupported`.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, FrozenSet, List, Optional

from enos.errors import Unsupported

if TYPE_CHECKING:  # pragma: no cover
    from enos.reservation.config import Config
    from enos.state import Journal

# Capabilities a provider may declare.
RESERVE = "reserve"                      # init books resources
DESTROY = "destroy"                      # destroy releases them
IP_POOL = "ip_pool"                      # init returns free IPs for the experiment
DEPLOY_OS = "deploy_os"                  # can install an OS image on the machines
EXTEND_WALLTIME = "extend_walltime"      # extend() gives more time to a reservation
ADVANCE_RESERVATION = "advance_reservation"  # can book for a later date
SWEEP = "sweep"                          # sweep() finds leftovers by run id without state
CAPABILITIES = frozenset({RESERVE, DESTROY, IP_POOL, DEPLOY_OS, EXTEND_WALLTIME,
                          ADVANCE_RESERVATION, SWEEP})


@dataclass
class Host:
    """A machine reachable over SSH.

    ``alias`` is the name used in the inventory and by ``enos ssh``; ``address`` what SSH
    connects to; ``extra`` becomes Ansible host variables; ``jump`` an optional
    ``user@host[:port]`` to reach it through (ProxyJump); ``host_key`` its public host key
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

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict of this host."""
        return asdict(self)

    def __repr__(self) -> str:
        extra = f", extra={self.extra!r}" if self.extra else ""
        jump = f", jump={self.jump!r}" if self.jump else ""
        return f"Host({self.alias!r}, {self.user}@{self.address}:{self.port}, roles={self.roles!r}{extra}{jump})"

    def _repr_html_(self) -> str:
        from html import escape
        cells = [self.alias, f"{self.user}@{self.address}:{self.port}", ", ".join(self.roles),
                 ", ".join(f"{k}={v}" for k, v in sorted(self.extra.items()))]
        return ("<table><tr><th>alias</th><th>address</th><th>roles</th><th>extra</th></tr><tr>"
                + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr></table>")

    @classmethod
    def from_dict(cls, data: dict) -> "Host":
        """Return a Host built from :meth:`to_dict` output."""
        return cls(**data)


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


@dataclass
class ProviderContext:
    """What the core hands a provider.

    ``config`` is the validated :class:`enos.reservation.config.Config` (``config.options`` is the
    provider's own section, ``config.machines`` the normalised machine specs);
    ``journal`` persists the provider's handles into the env state at once;
    ``env_dir`` is where the provider may keep files (keys, seeds, ...); ``run_id``
    tags every resource; ``progress`` reports long waits (see :mod:`enos.progress`);
    ``ssh_key`` is the env's private key (``<env>/ssh/id_ed25519``, generated by the core
    before ``init``; its public half is ``ssh_key + ".pub"``): providers that create
    machines authorise it and set ``Host.keyfile`` to it.
    """

    config: "Config"
    journal: "Journal"
    env_dir: Path
    run_id: str
    progress: Any = None
    ssh_key: Optional[Path] = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("enos.provider"))

    def __post_init__(self):
        if self.progress is None:
            from enos.progress import NULL
            self.progress = NULL

    @property
    def ssh_pubkey(self) -> str:
        """The env's public key text (``ssh-ed25519 AAAA... enos-<run_id>``)."""
        return Path(str(self.ssh_key) + ".pub").read_text().strip()

    @property
    def options(self) -> dict:
        """The provider section of reservation.yaml, validated, defaults applied."""
        return self.config.options


class Provider:
    """Base class of every provider. Subclasses set the class attributes and override
    :meth:`init` and :meth:`destroy` at least."""

    #: provider type as written in reservation.yaml
    type: ClassVar[str] = ""
    #: JSON Schema of the ``provider:`` mapping (``type`` included); ``x-expected`` on a
    #: schema gives the human wording of what is expected ("an integer ≥ 1")
    schema: ClassVar[dict] = {"type": "object"}
    #: JSON Schema of the provider-specific keys of one machine spec (explicit form)
    machine_schema: ClassVar[dict] = {"type": "object"}
    #: declared capabilities (see the module constants)
    capabilities: ClassVar[FrozenSet[str]] = frozenset({RESERVE, DESTROY})
    #: pip extra bringing the provider's third-party library, if any
    extra: ClassVar[Optional[str]] = None
    #: top-level modules the provider imports lazily (checked with find_spec, not imported)
    requires: ClassVar[tuple] = ()
    #: one-line description for ``enos new`` / ``enos check``
    description: ClassVar[str] = ""
    #: commented reservation.yaml written by ``enos new --provider TYPE``
    sample: ClassVar[str] = ""

    def __init__(self, ctx: ProviderContext):
        self.ctx = ctx

    # --- the four methods of the original contract -----------------------------------
    def init(self, force_deploy: bool = False) -> Resources:
        """Book (or re-find, from the journal) the resources; return them.

        Raises :class:`~enos.errors.EnosError` subclasses (``AuthError``,
        ``ReservationUnavailable``, ``ProviderError``, ``Timeout`` ...)."""
        raise NotImplementedError

    def destroy(self) -> None:
        """Release everything the journal recorded. Idempotent. Raises
        :class:`~enos.errors.DestroyIncomplete` listing what could not be released."""
        raise NotImplementedError

    def before_preinstall(self, env: Any) -> None:
        """Hook run once every host answers SSH, before the preinstall playbook.
        ``env`` is the :class:`enos.task.Environment`. Default: nothing."""

    def after_preinstall(self, env: Any) -> None:
        """Hook run after the preinstall and the user's playbooks. Default: nothing."""

    # --- optional capabilities -------------------------------------------------------
    def sweep(self) -> List[str]:
        """Find and remove resources tagged with ``ctx.run_id`` even without a journal;
        return what was removed. Raises Unsupported unless ``sweep`` is declared."""
        raise Unsupported(f"provider '{self.type}' cannot sweep")

    def extend(self, walltime: str) -> dict:
        """Ask for more time (``+H:MM``) on the reservation; return the new end per job.
        Raises Unsupported unless ``extend_walltime`` is declared."""
        raise Unsupported(f"provider '{self.type}' cannot extend a reservation")

    def info(self) -> dict:
        """Return provider-specific facts for ``enos info`` (e.g. remaining walltime)."""
        return {}

    @classmethod
    def validate(cls, config: "Config") -> None:
        """Semantic checks beyond the JSON schemas (e.g. a key needed by this provider).
        Raise ``config.error(keypath, message)``. Must not touch the network."""

    @classmethod
    def preflight(cls, config: "Config") -> None:
        """Checks of ``config`` against this machine that ``enos up`` runs for a new env before
        anything is booked or recorded (its env dir is removed and ``./current`` left alone
        if they fail), and ``enos validate`` too: a missing image or key file, a subnet
        already in use here. Not run on the saved reservation of ``destroy`` nor on a
        resume (``init`` re-checks what it needs). Raise ``config.error(keypath, message)``
        or another :class:`~enos.errors.UsageError` (exit 2). Must not book or change
        anything. Default: nothing."""

    def check(self) -> List[Check]:
        """Return what this provider needs on this machine and whether it is there
        (binaries, daemons, credentials). Must not book anything."""
        return []

    # --- helpers for subclasses ------------------------------------------------------
    def require(self, capability: str) -> None:
        """Raise :class:`Unsupported` unless ``capability`` is declared."""
        if capability not in self.capabilities:
            raise Unsupported(f"provider '{self.type}' does not support '{capability}'")
