"""Storage of a libvirt daemon: pools, volumes, streamed uploads (a remote daemon works
too), the shared base image uploaded once per pool, for every provider that drives
libvirtd (``libvirt``, and ``vagrant`` with vagrant-libvirt)."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

from enos.errors import ProviderError
from enos.libvirt.cleanup import not_found
from enos.libvirt.connection import error_code, quiet_libvirt
from enos.libvirt.xml import volume_xml


def find_pool(conn, names: Sequence[str], uri: str):
    """Return the first storage pool of ``names`` that exists, started if it was not.
    Raises ProviderError (with the commands that create the first one) if none exists,
    or if it cannot start."""
    lv = quiet_libvirt()
    for n in names:
        try:
            pool = conn.storagePoolLookupByName(n)
        except lv.libvirtError as e:
            if not_found(e):
                continue
            raise ProviderError(f"storage pool {n}: {e}") from None
        if not pool.isActive():
            try:
                pool.create(0)
            except lv.libvirtError as e:
                raise ProviderError(f"storage pool {n} is inactive and cannot start: {e}") from None
        return pool
    want = names[0]
    raise ProviderError(
        f"no storage pool '{want}' at {uri}; create one with: virsh -c {uri} "
        f"pool-define-as {want} dir --target /var/lib/libvirt/images && virsh -c {uri} "
        f"pool-build {want} && virsh -c {uri} pool-start {want} && "
        f"virsh -c {uri} pool-autostart {want}")


def volume(pool, name: str):
    """Return volume ``name`` of ``pool``, or None if there is none."""
    lv = quiet_libvirt()
    try:
        return pool.storageVolLookupByName(name)
    except lv.libvirtError as e:
        if not_found(e):
            return None
        raise


def refresh(pool, attempts: int = 20) -> None:
    """Refresh ``pool``'s volume list; while another client's job runs on the pool
    (vagrant-libvirt uploading a box: "has asynchronous jobs running") retry for a while,
    then go on with the list libvirt has."""
    lv = quiet_libvirt()
    for _ in range(attempts):
        try:
            pool.refresh(0)
            return
        except lv.libvirtError as e:
            if "asynchronous jobs" not in str(e):
                raise
            time.sleep(0.5)


def upload(conn, pool, name: str, path: Path, fmt: str = "raw", mode: str = "0600") -> Any:
    """Create volume ``name`` (permissions ``mode``) in ``pool`` from the local file
    ``path``, streamed (so it works with remote hosts); return the volume. A failed or
    interrupted upload deletes the volume. Raises ProviderError."""
    lv = quiet_libvirt()
    size = Path(path).stat().st_size
    vol = pool.createXML(volume_xml(name, size, fmt=fmt, mode=mode), 0)
    try:
        st = conn.newStream(0)
        vol.upload(st, 0, size, 0)
        with open(path, "rb") as f:
            st.sendAll(lambda _s, n, fh: fh.read(n), f)
        st.finish()
    except lv.libvirtError as e:
        if error_code(e) == lv.VIR_ERR_NO_SUPPORT and conn.getType().upper() == "TEST":
            return vol           # the test driver cannot store data; nothing boots there anyway
        _delete(vol)
        raise ProviderError(f"upload of {path} to volume {name} failed: {e}") from None
    except BaseException:        # interrupted: no partial volume left behind
        _delete(vol)
        raise
    return vol


def upload_once(conn, pool, name: str, path: Path, fmt: str = "raw", mode: str = "0600") -> Any:
    """Return volume ``name`` of ``pool``, uploaded from ``path`` first if it does not exist
    (see :func:`upload`). Raises ProviderError."""
    return volume(pool, name) or upload(conn, pool, name, path, fmt=fmt, mode=mode)


def _delete(vol) -> None:
    try:
        vol.delete(0)
    except Exception:   # noqa: BLE001 - the original error matters more
        pass


@contextlib.contextmanager
def upload_lock(key: str):
    """Hold an exclusive flock named after ``key`` (in /run/enos, else the temp dir) for
    the duration of the block: envs on this machine upload one base image in turn. The
    kernel releases it if the holder dies."""
    name = "libvirt-base-" + hashlib.sha256(key.encode()).hexdigest()[:16] + ".lock"
    for d in ("/run/enos", os.path.join(tempfile.gettempdir(), f"enos-{os.getuid()}")):
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT, 0o600)
            break
        except OSError:
            continue
    else:  # pragma: no cover - no writable place at all: upload without turn-taking
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def qcow2_virtual_size(path: Path) -> int:
    """Return the virtual size (bytes) of the qcow2 image ``path``. Raises ProviderError."""
    with open(path, "rb") as f:
        head = f.read(32)
    if head[:4] != b"QFI\xfb":
        raise ProviderError(f"{path} is not a qcow2 image")
    return int.from_bytes(head[24:32], "big")


def base_volumes(conn, pool, files: dict, uri: str, progress) -> dict:
    """Upload the base image files into the pool once (shared by every env); return
    their paths on the hypervisor: ``{"disk", "kernel", "initrd", "capacity"}``.
    Envs uploading the same base at once take turns (a flock per URI, pool and image
    on this machine); the second finds the first's upload complete."""
    stem = Path(files["disk"]).stem
    marker = f"{stem}.complete"
    wanted = [("disk", files["disk"], ".qcow2")]
    for k in ("kernel", "initrd"):
        if files.get(k):
            wanted.append((k, files[k], "." + k.replace("kernel", "vmlinuz")))
    if volume(pool, marker) is None:
        with upload_lock(f"{uri} {pool.name()} {stem}"):
            _upload_base(conn, pool, stem, marker, wanted, progress)
    out = {k: volume(pool, stem + suf).path() for k, _p, suf in wanted}
    out["capacity"] = qcow2_virtual_size(Path(files["disk"]))
    return out


def _upload_base(conn, pool, stem: str, marker: str, wanted: list, progress) -> None:
    """Under the upload lock: upload the base files unless another env just did."""
    pool.refresh(0)
    if volume(pool, marker) is None:
        with progress.task(f"uploading base image {stem} to pool {pool.name()}", total=len(wanted)) as t:
            for _k, path, suf in wanted:
                old = volume(pool, stem + suf)
                if old is not None:
                    old.delete(0)            # a partial upload from an interrupted run
                upload(conn, pool, stem + suf, Path(path), mode="0644")   # shared, read-only
                t.advance()
            pool.createXML(volume_xml(marker, 0, fmt="raw", mode="0644"), 0)
        pool.refresh(0)


def console_volumes(pool, console: Optional[str]) -> List[str]:
    """The console log volume and its rotations (virtlogd's ``.0``, ``.1``...)."""
    if not console:
        return []
    try:
        pool.refresh(0)
        names = [v.name() for v in pool.listAllVolumes(0)]
    except quiet_libvirt().libvirtError:
        names = []
    return [console] + [n for n in names if n.startswith(console + ".")]
