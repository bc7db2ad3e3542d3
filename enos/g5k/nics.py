"""Which network interfaces of Grid'5000 nodes a kavlan can hold, from the nodes'
``network_adapters`` (Reference API: ``GET /sites/{site}/clusters/{cluster}/nodes``).

Pure functions, no network. An interface is usable for a network when it is enabled,
mountable, kavlan-capable and not the management (BMC) one. The primary interface is the
mounted Ethernet one (not always ``eth0``: ``eth1`` on lyon/hercule, ``eth2`` on
nancy/gruss); the others are the secondary ones, which ``secondary_networks`` move into
their kavlans with ``POST /sites/{site}/vlans/{id}/nodes`` and the interface's
``network_address`` (``gros-1-eth1.nancy.grid5000.fr``: the legacy ``device`` name). Only 7
of the 91 clusters of the reference snapshot have a second kavlan-capable interface.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence


@dataclass(frozen=True)
class Nic:
    """One interface of a node: ``device`` (legacy kernel name, eth1), ``name`` (predictable
    name, eno2), ``network_address`` (what kavlan calls it), ``rate`` (bit/s)."""

    device: str
    name: Optional[str]
    network_address: str
    rate: Optional[int] = None


def usable(adapter: dict) -> bool:
    """True when a kavlan can hold this adapter."""
    return bool(adapter.get("enabled") and adapter.get("mountable") and adapter.get("kavlan")
                and not adapter.get("management") and adapter.get("network_address"))


def _nic(a: dict) -> Nic:
    return Nic(a["device"], a.get("name"), a["network_address"], a.get("rate"))


def primary(node: dict) -> Optional[Nic]:
    """The node's primary interface (the mounted Ethernet one), or None."""
    for a in node.get("network_adapters") or []:
        if a.get("mounted") and a.get("interface") == "Ethernet" and a.get("network_address"):
            return _nic(a)
    return None


def secondaries(node: dict) -> List[Nic]:
    """The node's kavlan-capable secondary interfaces, in the order of the data."""
    main = primary(node)
    return [_nic(a) for a in node.get("network_adapters") or []
            if usable(a) and (main is None or a["device"] != main.device)]


def common_secondaries(nodes: Sequence[dict]) -> List[str]:
    """The devices (eth1, ...) that are a kavlan-capable secondary interface on EVERY node
    given (a cluster's layout is uniform in the snapshot, but this does not assume it)."""
    if not nodes:
        return []
    first = [n.device for n in secondaries(nodes[0])]
    rest = [{n.device for n in secondaries(node)} for node in nodes[1:]]
    return [d for d in first if all(d in r for r in rest)]


class NicShortage(ValueError):
    """A cluster has fewer secondary kavlan-capable interfaces than networks asked for."""


def assign(cluster: str, nodes: Sequence[dict], networks: Sequence[str]) -> Dict[str, str]:
    """Return {network id: device}: the cluster's secondary interfaces given to the
    ``networks`` in order. Raises NicShortage naming the cluster, what it has and what was
    asked."""
    devices = common_secondaries(nodes)
    if len(devices) < len(networks):
        have = ", ".join(devices) if devices else "none"
        raise NicShortage(f"cluster {cluster} has {len(devices)} secondary kavlan-capable interface(s) "
                          f"({have}); {len(networks)} secondary network(s) asked ({', '.join(networks)})")
    return dict(zip(networks, devices))


def interface(node: dict, device: str) -> Optional[Nic]:
    """The node's interface ``device``, or None."""
    for a in node.get("network_adapters") or []:
        if a.get("device") == device and a.get("network_address"):
            return _nic(a)
    return None


def kavlan_ip(node: dict, device: str, vlan: str) -> Optional[str]:
    """The address kavlan ``vlan``'s DHCP gives the node's ``device`` (the reference data's
    ``kavlan`` map: ``kavlan.eth1["kavlan-4"]``), or None when the data has none."""
    return ((node.get("kavlan") or {}).get(device) or {}).get(f"kavlan-{vlan}")
