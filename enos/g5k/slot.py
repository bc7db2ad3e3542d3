"""The earliest slot: when every requested cluster (on every site) has the nodes free for
the walltime, from the API's status data (``GET /sites/{site}/status``).

Pure functions, no network. A status answer lists, per node (and per vlan / subnet), its
hardware state and the jobs holding it now or later (``reservations``, each with
``started_at`` or ``scheduled_at`` and ``walltime``). A resource is busy over
``[start, start + walltime)`` of each such job, except best-effort jobs (OAR kills them to
make room). Nodes that are dead, suspected or absent never count as free.

The earliest start is either the lower bound itself or the end of some busy interval, so
only those instants are tried, in order; each try counts, per demand, the resources free
over the whole window. Explicit servers are taken first, then cluster demands, then
"any node of the site" demands, each from what the previous ones left.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from enos.g5k.oar import node_cluster

UNUSABLE = ("dead", "suspected", "absent")
Interval = Tuple[float, float]


@dataclass(frozen=True)
class Demand:
    """What one site must provide at once: ``count`` nodes of ``cluster`` (None: any node
    of the site), or the named ``servers`` (FQDNs); or, with ``kind`` ``vlan``, ``count``
    vlans of type ``vlan_type``; with ``kind`` ``subnet``, ``count`` /22 subnets."""

    site: str
    count: int = 1
    cluster: Optional[str] = None
    servers: Tuple[str, ...] = ()
    kind: str = "nodes"
    vlan_type: Optional[str] = None


@dataclass
class Slot:
    """The answer: the window [``start``, ``end``) and, per site, the nodes/vlans/subnets
    that are free in it (what a reservation at ``start`` would get)."""

    start: float
    end: float
    free: Dict[str, Dict[str, int]] = field(default_factory=dict)
    tried: int = 0


class Timeline:
    """One resource's busy intervals, sorted; answers "free over [t, e)?" by bisection."""

    __slots__ = ("starts", "ends")

    def __init__(self, intervals: Iterable[Interval]):
        merged: List[List[float]] = []
        for s, e in sorted(intervals):
            if e <= s:
                continue
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        self.starts = [m[0] for m in merged]
        self.ends = [m[1] for m in merged]

    def free(self, t: float, e: float) -> bool:
        """True when no busy interval overlaps [t, e)."""
        i = bisect.bisect_right(self.ends, t)      # first interval ending after t
        return i >= len(self.starts) or self.starts[i] >= e


def busy_interval(job: Mapping) -> Optional[Interval]:
    """Return [start, end) of one ``reservations`` entry, or None when it does not hold the
    resource (best effort) or OAR gave it no start yet."""
    if job.get("queue") == "besteffort" or "besteffort" in (job.get("types") or []):
        return None
    start = job.get("started_at") or job.get("scheduled_at")
    if not start:
        return None
    return float(start), float(start) + float(job.get("walltime") or 0)


def timelines(section: Mapping[str, Mapping], usable: Callable[[str, Mapping], bool]
              ) -> Dict[str, Timeline]:
    """Return name → Timeline for the entries of one status section (``nodes``, ``vlans``
    or ``subnets``) that ``usable(name, entry)`` accepts."""
    out = {}
    for name, entry in section.items():
        if not usable(name, entry):
            continue
        spans = [iv for iv in (busy_interval(j) for j in entry.get("reservations") or ()) if iv]
        out[name] = Timeline(spans)
    return out


class SiteView:
    """One site's status answer, indexed: nodes by cluster, vlans by type, subnets."""

    def __init__(self, status: Mapping, eligible: Optional[Callable[[str], bool]] = None):
        ok = eligible or (lambda name: True)
        nodes = timelines(status.get("nodes") or {},
                          lambda n, e: e.get("hard") not in UNUSABLE and ok(n))
        self.by_cluster: Dict[str, Dict[str, Timeline]] = {}
        for fq, tl in nodes.items():
            self.by_cluster.setdefault(node_cluster(fq), {})[fq] = tl
        self.nodes = nodes
        self.vlan_types = {v: e.get("type") for v, e in (status.get("vlans") or {}).items()}
        self.vlans = timelines(status.get("vlans") or {}, lambda v, e: e.get("hard") not in UNUSABLE)
        self.subnets = timelines(status.get("subnets") or {}, lambda s, e: True)

    def ends(self) -> List[float]:
        """Every busy interval's end: the instants where something frees up."""
        out: List[float] = []
        for group in (self.nodes, self.vlans, self.subnets):
            for tl in group.values():
                out.extend(tl.ends)
        return out


def _count_free(pool: Dict[str, Timeline], taken: set, t: float, e: float, want: int) -> List[str]:
    got = []
    for name, tl in pool.items():
        if name not in taken and tl.free(t, e):
            got.append(name)
            if len(got) == want:
                break
    return got


def fits(view: SiteView, demands: Sequence[Demand], t: float, e: float) -> bool:
    """True when every demand of this site is met over [t, e) (servers first, then
    clusters, then any node; vlans; subnets)."""
    taken: set = set()
    order = sorted(demands, key=lambda d: (d.kind != "nodes", not d.servers, d.cluster is None))
    for d in order:
        if d.kind == "vlan":
            pool = {v: tl for v, tl in view.vlans.items() if view.vlan_types.get(v) == d.vlan_type}
        elif d.kind == "subnet":
            pool = view.subnets
        elif d.servers:
            pool = {s: view.nodes[s] for s in d.servers if s in view.nodes}
        elif d.cluster:
            pool = view.by_cluster.get(d.cluster, {})
        else:
            pool = view.nodes
        want = len(d.servers) if d.servers else d.count
        got = _count_free(pool, taken, t, e, want)
        if len(got) < want:
            return False
        taken.update(got)
    return True


def earliest(demands: Sequence[Demand], statuses: Mapping[str, Mapping], walltime: float,
             start: float, until: Optional[float] = None,
             eligible: Optional[Callable[[str], bool]] = None) -> Optional[Slot]:
    """Return the earliest :class:`Slot` of ``walltime`` seconds starting at or after
    ``start`` (and ending by ``until`` when given) where every demand is met on its site,
    or None when there is none in the bounds (or a demand exceeds what a site has).

    ``statuses`` maps each demanded site to its status answer (a dict as the API gives
    it); ``eligible(fqdn)`` may exclude nodes the job could not get (queue, walltime limit,
    exotic). Raises KeyError naming a demanded site without status."""
    start = float(math.ceil(start))      # OAR dates are whole seconds
    by_site: Dict[str, List[Demand]] = {}
    for d in demands:
        by_site.setdefault(d.site, []).append(d)
    views = {s: SiteView(statuses[s], eligible) for s in by_site}
    instants = {start}
    for v in views.values():
        instants.update(x for x in v.ends() if x > start)
    tried = 0
    for t in sorted(instants):
        if until is not None and t + walltime > until:
            break
        tried += 1
        if all(fits(views[s], ds, t, t + walltime) for s, ds in by_site.items()):
            return Slot(t, t + walltime, _free_summary(views, by_site, t, t + walltime), tried)
    return None


def _free_summary(views, by_site, t, e) -> Dict[str, Dict[str, int]]:
    out: Dict[str, Dict[str, int]] = {}
    for s, ds in by_site.items():
        v = views[s]
        for d in ds:
            if d.kind == "nodes" and d.cluster:
                out.setdefault(s, {})[d.cluster] = sum(1 for tl in v.by_cluster.get(d.cluster, {}).values()
                                                       if tl.free(t, e))
            elif d.kind == "nodes" and not d.servers:
                out.setdefault(s, {})["*"] = sum(1 for tl in v.nodes.values() if tl.free(t, e))
    return out
