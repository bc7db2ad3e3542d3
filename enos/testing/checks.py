"""Assertions shared by the conformance suites."""
from __future__ import annotations

import ipaddress
from typing import Iterable


def check_resources(resources: dict, machines: Iterable, capabilities: Iterable[str]) -> None:
    """Assert that ``resources`` (``Resources.to_dict()``) is well formed for ``machines``
    (the config's MachineSpecs): one host per machine asked for, unique aliases, every role
    present, IP pools inside their CIDR, disjoint from the hosts and the gateway, and a
    non-empty pool when ``ip_pool`` is declared. Returns None; raises AssertionError."""
    machines = list(machines)
    hosts = resources["hosts"]
    wanted = sum(m.count for m in machines)
    assert len(hosts) == wanted, f"asked for {wanted} hosts, got {len(hosts)}"
    aliases = [h["alias"] for h in hosts]
    assert len(set(aliases)) == len(aliases), f"aliases not unique: {aliases}"
    for h in hosts:
        assert h["address"] and h["roles"] and 0 < h["port"] < 65536, h
    asked_roles = {r for m in machines for r in m.roles}
    got_roles = {r for h in hosts for r in h["roles"]}
    assert asked_roles <= got_roles, f"roles missing: {asked_roles - got_roles}"
    addrs = {h["address"] for h in hosts}
    for pool in resources["networks"]:
        net = ipaddress.ip_network(pool["cidr"], strict=False)
        free = pool["free"]
        assert len(set(free)) == len(free), "IP pool has duplicates"
        assert all(ipaddress.ip_address(a) in net for a in free), "IP pool outside its CIDR"
        assert not (set(free) & addrs), "IP pool overlaps host addresses"
        if pool.get("gateway"):
            assert pool["gateway"] not in free, "gateway in the IP pool"
    if "ip_pool" in set(capabilities):
        assert resources["networks"] and any(n["free"] for n in resources["networks"]), \
            "provider declares ip_pool but returned no free address"
