"""SSH plumbing of an environment: ``ssh_config``, ``known_hosts``, waiting for hosts,
and stopping the connection masters.

Every tool (Ansible, ``enos run``, ``enos ssh``, plain ``ssh -F <env>/ssh_config alias``)
goes through the env's ``ssh_config``, so connections are multiplexed (ControlMaster)
and host keys are checked against the env's own ``known_hosts``: keys the provider knows
are pinned (``StrictHostKeyChecking yes``); for the others the first key seen is kept
(``accept-new``, scoped to this env). No global ``StrictHostKeyChecking=no``.
"""
from __future__ import annotations

import logging
import os
import stat
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from enos import signals
from enos.errors import SshUnreachable, UnreadableFile, UnsafeValue
from enos.model import Host
from enos.names import unsafe_host_fields
from enos.progress import NULL
from enos.ssh import jump
from enos.ssh.jump import Masters
from enos.ssh.files import MAX_SSH_FILE_BYTES
from enos.state import atomic_write, read_bounded

log = logging.getLogger("enos.ssh")

CONTROL_PERSIST = "15m"


def _runtime_base() -> Optional[Path]:
    """Return ``$XDG_RUNTIME_DIR`` when it is a real directory of ours, mode 0700 (the
    per-user runtime dir systemd-logind makes); None otherwise."""
    d = os.environ.get("XDG_RUNTIME_DIR")
    if not d or not os.path.isabs(d):
        return None
    try:
        st = os.lstat(d)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return Path(d)


def control_base() -> Path:
    """Return the directory holding the control-socket dirs of every env of this user:
    ``$XDG_RUNTIME_DIR/enos-ssh`` when usable, else ``/tmp/enos-ssh-<uid>`` (not created)."""
    rt = _runtime_base()
    if rt is not None:
        return rt / "enos-ssh"
    return Path(tempfile.gettempdir()) / f"enos-ssh-{os.getuid()}"


def secure_dir(d: Path) -> Path:
    """Create directory ``d`` (mode 0700) if missing, or check the one there: a real
    directory (not a symlink), owned by this user, writable by no one else (then made
    0700) — in a shared /tmp another user may have made it first, to read or hijack our
    SSH connection sockets. Returns ``d``. Raises UnsafeValue saying what is wrong and
    what to do."""
    d = Path(d)
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise UnsafeValue(f"cannot create the SSH socket directory {d}: {e.strerror or e}") from None
    st = os.lstat(d)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeValue(f"the SSH socket directory {d} is not a directory (a symlink or a file "
                          f"someone else put there?); remove it, or set XDG_RUNTIME_DIR to a private "
                          f"directory")
    if st.st_uid != os.getuid():
        raise UnsafeValue(f"the SSH socket directory {d} belongs to uid {st.st_uid}, not to you "
                          f"(uid {os.getuid()}): another user may be trying to intercept your SSH "
                          f"connections; refusing to use it (remove it, or set XDG_RUNTIME_DIR to a "
                          f"private directory)")
    if st.st_mode & 0o022:
        raise UnsafeValue(f"the SSH socket directory {d} has mode {oct(st.st_mode & 0o777)}: other "
                          f"users could reach your SSH connection sockets; refusing to use it "
                          f"(chmod 700 it if it is yours, or remove it)")
    if st.st_mode & 0o077:
        os.chmod(d, 0o700)      # ours and nobody else could write: just close it (older enos made it 0755)
    return d


def control_dir(run_id: str, create: bool = True) -> Path:
    """Return the directory of the env's ControlMaster sockets (short path: sockets are
    limited to ~100 characters): ``<control_base()>/<run_id>``, created and checked with
    :func:`secure_dir` (both levels) unless ``create`` is False. Raises UnsafeValue."""
    base = control_base()
    if not create:
        return base / run_id
    return secure_dir(secure_dir(base) / run_id)


def ssh_config_value(value: str) -> str:
    """Return ``value`` as one ssh_config argument: as is when it is plain, else in double
    quotes. Raises UnsafeValue for what ssh_config cannot hold (a newline or another
    control character, a double quote)."""
    if not value or any(ord(c) < 0x20 or c in '"\x7f' for c in value):
        raise UnsafeValue(f"{value!r} cannot be written into an ssh_config")
    return f'"{value}"' if any(c.isspace() or c in "#'\\" for c in value) else value


def user_known_hosts() -> Path:
    """Return the user's own known_hosts (``~/.ssh/known_hosts``, ``~`` from $HOME)."""
    return Path(os.path.expanduser("~")) / ".ssh" / "known_hosts"


def render_ssh_config(hosts: Sequence[Host], known_hosts: Path, run_id: str,
                      user_known: Optional[Path] = None) -> str:
    """Return the text of an ssh_config with one block per jump host (``enos-jump-*``),
    one per host (behind a jump host: a ``ProxyCommand`` through that jump host's
    connection master, see :mod:`enos.ssh.jump`) plus defaults (applied to jump hosts
    too). Raises UnsafeValue naming the host and field of a value that would not be one
    ssh_config argument (a provider bug or a hostile reservation that got past validation).

    The env's hosts are checked against the env's ``known_hosts`` only (their keys are
    pinned there, by alias). Any other host — a jump host such as the Grid'5000 gateway —
    is checked against the env's file *and* the user's own (``user_known``, default
    :func:`user_known_hosts`): a gateway the user already knows must present the key the
    user knows, or ssh refuses it; one the user never met is trusted on first use into
    the env's file only."""
    user_known = Path(user_known) if user_known is not None else user_known_hosts()
    q = ssh_config_value
    cdir = control_dir(run_id)
    cfg = known_hosts.parent / "ssh_config"
    lines = [f"# written by enos for run {run_id}; use: ssh -F {cfg} ALIAS", ""]
    for h in hosts:
        bad = unsafe_host_fields(h)
        if bad:
            raise UnsafeValue(f"host {h.alias!r}: refusing to write {', '.join(bad)} into the ssh_config")
    jumps = jump.jump_hosts(hosts)
    lines += jump.render_blocks(jumps.values(), q)
    for h in hosts:
        lines.append(f"Host {h.alias}")
        lines.append(f"  HostName {h.address}")
        lines.append(f"  User {h.user}")
        lines.append(f"  Port {int(h.port)}")
        if h.keyfile:
            lines.append(f"  IdentityFile {q(h.keyfile)}")
            lines.append("  IdentitiesOnly yes")
        if h.alias in jumps:
            lines.append(f"  ProxyCommand {jump.proxy_command(cfg, jumps[h.alias])}")
        lines.append(f"  HostKeyAlias {h.alias}")
        lines.append(f"  UserKnownHostsFile {q(str(known_hosts))}")
        lines.append(f"  StrictHostKeyChecking {'yes' if h.host_key else 'accept-new'}")
        lines.append("")
    lines += [
        "Host *",
        f"  UserKnownHostsFile {q(str(known_hosts))} {q(str(user_known))}",
        "  StrictHostKeyChecking accept-new",
        "  ControlMaster auto",
        f"  ControlPath {q(str(cdir) + '/%C')}",
        f"  ControlPersist {CONTROL_PERSIST}",
        "  ServerAliveInterval 15",
        "  ServerAliveCountMax 4",
        "  ConnectTimeout 10",
        "  BatchMode yes",
        "  PasswordAuthentication no",
        "  LogLevel ERROR",
        "",
    ]
    return "\n".join(lines)


def render_known_hosts(hosts: Iterable[Host], previous: str = "") -> str:
    """Return known_hosts text pinning every provider-supplied host key (by alias), keeping
    previously learnt entries of hosts whose key the provider does not know."""
    pinned = {h.alias: h.host_key for h in hosts if h.host_key}
    kept = [ln for ln in previous.splitlines()
            if ln.strip() and ln.split(None, 1)[0].split(",")[0] not in pinned]
    return "\n".join(kept + [f"{a} {k}" for a, k in pinned.items()]) + "\n"


def write_ssh_files(env_dir: Path, hosts: Sequence[Host], run_id: str) -> Path:
    """Write ``<env>/ssh_config`` and ``<env>/known_hosts``; return the ssh_config path."""
    env_dir = Path(env_dir)
    kh = env_dir / "known_hosts"
    prev = ""
    if os.path.lexists(kh):
        try:
            prev = read_bounded(kh, MAX_SSH_FILE_BYTES, "known_hosts file").decode("utf-8", "replace")
        except UnreadableFile as e:     # a FIFO, a link to a device...: written again from scratch
            log.warning("%s: %s; writing it again", kh, e.reason)
    atomic_write(kh, render_known_hosts(hosts, prev), mode=0o600)
    cfg = env_dir / "ssh_config"
    atomic_write(cfg, render_ssh_config(hosts, kh, run_id), mode=0o600)
    return cfg


def ssh_argv(ssh_config: Path, alias: str, *command: str) -> List[str]:
    """Return the argv running ``command`` on ``alias`` through the env's ssh_config."""
    return ["ssh", "-F", str(ssh_config), alias, *command]


def _probe(ssh_config: Path, alias: str, timeout: float, stop: threading.Event) -> Optional[str]:
    """Run ``ssh ALIAS true`` once; return None on success, else the last error line.
    Kills the ssh and returns "interrupted" as soon as ``stop`` is set."""
    try:
        p = subprocess.Popen(ssh_argv(ssh_config, alias, "true"), stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as e:
        return f"cannot run ssh: {e}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                p.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    return "interrupted"
                if time.monotonic() >= deadline:
                    return f"no answer within {timeout:.0f}s"
        err = p.stderr.read().decode(errors="replace")
    finally:
        if p.returncode is None:
            p.kill()
            p.wait()
        p.stderr.close()
    if p.returncode == 0:
        return None
    return (err.strip().splitlines() or [f"ssh exited with {p.returncode}"])[-1]


def wait_for_ssh(ssh_config: Path, aliases: Sequence[str], timeout: float = 300.0,
                 progress=None, interval: float = 0.5, description: str = "waiting for SSH") -> None:
    """Wait until every alias runs ``true`` over SSH (which also opens its connection master),
    shown as ``description`` on the progress display. A host behind a jump host is probed
    only once that jump host's master runs (:class:`enos.ssh.jump.Masters`).

    Returns None. Raises :class:`SshUnreachable` naming the late hosts and their last error;
    KeyboardInterrupt within ~0.1 s of SIGINT/SIGTERM (every probing ssh killed)."""
    progress = progress or NULL
    pending: Dict[str, str] = {a: "not tried yet" for a in aliases}
    masters = Masters(ssh_config)     # a host behind a jump host: its master first, never a flood
    deadline = time.monotonic() + timeout
    lock = threading.Lock()
    stop = threading.Event()      # set when the main thread stops waiting (signal, error)

    def stopped() -> bool:
        if signals.STOP.is_set():
            stop.set()
        return stop.is_set()

    def one(alias: str, task) -> None:
        delay = interval
        while not stopped():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            err = masters.ready(alias, stop) or _probe(ssh_config, alias, min(20.0, max(left, 1.0)), stop)
            with lock:
                if err is None:
                    pending.pop(alias, None)
                    # count and status in one update: never "0/4 3 left"
                    task.update(f"{len(pending)} left" if pending else "", completed=task.completed + 1)
                    return
                if stopped():
                    return
                pending[alias] = err
                task.update(f"{len(pending)} left, e.g. {alias}: {err}")
            if stop.wait(min(delay, max(0.0, deadline - time.monotonic()))) or stopped():
                return
            delay = min(delay * 1.5, 5.0)

    with progress.task(description, total=len(aliases)) as task:
        pool = ThreadPoolExecutor(max_workers=max(1, min(64, len(aliases))))
        try:
            futures = [pool.submit(one, a, task) for a in aliases]
            for f in futures:
                f.result()
        except BaseException:
            # interrupted (the main thread got KeyboardInterrupt): the workers see STOP,
            # kill their ssh and return within ~0.1 s; do not wait for them here
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    if signals.STOP.is_set():
        signals.check()
    if pending:
        raise SshUnreachable(pending, timeout)


def stop_masters(run_id: str) -> None:
    """Close every connection master of the env (each socket in its control dir, through
    ``ssh -O exit``) and remove the dir. Best effort: returns None, raises nothing. A
    control dir that is not safely ours (see :func:`secure_dir`) is left untouched."""
    for cdir in _control_dir_candidates(run_id):
        try:
            secure_dir(cdir.parent)
            if not cdir.exists():
                continue
            secure_dir(cdir)
        except (UnsafeValue, OSError):
            continue
        _stop_masters_in(cdir)


def _control_dir_candidates(run_id: str) -> List[Path]:
    """Where the env's control dir may be: under $XDG_RUNTIME_DIR and under /tmp (the
    environment of 'enos destroy' may differ from that of 'enos up')."""
    out = [control_dir(run_id, create=False)]
    tmp = Path(tempfile.gettempdir()) / f"enos-ssh-{os.getuid()}" / run_id
    if tmp not in out:
        out.append(tmp)
    return out


def _stop_masters_in(cdir: Path) -> None:
    socks = [p for p in cdir.iterdir()]

    def one(sock: Path) -> None:
        try:
            subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit", "enos-master"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            pass
    if socks:
        with ThreadPoolExecutor(max_workers=max(1, min(32, len(socks)))) as pool:
            list(pool.map(one, socks))
    for p in cdir.iterdir():
        try:
            p.unlink()
        except OSError:
            pass
    try:
        cdir.rmdir()
    except OSError:
        pass
