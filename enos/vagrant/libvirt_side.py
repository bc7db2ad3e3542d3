"""The libvirt side of the vagrant provider's libvirt backend (libvirt-python, imported lazily).

vagrant-libvirt creates, for an env of run id ``R`` (prefix ``enos-R-``): domains
``enos-R-<machine>``, their disks ``enos-R-<machine>.img``, the management network
``enos-R-mgmt`` and one network per private network ``enos-R-net<i>``. enos adds, before
``vagrant up``: each machine's seed volume ``enos-R-<machine>-seed.img`` and, shared by every
env and never removed, the box's kernel and initramfs ``enos-vagrantbox-<hash>.vmlinuz`` /
``.initrd`` (qemu must read them: the box directory under ``/root`` is not readable by it).
:func:`remove` deletes what a plan names; :func:`sweep` whatever carries the prefix.
Connections, pools, volumes, uploads and removals are :mod:`enos.libvirt`'s, shared with
the libvirt provider.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from enos.errors import ProviderError
from enos.libvirt.cleanup import remove_domain, remove_network, remove_volume
from enos.libvirt.storage import find_pool, refresh, upload_once


def pool(conn, name: str):
    """Return the active storage pool ``name``. Raises ProviderError with the commands
    creating it."""
    return find_pool(conn, [name], conn.getURI())


def box_boot_files(conn, p, box_dir: Path, recipe_hash: str) -> Tuple[str, str]:
    """Upload (once per hypervisor) the box's ``vmlinuz`` and ``initrd``; return their
    paths on the hypervisor."""
    stem = f"enos-vagrantbox-{recipe_hash}"
    return (upload_once(conn, p, f"{stem}.vmlinuz", Path(box_dir) / "vmlinuz").path(),
            upload_once(conn, p, f"{stem}.initrd", Path(box_dir) / "initrd").path())


def remove(conn, pool_name: str, plan: dict) -> List[str]:
    """Remove the domains, disks, seeds and networks ``plan`` names (not-found counts as
    removed); return what could not be removed."""
    left = [e for m in plan["machines"] if (e := remove_domain(conn, name=m["domain"]))]
    try:
        p = pool(conn, pool_name)
    except ProviderError:
        p = None
    if p is not None:
        refresh(p)
        for m in plan["machines"]:
            for vol in (f"{m['domain']}.img", m["seed"]):
                err = remove_volume(p, vol)
                if err:
                    left.append(err)
    for n in [plan["mgmt"]] + list(plan["networks"]):
        err = remove_network(conn, n["name"])
        if err:
            left.append(err)
    return left


def leftovers(conn, prefix: str) -> List[str]:
    """Return the domains, networks and volumes (in every active pool) named ``prefix*``."""
    if len(prefix) < 8:
        raise ProviderError(f"refusing to look up resources by the short prefix {prefix!r}")
    out = [f"domain {d.name()}" for d in conn.listAllDomains(0) if d.name().startswith(prefix)]
    out += [f"network {n.name()}" for n in conn.listAllNetworks(0) if n.name().startswith(prefix)]
    for p in conn.listAllStoragePools(0):
        if p.isActive():
            refresh(p)
            out += [f"volume {v.name()}" for v in p.listAllVolumes(0) if v.name().startswith(prefix)]
    return out


def sweep(conn, prefix: str) -> Tuple[List[str], List[str]]:
    """Remove every domain, volume and network named ``prefix*``; return (removed, left)."""
    if len(prefix) < 8:
        raise ProviderError(f"refusing to sweep by the short prefix {prefix!r}")
    removed, left = [], []
    for d in conn.listAllDomains(0):
        if d.name().startswith(prefix):
            err = remove_domain(conn, dom=d, name=d.name())
            (left if err else removed).append(err or f"domain {d.name()}")
    for p in conn.listAllStoragePools(0):
        if not p.isActive():
            continue
        refresh(p)
        for v in p.listAllVolumes(0):
            if v.name().startswith(prefix):
                err = remove_volume(p, v.name())
                (left if err else removed).append(err or f"volume {v.name()}")
    for n in conn.listAllNetworks(0):
        if n.name().startswith(prefix):
            err = remove_network(conn, n.name())
            (left if err else removed).append(err or f"network {n.name()}")
    return removed, left
