"""From a reservation to per-site OAR jobs, and from the jobs' answers back to hosts.

Both reservation forms of Enos are accepted:

* compact ``resources: {<cluster>: {<role>: <count>}}`` (the core's ``config.machines``, one
  :class:`~enos.reservation.config.MachineSpec` per cluster and role, ``label`` = cluster);
* explicit ``resources: {machines: [{cluster | servers, nodes, roles, primary_network,
  secondary_networks}], networks: [{id, type, roles, site}]}``, found either in
  ``config.machines``/``config.networks`` or still inside the provider section.

Pure functions: the cluster → site mapping is given by the caller (it needs the API).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from enos.g5k import oar


@dataclass
class Group:
    """Machines asked for with the same roles: ``nodes`` of ``cluster``, or exact ``servers``."""

    roles: List[str]
    cluster: Optional[str] = None
    nodes: int = 1
    servers: List[str] = field(default_factory=list)
    primary_network: Optional[str] = None
    secondary_networks: List[str] = field(default_factory=list)
    site: Optional[str] = None
    keypath: str = ""


@dataclass
class Network:
    """A network asked for: ``type`` is prod, kavlan*, or slash_22/slash_16."""

    id: str
    type: str
    roles: List[str] = field(default_factory=list)
    site: Optional[str] = None
    keypath: str = ""


def _as_list(v) -> List[str]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return [str(v)]


def _group_from_dict(m: dict, keypath: str, count: Optional[int] = None,
                     label: Optional[str] = None) -> Group:
    servers = _as_list(m.get("servers"))
    cluster = m.get("cluster") or label
    if servers and not cluster:
        cluster = oar.node_cluster(servers[0])
    nodes = len(servers) if servers else int(m.get("nodes", m.get("number", count or 1)))
    site = oar.node_site(servers[0]) if servers else m.get("site")
    return Group(roles=_as_list(m.get("roles") or m.get("role")), cluster=cluster, nodes=nodes,
                 servers=servers, primary_network=m.get("primary_network"),
                 secondary_networks=_as_list(m.get("secondary_networks")), site=site, keypath=keypath)


def groups_and_networks(config) -> Tuple[List[Group], List[Network]]:
    """Return the machine groups and networks asked for by ``config`` (a
    :class:`enos.reservation.config.Config`). Raises nothing: :func:`check_plan` validates."""
    opts = config.options or {}
    res = opts.get("resources")
    if isinstance(res, dict) and isinstance(res.get("machines"), list):
        groups = [_group_from_dict(m, f"provider.resources.machines.{i}") for i, m in enumerate(res["machines"])]
        raw_nets = res.get("networks") or []
        nets_kp = "provider.resources.networks"
    else:
        groups = []
        for m in config.machines:
            d = dict(m.options or {})
            d.setdefault("roles", m.roles)
            groups.append(_group_from_dict(d, m.keypath, count=m.count, label=m.label))
        raw_nets = config.networks or []
        positions = getattr(config, "positions", None) or {}
        nets_kp = ("provider.resources.networks" if ("provider", "resources", "networks") in positions
                   else "resources.networks")
    nets = [Network(id=str(n.get("id")), type=str(n.get("type", "prod")), roles=_as_list(n.get("roles")),
                    site=n.get("site"), keypath=f"{nets_kp}.{i}") for i, n in enumerate(raw_nets)]
    return groups, nets


def check_plan(groups: Sequence[Group], nets: Sequence[Network]) -> List[Tuple[str, str]]:
    """Return (keypath, message) for every inconsistency: unknown network ids, unknown
    network types, servers that are not FQDNs of one cluster, kavlan/subnet networks
    without a site, no machines at all."""
    errors: List[Tuple[str, str]] = []
    if not groups:
        errors.append(("resources", "asks for no machine"))
    ids = {}
    for n in nets:
        if n.type not in oar.NETWORK_TYPES:
            errors.append((n.keypath + ".type", f"expected one of {', '.join(oar.NETWORK_TYPES)}, got '{n.type}'"))
        if n.type != "prod" and not n.site:
            errors.append((n.keypath + ".site", f"a '{n.type}' network needs a site"))
        if n.id in ids:
            errors.append((n.keypath + ".id", f"network id '{n.id}' is used twice"))
        ids[n.id] = n
    for g in groups:
        if not g.roles:
            errors.append((g.keypath + ".roles", "expected at least one role"))
        if not g.cluster and not g.servers:
            errors.append((g.keypath, "expected 'cluster' or 'servers'"))
        if g.nodes < 1:
            errors.append((g.keypath + ".nodes", f"expected an integer ≥ 1, got {g.nodes}"))
        for s in g.servers:
            if oar.node_site(s) is None:
                errors.append((g.keypath + ".servers", f"expected node FQDNs like paravance-1.rennes.grid5000.fr, got '{s}'"))
            elif oar.node_cluster(s) != g.cluster:
                errors.append((g.keypath + ".servers", f"'{s}' is not a node of cluster '{g.cluster}'"))
        for ref in ([g.primary_network] if g.primary_network else []) + g.secondary_networks:
            if nets and ref not in ids:
                errors.append((g.keypath, f"network '{ref}' is not defined in networks (known: {', '.join(ids) or 'none'})"))
        if g.primary_network and ids.get(g.primary_network) and ids[g.primary_network].type in oar.SUBNET_TYPES:
            errors.append((g.keypath + ".primary_network", "a subnet cannot be a primary network (use prod or a kavlan)"))
    return errors


def site_terms(groups: Sequence[Group], nets: Sequence[Network]) -> Dict[str, List[str]]:
    """Return, per site, the OAR terms of its job (clusters summed, servers, networks).
    Every group must have its ``site`` set."""
    per_site: Dict[str, List[str]] = {}
    counts: Dict[Tuple[str, str], int] = {}
    for g in groups:
        if g.servers:
            per_site.setdefault(g.site, []).extend(oar.server_terms(g.servers))
        else:
            counts[(g.site, g.cluster)] = counts.get((g.site, g.cluster), 0) + g.nodes
    for (site, cluster), n in counts.items():
        per_site.setdefault(site, []).insert(0, oar.cluster_term(cluster, n))
    for n in nets:
        term = oar.network_term(n.type)
        if term is not None:
            per_site.setdefault(n.site, []).append(term)
    return per_site


def assign_nodes(groups: Sequence[Group], assigned: Dict[str, List[str]]) -> List[Tuple[Group, str]]:
    """Return (group, node FQDN) pairs: servers go to their group, the other nodes of a
    cluster are handed out in node-number order to its groups, in the reservation's order.
    ``assigned`` maps site → the job's ``assigned_nodes``. Raises ValueError if a group
    gets fewer nodes than it asked for."""
    pool: Dict[Tuple[str, str], List[str]] = {}
    explicit = {s for g in groups for s in g.servers}
    for site, nodes in assigned.items():
        for fq in sorted(nodes, key=lambda n: (oar.node_cluster(n), oar.node_index(n), n)):
            if fq not in explicit:
                pool.setdefault((site, oar.node_cluster(fq)), []).append(fq)
    out: List[Tuple[Group, str]] = []
    for g in groups:
        if g.servers:
            missing = [s for s in g.servers if s not in assigned.get(g.site, [])]
            if missing:
                raise ValueError(f"the job on {g.site} did not get {', '.join(missing)}")
            out += [(g, s) for s in g.servers]
            continue
        avail = pool.get((g.site, g.cluster), [])
        if len(avail) < g.nodes:
            raise ValueError(f"the job on {g.site} got {len(avail)} node(s) of {g.cluster}, {g.nodes} wanted")
        out += [(g, fq) for fq in avail[:g.nodes]]
        del avail[:g.nodes]
    return out


def sites_needing_lookup(groups: Iterable[Group]) -> List[str]:
    """Return the clusters whose site is not known yet (no servers, no explicit site)."""
    return sorted({g.cluster for g in groups if not g.site and g.cluster})
