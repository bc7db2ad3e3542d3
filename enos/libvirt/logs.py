"""Where a libvirt daemon keeps the QEMU logs of its domains, asked of the daemon itself.

libvirt's QEMU driver writes ``<log dir>/<domain>.log`` (QEMU's command line and stderr)
for every domain and never removes it, not even on undefine. The directory is compiled
into the daemon (``<localstatedir>/log/libvirt/qemu`` for a system daemon), and a daemon
may run in its own mount namespace (enos' tests do). So for a daemon on this machine,
:func:`qemu_log_dir` finds the daemon's process from its socket (``SO_PEERCRED``), the
installation prefix from its executable (``/usr/sbin/libvirtd`` → localstatedir
``/var``, ``/usr/local/sbin/libvirtd`` → ``/usr/local/var``) and reads the directory through
``/proc/<pid>/root`` — the daemon's own view of the filesystem. A remote daemon's logs
cannot be reached through libvirt's API: they stay on that host.
"""
from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import List, Optional

from enos.libvirt.diagnose import is_local, socket_path


def daemon_pid(uri: str) -> Optional[int]:
    """Return the PID of the local daemon answering ``uri`` (the peer of its unix
    socket), or None (remote URI, socket absent or not answering)."""
    sock = socket_path(uri)
    if sock is None:
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(sock))
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
        return pid or None
    except OSError:
        return None
    finally:
        s.close()


def localstatedir(executable: str) -> str:
    """Return the ``localstatedir`` of a daemon installed as ``executable`` (GNU/FHS
    convention: prefix ``/usr`` → ``/var``, any other prefix ``P`` → ``P/var``)."""
    prefix = str(Path(executable).parent.parent)
    return "/var" if prefix in ("/usr", "/") else f"{prefix}/var"


def qemu_log_dir(uri: str) -> Optional[Path]:
    """Return the directory, readable from here, where the daemon of ``uri`` writes its
    domains' QEMU logs; None when it is not on this machine or cannot be found."""
    if not is_local(uri):
        return None
    pid = daemon_pid(uri)
    if pid is None:
        return None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    exe = exe.removesuffix(" (deleted)")
    return Path(f"/proc/{pid}/root") / localstatedir(exe).lstrip("/") / "log/libvirt/qemu"


def remove_domain_logs(uri: str, domains: List[str]) -> List[str]:
    """Delete the QEMU logs (``<domain>.log`` and rotated ``<domain>.log.N``) of
    ``domains`` on the local daemon of ``uri``; return what could not be deleted (empty
    when done, or when the daemon is remote or not found: nothing reachable to delete)."""
    d = qemu_log_dir(uri)
    if d is None or not d.is_dir():
        return []
    left = []
    for name in domains:
        for f in list(d.glob(f"{name}.log")) + list(d.glob(f"{name}.log.*")):
            try:
                f.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                left.append(f"QEMU log {f}: {e.strerror}")
    return left
