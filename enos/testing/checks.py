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
    ip_addrs = set()
    for a in addrs:   # a host may be reached by name (Grid'5000 nodes): only IPs can collide
        try:
            ip_addrs.add(ipaddress.ip_address(a))
        except ValueError:
            pass
    for pool in resources["networks"]:
        net = ipaddress.ip_network(pool["cidr"], strict=False)
        ranges = [(ipaddress.ip_address(a), ipaddress.ip_address(b)) for a, b in pool["ranges"]]
        assert all(a <= b for a, b in ranges), f"IP pool range reversed: {pool['ranges']}"
        assert all(b1 < a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:])), "IP pool ranges overlap or unsorted"
        assert all(a in net and b in net for a, b in ranges), "IP pool outside its CIDR"
        inside = lambda x: any(a <= ipaddress.ip_address(x) <= b for a, b in ranges)  # noqa: E731
        assert not any(inside(h) for h in ip_addrs), "IP pool overlaps host addresses"
        if pool.get("gateway"):
            assert not inside(pool["gateway"]), "gateway in the IP pool"
        assert pool.get("size") == sum(int(b) - int(a) + 1 for a, b in ranges), "IP pool size wrong"
    if "ip_pool" in set(capabilities):
        assert resources["networks"] and any(n["ranges"] for n in resources["networks"]), \
            "provider declares ip_pool but returned no free address"
