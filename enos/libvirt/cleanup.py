"""Removing libvirt objects idempotently, for every provider that drives a libvirtd
(``libvirt``, and ``vagrant`` with vagrant-libvirt): "not found" counts as removed, any
other failure is returned as a description instead of raised, so a destroy goes on past it."""
from __future__ import annotations

from typing import Optional

from enos.failpoint import checkpoint
from enos.libvirt.connection import quiet_libvirt as _lv


def not_found(err) -> bool:
    """True if the libvirtError ``err`` says the domain, network, volume or pool does not
    exist (i.e. it is already gone)."""
    lv = _lv()
    try:
        code = int(err.get_error_code())
    except (AttributeError, TypeError, ValueError):   # not a libvirtError
        return False
    return code in (lv.VIR_ERR_NO_DOMAIN, lv.VIR_ERR_NO_NETWORK, lv.VIR_ERR_NO_STORAGE_VOL,
                    lv.VIR_ERR_NO_STORAGE_POOL)


def remove_volume(pool, name: str) -> Optional[str]:
    """Delete volume ``name`` of ``pool``; return None when it is gone (or never existed),
    else a description of what failed. Raises nothing of libvirt's."""
    lv = _lv()
    try:
        pool.storageVolLookupByName(name).delete(0)
        return None
    except lv.libvirtError as e:
        return None if not_found(e) else f"volume {name}: {e}"


def remove_network(conn, name: str) -> Optional[str]:
    """Stop and undefine network ``name``; return None when it is gone (or never existed),
    else a description of what failed. Raises nothing of libvirt's."""
    lv = _lv()
    try:
        n = conn.networkLookupByName(name)
        if n.isActive():
            n.destroy()
        n.undefine()
        return None
    except lv.libvirtError as e:
        return None if not_found(e) else f"network {name}: {e}"


def remove_domain(conn, uuid: Optional[str] = None, name: Optional[str] = None, dom=None) -> Optional[str]:
    """Stop and undefine a domain (``dom``, else found by ``uuid``, else by ``name``), with
    its managed save, snapshot metadata and NVRAM; return None when it is gone (or never
    existed), else a description of what failed. Raises nothing of libvirt's."""
    lv = _lv()
    try:
        if dom is None:
            dom = _lookup_domain(conn, uuid, name)
        if dom.isActive():
            dom.destroy()
        checkpoint("libvirt.destroy.domain_stopped")
        flags = (lv.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | lv.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                 | getattr(lv, "VIR_DOMAIN_UNDEFINE_NVRAM", 0))
        try:
            dom.undefineFlags(flags)
        except lv.libvirtError:
            dom.undefine()
        return None
    except lv.libvirtError as e:
        return None if not_found(e) else f"domain {name or uuid}: {e}"


def _lookup_domain(conn, uuid: Optional[str], name: Optional[str]):
    """The domain of ``uuid``, else (not found, or no uuid) of ``name``. Raises libvirtError."""
    if uuid is not None:
        try:
            return conn.lookupByUUIDString(uuid)
        except _lv().libvirtError as e:
            if not not_found(e) or not name:
                raise
    return conn.lookupByName(name)
