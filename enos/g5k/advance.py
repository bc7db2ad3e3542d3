"""Advance reservations on Grid'5000: the earliest slot of a reservation, from the status
of every site it uses (``GET /sites/{site}/status``: each node's, vlan's and subnet's
current and future jobs) and the nodes' descriptions (queues, walltime limits, exotic),
searched by :mod:`enos.g5k.slot`. Takes the env's :class:`~enos.g5k.session.Session`."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

from enos.g5k import oar
from enos.g5k.networks import node_data
from enos.g5k.slot import Demand, earliest


def demands(groups, nets) -> List[Demand]:
    """Return the slot search's demands of the plan's groups (servers, or nodes per
    cluster) and networks (one vlan per kavlan network, /22 subnets)."""
    out: List[Demand] = []
    counts: Dict[tuple, int] = {}
    for g in groups:
        if g.servers:
            out.append(Demand(g.site, len(g.servers), servers=tuple(g.servers)))
        else:
            counts[(g.site, g.cluster)] = counts.get((g.site, g.cluster), 0) + g.nodes
    out += [Demand(site, n, cluster) for (site, cluster), n in sorted(counts.items())]
    for n in nets:
        if n.type in oar.KAVLAN_TYPES:
            out.append(Demand(n.site, 1, kind="vlan", vlan_type=n.type))
        elif n.type in oar.SUBNET_TYPES:
            out.append(Demand(n.site, 64 if n.type == "slash_16" else 1, kind="subnet"))
    return out


def eligible_nodes(g5k, groups, walltime: int):
    """Return a predicate on node FQDNs: the nodes the job could get at all (the job's
    queue among the node's, the walltime within its limit, exotic nodes only with the
    ``exotic`` job type) — what OAR's admission rules check and the status does not say."""
    data = node_data(g5k, groups)
    queue = g5k.opt("queue") or "default"
    types = g5k.opt("job_type")
    types = [types] if isinstance(types, str) else list(types or [])

    def ok(fqdn: str) -> bool:
        node = data.get(fqdn)
        if node is None:
            return True           # not described: let OAR decide
        jt = node.get("supported_job_types") or {}
        if queue not in (jt.get("queues") or [queue]):
            return False
        limit = int(jt.get("max_walltime") or 0)
        if limit and walltime > limit:
            return False
        return not (node.get("exotic") and "exotic" not in types)
    return ok


def earliest_slot(g5k, groups, nets, walltime: Optional[str], start: float, until: Optional[float]) -> Optional[dict]:
    """Return ``{"start", "end", "oar_date", "sites", "instants_tried"}`` of the earliest
    slot of ``walltime`` (default the reservation's) from ``start``, ending by ``until``;
    None when there is none. One status request per site (all at once) and one node
    listing per cluster. Raises the API's errors, ValueError for a bad walltime."""
    seconds = oar.parse_walltime(walltime or g5k.opt("walltime"))
    wanted = demands(groups, nets)
    sites = sorted({d.site for d in wanted})
    with ThreadPoolExecutor(max_workers=min(8, len(sites)) or 1) as ex:
        statuses = dict(zip(sites, ex.map(g5k.api.status, sites)))
    found = earliest(wanted, statuses, seconds, start, until, eligible=eligible_nodes(g5k, groups, seconds))
    if found is None:
        return None
    return {"start": found.start, "end": found.end, "oar_date": oar.paris_date(found.start) + " Europe/Paris",
            "sites": found.free, "instants_tried": found.tried}
