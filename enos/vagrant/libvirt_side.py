"""The libvirt side of the vagrant provider's libvirt backend (libvirt-python, imported lazily).

vagrant-libvirt creates, for an env of run id ``R`` (prefix ``enos-R-``): domains
``enos-R-<machine>``, their disks ``enos-R-<machine>.img``, the management network
``enos-R-mgmt`` and one network per private network ``enos-R-net<i>``. enos adds, before
``vagrant up``: each machine's seed volume ``enos-R-<machine>-seed.img`` and, shared by every
env and never removed, the box's kernel and initramfs ``enos-vagrantbox-<hash>.vmlinuz`` /
``.initrd`` (qemu must read them: the box directory under ``/root`` is not readable by it).
:func:`remove` deletes what a plan names; :func:`sweep` whatever carries the prefix.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from enos.errors import ProviderError, Unavailable
from enos.libvirt.cleanup import not_found, remove_network, remove_volume


def _lv():
    import libvirt
    libvirt.registerErrorHandler(lambda *_: None, None)
    return libvirt




def connect(uri: str):
    """Return a libvirt connection to ``uri``. Raises Unavailable naming the URI."""
    lv = _lv()
    try:
        return lv.open(uri)
    except lv.libvirtError as e:
        raise Unavailable(f"cannot reach libvirt at {uri}: {e} (is libvirtd running? "
                          f"'virsh -c {uri} list' should work)") from None


def pool(conn, name: str):
    """Return the active storage pool ``name``. Raises ProviderError with the commands
    creating it."""
    lv = _lv()
    try:
        p = conn.storagePoolLookupByName(name)
    except lv.libvirtError:
        uri = conn.getURI()
        raise ProviderError(
            f"no storage pool '{name}' at {uri}; create it with: virsh -c {uri} pool-define-as {name} dir "
            f"--target /var/lib/libvirt/images && virsh -c {uri} pool-build {name} && "
            f"virsh -c {uri} pool-start {name} && virsh -c {uri} pool-autostart {name}") from None
    if not p.isActive():
        p.create(0)
    return p


def _volume(p, name: str):
    lv = _lv()
    try:
        return p.storageVolLookupByName(name)
    except lv.libvirtError as e:
        if not_found(e):
            return None
        raise


def refresh(p, attempts: int = 20) -> None:
    """Refresh pool ``p``'s volume list; while another client's job runs on the pool
    (vagrant-libvirt uploading a box: "has asynchronous jobs running") retry for a while,
    then go on with the list libvirt has."""
    import time
    lv = _lv()
    for _ in range(attempts):
        try:
            p.refresh(0)
            return
        except lv.libvirtError as e:
            if "asynchronous jobs" not in str(e):
                raise
            time.sleep(0.5)


def upload(conn, p, name: str, path: Path) -> str:
    """Create the raw volume ``name`` in pool ``p`` from the local file ``path`` (streamed,
    so a remote libvirtd works too) unless it exists; return its path on the hypervisor."""
    from enos.libvirt.xml import volume_xml
    vol = _volume(p, name)
    if vol is not None:
        return vol.path()
    size = Path(path).stat().st_size
    vol = p.createXML(volume_xml(name, size, fmt="raw"), 0)
    try:
        st = conn.newStream(0)
        vol.upload(st, 0, size, 0)
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                st.send(chunk)
        st.finish()
    except BaseException:
        try:
            vol.delete(0)
        except Exception:   # noqa: BLE001 - the original error matters more
            pass
        raise
    return vol.path()


def box_boot_files(conn, p, box_dir: Path, recipe_hash: str) -> Tuple[str, str]:
    """Upload (once per hypervisor) the box's ``vmlinuz`` and ``initrd``; return their
    paths on the hypervisor."""
    stem = f"enos-vagrantbox-{recipe_hash}"
    return (upload(conn, p, f"{stem}.vmlinuz", Path(box_dir) / "vmlinuz"),
            upload(conn, p, f"{stem}.initrd", Path(box_dir) / "initrd"))


def _remove_domain(conn, name: str) -> Optional[str]:
    lv = _lv()
    try:
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        try:
            dom.undefineFlags(lv.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | lv.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                              | getattr(lv, "VIR_DOMAIN_UNDEFINE_NVRAM", 0))
        except lv.libvirtError:
            dom.undefine()
        return None
    except lv.libvirtError as e:
        return None if not_found(e) else f"domain {name}: {e}"


def remove(conn, pool_name: str, plan: dict) -> List[str]:
    """Remove the domains, disks, seeds and networks ``plan`` names (not-found counts as
    removed); return what could not be removed."""
    left = [e for m in plan["machines"] if (e := _remove_domain(conn, m["domain"]))]
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
            err = _remove_domain(conn, d.name())
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
