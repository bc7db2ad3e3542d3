"""A real libvirtd for tests, isolated from the machine and from other tests.

:func:`start_libvirtd` starts ``virtlogd`` and ``libvirtd`` (no systemd) inside

* their own **network namespace** ``enoslv-<id>`` (their bridge, dnsmasq and iptables
  chains stay there), linked to the root namespace by a veth pair on a /30;
* their own **mount namespace**, where ``/etc/libvirt``, ``/var/lib/libvirt``,
  ``/var/log/libvirt``, ``/var/cache/libvirt`` and ``/run/libvirt`` are private copies
  under ``/var/tmp/enos-libvirtd-<id>/`` (so several such daemons, or a system libvirtd,
  never share a socket, a network definition or a lease file).

The daemon is reached from the root namespace with
``qemu:///system?socket=<dir>/run/libvirt/libvirt-sock``. Guests' NAT networks live in the
namespace, so SSH to them goes through a jump host: an ``sshd`` started in the namespace on
the veth address, accepting a fixture key that an ``ssh-agent`` (also started here) holds;
enos subprocesses get ``SSH_AUTH_SOCK`` (see :attr:`Libvirtd.env`). A ``dir`` storage pool
``default`` lives in ``<dir>/images``.

Every process started is remembered by PID (pidfiles for the daemons) and :meth:`Libvirtd.stop`
kills them by PID, kills whatever else runs in the namespace (QEMU guests), deletes the
veth, the namespace and the directory — also after a failed start.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

APT_PACKAGES = ("libvirt-daemon-system", "libvirt-daemon-driver-qemu", "qemu-system-x86",
                "qemu-utils", "dnsmasq-base", "iptables", "mmdebstrap", "linux-image-amd64",
                "openssh-server", "busybox-static", "e2fsprogs")
NEEDED = {"libvirtd": "/usr/sbin/libvirtd", "virtlogd": "/usr/sbin/virtlogd",
          "qemu": "/usr/bin/qemu-system-x86_64", "qemu-img": "/usr/bin/qemu-img",
          "dnsmasq": "/usr/sbin/dnsmasq", "mmdebstrap": "/usr/bin/mmdebstrap",
          "sshd": "/usr/sbin/sshd", "busybox": "/bin/busybox"}
PRIVATE_DIRS = ("/etc/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt",
                "/run/libvirt")


class FixtureUnavailable(Exception):
    """The machine cannot run the fixture (not root, packages not installable)."""


def missing_binaries() -> List[str]:
    """Return the names of the needed binaries that are not installed."""
    return [k for k, p in NEEDED.items() if not os.path.exists(p)]


def ensure_packages(timeout: float = 900) -> None:
    """Install the apt packages the fixture needs if a binary is missing. Raises
    FixtureUnavailable if apt-get cannot install them (e.g. no mirror reachable)."""
    if not missing_binaries():
        return
    if os.geteuid() != 0:
        raise FixtureUnavailable("needs root to install " + " ".join(APT_PACKAGES))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "--no-install-recommends",
           *APT_PACKAGES]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=timeout)
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0 or missing_binaries():
        raise FixtureUnavailable(f"apt-get install failed ({p.returncode}): "
                                 f"{(p.stderr or p.stdout).strip()[-400:]}; missing: {missing_binaries()}")


def _run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(cmd), capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


@dataclass
class Libvirtd:
    """A running private libvirtd (see the module docstring)."""

    ident: str
    base: Path
    netns: str
    veth_root: str
    root_ip: str
    ns_ip: str
    pids: Dict[str, int] = field(default_factory=dict)
    procs: List[subprocess.Popen] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        """The daemon's read-write unix socket."""
        return self.base / "run/libvirt/libvirt-sock"

    @property
    def uri(self) -> str:
        """The URI reaching this daemon from the root namespace."""
        return f"qemu:///system?socket={self.socket}"

    @property
    def jump(self) -> str:
        """The SSH jump host (``root@<namespace address>``) in front of the guests' network."""
        return f"root@{self.ns_ip}"

    @property
    def pool_dir(self) -> Path:
        """Where the ``default`` storage pool keeps its volumes."""
        return self.base / "images"

    @property
    def env(self) -> Dict[str, str]:
        """Environment variables for enos subprocesses (the agent holding the jump key)."""
        return {"SSH_AUTH_SOCK": str(self.base / "agent.sock")}

    def ns_exec(self, *cmd: str) -> List[str]:
        """Return argv running ``cmd`` inside the daemon's network namespace."""
        return ["ip", "netns", "exec", self.netns, *cmd]

    def in_namespaces(self, *cmd: str) -> List[str]:
        """Return argv running ``cmd`` in the daemon's network and mount namespaces (as a
        user's shell on that machine would: its /run/libvirt, /var/lib/libvirt...)."""
        return ["nsenter", "-t", str(self.pids["libvirtd"]), "-m", "-n", *cmd]

    def start_log_daemon(self) -> None:
        """Start virtlogd (``virtlogd -d``) beside a daemon started without it."""
        pidfile = self.base / "virtlogd.pid"
        _run(*self.in_namespaces("/usr/sbin/virtlogd", "-d", "-p", str(pidfile)))
        _wait_for(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit(), 10, str(pidfile))
        self.pids["virtlogd"] = int(pidfile.read_text().strip())
        _wait_for((self.base / "run/libvirt/virtlogd-sock").exists, 10, "virtlogd socket")

    def stop_daemons(self) -> None:
        """Kill libvirtd and virtlogd (by PID; their sockets stay behind, stale)."""
        for name in ("libvirtd", "virtlogd"):
            if name in self.pids:
                _kill(self.pids.pop(name))

    def stop(self) -> List[str]:
        """Kill every process started (by PID) and every process left in the namespace,
        delete the veth, the namespace and the directory. Returns what went wrong (empty
        when all is clean); never raises."""
        problems: List[str] = []
        for name, pid in list(self.pids.items()):
            _kill(pid)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                problems.append(f"process {p.pid} did not exit")
        for _ in range(50):
            pids = _run("ip", "netns", "pids", self.netns, check=False).stdout.split()
            if not pids:
                break
            for pid in pids:
                _kill(int(pid))
            time.sleep(0.1)
        else:
            problems.append(f"processes left in {self.netns}")
        _run("ip", "link", "del", self.veth_root, check=False)
        p = _run("ip", "netns", "del", self.netns, check=False)
        if p.returncode != 0 and "No such file" not in p.stderr:
            problems.append(f"netns {self.netns}: {p.stderr.strip()}")
        if self.base.exists():
            for d in PRIVATE_DIRS:   # nothing should still be mounted from here; be sure
                _run("umount", "-l", str(self.base / d.lstrip("/")), check=False)
            shutil.rmtree(self.base, ignore_errors=True)
        return problems


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def start_libvirtd(log_daemon: bool = True, pool: bool = True) -> Libvirtd:
    """Start a private libvirtd (+ virtlogd, jump sshd, ssh-agent) and return it, with a
    ``default`` storage pool defined and started. ``log_daemon=False`` leaves virtlogd
    out and ``pool=False`` the pool (what a new user's machine lacks; ``enos check``
    tests). On any failure everything already started is torn down and the error
    re-raised. Raises FixtureUnavailable if the machine cannot run it (not root, binaries
    missing)."""
    if os.geteuid() != 0:
        raise FixtureUnavailable("needs root")
    missing = missing_binaries()
    if missing:
        raise FixtureUnavailable(f"missing binaries: {missing}")
    ident = secrets.token_hex(3)
    octet = 16 + int(ident[:2], 16) % 200
    third = int(ident[2:4], 16) % 64 * 4
    d = Libvirtd(ident=ident, base=Path(f"/var/tmp/enos-libvirtd-{ident}"), netns=f"enoslv-{ident}",
                 veth_root=f"lvr{ident}", root_ip=f"10.251.{octet}.{third + 1}",
                 ns_ip=f"10.251.{octet}.{third + 2}")
    try:
        _start(d, log_daemon=log_daemon, pool=pool)
    except BaseException:
        d.stop()
        raise
    return d


def _start(d: Libvirtd, log_daemon: bool = True, pool: bool = True) -> None:
    base = d.base
    base.mkdir(mode=0o755, parents=True)
    os.chmod(base, 0o755)
    for src in PRIVATE_DIRS:
        dst = base / src.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(src) and not src.startswith("/run"):
            shutil.copytree(src, dst, symlinks=True)
        else:
            dst.mkdir(parents=True, exist_ok=True)
    for f in (base / "etc/libvirt/qemu/networks/autostart").glob("*.xml"):
        f.unlink()   # no 'default' network: ours are the only ones
    (base / "images").mkdir(mode=0o755)
    _qemu_as_root_if_locked_out(base)
    # network namespace + veth to reach the jump sshd from the root namespace
    _run("ip", "netns", "add", d.netns)
    veth_ns = f"lvn{d.ident}"
    _run("ip", "link", "add", d.veth_root, "type", "veth", "peer", "name", veth_ns, "netns", d.netns)
    _run("ip", "addr", "add", f"{d.root_ip}/30", "dev", d.veth_root)
    _run("ip", "link", "set", d.veth_root, "up")
    _run(*d.ns_exec("ip", "addr", "add", f"{d.ns_ip}/30", "dev", veth_ns))
    _run(*d.ns_exec("ip", "link", "set", veth_ns, "up"))
    _run(*d.ns_exec("ip", "link", "set", "lo", "up"))
    # daemons in a private mount namespace (inside the netns), daemonised with pidfiles
    binds = "".join(f"mount --bind {base / s.lstrip('/')} {s} && " for s in PRIVATE_DIRS)
    logd = f"/usr/sbin/virtlogd -d -p {base}/virtlogd.pid && " if log_daemon else ""
    script = (f"mkdir -p /run/libvirt && {binds}{logd}"
              f"/usr/sbin/libvirtd -d -p {base}/libvirtd.pid")
    _run(*d.ns_exec("unshare", "--mount", "--propagation", "private", "sh", "-c", script))
    for name in ("virtlogd", "libvirtd") if log_daemon else ("libvirtd",):
        pidfile = base / f"{name}.pid"
        _wait_for(pidfile.exists, 10, f"{pidfile}")
        _wait_for(lambda: pidfile.read_text().strip().isdigit(), 5, f"{pidfile} content")
        d.pids[name] = int(pidfile.read_text().strip())
    _wait_for(d.socket.exists, 30, f"libvirtd socket {d.socket}")
    # ssh-agent holding the jump key, and the jump sshd inside the namespace
    key = base / "jump_key"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"enos-jump-{d.ident}", "-f", str(key))
    hostkey = base / "jump_host_key"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey))
    (base / "jump_authorized_keys").write_text((base / "jump_key.pub").read_text())
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(base / "agent.sock")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    d.procs.append(agent)
    _wait_for((base / "agent.sock").exists, 10, "ssh-agent socket")
    _run("ssh-add", "-q", str(key), env=dict(os.environ, SSH_AUTH_SOCK=str(base / "agent.sock")))
    cfg = base / "jump_sshd_config"
    cfg.write_text(f"ListenAddress {d.ns_ip}\nHostKey {hostkey}\nPidFile {base}/jump_sshd.pid\n"
                   f"AuthorizedKeysFile {base}/jump_authorized_keys\nUsePAM no\nStrictModes no\n"
                   f"PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                   f"MaxStartups 100:30:200\nAllowTcpForwarding yes\n")
    sshd = subprocess.Popen(d.ns_exec("/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)),
                            stdout=subprocess.DEVNULL, stderr=open(base / "jump_sshd.log", "w"),
                            stdin=subprocess.DEVNULL)
    d.procs.append(sshd)
    _wait_for(lambda: _run(*d.ns_exec("ss", "-ltn", f"src {d.ns_ip}:22"), check=False).stdout.count(":22") > 0,
              10, "jump sshd listening")
    if not pool:
        return
    # the 'default' storage pool
    virsh = ["virsh", "-q", "-c", d.uri]
    _run(*virsh, "pool-define-as", "default", "dir", "--target", str(base / "images"), timeout=120)
    _run(*virsh, "pool-start", "default", timeout=60)


def _qemu_as_root_if_locked_out(base: Path) -> None:
    """Where this machine keeps QEMU's user out of a directory QEMU needs (seen: a fresh
    machine whose ``/`` has mode 0700, where every guest dies on "accel-tcg-x86_64.so:
    Permission denied"), run this private daemon's QEMU as root, saying so on stderr.
    ``enos check`` reports the same condition to users (enos.libvirt.diagnose)."""
    from enos.libvirt.diagnose import closed_directory, qemu_paths, qemu_user
    conf = base / "etc/libvirt/qemu.conf"
    user = qemu_user(conf)
    if user is None:
        return
    for path in qemu_paths() + [base / "images"]:
        closed = closed_directory(user, path)
        if closed is not None:
            import sys
            print(f"libvirtd fixture: {user} cannot enter {closed} (on the way to {path}); this "
                  f"test daemon runs QEMU as root", file=sys.stderr)
            with open(conf, "a") as f:
                f.write('\nuser = "root"\ngroup = "root"\n')
            return


def leftovers(uri: str, run_id: str) -> List[str]:
    """Return the domains, networks and volumes of ``run_id`` on the daemon at ``uri``
    (found by name prefix and by ``<metadata>`` run id), probed independently of enos."""
    import libvirt
    from enos.libvirt.xml import run_id_of
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(uri)
    try:
        out = []
        for dom in conn.listAllDomains(0):
            if dom.name().startswith(f"enos-{run_id}-") or run_id_of(dom.XMLDesc(0)) == run_id:
                out.append(f"domain {dom.name()}")
        for net in conn.listAllNetworks(0):
            if net.name().startswith(f"enos-{run_id}-") or run_id_of(net.XMLDesc(0)) == run_id:
                out.append(f"network {net.name()}")
        for pool in conn.listAllStoragePools(0):
            if pool.isActive():
                pool.refresh(0)
                for vol in pool.listAllVolumes(0):
                    if vol.name().startswith(f"enos-{run_id}-"):
                        out.append(f"volume {vol.name()}")
        return out
    finally:
        conn.close()
