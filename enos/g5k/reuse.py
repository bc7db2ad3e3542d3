"""Reusing OAR jobs a researcher already holds: which ones (``job_name``, ``job_ids``,
``oargrid_jobids``) and whether each holds what the reservation asks.

Pure functions, no network: the caller lists/reads the jobs through the API and passes
their dicts (``GET /sites/{site}/jobs/{uid}``: ``state``, ``assigned_nodes``,
``resources_by_type``, ``types``) and the site's vlan types (``GET /sites/{site}/vlans``).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from enos.errors import UsageError
from enos.g5k import oar

REUSABLE_STATES = ("waiting", "launching", "running", "hold")


class ReuseError(UsageError):
    """A job to reuse is missing, ambiguous, ended, or does not hold what is asked."""


@dataclass
class SiteNeed:
    """What one site's job must hold: nodes per cluster, named servers, vlans per type,
    subnets per size, and the ``deploy`` type when an environment is deployed."""

    clusters: Dict[str, int] = field(default_factory=dict)
    servers: List[str] = field(default_factory=list)
    vlans: Dict[str, int] = field(default_factory=dict)
    subnets: Dict[str, int] = field(default_factory=dict)
    deploy: bool = False


def needs(groups: Iterable, nets: Iterable, deploy: bool) -> Dict[str, SiteNeed]:
    """Return {site: SiteNeed} from the plan's groups and networks (enos.g5k.plan; every
    group's ``site`` set)."""
    out: Dict[str, SiteNeed] = {}
    for g in groups:
        n = out.setdefault(g.site, SiteNeed(deploy=deploy))
        if g.servers:
            n.servers += [s for s in g.servers if s not in n.servers]
        else:
            n.clusters[g.cluster] = n.clusters.get(g.cluster, 0) + g.nodes
    for net in nets:
        if net.type == "prod":
            continue
        n = out.setdefault(net.site, SiteNeed(deploy=deploy))
        bucket = n.vlans if net.type in oar.KAVLAN_TYPES else n.subnets
        bucket[net.type] = bucket.get(net.type, 0) + 1
    return out


def _subnet_counts(cidrs: Sequence[str]) -> Dict[str, int]:
    """How many slash_22 and whole slash_16 (64 /22 of one /16) a job's subnets make."""
    by16: Dict[str, int] = {}
    for c in cidrs:
        key = str(ipaddress.ip_network(c).supernet(new_prefix=16))
        by16[key] = by16.get(key, 0) + 1
    whole = sum(1 for n in by16.values() if n >= 64)
    return {"slash_16": whole, "slash_22": len(cidrs) - 64 * whole}


def missing(job: Mapping, need: SiteNeed, vlan_types: Mapping[str, str]) -> List[str]:
    """Return what ``job`` lacks for ``need`` (empty: it holds everything), each as a
    phrase ("3 nodes of gros (it has 2)"). A job whose nodes are not known yet (waiting
    without a predicted placement) is only checked for its vlans, subnets and type."""
    out: List[str] = []
    nodes = list(job.get("assigned_nodes") or [])
    if nodes:
        have: Dict[str, int] = {}
        for fq in nodes:
            have[oar.node_cluster(fq)] = have.get(oar.node_cluster(fq), 0) + 1
        explicit = set(need.servers)
        for s in need.servers:
            if s not in nodes:
                out.append(f"node {s}")
        for cluster, count in sorted(need.clusters.items()):
            got = sum(1 for fq in nodes if oar.node_cluster(fq) == cluster and fq not in explicit)
            if got < count:
                out.append(f"{count} node(s) of {cluster} (it has {got})")
    rbt = job.get("resources_by_type") or {}
    vlans = [str(v) for v in rbt.get("vlans") or []]
    for kind, count in sorted(need.vlans.items()):
        got = sum(1 for v in vlans if vlan_types.get(v) == kind)
        if got < count:
            out.append(f"{count} vlan(s) of type {kind} (it has {got})")
    subnets = _subnet_counts(list(rbt.get("subnets") or []))
    for kind, count in sorted(need.subnets.items()):
        if subnets.get(kind, 0) < count:
            out.append(f"{count} subnet(s) {kind} (it has {subnets.get(kind, 0)})")
    if need.deploy and "deploy" not in (job.get("types") or []):
        out.append("the job type 'deploy' (env_name deploys an environment)")
    return out


def check(site: str, job: Mapping, need: SiteNeed, vlan_types: Mapping[str, str]) -> None:
    """Raise ReuseError when ``job`` cannot be reused for ``need`` on ``site``: ended, or
    lacking something (all of it named)."""
    uid, state = job.get("uid"), job.get("state")
    if state not in REUSABLE_STATES:
        raise ReuseError(f"job {uid} on {site} cannot be reused: it is {state}")
    lacks = missing(job, need, vlan_types)
    if lacks:
        raise ReuseError(f"job {uid} on {site} does not hold what the reservation asks: it lacks "
                         + "; ".join(lacks))


def pick_by_name(site: str, name: str, jobs: Sequence[Mapping]) -> Optional[Mapping]:
    """Return the one active job named ``name`` among ``jobs`` (None if there is none).
    Raises ReuseError naming every candidate when there are several."""
    found = [j for j in jobs if j.get("name") == name and j.get("state") in REUSABLE_STATES]
    if len(found) > 1:
        raise ReuseError(f"{len(found)} jobs named {name!r} on {site}: "
                         + ", ".join(f"{j['uid']} ({j.get('state')})" for j in found)
                         + "; give the one to use with job_ids: {" + f"{site}: <id>" + "}, or delete the other")
    return found[0] if found else None


def given_jobs(options: Mapping, keypath: str = "provider") -> Dict[str, int]:
    """Return {site: job id} from ``job_ids`` ({site: id}) and Enos' ``oargrid_jobids``
    ([[site, id], ...]). Raises ReuseError when both give a site different ids."""
    out: Dict[str, int] = {}
    where: Dict[str, str] = {}
    for site, uid in (options.get("job_ids") or {}).items():
        out[str(site)] = int(uid)
        where[str(site)] = f"{keypath}.job_ids.{site}"
    for i, pair in enumerate(options.get("oargrid_jobids") or []):
        site, uid = str(pair[0]), int(pair[1])
        if site in out and out[site] != uid:
            raise ReuseError(f"{keypath}.oargrid_jobids.{i} gives job {uid} on {site}, "
                             f"{where[site]} gives {out[site]}")
        out[site] = uid
        where.setdefault(site, f"{keypath}.oargrid_jobids.{i}")
    return out
