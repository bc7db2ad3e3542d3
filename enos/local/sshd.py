"""The sshd of each local host: its files (sshd_config, host key, authorized_keys, hosts,
resolv.conf), started inside its namespace under ``unshare --uts --mount`` (own hostname,
own /etc/hosts, an empty /root/.bashrc), waited for until it listens."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

from enos import process
from enos.environ import child_environ
from enos.errors import ProviderError
from enos.local import netns
from enos.local.plan import HostPlan
from enos.ssh.client import ssh_config_value

SSHD_READY_TIMEOUT = 15.0
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/bin/sshd")


def find_sshd() -> Optional[str]:
    """Return the path of the sshd binary, or None if it is not installed."""
    for p in SSHD_CANDIDATES:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("sshd")


def root_login_needs_pam(shadow: Optional[str] = None) -> bool:
    """Return True if sshd must run with ``UsePAM yes`` for root to log in with a key: without
    PAM, sshd refuses accounts whose password field is locked (``!...``, as on Ubuntu), and
    with PAM it leaves that to PAM's account checks. ``shadow`` is /etc/shadow's text (read
    when None; unreadable counts as not locked)."""
    if shadow is None:
        try:
            with open("/etc/shadow") as f:
                shadow = f.read()
        except OSError:
            return False
    for line in shadow.splitlines():
        fields = line.split(":")
        if fields[0] == "root" and len(fields) > 1:
            return fields[1].startswith("!") or fields[1].startswith("*LK*")
    return False


def write_host_files(d: Path, plan: HostPlan, plans: List[HostPlan], pubkey: str, use_pam: bool, run_id: str) -> None:
    """Write host ``plan``'s files into its dir ``d``: scratch/, authorized_keys, hostname,
    hosts (every host of the env, plus its extra_hosts), resolv.conf, sshd_config."""
    (d / "scratch").mkdir(parents=True, exist_ok=True)
    (d / "authorized_keys").write_text(pubkey.strip() + "\n")
    (d / "empty").write_text("")
    (d / "hostname").write_text(plan.hostname + "\n")
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for p in plans:
        names = [p.alias] + ([p.hostname] if p.hostname != p.alias else [])
        lines.append(f"{p.address}\t{' '.join(names)}")
    for name, ip in sorted(plan.extra_hosts.items()):
        lines.append(f"{ip}\t{name}")
    (d / "hosts").write_text("\n".join(lines) + "\n")
    # the namespace has no route to this machine's DNS servers: without this, every
    # lookup missing from /etc/hosts (e.g. its IPv6 half) waits for DNS timeouts (10 s)
    (d / "resolv.conf").write_text("# enos local host: no DNS server is reachable from its namespace\n"
                                   "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    q = ssh_config_value     # paths may hold spaces
    (d / "sshd_config").write_text(f"""\
# sshd of enos local host {plan.alias} (namespace {plan.ns}, run {run_id})
Port 22
ListenAddress {plan.address}
HostKey {q(f"{d}/ssh_host_ed25519_key")}
PidFile {q(f"{d}/sshd.pid")}
AuthorizedKeysFile {q(f"{d}/authorized_keys")}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM {"yes" if use_pam else "no"}
StrictModes no
UseDNS no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 100
# The hosts sit on a bridge of this machine: the post-quantum key exchange (the default)
# costs ~90 ms of client CPU per handshake, which dominates 'enos up' of many hosts on a
# small machine (bench/RESULTS.md); curve25519 costs almost nothing.
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org
AllowTcpForwarding yes
X11Forwarding no
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
""")

def host_keys(dirs: Dict[str, Path], run_id: str) -> None:
    """Give each host (alias → its dir) without one an ed25519 host key (in-process with ``cryptography``,
    an ansible-core dependency, or with ``ssh-keygen`` run in parallel when it is
    missing). Raises ProviderError if ssh-keygen fails."""
    missing = []
    for alias, d in dirs.items():
        key = d / "ssh_host_ed25519_key"
        if not (key.exists() and key.with_suffix(".pub").exists()):
            for f in (key, key.with_suffix(".pub")):
                f.unlink(missing_ok=True)
            missing.append((alias, key))
    if not missing:
        return
    try:
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        ser = None
    if ser is not None:
        for alias, key in missing:
            k = Ed25519PrivateKey.generate()
            fd = os.open(str(key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(k.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption()))
            pub = k.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
            key.with_suffix(".pub").write_text(f"{pub} {alias}@enos-{run_id}\n")
        return
    procs = [(alias, subprocess.Popen(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{alias}@enos-{run_id}",
         "-f", str(key)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)) for alias, key in missing]
    errors = []
    for alias, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            errors.append(f"{alias}: {out.strip()}")
    if errors:
        raise ProviderError("ssh-keygen failed for host keys: " + "; ".join(errors))

def host_key(d: Path) -> str:
    """Return the public host key in host dir ``d`` as ``"ssh-ed25519 AAAA..."``."""
    text = (d / "ssh_host_ed25519_key.pub").read_text().split()
    return " ".join(text[:2])

def start_sshd(sshd: str, d: Path, plan: HostPlan) -> int:
    """Start ``sshd -D`` inside the host's namespace, detached in its own session; return
    its PID (the sshd's own: ip, unshare and sh exec into it)."""
    q = shlex.quote
    script = "; ".join([
        "set -e",
        f"hostname {q(plan.hostname)}",
        f"mount --bind {q(str(d / 'hosts'))} /etc/hosts",
        f"if [ -e /etc/resolv.conf ]; then mount --bind {q(str(d / 'resolv.conf'))} /etc/resolv.conf; fi",
        f"if [ -e /etc/hostname ]; then mount --bind {q(str(d / 'hostname'))} /etc/hostname; fi",
        f"if [ -e /root/.bashrc ]; then mount --bind {q(str(d / 'empty'))} /root/.bashrc; fi",
        "mkdir -p /run/sshd",
        f"exec {q(sshd)} -D -f {q(str(d / 'sshd_config'))} -E {q(str(d / 'sshd.log'))}",
    ])
    argv = [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", plan.ns,
            shutil.which("unshare") or "/usr/bin/unshare", "--uts", "--mount",
            "--propagation", "private", "/bin/sh", "-c", script]
    log = os.open(str(d / "start.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        pid = os.posix_spawn(argv[0], argv, child_environ(), setsid=True,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT),
                             file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                           (os.POSIX_SPAWN_DUP2, log, 1),
                                           (os.POSIX_SPAWN_DUP2, log, 2)])
    except OSError as e:
        raise ProviderError(f"cannot start sshd for {plan.alias}: {e}") from None
    finally:
        os.close(log)
    return pid

def wait_sshd(plans: List[HostPlan], dirs: Dict[str, Path]) -> None:
    """Wait until each host's sshd accepts TCP connections. Raises ProviderError with the
    sshd's own error if it exited, or after SSHD_READY_TIMEOUT."""
    pending = {p.alias: p for p in plans}
    deadline = time.monotonic() + SSHD_READY_TIMEOUT
    while pending:
        for alias, p in list(pending.items()):
            try:
                with socket.create_connection((p.address, 22), timeout=0.5):
                    del pending[alias]
                    continue
            except OSError:
                pass
            if p.pid and not process.alive(p.pid):
                d = dirs[alias]
                logs = " ".join(f.read_text().strip() for f in (d / "start.log", d / "sshd.log") if f.exists())
                raise ProviderError(f"sshd of {alias} ({p.ns}) exited at start: {logs or 'no log'}")
        if not pending:
            break
        if time.monotonic() > deadline:
            raise ProviderError(f"sshd did not listen within {SSHD_READY_TIMEOUT:.0f}s on: "
                                + ", ".join(f"{a} ({p.address})" for a, p in pending.items()))
        time.sleep(0.01)

def healthy(plan: HostPlan) -> bool:
    """True if the host's namespace exists and its recorded sshd lives in it."""
    if not plan.pid or not netns.netns_exists(plan.ns) or not process.alive(plan.pid):
        return False
    return process.same_netns(plan.pid, netns.netns_path(plan.ns))