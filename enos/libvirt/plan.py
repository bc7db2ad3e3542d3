"""What a libvirt env will be, decided before anything is created: VM sizes (flavours),
network CIDRs (a /24 derived from the run id unless given), names, UUIDs and MACs; and the
checks of the provider's configuration."""
from __future__ import annotations

import difflib
import ipaddress
import secrets
import uuid as uuidlib
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlparse

from enos.libvirt.xml import split_network

DEFAULT_URI = "qemu:///system"
#: VM sizes, as Enos' Vagrant flavours: name → (vCPUs, memory MiB)
FLAVOURS: Dict[str, Tuple[int, int]] = {
    "tiny": (1, 512), "small": (1, 1024), "medium": (2, 2048), "big": (3, 3072),
    "large": (4, 4096), "extra-large": (6, 6144),
}
#: compact-form labels that mean "the default flavour"
GENERIC_LABELS = ("machines", "default", "vms", "hosts")


def mac() -> str:
    """Return a fresh random MAC in QEMU's range (dnsmasq keeps leases an hour)."""
    b = secrets.token_bytes(3)
    return "52:54:00:%02x:%02x:%02x" % (b[0], b[1], b[2])


def default_cidrs(run_id: str, count: int = 32) -> List[str]:
    """Return candidate /24s for an env's NAT network, starting at one derived from
    ``run_id`` (10.100.0.0/24 .. 10.199.255.0/24), so concurrent envs rarely collide."""
    start = int(run_id, 16) if all(c in "0123456789abcdef" for c in run_id.lower()) and run_id else 0
    out = []
    for i in range(count):
        n = (start + i) % (100 * 256)
        out.append(f"10.{100 + n // 256}.{n % 256}.0/24")
    return out


def jump_default(uri: str) -> Optional[str]:
    """Return the SSH jump host implied by a remote URI (``qemu+ssh://user@host:port/...``
    → ``user@host:port``), or None for a local one."""
    u = urlparse(uri)
    if not u.hostname or "+ssh" not in (u.scheme or ""):
        return None
    out = (f"{u.username}@" if u.username else "") + u.hostname
    return out + (f":{u.port}" if u.port else "")


def size(config, m) -> Tuple[int, int]:
    """Return (vCPUs, memory MiB) of machine spec ``m``: its flavour (or the provider's,
    default ``tiny``), overridden by ``cpus``/``memory``. Raises ConfigError for an unknown
    flavour (with the closest name)."""
    base = (config.options or {}).get("flavour", "tiny")
    label = m.options.get("flavour") or m.label
    if label and label not in GENERIC_LABELS:
        if label not in FLAVOURS:
            close = difflib.get_close_matches(label, FLAVOURS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            # point at the word written: 'flavour:' of an explicit machine, else the
            # compact label ('resources.<label>.<role>' → 'resources.<label>')
            explicit = m.options.get("flavour") or m.keypath.rsplit(".", 1)[-1].isdigit()
            where = f"{m.keypath}.flavour" if explicit else m.keypath.rsplit(".", 1)[0]
            raise config.error(where, f"unknown flavour '{label}'{hint}; flavours: "
                                      + ", ".join(FLAVOURS))
        base = label
    cpus, mem = FLAVOURS[base]
    return int(m.options.get("cpus", cpus)), int(m.options.get("memory", mem))


def check_config(config) -> None:
    """Check flavours, extra network names and CIDRs. Raises ConfigError."""
    o = config.options or {}
    cidrs = []
    if (o.get("network") or {}).get("cidr"):
        cidrs.append(("provider.network.cidr", o["network"]["cidr"]))
    extra = {}
    for i, n in enumerate(o.get("extra_networks") or []):
        if n["name"] in extra:
            raise config.error(f"provider.extra_networks.{i}.name", f"duplicate network '{n['name']}'")
        extra[n["name"]] = n
        cidrs.append((f"provider.extra_networks.{i}.cidr", n["cidr"]))
    nets = []
    for path, c in cidrs:
        try:
            split_network(c)
            net = ipaddress.ip_network(c, strict=False)
        except ValueError as e:
            raise config.error(path, f"expected an IPv4 CIDR with at least 6 addresses: {e}") from None
        for p2, n2 in nets:
            if net.overlaps(n2):
                raise config.error(path, f"{net} overlaps {n2} ({p2})")
        nets.append((path, net))
    for m in config.machines:
        size(config, m)
        for name in m.options.get("networks") or []:
            if name not in extra:
                raise config.error(m.keypath, f"network '{name}' is not in provider.extra_networks "
                                              f"({', '.join(extra) or 'none defined'})")


def make_plan(session) -> dict:
    """Return the journal record of a new env: every network, VM, name, UUID and MAC,
    decided before anything is created."""
    run = session.ctx.run_id
    o = session.opts
    main_cidr = (o.get("network") or {}).get("cidr")
    nets = [{"key": "net0", "name": f"enos-{run}-net0", "bridge": f"enos{run}0",
             "cidr": main_cidr or default_cidrs(run)[0], "auto_cidr": not main_cidr,
             "attempt": 0, "nat": True, "dhcp": True, "uuid": None}]
    for i, n in enumerate(o.get("extra_networks") or [], start=1):
        nets.append({"key": n["name"], "name": f"enos-{run}-{n['name']}", "bridge": f"enos{run}{i}",
                     "cidr": str(ipaddress.ip_network(n["cidr"], strict=False)), "auto_cidr": False,
                     "attempt": 0, "nat": False, "dhcp": bool(n.get("dhcp", True)), "uuid": None})
    vms = []
    counters: Dict[str, int] = {}
    for m in session.ctx.config.machines:
        cpus, mem = size(session.ctx.config, m)
        key = "-".join(m.roles) if m.roles else (m.label or "vm")
        for _ in range(int(m.count)):
            counters[key] = counters.get(key, 0) + 1
            alias = f"{key}-{counters[key]}"
            nics = [["net0", mac()]] + [[n, mac()] for n in (m.options.get("networks") or [])]
            vms.append({"alias": alias, "roles": list(m.roles), "cpus": cpus, "memory": mem,
                        "name": f"enos-{run}-{alias}", "uuid": str(uuidlib.uuid4()),
                        "overlay": f"enos-{run}-{alias}.qcow2",
                        "seed": f"enos-{run}-{alias}-seed.img", "nics": nics,
                        "console": f"enos-{run}-{alias}-console.log", "console_path": None,
                        "address": None, "host_key": None})
    return {"uri": o["uri"], "pool": None, "networks": nets, "vms": vms, "domain_type": None}
