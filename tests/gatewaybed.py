"""A REAL sshd jump host in a network namespace, with many hosts reachable ONLY through it.

Layout (every name carries a random tag, so parallel runs never collide)::

    root namespace ── veth vg<tag> ──▶ namespace egw<tag>  (the gateway: sshd with OpenSSH's
       10.2xx.y.1/24        uplink 10.2xx.y.2/24             defaults MaxStartups 10:30:100,
                                                             MaxSessions 10; IP forwarding off;
                                                             optionally behind a delaying relay:
                                                             WAN latency without netem)
                                      bridge br0 10.2xx.z.1/22 (inside egw<tag>)
                                        ├─ veth ─▶ namespace egw<tag>-1  (host: own sshd, hostname h1)
                                        ├─ ...
                                        └─ veth ─▶ namespace egw<tag>-N

The root namespace has a route to the gateway's /24 only: the hosts' /22 lives inside the
gateway namespace, and, being in the local provider's range (10.200-10.254, see
enos/local/guard.py), a packet sent to it from the root namespace is refused at once
instead of leaving the machine. The gateway does not forward packets: the only way to a
host is an SSH connection to the gateway that opens a channel to it (ProxyJump, ``-W``).

Everything started is freed by PID (sshds, then any process left in the namespaces), then
the namespaces are deleted (which deletes the bridge and veths inside them). Host sshds
share one config (they listen on their own namespace's addresses), one host key and one
log file: 200 hosts cost ~200 idle sshd processes and about a second of CPU to start.

:class:`SsSampler` counts, with ``ss`` in the root namespace, the TCP connections to the
gateway's sshd while something runs.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

LOCK_PATH = "/run/enos/local-subnets.lock"     # the local provider's subnet lock (shared)
SUBNET_RANGE = (ipaddress.ip_network("10.200.0.0/16"), ipaddress.ip_network("10.254.0.0/16"))
GATEWAY_MAX_STARTUPS = "10:30:100"              # OpenSSH's defaults, written out explicitly
GATEWAY_MAX_SESSIONS = 10
DROP_RE = re.compile(r"past MaxStartups|exceeded MaxStartups")


def _ip() -> str:
    return shutil.which("ip") or "/usr/sbin/ip"


def _sshd() -> str:
    for p in ("/usr/sbin/sshd", "/usr/bin/sshd"):
        if os.access(p, os.X_OK):
            return p
    return shutil.which("sshd") or "sshd"


def _run(argv: List[str], stdin: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}...: {p.stderr.strip() or p.returncode}")
    return p


def _used_networks() -> List[ipaddress.IPv4Network]:
    nets = []
    for a in json.loads(_run([_ip(), "-4", "-j", "addr"]).stdout or "[]"):
        for i in a.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{i['local']}/{i['prefixlen']}", strict=False))
    for r in json.loads(_run([_ip(), "-4", "-j", "route", "show", "table", "all"]).stdout or "[]"):
        dst = r.get("dst", "")
        if dst and dst[0].isdigit():
            try:
                nets.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
            except ValueError:
                pass
    return nets


def _pick(used: List[ipaddress.IPv4Network], prefix: int, rnd: random.Random) -> ipaddress.IPv4Network:
    first = int(SUBNET_RANGE[0].network_address)
    last = int(SUBNET_RANGE[1].broadcast_address)
    size = 2 ** (32 - prefix)
    count = (last - first + 1) // size
    start = rnd.randrange(count)
    for i in range(count):
        net = ipaddress.ip_network((first + ((start + i) % count) * size, prefix))
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free subnet in 10.200.0.0-10.254.255.255")


def root_login_needs_pam() -> bool:
    """True when root's password is locked (sshd without PAM would refuse its key logins)."""
    try:
        for line in Path("/etc/shadow").read_text().splitlines():
            f = line.split(":")
            if f[0] == "root" and len(f) > 1:
                return f[1].startswith("!") or f[1].startswith("*LK*")
    except OSError:
        pass
    return False


class GatewayBed:
    """The testbed. ``start()`` builds it (and frees what it built if that fails), ``stop()``
    frees it; also a context manager. ``client_key`` is the private key both the gateway
    and the hosts accept (for root)."""

    def __init__(self, work: Path, hosts: int = 200, tag: Optional[str] = None,
                 max_startups: str = GATEWAY_MAX_STARTUPS, max_sessions: int = GATEWAY_MAX_SESSIONS,
                 delay_ms: float = 0.0):
        self.work = Path(work)
        self.delay_ms = float(delay_ms)
        self.n = int(hosts)
        self.tag = tag or os.urandom(3).hex()
        self.max_startups, self.max_sessions = max_startups, max_sessions
        self.gw_ns = f"egw{self.tag}"
        self.host_ns = [f"egw{self.tag}-{i}" for i in range(1, self.n + 1)]
        self.root_link = f"vg{self.tag}"
        self.pids: List[int] = []
        self.gw_ip = ""
        self.host_ips: List[str] = []
        self.client_key = self.work / "client_key"
        self.gw_log = self.work / "gateway" / "sshd.log"
        self._created_ns: List[str] = []

    # --- build ------------------------------------------------------------------------
    def start(self) -> "GatewayBed":
        """Build the gateway and the hosts; return self once every sshd listens.
        Raises RuntimeError (after freeing what was built) on failure."""
        try:
            self._files()
            self._network()
            self._start_gateway()
            self._start_hosts()
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _files(self) -> None:
        for d in ("gateway", "hosts"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        if not self.client_key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"gatewaybed-{self.tag}",
                  "-f", str(self.client_key)])
        pub = self.client_key.with_suffix(".pub").read_text()
        for d in ("gateway", "hosts"):
            key = self.work / d / "ssh_host_ed25519_key"
            if not key.exists():
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
            (self.work / d / "authorized_keys").write_text(pub)
        (self.work / "empty").write_text("")

    def _network(self) -> None:
        os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            rnd = random.Random(self.tag)
            used = _used_networks()
            link = _pick(used, 24, rnd)
            hosts_net = _pick(used + [link], 22, rnd)
            self._created_ns = [self.gw_ns] + self.host_ns
            _run([_ip(), "-batch", "-"], "".join(f"netns add {ns}\n" for ns in self._created_ns))
            gw = str(link.network_address + 2)
            _run([_ip(), "link", "add", self.root_link, "type", "veth", "peer", "name", "uplink", "netns", self.gw_ns])
            _run([_ip(), "addr", "add", f"{link.network_address + 1}/24", "dev", self.root_link])
            _run([_ip(), "link", "set", self.root_link, "up"])
        finally:
            os.close(fd)
        self.gw_ip = gw
        hosts = list(hosts_net.hosts())
        if self.n > len(hosts) - 1:
            raise RuntimeError(f"{self.n} hosts do not fit in {hosts_net}")
        self.bridge_ip = str(hosts[0])
        self.host_ips = [str(h) for h in hosts[1:self.n + 1]]
        self.hosts_net = hosts_net
        lines = ["link set lo up", f"addr add {gw}/24 dev uplink", "link set uplink up",
                 "link add br0 type bridge", f"addr add {self.bridge_ip}/22 dev br0", "link set br0 up"]
        for i, ns in enumerate(self.host_ns, 1):
            lines += [f"link add h{i} type veth peer name eth0 netns {ns}", f"link set h{i} master br0",
                      f"link set h{i} up"]
        _run([_ip(), "-n", self.gw_ns, "-batch", "-"], "\n".join(lines) + "\n")
        _run([_ip(), "netns", "exec", self.gw_ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])

    def _sshd_config(self, d: Path, listen: Optional[str], gateway: bool) -> Path:
        lines = ["Port 22", f"HostKey {d / 'ssh_host_ed25519_key'}", "PidFile none",
                 f"AuthorizedKeysFile {d / 'authorized_keys'}", "PermitRootLogin prohibit-password",
                 "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 f"UsePAM {'yes' if root_login_needs_pam() else 'no'}", "StrictModes no", "UseDNS no",
                 "PrintMotd no", "AllowTcpForwarding yes", "X11Forwarding no", "Subsystem sftp internal-sftp"]
        if listen:
            lines.append(f"ListenAddress {listen}")
        if gateway:
            # the shared access gateway: OpenSSH's defaults, written out; VERBOSE logs every
            # connection and each one dropped past MaxStartups
            lines += [f"MaxStartups {self.max_startups}", f"MaxSessions {self.max_sessions}", "LogLevel VERBOSE"]
        else:
            # hosts: each sees only its own few connections; curve25519 keeps their key
            # exchanges cheap on this 2-core machine (as the local provider's hosts)
            lines += ["KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org", "LogLevel ERROR"]
        cfg = d / "sshd_config"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def _spawn(self, ns: str, script: str, log: Path) -> int:
        argv = [_ip(), "netns", "exec", ns, shutil.which("unshare") or "/usr/bin/unshare", "--uts", "--mount",
                "--propagation", "private", "/bin/sh", "-c", script]
        fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            pid = os.posix_spawn(argv[0], argv, dict(os.environ), setsid=True,
                                 file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                               (os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)])
        finally:
            os.close(fd)
        self.pids.append(pid)
        return pid

    def _prelude(self, hostname: str) -> List[str]:
        q = shlex.quote
        return [f"hostname {q(hostname)}",
                f"if [ -e /root/.bashrc ]; then mount --bind {q(str(self.work / 'empty'))} /root/.bashrc; fi",
                "mkdir -p /run/sshd"]

    def _start_gateway(self) -> None:
        """The gateway's sshd; with ``delay_ms``, it listens on the namespace's loopback
        and tests/delayrelay.py, on the uplink, adds that one-way delay (no netem here)."""
        d = self.work / "gateway"
        cfg = self._sshd_config(d, "127.0.0.1" if self.delay_ms else self.gw_ip, gateway=True)
        script = "; ".join(["set -e"] + self._prelude("gateway")
                           + [f"exec {_sshd()} -D -f {shlex.quote(str(cfg))} -E {shlex.quote(str(self.gw_log))}"])
        self.gw_pid = self._spawn(self.gw_ns, script, d / "start.log")
        if self.delay_ms:
            relay = Path(__file__).resolve().parent / "delayrelay.py"
            self._spawn(self.gw_ns, f"exec {shlex.quote(sys.executable)} {shlex.quote(str(relay))} {self.gw_ip} 22 "
                                    f"127.0.0.1 22 {self.delay_ms}", d / "relay.log")

    def _start_hosts(self) -> None:
        d = self.work / "hosts"
        cfg = self._sshd_config(d, None, gateway=False)
        for i, (ns, ip) in enumerate(zip(self.host_ns, self.host_ips), 1):
            script = "; ".join(["set -e", "ip link set lo up", f"ip addr add {ip}/22 dev eth0",
                                "ip link set eth0 up"] + self._prelude(f"h{i}")
                               + [f"exec {_sshd()} -D -f {shlex.quote(str(cfg))} -E {shlex.quote(str(d / 'sshd.log'))}"])
            self._spawn(ns, script, d / "start.log")

    def _wait_listening(self, timeout: float = 60.0) -> None:
        """Wait until the gateway answers from here and every host answers from the gateway."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.gw_ip, 22), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        break
            except OSError:
                pass
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway sshd not listening: {self._logs()}")
            time.sleep(0.05)
        probe = ("import socket,sys,time\nips=sys.argv[2:]\nend=time.time()+float(sys.argv[1])\n"
                 "while ips and time.time()<end:\n"
                 "  left=[]\n"
                 "  for ip in ips:\n"
                 "    try: socket.create_connection((ip,22),timeout=1).close()\n"
                 "    except OSError: left.append(ip)\n"
                 "  ips=left\n  time.sleep(0.1) if ips else None\n"
                 "print(' '.join(ips)); sys.exit(1 if ips else 0)\n")
        p = subprocess.run([_ip(), "netns", "exec", self.gw_ns, "python3", "-c", probe,
                            str(max(1.0, deadline - time.monotonic()))] + self.host_ips,
                           capture_output=True, text=True)
        if p.returncode != 0:
            self._check_alive()
            raise RuntimeError(f"hosts not listening: {p.stdout.strip()[:200]} {p.stderr.strip()[:200]} "
                               f"{self._logs()}")

    def _check_alive(self) -> None:
        for pid in self.pids:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                raise RuntimeError(f"an sshd (pid {pid}) exited at start: {self._logs()}")

    def _logs(self) -> str:
        out = []
        for f in (self.work / "gateway" / "start.log", self.gw_log, self.work / "hosts" / "start.log",
                  self.work / "hosts" / "sshd.log"):
            if f.exists():
                out.append(f"{f.name}: {f.read_text()[-400:]}")
        return " | ".join(out)

    # --- use ----------------------------------------------------------------------------
    def dropped(self) -> int:
        """How many connections the gateway's sshd dropped past MaxStartups (its log)."""
        if not self.gw_log.exists():
            return 0
        return sum(1 for line in self.gw_log.read_text(errors="replace").splitlines() if DROP_RE.search(line))

    def accepted(self) -> int:
        """How many connections the gateway's sshd accepted (``Connection from`` lines)."""
        if not self.gw_log.exists():
            return 0
        return sum(1 for line in self.gw_log.read_text(errors="replace").splitlines() if "Connection from" in line)

    def ns_pids(self) -> List[int]:
        """Every process still in one of this bed's namespaces."""
        out: List[int] = []
        for ns in self._created_ns:
            p = subprocess.run([_ip(), "netns", "pids", ns], capture_output=True, text=True)
            out += [int(x) for x in p.stdout.split()]
        return out

    # --- teardown -----------------------------------------------------------------------
    def stop(self) -> None:
        """Free everything by PID, then delete the namespaces (idempotent, best effort; raises
        RuntimeError at the end if a namespace could not be deleted)."""
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for pid in self.pids:
            while time.monotonic() < deadline:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                time.sleep(0.02)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (OSError, ChildProcessError):
                    pass
        self.pids = []
        for pid in self.ns_pids():          # per-connection sshd children, ssh sessions
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        left = []
        if self._created_ns:
            p = subprocess.run([_ip(), "-force", "-batch", "-"], capture_output=True, text=True,
                               input="".join(f"netns del {ns}\n" for ns in self._created_ns))
            existing = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
            left = [ns for ns in self._created_ns if ns in existing]
            if p.returncode != 0 and left:
                raise RuntimeError(f"could not delete namespaces {left[:5]}: {p.stderr.strip()[:300]}")
        self._created_ns = left
        subprocess.run([_ip(), "link", "del", self.root_link], capture_output=True)


class SsSampler:
    """Counts, every ``interval`` seconds with ``ss``, the TCP connections from this
    namespace to ``ip:port`` (established or being set up). ``samples`` keeps every count;
    ``peak`` the largest."""

    STATES = ("established", "syn-sent", "syn-recv")

    def __init__(self, ip: str, port: int = 22, interval: float = 0.1):
        self.ip, self.port, self.interval = ip, port, interval
        self.samples: List[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ss-sampler", daemon=True)

    def count(self) -> int:
        """Return the current number of connections (one ``ss`` run)."""
        argv = ["ss", "-Htn"]
        for st in self.STATES:
            argv += ["state", st]
        argv += ["dst", f"{self.ip}:{self.port}"]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return sum(1 for line in p.stdout.splitlines() if line.strip())

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.count())
            self._stop.wait(self.interval)

    @property
    def peak(self) -> int:
        """The largest count sampled (0 before any sample)."""
        return max(self.samples, default=0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def start_agent(key: Path, sock: Path) -> subprocess.Popen:
    """An ssh-agent holding ``key`` on socket ``sock`` (the gateway authenticates the
    client with it, as a Grid'5000 user's agent would for access.grid5000.fr); the caller
    ends it by PID (``terminate()``)."""
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.05)
    subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                   check=True, capture_output=True)
    return agent


def ssh_config(bed: "GatewayBed", path: Path, cdir: Path, fanin: bool = True, port: int = 22) -> dict:
    """Write an ssh_config reaching every host of ``bed`` (``h1``..): enos' shape (one
    ``enos-jump-*`` block, ProxyCommand through its master) or, without ``fanin``, one
    ProxyJump per host (what enos wrote before); return {host alias: JumpHost}."""
    from enos.model import Host
    from enos.ssh import jump
    hosts = [Host(f"h{i}", ip, jump=f"root@{bed.gw_ip}:{port}") for i, ip in enumerate(bed.host_ips, 1)]
    table = jump.jump_hosts(hosts)
    lines = jump.render_blocks(table.values(), str) if fanin else []
    for h in hosts:
        via = f"ProxyCommand {jump.proxy_command(path, table[h.alias])}" if fanin else f"ProxyJump {h.jump}"
        lines += [f"Host {h.alias}", f"  HostName {h.address}", f"  {via}", ""]
    lines += ["Host *", "  User root", f"  IdentityFile {bed.client_key}", "  IdentitiesOnly yes",
              "  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null", "  BatchMode yes", "  LogLevel ERROR",
              "  ControlMaster auto", f"  ControlPath {cdir}/%C", "  ControlPersist 60", "  ConnectTimeout 10", ""]
    path.write_text("\n".join(lines))
    return table
