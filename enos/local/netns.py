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
import signal
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, TypeVar

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


def run_in_netns(name: str, fn: Callable[[], T]) -> T:
    """Call ``fn()`` from a thread that entered the existing namespace ``name``; return its
    result. Raises FileNotFoundError if there is no such namespace, OSError on setns."""

    def body():
        fd = os.open(netns_path(name), os.O_RDONLY)
        try:
            if _c().setns(fd, CLONE_NEWNET) != 0:
                raise _oserror("setns", name)
        finally:
            os.close(fd)
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


def _inode(path: str) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def netns_pids(names: Iterable[str]) -> Dict[str, List[int]]:
    """Return ``{name: [pids]}``: the processes whose network namespace is each of ``names``
    (one scan of /proc; names that do not exist map to [])."""
    names = list(names)
    by_inode = {}
    for n in names:
        ino = _inode(netns_path(n))
        if ino is not None:
            by_inode[ino] = n
    out: Dict[str, List[int]] = {n: [] for n in names}
    if not by_inode:
        return out
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        ino = _inode(f"/proc/{entry}/ns/net")
        if ino in by_inode:
            out[by_inode[ino]].append(int(entry))
    return out


def start_time(pid: int) -> Optional[int]:
    """Return the start time of ``pid`` (clock ticks after boot, /proc/PID/stat field 22),
    or None if it does not exist. A PID plus its start time names one process for good,
    even after the PID is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pids_with_arg(match: Callable[[str], bool]) -> List[int]:
    """Return the PIDs (this process excluded) one of whose command-line arguments,
    taken whole, satisfies ``match`` — an exact test on an argument, not a substring of
    the whole command line."""
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if any(match(a.decode(errors="replace")) for a in args if a):
            out.append(int(entry))
    return out


def pids_matching(fragment: str) -> List[int]:
    """Return the PIDs whose command line contains ``fragment`` (this process excluded)."""
    out = []
    me = os.getpid()
    frag = fragment.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if frag in cmd.replace(b"\0", b" "):
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (reaping our own children on the way)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def kill_pids(pids: Iterable[int], grace: float = 2.0) -> List[int]:
    """Send SIGTERM to ``pids``, wait up to ``grace`` seconds, SIGKILL the survivors and wait
    again; reap those that are our children. Return the PIDs still alive at the end
    (normally [])."""
    pids = [p for p in set(pids) if p != os.getpid()]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while True:
            pids = [p for p in pids if _alive(p)]
            if not pids or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if not pids:
            break
    return pids
