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

import difflib
import ipaddress
from typing import Any, Dict, List, Tuple

from enos.model import Host, IpPool
from enos.vagrant.flavours import DEFAULT_FLAVOUR, FLAVOURS, describe

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


def check_config(config, default_backend: str, libvirt_only) -> None:
    """Check flavours, the networks (CIDRs, overlaps, sizes, the roles machines name)
    and libvirt-only keys with another backend. Raises ConfigError (file:line)."""
    o = config.options or {}
    backend = o.get("backend", default_backend)
    for key in libvirt_only:
        if key in o and backend != "libvirt":
            raise config.error(f"provider.{key}", f"'{key}' is only for backend: libvirt "
                                                  f"(this file asks for {backend})")
    base = o.get("flavour", DEFAULT_FLAVOUR)
    for m in config.machines:
        opts = m.options or {}
        if "flavour_desc" in opts and (m.label or "flavor" in opts):
            raise config.error(m.keypath, "give either a flavour or 'flavour_desc', not both")
        if m.label and "flavor" in opts:
            raise config.error(m.keypath, "give either 'flavour' or 'flavor', not both")
        try:
            machine_size(m, base)
        except KeyError as e:
            name = e.args[0]
            close = difflib.get_close_matches(str(name), FLAVOURS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            where = m.keypath if m.group is None else m.keypath
            raise config.error(where, f"unknown flavour '{name}'{hint}; flavours: {describe()}") from None
    nets = []
    roles: Dict[str, int] = {}
    for i, n in enumerate(config.networks or []):
        path = f"resources.networks.{i}.cidr"
        if (config.raw.get("provider") or {}).get("resources") if isinstance(config.raw.get("provider"), dict) else False:
            path = "provider." + path
        try:
            net = ipaddress.ip_network(n["cidr"], strict=False)
        except ValueError as e:
            raise config.error(path, f"expected an IPv4 CIDR: {e}") from None
        if net.num_addresses < 16:
            raise config.error(path, f"{net} is too small: give at least a /28")
        for p2, n2 in nets:
            if net.overlaps(n2):
                raise config.error(path, f"{net} overlaps {n2} ({p2})")
        nets.append((path, net))
        for r in n["roles"]:
            roles[r] = i
    total = sum(m.count for m in config.machines)
    for path, net in nets:
        if FIRST_HOST + total >= net.num_addresses - 1:
            raise config.error(path, f"{net} cannot hold {total} machines from .{FIRST_HOST} up")
    for m in config.machines:
        for r in (m.options or {}).get("networks") or []:
            if r not in roles:
                known = ", ".join(sorted(roles)) or "none: add resources.networks"
                raise config.error(m.keypath, f"network role '{r}' is not in resources.networks ({known})")

def hosts(rec: dict, user: str, keyfile: str) -> List[Host]:
    """Return the SSH hosts of the machines (addresses from ``vagrant ssh-config``; each
    network role as an Ansible variable naming the NIC, as Enos: ``network_interface: eth1``)."""
    nets = {n["key"]: n for n in rec["networks"]}
    out = []
    for m in rec["machines"]:
        a = rec["addresses"][m["name"]]
        extra: Dict[str, Any] = {"enos_vagrant_machine": m["name"], "enos_vagrant_dir": rec["dir"]}
        for i, (key, ip) in enumerate(m["nics"], start=1):
            for role in nets[key]["roles"]:
                extra[role] = f"eth{i}"
                extra[f"{role}_ip"] = ip
        out.append(Host(alias=m["alias"], address=a["address"], user=user, port=a["port"], keyfile=keyfile,
                        roles=list(m["roles"]), extra=extra, host_key=(rec.get("host_keys") or {}).get(m["alias"])))
    return out


def pools(rec: dict) -> List[IpPool]:
    """Return one IP pool per private network: its addresses no machine uses."""
    out = []
    for n in rec["networks"]:
        used = [ip for m in rec["machines"] for key, ip in m["nics"] if key == n["key"]]
        out.append(IpPool.from_range(n["cidr"], exclude=used, gateway=gateway(n["cidr"]),
                                     roles=list(n["roles"]), name=n["name"]))
    return out
