"""What a booked env gives: nodes assigned to machine groups, kavlan ids, the SSH hosts
(behind the access gateway as a jump host) and the IP pools (reserved subnets, kavlans)."""
from __future__ import annotations

import os
import socket
from typing import Any, Dict, List, Optional, Tuple

from enos.errors import ProviderError
from enos.g5k.networks import host_networks, node_data
from enos.g5k.oar import KAVLAN_TYPES, SUBNET_TYPES, kavlan_name, node_cluster
from enos.g5k.plan import assign_nodes
from enos.g5k.session import DEFAULT_GATEWAY
from enos.model import Host, IpPool


def assign(groups, jobs) -> List[Tuple[Any, str]]:
    """Return (machine group, node FQDN) pairs: the nodes each job got, given to the groups.
    Raises ProviderError when OAR's answer does not fit the groups."""
    try:
        return assign_nodes(groups, {s: list(j.get("assigned_nodes") or []) for s, j in jobs.items()})
    except ValueError as e:
        raise ProviderError(f"unexpected OAR answer: {e}") from None


def vlans(g5k, nets, jobs) -> Dict[str, str]:
    """Return network id → the vlan id OAR gave (kavlan networks only), each network a vlan
    of its type (the site's vlan types read from the API once per site with kavlans)."""
    out: Dict[str, str] = {}
    given = {s: [str(v) for v in (j.get("resources_by_type") or {}).get("vlans") or []] for s, j in jobs.items()}
    types: Dict[str, Dict[str, str]] = {}
    for n in nets:
        if n.type not in KAVLAN_TYPES:
            continue
        if n.site not in types:
            types[n.site] = g5k.api.vlan_types(n.site) if given.get(n.site) else {}
        fit = [v for v in given.get(n.site, []) if types[n.site].get(v, n.type) == n.type]
        if not fit:
            raise ProviderError(f"the job on {n.site} got no {n.type} vlan for network '{n.id}'")
        out[n.id] = fit[0]
        given[n.site].remove(fit[0])
    return out


def jump_host(g5k) -> Optional[str]:
    """Return the SSH jump host (``user@gateway``), or None inside Grid'5000 or when
    ``gateway: false``."""
    gw = g5k.ctx.options.get("gateway", "__unset__") if g5k.ctx.options else "__unset__"
    if gw == "__unset__" or gw is None:
        if socket.getfqdn().endswith(".grid5000.fr"):
            return None   # inside Grid'5000: nodes are reachable directly
        gw = DEFAULT_GATEWAY
    if gw is False or gw == "":
        return None
    gw = str(gw)
    return gw if "@" in gw else f"{g5k.creds.username}@{gw}"


def hosts(g5k, pairs, nets, vlan_of, jobs, deployed: bool, groups=(), plan=None) -> List[Host]:
    """Return the SSH hosts of the assigned nodes: root with the env's key on deployed
    nodes, else the user (``ssh_user``) with their key; kavlan names when in a vlan;
    behind the gateway (``gateway_key`` its key); with ``g5k_networks`` (interface and
    address per network, when the reservation declares networks)."""
    jump = jump_host(g5k)
    jump_key = os.path.expanduser(str(g5k.opt("gateway_key"))) if jump and g5k.opt("gateway_key") else None
    data = node_data(g5k, [g for g, _ in pairs]) if nets else {}
    index = {id(g): i for i, g in enumerate(groups)}
    plan = plan or {}
    if deployed:
        user, keyfile = "root", (str(g5k.ctx.ssh_key) if g5k.ctx.ssh_key else None)
    else:
        user = g5k.opt("ssh_user") or g5k.creds.username
        pub = os.path.expanduser(str(g5k.opt("key")))
        priv = pub[:-4] if pub.endswith(".pub") else pub
        keyfile = priv if os.path.isfile(priv) else None
    hosts = []
    for g, fq in pairs:
        vlan = vlan_of.get(g.primary_network) if g.primary_network else None
        address = kavlan_name(fq, vlan) if vlan else fq
        extra = {"g5k_site": g.site, "g5k_cluster": node_cluster(fq), "g5k_fqdn": fq,
                 "g5k_job": jobs[g.site]["uid"]}
        if vlan:
            extra["g5k_vlan"] = vlan
        if nets:
            extra["g5k_networks"] = host_networks(g, fq, data.get(fq), nets, plan.get(index.get(id(g)), {}), vlan_of)
        hosts.append(Host(alias=fq.split(".")[0], address=address, user=user, keyfile=keyfile,
                          roles=list(g.roles), extra=extra, jump=jump, jump_keyfile=jump_key))
    return hosts


def pools(g5k, nets, jobs, vlan_of) -> List[IpPool]:
    """Return the IP pools of the reserved subnets and kavlans (gateway and DNS from
    the API). Raises ProviderError when the API gives no range for a kavlan."""
    pools: List[IpPool] = []
    subnets = {s: list((j.get("resources_by_type") or {}).get("subnets") or []) for s, j in jobs.items()}
    site_info: Dict[str, dict] = {}
    dns: Dict[str, Optional[str]] = {}
    for n in nets:
        if n.type not in KAVLAN_TYPES + SUBNET_TYPES:
            continue
        if n.site not in site_info:
            site_info[n.site] = g5k.api.site(n.site)
            dns[n.site] = g5k.api.dns(n.site)
        info = site_info[n.site]
        if n.type in SUBNET_TYPES:
            want = 64 if n.type == "slash_16" else 1
            mine, subnets[n.site] = subnets[n.site][:want], subnets[n.site][want:]
            gw = (info.get("g5ksubnet") or {}).get("gateway")
            for cidr in mine:
                pools.append(IpPool.from_range(cidr, gateway=gw, dns=dns[n.site], roles=list(n.roles),
                                               name=n.id))
        else:
            v = (info.get("kavlans") or {}).get(vlan_of[n.id]) or {}
            if not v.get("network"):
                raise ProviderError(f"the API gives no address range for kavlan {vlan_of[n.id]} on {n.site}")
            pools.append(IpPool.from_range(v["network"], gateway=v.get("gateway"), dns=dns[n.site],
                                           roles=list(n.roles), name=n.id))
    return pools
