"""Gateway fan-in: ONE SSH connection master per jump host, every host's connection a
channel through it.

A shared jump host (Grid'5000's access gateway, a libvirt ``qemu+ssh`` host, a bastion)
enforces sshd's ``MaxStartups`` (OpenSSH's default ``10:30:100``: past 10 unauthenticated
connections, new ones are dropped at random); Grid'5000's takes about 10-15 parallel
connections. With one ``ProxyJump`` per host, the first fan-out of an env (``enos up``
probing every host at once) opens one TCP connection to the jump host per host until the
first of them becomes a connection master: 51-53 at once for 200 hosts here, 20-40 of them
dropped (bench/gateway_fanin.py, before this module).

So the env's ssh_config names each jump host once, as ``enos-jump-<hash>`` (its own
``Host`` block: HostName, User, Port, and the provider's key for it, e.g. Grid'5000's
``gateway_key``), and every host behind it gets ``ProxyCommand ssh -F <ssh_config> -W %h:%p
enos-jump-<hash>``: the ``-W`` runs through the jump host's master (``ControlMaster auto``,
``ControlPersist``, from the config's ``Host *``). Before any fan-out (waiting for SSH,
``enos run``, Ansible), :func:`ensure_masters` opens the masters that are not running, at
most :data:`PARALLEL` at once over all jump hosts, one attempt per jump host at a time
(a file lock, across enos processes): the TCP connections to jump hosts stay bounded.

With ProxyCommand rather than ProxyJump, a host's ControlPath hash ``%C`` does not depend
on the jump host (``%j`` is empty), so a host's master socket can be found by enos itself
(:mod:`enos.ssh.mux`), behind a jump host or not.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from enos.errors import StateDamaged
from enos.ssh.files import read_ssh_config

#: at most this many connections opened to jump hosts at once
PARALLEL = 8
JUMP_RE = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:\s]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class JumpHost:
    """One jump host as the env's ssh_config names it."""

    alias: str
    host: str
    user: Optional[str]
    port: int
    keyfile: Optional[str] = None


def parse(spec: str) -> tuple:
    """Return (user or None, host, port) of ``[user@]host[:port]``. Raises ValueError."""
    m = JUMP_RE.match(spec.strip())
    if not m:
        raise ValueError(f"not a jump host [user@]host[:port]: {spec!r}")
    return m.group("user"), m.group("host").strip("[]"), int(m.group("port") or 22)


def alias_of(spec: str, keyfile: Optional[str] = None) -> str:
    """The stable ssh_config alias of a jump host (same spec and key, same alias, whatever
    subset of hosts is rendered)."""
    digest = hashlib.sha1(f"{spec}\0{keyfile or ''}".encode()).hexdigest()[:10]
    return f"enos-jump-{digest}"


def jump_hosts(hosts: Iterable) -> Dict[str, JumpHost]:
    """Return {host alias: JumpHost} for the hosts reached through a jump host (``Host.jump``;
    ``Host.jump_keyfile`` when the provider gives a key for it). Raises ValueError for a
    malformed jump spec."""
    out: Dict[str, JumpHost] = {}
    for h in hosts:
        if not getattr(h, "jump", None):
            continue
        key = getattr(h, "jump_keyfile", None)
        user, host, port = parse(h.jump)
        out[h.alias] = JumpHost(alias_of(h.jump, key), host, user, port, key)
    return out


def render_blocks(jumps: Iterable[JumpHost], quote) -> List[str]:
    """Return the ssh_config lines of one ``Host`` block per distinct jump host. ``quote``
    makes a value one ssh_config argument (enos.ssh.client.ssh_config_value)."""
    lines: List[str] = []
    for j in sorted({j.alias: j for j in jumps}.values(), key=lambda j: j.alias):
        lines.append(f"Host {j.alias}")
        lines.append(f"  HostName {j.host}")
        if j.user:
            lines.append(f"  User {j.user}")
        lines.append(f"  Port {j.port}")
        if j.keyfile:
            lines.append(f"  IdentityFile {quote(j.keyfile)}")
            lines.append("  IdentitiesOnly yes")
        lines.append("")
    return lines


def proxy_command(ssh_config: Path, jump: JumpHost) -> str:
    """The ``ProxyCommand`` value of a host behind ``jump`` (run by the user's shell; a
    ``%`` of the path doubled, ssh expands tokens in it)."""
    return f"ssh -F {shlex.quote(str(ssh_config)).replace('%', '%%')} -W %h:%p {jump.alias}"


def _blocks(ssh_config: Path) -> List[tuple]:
    """Return the ``Host`` blocks of ``ssh_config`` as (patterns, {lower-case key: value})
    ([] when it cannot be read)."""
    try:
        lines = read_ssh_config(ssh_config).splitlines()
    except StateDamaged:
        return []
    blocks: List[tuple] = []
    for line in lines:
        parts = line.split(None, 1)
        if len(parts) != 2:
            continue
        key, value = parts[0].lower(), parts[1].strip()
        if key == "host":
            blocks.append((value.split(), {}))
        elif blocks:
            blocks[-1][1].setdefault(key, value)
    return blocks


def jumps_in_config(ssh_config: Path) -> Dict[str, str]:
    """Return {host alias: jump alias} as written in ``ssh_config`` (its ProxyCommand
    lines naming an ``enos-jump-*`` alias); {} when unreadable."""
    out: Dict[str, str] = {}
    for patterns, opts in _blocks(ssh_config):
        m = re.search(r"\s(enos-jump-[0-9a-f]+)\s*$", opts.get("proxycommand", ""))
        if m:
            out.update({a: m.group(1) for a in patterns})
    return out


# --- opening the masters ---------------------------------------------------------------------

def _master_socket(ssh_config: Path, alias: str) -> Optional[str]:
    """The ControlPath of ``alias``'s master as ssh computes it (``ssh -G``), or None."""
    p = subprocess.run(["ssh", "-F", str(ssh_config), "-G", alias], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=20)
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        if k == "controlpath" and v and v != "none":
            return v
    return None


def master_alive(path: Optional[str]) -> bool:
    """True when a connection master listens on the control socket ``path`` (a connect
    succeeds: a stale socket file refuses it)."""
    if not path or not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _open_master(ssh_config: Path, alias: str, timeout: float, stop: threading.Event) -> Optional[str]:
    """Start ``alias``'s master in the background (``ssh -fN``, ControlMaster yes); return
    None once it runs, else the last error line. Its stderr goes to a file: the daemonised
    master keeps it open for as long as it lives."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(["ssh", "-F", str(ssh_config), "-o", "ControlMaster=yes", "-f", "-N", alias],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while p.poll() is None:
            if stop.is_set() or time.monotonic() > deadline:
                p.kill()
                p.wait()
                return "interrupted" if stop.is_set() else f"no answer within {timeout:.0f}s"
            time.sleep(0.02)
        err.seek(0)
        text = err.read().decode(errors="replace").strip()
    if p.returncode == 0:
        return None
    return (text.splitlines() or [f"ssh exited with {p.returncode}"])[-1]


def _lock_path(ssh_config: Path, alias: str) -> Path:
    return Path(ssh_config).parent / f".{alias}.lock"


def ensure_master(ssh_config: Path, alias: str, timeout: float = 30.0,
                  stop: Optional[threading.Event] = None) -> Optional[str]:
    """Make sure ``alias``'s master runs: return None when it does (already, or opened
    now), else why not (the last ssh error line). One attempt per jump host at a time,
    across processes (a lock file beside the ssh_config)."""
    stop = stop or threading.Event()
    sock = _master_socket(ssh_config, alias)
    if master_alive(sock):
        return None
    fd = os.open(str(_lock_path(ssh_config, alias)), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if master_alive(sock):
            return None                  # another process opened it while we waited
        return _open_master(ssh_config, alias, timeout, stop)
    finally:
        os.close(fd)


_SLOTS = threading.BoundedSemaphore(PARALLEL)


def ensure_masters(ssh_config: Path, aliases: Sequence[str], timeout: float = 30.0,
                   stop: Optional[threading.Event] = None) -> Dict[str, Optional[str]]:
    """Open the masters of the jump hosts ``aliases`` that are not running, at most
    :data:`PARALLEL` at once (over every call in this process); return {alias: None or
    the error}. Never raises for a jump host's failure."""
    todo = sorted(set(aliases))
    if not todo:
        return {}

    def one(alias: str) -> Optional[str]:
        with _SLOTS:
            return ensure_master(ssh_config, alias, timeout, stop)
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(todo))) as pool:
        return dict(zip(todo, pool.map(one, todo)))


class Masters:
    """The jump hosts of one ssh_config, read once: :meth:`ready` makes sure the master of
    a host's jump host runs before that host is connected to (cheap when it does: one
    ``connect`` on its control socket)."""

    def __init__(self, ssh_config: Path, timeout: float = 30.0):
        self.ssh_config = Path(ssh_config)
        self.timeout = timeout
        self.behind = jumps_in_config(self.ssh_config)
        self.names = _jump_names(self.ssh_config)
        self._sockets: Dict[str, Optional[str]] = {}
        self._lock = threading.Lock()

    def _socket(self, jump: str) -> Optional[str]:
        with self._lock:
            if jump not in self._sockets:
                self._sockets[jump] = _master_socket(self.ssh_config, jump)
            return self._sockets[jump]

    def ready(self, host: str, stop: Optional[threading.Event] = None) -> Optional[str]:
        """Return None when ``host`` has no jump host or its jump host's master runs (opened
        now if needed, within the bounds); else ``"jump host <user@host:port>: <error>"``."""
        j = self.behind.get(host)
        if j is None or master_alive(self._socket(j)):
            return None
        with _SLOTS:
            err = ensure_master(self.ssh_config, j, self.timeout, stop)
        return f"jump host {self.names.get(j, j)}: {err}" if err else None

    def ready_all(self, hosts: Iterable[str], stop: Optional[threading.Event] = None) -> Dict[str, str]:
        """Open the masters of every jump host in front of ``hosts`` (at most
        :data:`PARALLEL` at once); return {host: error} for hosts whose jump host failed."""
        wanted = {h: self.behind[h] for h in hosts if h in self.behind}
        down = [j for j in sorted(set(wanted.values())) if not master_alive(self._socket(j))]
        errors = ensure_masters(self.ssh_config, down, self.timeout, stop)
        return {h: f"jump host {self.names.get(j, j)}: {errors[j]}" for h, j in wanted.items() if errors.get(j)}


def _jump_names(ssh_config: Path) -> Dict[str, str]:
    """Return {jump alias: "user@host:port"} from the ``enos-jump-*`` blocks of ``ssh_config``."""
    return {p[0]: (f"{d['user']}@" if d.get("user") else "") + d.get("hostname", p[0]) + f":{d.get('port', '22')}"
            for p, d in _blocks(ssh_config) if len(p) == 1 and p[0].startswith("enos-jump-")}


def ensure_for(ssh_config: Path, host_aliases: Iterable[str], timeout: float = 30.0,
               stop: Optional[threading.Event] = None) -> Dict[str, str]:
    """Open the masters of the jump hosts behind which ``host_aliases`` sit (read from the
    ssh_config); return {host alias: error} for the hosts whose jump host could not be
    reached ({} when all are fine or none has a jump host)."""
    return Masters(ssh_config, timeout).ready_all(host_aliases, stop)
