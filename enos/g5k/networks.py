"""The networks of each node: which interface is on which network, with which address,
and the secondary interfaces moved into their kavlans through the API.

``secondary_networks`` of a machine group put the nodes' secondary interfaces (enabled,
mountable, kavlan-capable, not the management one: :mod:`enos.g5k.nics`, read from the
Reference API's ``network_adapters``) into the kavlan of each network, in order, with
``POST /sites/{site}/vlans/{id}/nodes`` and the interfaces' network addresses
(``gros-1-eth1.nancy.grid5000.fr``). A cluster without enough such interfaces is refused
before anything is booked, naming the cluster. Every host then carries ``g5k_networks``
(an Ansible host variable): ``{network id: {type, vlan, device, interface, address}}``.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

from enos import failpoint
from enos.errors import ProviderError
from enos.g5k import nics
from enos.g5k.oar import KAVLAN_TYPES, node_cluster


def node_data(g5k, groups) -> Dict[str, dict]:
    """Return {node FQDN: Reference API description} of every cluster of ``groups`` (one
    request per cluster, all at once; kept in the session for the rest of the call)."""
    cache = getattr(g5k, "node_cache", None)
    if cache is None:
        cache = g5k.node_cache = {}
    wanted = sorted({(g.site, g.cluster) for g in groups if g.cluster and (g.site, g.cluster) not in cache})
    if wanted:
        with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as ex:
            for key, nodes in zip(wanted, ex.map(lambda k: g5k.api.cluster_nodes(*k), wanted)):
                cache[key] = nodes
    out = {}
    for nodes in cache.values():
        for n in nodes:
            main = nics.primary(n)
            out[main.network_address if main else n.get("uid")] = n
    return out


def plan_secondaries(g5k, groups, nets) -> Dict[int, Dict[str, str]]:
    """Return {group index: {network id: device}} for the groups with secondary networks,
    checked before booking: each must be a kavlan network of the group's site, and the
    group's cluster must have that many secondary kavlan-capable interfaces. Raises
    ConfigError (keypath of the group) naming the cluster otherwise."""
    by_id = {n.id: n for n in nets}
    todo = [(i, g) for i, g in enumerate(groups) if g.secondary_networks]
    if not todo:
        return {}
    for _, g in todo:
        for ref in g.secondary_networks:
            n = by_id.get(ref)
            if n is None or n.type not in KAVLAN_TYPES:
                raise g5k.ctx.config.error(g.keypath + ".secondary_networks",
                                           f"'{ref}' is not a kavlan network (secondary networks are kavlans)")
            if n.type != "kavlan-global" and n.site != g.site:
                raise g5k.ctx.config.error(g.keypath + ".secondary_networks",
                                           f"network '{ref}' is on {n.site}, the machines on {g.site}")
    data = node_data(g5k, [g for _, g in todo])
    out: Dict[int, Dict[str, str]] = {}
    for i, g in todo:
        nodes = [n for fq, n in data.items() if node_cluster(fq) == g.cluster and (not g.servers or fq in g.servers)]
        try:
            out[i] = nics.assign(g.cluster, nodes, list(g.secondary_networks))
        except nics.NicShortage as e:
            raise g5k.ctx.config.error(g.keypath + ".secondary_networks", str(e)) from None
    return out


def move_secondaries(g5k, groups, pairs, plan: Dict[int, Dict[str, str]], vlan_of: Dict[str, str],
                     jobs: Dict[str, dict]) -> None:
    """Move the planned secondary interfaces of the assigned nodes into their vlans (one
    POST per site and vlan, skipped when the journal says this job already did it).
    Raises ProviderError naming the interfaces the API refused."""
    data = node_data(g5k, [groups[i] for i in plan]) if plan else {}
    index = {id(g): i for i, g in enumerate(groups)}
    wanted: Dict[Tuple[str, str], List[str]] = {}
    for g, fq in pairs:
        for net, device in plan.get(index[id(g)], {}).items():
            nic = nics.interface(data.get(fq, {}), device)
            if nic is None:
                raise ProviderError(f"{fq} has no interface {device} in the Reference API")
            wanted.setdefault((g.site, vlan_of[net]), []).append(nic.network_address)
    for (site, vlan), addresses in sorted(wanted.items()):
        rec = g5k.ctx.journal.get(f"vlans:{site}") or {}
        if rec.get("job") == jobs[site]["uid"] and sorted(rec.get("moved", {}).get(vlan, [])) == sorted(addresses):
            continue
        answer = g5k.api.move_to_vlan(site, vlan, addresses)
        bad = {a: r for a, r in (answer or {}).items() if (r or {}).get("status") == "failure"}
        if bad:
            raise ProviderError(f"kavlan {vlan} on {site} refused "
                                + ", ".join(f"{a} ({r.get('message')})" for a, r in sorted(bad.items())))
        moved = dict(rec.get("moved") or {}) if rec.get("job") == jobs[site]["uid"] else {}
        moved[vlan] = sorted(addresses)
        with g5k.lock:
            g5k.record(f"vlans:{site}", {"job": jobs[site]["uid"], "moved": moved})
        g5k.ctx.progress.info(f"g5k: {len(addresses)} interface(s) moved into vlan {vlan} on {site}")
        failpoint.checkpoint("g5k.vlan_moved")


def host_networks(g, fq: str, node: Optional[dict], nets, plan: Dict[str, str],
                  vlan_of: Dict[str, str]) -> Dict[str, dict]:
    """Return ``{network id: {type, vlan, device, interface, address}}`` of one host: its
    primary network (its primary interface) and its secondary ones (the planned
    interfaces); ``address`` is what the kavlan's DHCP gives that interface (the Reference
    API's ``kavlan`` map) or, on the production network, the interface's address."""
    by_id = {n.id: n for n in nets}
    out: Dict[str, dict] = {}
    main = nics.primary(node) if node else None
    primary_id = g.primary_network or next((n.id for n in nets if n.type == "prod"), None)
    entries = ([(primary_id, main.device if main else None)] if primary_id else []) + list(plan.items())
    for net_id, device in entries:
        n = by_id.get(net_id)
        vlan = vlan_of.get(net_id)
        nic = nics.interface(node, device) if node and device else None
        address = None
        if node and device and vlan:
            address = nics.kavlan_ip(node, device, vlan)
        elif node and device:
            address = next((a.get("ip") for a in node.get("network_adapters") or [] if a.get("device") == device), None)
        out[net_id] = {k: v for k, v in {"type": n.type if n else "prod", "vlan": vlan, "device": device,
                                         "interface": nic.name if nic else None, "address": address}.items()
                       if v is not None}
    return out


def rows(hosts: Sequence) -> List[dict]:
    """One row per host and network for ``enos info``: host, network, interface, address."""
    out = []
    for h in hosts:
        for net, d in sorted(((h.get("extra") or {}).get("g5k_networks") or {}).items()):
            out.append({"host": h.get("alias"), "network": net, "type": d.get("type"), "vlan": d.get("vlan"),
                        "interface": d.get("interface") or d.get("device"), "address": d.get("address")})
    return out
