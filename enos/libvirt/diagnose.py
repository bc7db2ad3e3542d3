"""What a libvirt host needs for enos' VMs, and the exact command that fixes each gap.

``enos check`` of the libvirt provider (and of any other provider driving libvirtd, e.g.
Vagrant on vagrant-libvirt) calls these; each returns :class:`~enos.provider.provider.Check`
lines and books nothing (no pool is started, no network defined):

* :func:`check_daemon` — libvirtd answers at the URI (with its version, "libvirt 9.0.0,
  QEMU 7.2.0"); when it does not: is it installed, is its socket there, and the command
  that starts it — ``systemctl start ...`` where systemd runs, else ``virtlogd -d &&
  libvirtd -d``;
* :func:`check_log_daemon` — virtlogd, which libvirtd's QEMU driver hands every guest's
  output to (without it ``virsh start`` fails on ``virtlogd-sock``); its socket sits beside
  libvirtd's;
* :func:`check_pool` — the storage pool (``default``) exists and is active;
* :func:`check_network` — libvirt's network driver answers and, on this machine, dnsmasq
  and iptables are installed (NAT networks with DHCP need them);
* :func:`check_qemu_access` — the user QEMU runs as (``user`` of ``qemu.conf``, else
  ``libvirt-qemu``) can enter every directory above QEMU's binary, its modules and the
  pool (a ``/`` of mode 0700 makes every guest fail with "Permission denied" on
  ``accel-tcg-x86_64.so``).

:func:`diagnose` runs them in order and returns the open connection (or None) with the
checks. The KVM/TCG verdict needs a kernel to boot and lives in :mod:`enos.libvirt.kvm`.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import stat
import shutil
import socket
import time
from pathlib import Path
from typing import List, Optional, Tuple
from urllib.parse import parse_qs, urlparse

from enos.model import Check

#: where libvirt's packages put the daemons (Debian/Ubuntu/Fedora alike)
DAEMON_PACKAGES = "libvirt-daemon-system libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils"
NETWORK_PACKAGES = "dnsmasq-base iptables"


def is_local(uri: str) -> bool:
    """Return True if ``uri`` names a daemon on this machine (no host part)."""
    u = urlparse(uri)
    return not u.hostname and "+ssh" not in (u.scheme or "") and "+tcp" not in (u.scheme or "")


def socket_path(uri: str) -> Optional[Path]:
    """Return the unix socket of a local libvirt daemon named by ``uri``: the
    ``?socket=`` parameter, else libvirtd's default for ``/system`` (or virtqemud's, when
    only the modular daemon's socket exists). None for remote or session URIs."""
    if not is_local(uri):
        return None
    u = urlparse(uri)
    given = parse_qs(u.query).get("socket")
    if given:
        return Path(given[0])
    if (u.path or "").rstrip("/") != "/system":
        return None
    mono, modular = Path("/run/libvirt/libvirt-sock"), Path("/run/libvirt/virtqemud-sock")
    return modular if modular.exists() and not mono.exists() else mono


def systemd_runs() -> bool:
    """Return True if systemd is this machine's init (``/run/systemd/system`` exists)."""
    return Path("/run/systemd/system").is_dir()


def start_command(with_log_daemon: bool = True) -> str:
    """Return the shell command that starts libvirtd (and virtlogd) on this machine:
    through systemd where it runs, else the daemons' own ``-d`` (daemonise) flag."""
    if systemd_runs():
        return "systemctl start " + ("virtlogd.socket libvirtd.socket libvirtd" if with_log_daemon
                                     else "libvirtd.socket libvirtd")
    return ("virtlogd -d && libvirtd -d" if with_log_daemon else "libvirtd -d")


def format_version(number: int) -> str:
    """Return libvirt's packed version number (major * 1e6 + minor * 1e3 + micro) as
    ``"9.0.0"``."""
    n = int(number)
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"


def _socket_answers(path: Path) -> Tuple[bool, str]:
    if not path.exists():
        return False, f"no socket {path}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(str(path))
        return True, f"listening on {path}"
    except OSError as e:
        return False, f"{path} does not answer ({e.strerror or e}): a stale socket of a stopped daemon"
    finally:
        s.close()


def _virsh(uri: str) -> str:
    return "virsh" if uri == "qemu:///system" else f"virsh -c {shlex.quote(uri)}"


def check_daemon(uri: str) -> Tuple[object, Check]:
    """Open a connection to ``uri``; return ``(connection or None, check)``. The check's
    detail gives the versions ("libvirt 9.0.0, QEMU 7.2.0") or what is wrong, its fix the
    command that starts or installs the daemon."""
    import libvirt
    libvirt.registerErrorHandler(lambda *_: None, None)
    what = f"libvirt daemon at {uri}"
    t0 = time.monotonic()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        err = (e.get_error_message() or str(e)).strip()
        if not is_local(uri):
            return None, Check(what, False, err, f"check that '{_virsh(uri)} list' works from this machine "
                                                 f"(SSH access, libvirtd running on the host)")
        sock = socket_path(uri)
        installed = any(Path(p).exists() for p in ("/usr/sbin/libvirtd", "/usr/sbin/virtqemud"))
        if not installed:
            return None, Check(what, False, "libvirtd is not installed",
                               f"apt-get install --no-install-recommends {DAEMON_PACKAGES} "
                               f"{NETWORK_PACKAGES} && {start_command()}")
        state = _socket_answers(sock)[1] if sock else err
        fix = start_command()
        if sock and sock != Path("/run/libvirt/libvirt-sock"):
            fix += f" (with its socket at {sock}, as the URI asks)"
        return None, Check(what, False, f"not running ({state})", fix)
    took = time.monotonic() - t0
    try:
        hv = f", {conn.getType()} {format_version(conn.getVersion())}"
    except libvirt.libvirtError:
        hv = ""
    return conn, Check(what, True, f"libvirt {format_version(conn.getLibVersion())}{hv} "
                                   f"(connected in {took:.1f}s)")


def check_log_daemon(uri: str) -> Optional[Check]:
    """Return the check of virtlogd for a local daemon (its socket beside libvirtd's
    answers), or None where it cannot be seen from here (remote and session URIs)."""
    sock = socket_path(uri)
    if sock is None:
        return None
    log_sock = sock.parent / "virtlogd-sock"
    ok, detail = _socket_answers(log_sock)
    fix = "systemctl start virtlogd.socket virtlogd" if systemd_runs() else "virtlogd -d"
    if not ok:
        detail += " — libvirtd cannot start a VM without it (error on 'virtlogd-sock')"
    return Check("libvirt log daemon (virtlogd)", ok, detail, fix)


def check_pool(conn, uri: str, name: Optional[str] = None) -> Check:
    """Return the check of the storage pool ``name`` (``default`` if None) on ``conn``:
    defined and active. Starts nothing; the fix defines/starts it with virsh."""
    import libvirt
    if name is None:    # the provider's default; libvirt's test driver calls it default-pool
        name = "default"
        try:
            conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            if "default-pool" in (conn.listStoragePools() + conn.listDefinedStoragePools()):
                name = "default-pool"
    virsh = _virsh(uri)
    what = f"storage pool '{name}'"
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            return Check(what, False, str(e).strip(), "")
        return Check(what, False, f"no pool '{name}' (enos keeps the base image, overlays and seed "
                                  f"disks there)",
                     f"{virsh} pool-define-as {name} dir --target /var/lib/libvirt/images && "
                     f"{virsh} pool-build {name} && {virsh} pool-start {name} && "
                     f"{virsh} pool-autostart {name}")
    xml = pool.XMLDesc(0)
    path = xml.split("<path>")[-1].split("<")[0] if "<path>" in xml else "?"
    if not pool.isActive():
        return Check(what, False, f"defined ({path}) but not started", f"{virsh} pool-start {name} && "
                                                                      f"{virsh} pool-autostart {name}")
    return Check(what, True, path)


def check_network(conn, uri: str) -> Check:
    """Return the check of what enos' NAT networks need: libvirt's network driver answers
    and, for a local daemon, dnsmasq (DHCP) and iptables (NAT) are installed."""
    import libvirt
    what = "libvirt networks (NAT + DHCP)"
    try:
        n = len(conn.listAllNetworks(0))
    except libvirt.libvirtError as e:
        return Check(what, False, f"the network driver does not answer: {str(e).strip()}",
                     f"apt-get install {DAEMON_PACKAGES} {NETWORK_PACKAGES}, then restart libvirtd")
    if is_local(uri):
        missing = [b for b in ("dnsmasq", "iptables")
                   if not (shutil.which(b) or os.path.exists(f"/usr/sbin/{b}") or os.path.exists(f"/sbin/{b}"))]
        if missing:
            return Check(what, False, f"{' and '.join(missing)} not installed (libvirt runs dnsmasq for "
                                      f"DHCP and iptables for NAT)",
                         f"apt-get install {NETWORK_PACKAGES} && {start_command()} (restart libvirtd)")
    return Check(what, True, f"network driver answers ({n} network(s) defined); enos creates its own "
                             f"NAT network per environment")


def qemu_user(conf: Path = Path("/etc/libvirt/qemu.conf")) -> Optional[str]:
    """Return the user a system libvirtd runs QEMU as: ``user`` of ``conf`` when set, else
    ``libvirt-qemu`` if that account exists (Debian/Ubuntu's build default), else None."""
    try:
        text = conf.read_text(errors="replace")
    except OSError:
        text = ""
    m = re.search(r'^\s*user\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if m:
        return m.group(1)
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        return None
    return "libvirt-qemu"


def closed_directory(user: str, path: Path) -> Optional[Path]:
    """Return the first directory above (or at) ``path`` that ``user`` cannot enter (no
    search permission for its owner, group or others, as the kernel would decide), or None
    if every one can be entered. ``user`` is a name or ``+UID``; root enters everything."""
    if user.startswith("+"):
        uid, gids = int(user[1:].split(":")[0]), set()
    else:
        entry = pwd.getpwnam(user)
        uid = entry.pw_uid
        gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    if uid == 0:
        return None
    path = Path(path)
    dirs = list(reversed(path.parents)) + ([path] if path.is_dir() else [])
    for d in dirs:
        try:
            st = d.stat()
        except OSError:
            return None
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid in gids else stat.S_IXOTH
        if not st.st_mode & bit:
            return d
    return None


def qemu_paths() -> List[Path]:
    """Return what QEMU must reach on this machine: its binary and its module directories."""
    found = [Path(p) for p in (shutil.which("qemu-system-x86_64"), "/usr/lib/qemu") if p]
    found += sorted(Path("/usr/lib").glob("*/qemu"))
    return [p for p in found if p.exists()]


def check_qemu_access(uri: str, pool_path: Optional[str] = None,
                      conf: Path = Path("/etc/libvirt/qemu.conf")) -> Optional[Check]:
    """Return the check that the QEMU user of a local system daemon can enter every
    directory above QEMU's binary, its modules and ``pool_path``; None where it cannot be
    seen from here (remote or session URIs, a daemon on another socket whose qemu.conf is
    not ``conf``, no QEMU user known)."""
    if socket_path(uri) is None or parse_qs(urlparse(uri).query).get("socket"):
        return None
    user = qemu_user(conf)
    if user is None:
        return None
    what = f"QEMU's user ({user}) reaches its files"
    paths = qemu_paths() + ([Path(pool_path)] if pool_path and pool_path != "?" else [])
    for p in paths:
        closed = closed_directory(user, p)
        if closed is not None:
            mode = stat.S_IMODE(closed.stat().st_mode)
            return Check(what, False, f"{user} cannot enter {closed} (mode {mode:04o}), on the way to {p}: "
                                      f"every guest fails to start ('Permission denied')",
                         f"chmod o+x {shlex.quote(str(closed))} (or set user = \"root\" in {conf} and "
                         f"restart libvirtd)")
    return Check(what, True, f"{len(paths)} path(s) reachable")


def diagnose(uri: str, pool: Optional[str] = None) -> Tuple[object, List[Check]]:
    """Run the daemon, log daemon, pool and network checks for ``uri``; return
    ``(connection or None, checks)``. The caller closes the connection."""
    conn, daemon = check_daemon(uri)
    out = [daemon]
    logd = check_log_daemon(uri)
    if logd is not None:
        out.append(logd)
    if conn is None:
        return None, out
    pool_check = check_pool(conn, uri, pool)
    out.append(pool_check)
    out.append(check_network(conn, uri))
    access = check_qemu_access(uri, pool_check.detail if pool_check.ok else None)
    if access is not None:
        out.append(access)
    return conn, out
