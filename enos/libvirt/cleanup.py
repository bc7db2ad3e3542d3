"""Removing libvirt objects idempotently, for every provider that drives a libvirtd
(``libvirt``, and ``vagrant`` with vagrant-libvirt): "not found" counts as removed, any
other failure is returned as a description instead of raised, so a destroy goes on past it."""
from __future__ import annotations

from typing import Optional


def _lv():
    import libvirt
    return libvirt


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
