"""Named network namespaces, in-process (no ``ip netns`` subprocess per step).

A namespace ``NAME`` is, as with ``ip netns add``, a bind mount of a namespace file on
``/run/netns/NAME``. :func:`run_in_new_netns` creates one from a throwaway thread
(``unshare(CLONE_NEWNET)`` only moves the calling thread, so the process and its other
threads stay where they are) and runs a callback inside it, typically to configure links
with pyroute2. Everything here needs root. pyroute2 is imported lazily.

Errors are :class:`OSError` from the kernel, with the namespace named in the message.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from typing import Callable, Dict, Iterable, List, TypeVar

from enos import process

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

T = TypeVar("T")
_libc = None
_dir_lock = threading.Lock()
_dir_ready = False


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _libc


def _oserror(what: str, name: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what} for network namespace {name}: {os.strerror(code)}")


def netns_path(name: str) -> str:
    """Return the bind-mount path of namespace ``name`` (``/run/netns/NAME``)."""
    return os.path.join(NETNS_DIR, name)


def ensure_netns_dir() -> None:
    """Create ``/run/netns`` and make it a shared mount, as ``ip netns add`` does, so that
    removing a namespace also unmounts it in mount namespaces created later.
    Returns None; raises OSError if the mount calls fail."""
    global _dir_ready
    with _dir_lock:
        if _dir_ready:
            return
        os.makedirs(NETNS_DIR, exist_ok=True)
        libc = _c()
        d = NETNS_DIR.encode()
        if libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
            if libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0:
                raise _oserror("bind-mounting " + NETNS_DIR, "*")
            if libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
                raise _oserror("making " + NETNS_DIR + " shared", "*")
        _dir_ready = True


def list_netns(prefix: str = "") -> List[str]:
    """Return the names of the namespaces in ``/run/netns`` starting with ``prefix``."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    """Return True if ``/run/netns/NAME`` exists and is a mounted namespace."""
    p = netns_path(name)
    return os.path.exists(p) and os.path.ismount(p)


def run_in_new_netns(name: str, fn: Callable[[], T]) -> T:
    """Create the network namespace ``name`` and call ``fn()`` inside it; return its result.

    The namespace exists (mounted on ``/run/netns/NAME``) as soon as this returns or
    ``fn`` starts; ``fn`` runs in a dedicated thread whose network namespace is the new
    one (sockets it opens, e.g. a pyroute2 ``IPRoute()``, belong to it). Raises
    ``FileExistsError`` if the name is taken, OSError on a kernel refusal, or whatever
    ``fn`` raises (the namespace is then left for the caller to remove)."""
    ensure_netns_dir()

    def body():
        path = netns_path(name)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
        os.close(fd)
        libc = _c()
        if libc.unshare(CLONE_NEWNET) != 0:
            err = _oserror("unshare", name)
            os.unlink(path)
            raise err
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        if libc.mount(src, path.encode(), b"none", MS_BIND, None) != 0:
            err = _oserror("bind-mounting", name)
            os.unlink(path)
            raise err
        return fn()
    return _in_own_thread(name, body)


def _in_own_thread(name: str, body: Callable[[], T]) -> T:
    """Call ``body()`` in a new thread (namespace changes stay confined to it) and wait for
    it; return its result or raise what it raised."""
    box: dict = {}

    def target():
        try:
            box["result"] = body()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    th = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def remove_netns(name: str) -> bool:
    """Unmount and unlink ``/run/netns/NAME``. Return True if it existed, False if not.
    Raises OSError if it exists but cannot be removed."""
    path = netns_path(name)
    if not os.path.lexists(path):
        return False
    if _c().umount2(path.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        raise _oserror("unmounting", name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


def netns_pids(names: Iterable[str]) -> Dict[str, List[int]]:
    """Return ``{name: [pids]}``: the processes living in each namespace of ``names``
    (see :func:`enos.process.pids_in_netns`; a name that does not exist maps to [])."""
    return process.pids_in_netns({n: netns_path(n) for n in names})
