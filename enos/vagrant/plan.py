"""The plan of a vagrant env: which machines (name, size, roles, addresses) and which
private networks (name, CIDR, roles), computed once from the reservation and the run id
and journalled before ``vagrant up``.

Networks: the EnOSlib form lists them (``resources.networks: [{roles, cidr}]``); otherwise
two networks are made, with the roles Enos gave its Vagrant VMs' NICs:
``network_interface`` and ``neutron_external_interface``. Their CIDRs default to /24s in
10.140.0.0–10.159.255.0 derived from the run id (``default_cidr``), so concurrent envs
rarely collide; the libvirt management network (DHCP, how Vagrant reaches the VMs) takes
one more /24 there. On a network, VM ``i`` gets ``.10 + i``; the gateway is ``.1``; every
other host address of the CIDR is in the env's IP pool for that network.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Dict, List, Optional, Tuple

from enos.vagrant.flavours import DEFAULT_FLAVOUR, FLAVOURS

#: network roles of the two default networks (as Enos' vagrant provider)
DEFAULT_NETWORK_ROLES = (["network_interface"], ["neutron_external_interface"])
#: first address given to VMs on a private network (``.10``): .1 is the gateway
FIRST_HOST = 10
_RANGE_START = 140            # 10.140.0.0/24 ...
_RANGE_BLOCKS = 1280          # ... 1280 envs x 4 /24s: up to 10.159.255.0/24


def default_cidr(run_id: str, index: int) -> str:
    """Return the default /24 number ``index`` (0: management, 1..3: private networks) of
    the env ``run_id``: ``10.<140..159>.<x>.0/24``."""
    try:
        base = int(run_id, 16) % _RANGE_BLOCKS
    except ValueError:
        base = sum(run_id.encode()) % _RANGE_BLOCKS
    n = base * 4 + index
    return f"10.{_RANGE_START + n // 256}.{n % 256}.0/24"


def machine_size(spec, base_flavour: str = DEFAULT_FLAVOUR) -> Tuple[int, int]:
    """Return (vCPUs, MiB) of a MachineSpec: ``flavour_desc: {core, mem}`` wins, then
    ``flavour``/``flavor``/the compact label when it names a flavour, then ``base_flavour``.
    Raises KeyError(name) for an unknown flavour name (the caller words the error)."""
    o = spec.options or {}
    desc = o.get("flavour_desc")
    if desc:
        return int(desc["core"]), int(desc["mem"])
    name = o.get("flavor") or spec.label or base_flavour
    if name not in FLAVOURS:
        raise KeyError(name)
    return FLAVOURS[name]


def is_flavour_label(label: Optional[str]) -> bool:
    """Return True when a compact-form label names a flavour (other labels, such as
    ``machines`` or ``vms``, mean the default flavour)."""
    return label is None or label in FLAVOURS


def network_plan(config, run_id: str) -> List[Dict[str, Any]]:
    """Return the private networks: ``[{"key", "name", "cidr", "roles"}]`` (``name`` is the
    libvirt network name ``enos-<run>-<key>``)."""
    given = config.networks or []
    out = []
    if given:
        for i, n in enumerate(given):
            cidr = str(ipaddress.ip_network(n["cidr"], strict=False))
            out.append({"key": f"net{i + 1}", "cidr": cidr, "roles": list(n["roles"])})
    else:
        for i, roles in enumerate(DEFAULT_NETWORK_ROLES):
            out.append({"key": f"net{i + 1}", "cidr": default_cidr(run_id, i + 1), "roles": list(roles)})
    for n in out:
        n["name"] = f"enos-{run_id}-{n['key']}"
    return out


def make_plan(config, run_id: str, base_flavour: str = DEFAULT_FLAVOUR) -> Dict[str, Any]:
    """Return the plan of an env: ``{"prefix", "mgmt": {"name", "cidr"}, "networks": [...],
    "machines": [{"name", "alias", "roles", "cpus", "memory", "domain", "seed",
    "nics": [[net key, ip], ...]}]}``. Machines are named ``<role>-<n>`` (``n`` counting
    per role, from 1), as the libvirt provider names them. Raises KeyError on an unknown
    flavour (validation catches it first)."""
    nets = network_plan(config, run_id)
    by_role: Dict[str, List[Dict[str, Any]]] = {}
    for n in nets:
        for r in n["roles"]:
            by_role.setdefault(r, []).append(n)
    machines = []
    counters: Dict[str, int] = {}
    used: Dict[str, int] = {n["key"]: 0 for n in nets}
    for spec in config.machines:
        cpus, mem = machine_size(spec, base_flavour)
        wanted = spec.options.get("networks")
        if wanted:
            mnets = []
            for role in wanted:
                for n in by_role.get(role, []):
                    if n not in mnets:
                        mnets.append(n)
        else:
            mnets = list(nets)
        key = "-".join(spec.roles)
        for _ in range(int(spec.count)):
            counters[key] = counters.get(key, 0) + 1
            alias = f"{key}-{counters[key]}"
            nics = []
            for n in mnets:
                net = ipaddress.ip_network(n["cidr"], strict=False)
                ip = net.network_address + FIRST_HOST + used[n["key"]]
                used[n["key"]] += 1
                if ip not in net or ip == net.broadcast_address:
                    raise ValueError(f"network {n['cidr']} is too small for {used[n['key']]} machines")
                nics.append([n["key"], str(ip)])
            machines.append({"name": alias, "alias": alias, "roles": list(spec.roles), "cpus": cpus,
                             "memory": mem, "domain": f"enos-{run_id}-{alias}",
                             "seed": f"enos-{run_id}-{alias}-seed.img", "nics": nics})
    return {"prefix": f"enos-{run_id}-", "networks": nets, "machines": machines,
            "mgmt": {"name": f"enos-{run_id}-mgmt", "cidr": default_cidr(run_id, 0)}}


def gateway(cidr: str) -> str:
    """Return the gateway (first host address, ``.1``) of ``cidr``."""
    return str(ipaddress.ip_network(cidr, strict=False).network_address + 1)
