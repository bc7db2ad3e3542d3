"""The ``local`` provider: real SSH hosts on this machine, one network namespace each.

``init`` creates, all named from the env's run id ``R``:

* a Linux bridge ``ebR`` in the root namespace holding the subnet's gateway address
  (so this machine reaches the hosts);
* per host ``n``: a network namespace ``enos-R-n``, a veth pair ``evRn`` (bridge side) /
  ``eth0`` (namespace side), the host's address, a default route via the gateway;
* per host an ``sshd -D`` inside its namespace, under ``unshare --uts --mount``: its own
  hostname, its own ``/etc/hosts`` (every host of the env, plus ``extra_hosts``), an empty
  file over ``/root/.bashrc`` (no slow shell start-up), its own ed25519 host key
  (returned as ``Host.host_key`` so the core pins it), key-only root login with the env key.

Files live in ``<env>/local-R/<alias>/`` (sshd_config, host key, authorized_keys, hosts,
log, and ``scratch/``, exposed to Ansible as ``enos_scratch``). Hosts share this machine's
filesystem and PID space: anything a playbook writes "on a host" must go under
``enos_scratch``.

Every name is recorded in the journal before it is created and ``checkpoint("local.*")``
follows each side effect, so ``destroy`` (or ``sweep`` without any state) cleans a crash at
any line. Teardown order: kill every process of each namespace, remove the namespaces (the
kernel then drops their veths in one batch; survivors are deleted explicitly), then the
bridge, then the files.
"""
from __future__ import annotations

import fcntl
import ipaddress
import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from enos import names, process
from enos.environ import child_environ
from enos.errors import ConfigError, DestroyIncomplete, NotRoot, ProviderError
from enos.failpoint import checkpoint
from enos.model import Check, Host, IpPool, Resources
from enos.provider.provider import DESTROY, IP_POOL, RESERVE, SWEEP, Provider

JOURNAL_KEY = "local"
LOCK_PATH = "/run/enos/local-subnets.lock"
#: the auto-picked /24s come from here (10.200.0.0/24 .. 10.254.255.0/24)
AUTO_FIRST = ipaddress.ip_network("10.200.0.0/24")
AUTO_COUNT = 55 * 256          # /24s up to 10.254.255.0/24
SSHD_READY_TIMEOUT = 15.0
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/bin/sshd")
_HOSTNAME_BAD = re.compile(r"[^a-z0-9-]+")

SAMPLE = """\
# enos reservation for the 'local' provider: every host is a network namespace of this
# machine running its own sshd (needs root, sshd, ip, unshare, ssh-keygen).
# Hosts share this machine's filesystem: write per-host data under {{ enos_scratch }}.
provider:
  type: local
  # subnet: 10.20.0.0/24   # default: a free private /24 picked for this environment

resources:
  # compact form: <label>: {<role>: <count>}
  machines:
    control: 1
    compute: 2

# explicit form (instead of resources:):
# machines:
#   - roles: [control]
#     nodes: 1
#     extra_hosts: {api.example.org: 10.20.0.2}   # extra /etc/hosts entries

# provision:
#   - site.yml
"""


def _bridge_name(run_id: str) -> str:
    return f"eb{run_id}"


def _veth_name(run_id: str, n: int) -> str:
    return f"ev{run_id}{n}"


def _ns_name(run_id: str, n: int) -> str:
    return f"enos-{run_id}-{n}"


def _hostname(alias: str) -> str:
    return _HOSTNAME_BAD.sub("-", alias.lower()).strip("-")[:63] or "host"


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


@dataclass
class HostPlan:
    """One namespace host as planned from the reservation (JSON form in the journal)."""

    n: int
    alias: str
    roles: List[str]
    address: str
    ns: str
    veth: str
    hostname: str
    extra_hosts: Dict[str, str] = field(default_factory=dict)
    pid: Optional[int] = None
    #: the sshd's start time (/proc/PID/stat): with ``pid``, names that very process
    start: Optional[int] = None

    def to_dict(self) -> dict:
        """Return the journal form of this plan."""
        return dict(self.__dict__)


@contextmanager
def _subnet_lock() -> Iterator[None]:
    """Hold the machine-wide lock serialising subnet choice + bridge addressing."""
    os.makedirs(os.path.dirname(LOCK_PATH), exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def used_networks(ipr, skip_index: Optional[int] = None) -> List[ipaddress.IPv4Network]:
    """Return the IPv4 networks in use in this namespace: every address's network and every
    route's destination (default routes excluded), except those of interface
    ``skip_index``."""
    nets = []
    for a in ipr.get_addr(family=socket.AF_INET):
        addr = a.get_attr("IFA_ADDRESS") or a.get_attr("IFA_LOCAL")
        if addr and a["index"] != skip_index:
            nets.append(ipaddress.ip_network(f"{addr}/{a['prefixlen']}", strict=False))
    for r in ipr.get_routes(family=socket.AF_INET, table=254) + ipr.get_routes(family=socket.AF_INET, table=255):
        dst = r.get_attr("RTA_DST")
        if dst and r["dst_len"] > 0 and (skip_index is None or r.get_attr("RTA_OIF") != skip_index):
            nets.append(ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False))
    return nets


def pick_subnet(used: List[ipaddress.IPv4Network], seed: int) -> ipaddress.IPv4Network:
    """Return a free /24 of 10.200.0.0–10.254.255.0 overlapping none of ``used``, starting the
    search at a place derived from ``seed``. Raises ProviderError if all are taken."""
    first = int(AUTO_FIRST.network_address)
    count = AUTO_COUNT
    start = seed % count
    for i in range(count):
        net = ipaddress.IPv4Network((first + ((start + i) % count) * 256, 24))
        if not any(net.overlaps(u) for u in used):
            return net
    raise ProviderError("no free /24 left in 10.200.0.0-10.254.255.255; set provider.subnet")


class LocalProvider(Provider):
    """Hosts as network namespaces of this machine, each with its own sshd."""

    type = "local"
    description = "hosts as network namespaces of this machine, each running its own sshd (needs root)"
    capabilities = frozenset({RESERVE, DESTROY, IP_POOL, SWEEP})
    requires = ("pyroute2",)
    extra = None
    sample = SAMPLE
    schema = {
        "type": "object",
        "properties": {
            "type": {"const": "local"},
            "subnet": {"type": "string",
                       "pattern": r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$",
                       "x-expected": "a CIDR like 10.20.0.0/24"},
        },
        "additionalProperties": False,
    }
    machine_schema = {
        "type": "object",
        "properties": {
            "extra_hosts": {"type": "object",
                            "propertyNames": names.HOST_NAME,
                            "additionalProperties": {"type": "string",
                                                     "pattern": r"^\d{1,3}(\.\d{1,3}){3}$",
                                                     "x-expected": "an IPv4 address like 10.20.0.7"},
                            "x-expected": "a mapping of host names to IPv4 addresses"},
        },
        "additionalProperties": False,
    }

    # ------------------------------------------------------------------ validation
    @classmethod
    def _subnet_option(cls, config) -> Optional[ipaddress.IPv4Network]:
        raw = (config.options or {}).get("subnet")
        if raw is None:
            return None
        try:
            net = ipaddress.ip_network(str(raw), strict=False)
        except ValueError:
            raise config.error("provider.subnet", f"expected a CIDR like 10.20.0.0/24, got '{raw}'") from None
        if net.version != 4:
            raise config.error("provider.subnet", f"expected an IPv4 CIDR, got '{raw}'")
        return net

    @classmethod
    def validate(cls, config) -> None:
        """Check the subnet option and that the hosts fit in it. Raises ConfigError."""
        net = cls._subnet_option(config)
        total = sum(int(m.count) for m in config.machines)
        if total < 1:
            raise config.error("resources", "the local provider needs at least one host")
        room = (net.num_addresses - 3) if net is not None else 253
        if total > room:
            where = "provider.subnet" if net is not None else "resources"
            raise config.error(where, f"{total} hosts do not fit in {net or 'a /24'} "
                                      f"({room} addresses besides the gateway)")
        for m in config.machines:
            for name, ip in (m.options.get("extra_hosts") or {}).items():
                try:
                    ipaddress.IPv4Address(str(ip))
                except ValueError:
                    raise config.error(f"{m.keypath}.extra_hosts.{name}" if m.keypath else "extra_hosts",
                                       f"expected an IPv4 address, got '{ip}'") from None

    @classmethod
    def preflight(cls, config) -> None:
        """Raise ConfigError when the ``subnet`` option overlaps a network already in use
        on this machine (an address or a route), before anything is created."""
        wanted = cls._subnet_option(config)
        if wanted is None:
            return
        from pyroute2 import IPRoute
        with IPRoute() as ipr:
            clash = [u for u in used_networks(ipr) if u.overlaps(wanted)]
        if clash:
            raise config.error("provider.subnet", f"{wanted} overlaps {clash[0]}, already used on this "
                                                  f"machine; choose another subnet or remove the option "
                                                  f"to pick a free one")

    # ------------------------------------------------------------------ checks
    def check(self) -> List[Check]:
        """Return whether root, sshd, ip, unshare and ssh-keygen are available."""
        out = [Check("root privileges", os.geteuid() == 0,
                     "running as root" if os.geteuid() == 0 else f"running as uid {os.geteuid()}",
                     "run enos as root (namespaces, bridges and veths need CAP_NET_ADMIN)")]
        sshd = find_sshd()
        out.append(Check("sshd", sshd is not None, sshd or "no sshd binary in /usr/sbin or PATH",
                         "apt-get install openssh-server"))
        for binary, pkg in (("ip", "iproute2"), ("unshare", "util-linux"),
                            ("ssh-keygen", "openssh-client"), ("mount", "mount")):
            p = shutil.which(binary)
            out.append(Check(binary, p is not None, p or f"'{binary}' not found in PATH",
                             f"apt-get install {pkg}"))
        ns_ok = os.path.exists("/proc/self/ns/net")
        out.append(Check("network namespaces", ns_ok,
                         "kernel supports them" if ns_ok else "/proc/self/ns/net is missing",
                         "use a kernel with CONFIG_NET_NS"))
        out.append(self._guard_check())
        return out

    @staticmethod
    def _guard_check() -> Check:
        """Whether the policy rules keeping the range's packets on this machine are there
        (``enos up`` installs them; information only, never a reason to refuse)."""
        from enos.local import guard
        try:
            missing = guard.missing_rules()
        except (OSError, subprocess.SubprocessError) as e:
            return Check("address range kept local", True, f"cannot read the policy rules ({e}); "
                         f"'enos up' installs them", "")
        if not missing:
            return Check("address range kept local", True,
                         f"policy rules installed: {guard.RANGE_TEXT} unreachable except through live "
                         f"environments' bridges (priorities {guard.PRIO_MAIN}, {guard.PRIO_UNREACHABLE})")
        return Check("address range kept local", True,
                     f"{len(missing)} policy rule(s) not installed yet ('enos up' adds them): "
                     + "; ".join(missing))

    def _preflight(self) -> str:
        if os.geteuid() != 0:
            raise NotRoot("the local provider needs root (it creates network namespaces, a bridge "
                          "and veth pairs); run 'enos up' as root")
        missing = [c for c in self.check() if not c.ok and c.what != "root privileges"]
        if missing:
            raise ProviderError("the local provider cannot run here: " +
                                "; ".join(f"{c.what}: {c.detail} (fix: {c.fix})" for c in missing))
        return find_sshd()

    # ------------------------------------------------------------------ paths
    @property
    def run_id(self) -> str:
        """The env's run id (tags every created object)."""
        return self.ctx.run_id

    @property
    def base_dir(self) -> Path:
        """``<env>/local-<run_id>``: per-host files (absolute path)."""
        return (Path(self.ctx.env_dir) / f"local-{self.run_id}").resolve()

    def host_dir(self, alias: str) -> Path:
        """Return the directory of one host's files."""
        return self.base_dir / alias

    # ------------------------------------------------------------------ planning
    def _plan(self, subnet: ipaddress.IPv4Network, gateway: str) -> List[HostPlan]:
        total = sum(int(m.count) for m in self.ctx.config.machines)
        # only as many addresses as hosts: a /8 subnet must not be listed
        hosts = list(itertools.islice((a for a in subnet.hosts() if str(a) != gateway), total))
        counters: Dict[str, int] = {}
        plans: List[HostPlan] = []
        for m in self.ctx.config.machines:
            roles = list(m.roles)
            key = "-".join(roles) if roles else (m.label or "host")
            for _ in range(int(m.count)):
                counters[key] = counters.get(key, 0) + 1
                alias = f"{key}-{counters[key]}"
                n = len(plans)
                if n >= len(hosts):
                    raise ConfigError(f"{n + 1} hosts do not fit in {subnet}", keypath="provider.subnet")
                plans.append(HostPlan(n=n, alias=alias, roles=roles, address=str(hosts[n]),
                                      ns=_ns_name(self.run_id, n), veth=_veth_name(self.run_id, n),
                                      hostname=_hostname(alias),
                                      extra_hosts={str(k): str(v) for k, v in
                                                   (m.options.get("extra_hosts") or {}).items()}))
        return plans

    def _save(self, rec: dict) -> None:
        self.ctx.journal.record(JOURNAL_KEY, rec)

    # ------------------------------------------------------------------ bridge
    def _ensure_bridge(self, ipr, rec: dict) -> dict:
        """Return the journal record with subnet and bridge set up (picking a subnet if
        needed); the bridge exists, is up and holds the gateway address when this returns."""
        from pyroute2 import NetlinkError
        wanted = self._subnet_option(self.ctx.config)
        br = _bridge_name(self.run_id)
        with _subnet_lock():
            found = ipr.link_lookup(ifname=br)
            if rec.get("subnet") and wanted is not None and ipaddress.ip_network(rec["subnet"]) != wanted:
                raise self.ctx.config.error(
                    "provider.subnet", f"this environment already uses {rec['subnet']}; run 'enos destroy' "
                    f"before changing the subnet")
            if rec.get("subnet") and not found:
                # recorded but never put on a bridge (crash): still free?
                used = used_networks(ipr)
                if any(u.overlaps(ipaddress.ip_network(rec["subnet"])) for u in used):
                    if wanted is not None:
                        raise self.ctx.config.error("provider.subnet", f"{wanted} is now used on this machine")
                    rec["subnet"] = None
            if not rec.get("subnet"):
                used = used_networks(ipr, skip_index=found[0] if found else None)
                if wanted is not None:
                    clash = [u for u in used if u.overlaps(wanted)]
                    if clash:
                        raise self.ctx.config.error(
                            "provider.subnet", f"{wanted} overlaps {clash[0]}, already used on this "
                            f"machine; choose another subnet or remove the option to pick a free one")
                    net = wanted
                else:
                    net = pick_subnet(used, int(self.run_id, 16) if re.fullmatch(r"[0-9a-f]+", self.run_id)
                                      else sum(self.run_id.encode()))
                rec.update(subnet=str(net), gateway=str(next(net.hosts())),
                           bridge=br, dir=str(self.base_dir), hosts=rec.get("hosts") or [])
                self._save(rec)
                checkpoint("local.subnet_picked")
            net = ipaddress.ip_network(rec["subnet"])
            br = rec["bridge"]
            idx = ipr.link_lookup(ifname=br)
            if not idx:
                try:
                    ipr.link("add", ifname=br, kind="bridge")
                except NetlinkError as e:
                    raise ProviderError(f"cannot create bridge {br}: {e}") from None
                checkpoint("local.bridge_created")
                idx = ipr.link_lookup(ifname=br)
            idx = idx[0]
            have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=socket.AF_INET)}
            if rec["gateway"] not in have:
                try:
                    ipr.addr("add", index=idx, address=rec["gateway"], prefixlen=net.prefixlen)
                except NetlinkError as e:
                    raise ProviderError(f"cannot put {rec['gateway']}/{net.prefixlen} on bridge {br}: {e}") from None
                checkpoint("local.bridge_addressed")
            ipr.link("set", index=idx, state="up")
        return rec

    # ------------------------------------------------------------------ host files
    def _write_host_files(self, plan: HostPlan, plans: List[HostPlan], pubkey: str, use_pam: bool) -> None:
        d = self.host_dir(plan.alias)
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
        from enos.ssh.client import ssh_config_value as q     # paths may hold spaces
        (d / "sshd_config").write_text(f"""\
# sshd of enos local host {plan.alias} (namespace {plan.ns}, run {self.run_id})
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

    def _host_keys(self, plans: List[HostPlan]) -> None:
        """Give each host without one an ed25519 host key (in-process with ``cryptography``,
        an ansible-core dependency, or with ``ssh-keygen`` run in parallel when it is
        missing). Raises ProviderError if ssh-keygen fails."""
        missing = []
        for p in plans:
            key = self.host_dir(p.alias) / "ssh_host_ed25519_key"
            if not (key.exists() and key.with_suffix(".pub").exists()):
                for f in (key, key.with_suffix(".pub")):
                    f.unlink(missing_ok=True)
                missing.append((p, key))
        if not missing:
            return
        try:
            from cryptography.hazmat.primitives import serialization as ser
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        except ImportError:
            ser = None
        if ser is not None:
            for p, key in missing:
                k = Ed25519PrivateKey.generate()
                fd = os.open(str(key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(k.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption()))
                pub = k.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
                key.with_suffix(".pub").write_text(f"{pub} {p.alias}@enos-{self.run_id}\n")
            return
        procs = [(p, subprocess.Popen(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{p.alias}@enos-{self.run_id}",
             "-f", str(key)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)) for p, key in missing]
        errors = []
        for p, proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0:
                errors.append(f"{p.alias}: {out.strip()}")
        if errors:
            raise ProviderError("ssh-keygen failed for host keys: " + "; ".join(errors))

    def host_key(self, alias: str) -> str:
        """Return the public host key of ``alias`` as ``"ssh-ed25519 AAAA..."``."""
        text = (self.host_dir(alias) / "ssh_host_ed25519_key.pub").read_text().split()
        return " ".join(text[:2])

    # ------------------------------------------------------------------ namespaces
    def _create_netns(self, ipr, plan: HostPlan, rec: dict) -> None:
        """Create the namespace, its veth pair and addressing; attach the veth to the bridge."""
        from pyroute2 import IPRoute, NetlinkError
        from enos.local import netns

        prefix = ipaddress.ip_network(rec["subnet"]).prefixlen
        root_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)

        def inside():
            checkpoint("local.netns_created")
            with IPRoute() as n:
                n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")
                n.link("add", ifname="eth0", kind="veth", peer={"ifname": plan.veth, "net_ns_fd": root_fd})
                checkpoint("local.veth_created")
                eth0 = n.link_lookup(ifname="eth0")[0]
                n.addr("add", index=eth0, address=plan.address, prefixlen=prefix)
                n.link("set", index=eth0, state="up")
                n.route("add", dst="default", gateway=rec["gateway"])
            checkpoint("local.netns_configured")

        try:
            netns.run_in_new_netns(plan.ns, inside)
            idx = ipr.link_lookup(ifname=plan.veth)
            if not idx:
                raise ProviderError(f"veth {plan.veth} of {plan.alias} vanished right after its creation")
            ipr.link("set", index=idx[0], master=ipr.link_lookup(ifname=rec["bridge"])[0], state="up")
            checkpoint("local.veth_attached")
        except FileExistsError:
            raise ProviderError(f"network namespace {plan.ns} already exists (left over by a crash?); "
                                f"run 'enos destroy' first") from None
        except (OSError, NetlinkError) as e:
            raise ProviderError(f"cannot set up namespace {plan.ns} for {plan.alias}: {e}") from None
        finally:
            os.close(root_fd)

    def _start_sshd(self, sshd: str, plan: HostPlan) -> int:
        """Start ``sshd -D`` inside the host's namespace, detached in its own session; return
        its PID (the sshd's own: ip, unshare and sh exec into it)."""
        d = self.host_dir(plan.alias)
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

    def _wait_sshd(self, plans: List[HostPlan]) -> None:
        """Wait until each host's sshd accepts TCP connections. Raises ProviderError with the
        sshd's own error if it exited, or after SSHD_READY_TIMEOUT."""
        from enos.local import netns
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
                    d = self.host_dir(alias)
                    logs = " ".join(f.read_text().strip() for f in (d / "start.log", d / "sshd.log") if f.exists())
                    raise ProviderError(f"sshd of {alias} ({p.ns}) exited at start: {logs or 'no log'}")
            if not pending:
                break
            if time.monotonic() > deadline:
                raise ProviderError(f"sshd did not listen within {SSHD_READY_TIMEOUT:.0f}s on: "
                                    + ", ".join(f"{a} ({p.address})" for a, p in pending.items()))
            time.sleep(0.01)

    def _healthy(self, plan: HostPlan) -> bool:
        from enos.local import netns
        if not plan.pid or not netns.netns_exists(plan.ns) or not process.alive(plan.pid):
            return False
        return process.same_netns(plan.pid, netns.netns_path(plan.ns))

    # ------------------------------------------------------------------ init
    def init(self, force_deploy: bool = False) -> Resources:
        """Create (or re-find) the bridge, namespaces and sshds; return the hosts and the
        subnet's remaining addresses as an IP pool.

        Raises NotRoot (exit 2) when not root, before creating anything; ConfigError for a
        subnet clashing with this machine's; ProviderError when a step fails."""
        sshd = self._preflight()
        from pyroute2 import IPRoute
        from enos.local import netns
        from enos.local import guard
        with _subnet_lock():
            try:
                added = guard.ensure_rules()
            except (OSError, subprocess.SubprocessError) as e:
                raise ProviderError(f"cannot keep {guard.RANGE_TEXT} local (policy rules): {e}") from None
        for rule in added:
            self.ctx.log.info("installed %s", rule)

        pubkey = self.ctx.ssh_pubkey
        rec = self.ctx.journal.get(JOURNAL_KEY) or {}
        with IPRoute() as ipr:
            rec = self._ensure_bridge(ipr, rec)
            net = ipaddress.ip_network(rec["subnet"])
            plans = self._plan(net, rec["gateway"])
            old = {h["alias"]: HostPlan(**h) for h in rec.get("hosts", [])}
            # forget hosts no longer asked for (after tearing them down)
            stale = [p for a, p in old.items() if a not in {q.alias for q in plans}]
            keep, todo = [], []
            for p in plans:
                prev = old.get(p.alias)
                if prev is not None and prev.ns == p.ns and prev.address == p.address \
                        and not force_deploy and self._healthy(prev):
                    p.pid, p.start = prev.pid, prev.start
                    keep.append(p)
                else:
                    todo.append(p)
            # record every name before creating anything
            rec["hosts"] = [p.to_dict() for p in plans] + [s.to_dict() for s in stale]
            self._save(rec)
            checkpoint("local.hosts_planned")
            if stale or todo:
                left = self._teardown_hosts(ipr, stale + todo)
                if left:
                    raise ProviderError("cannot clear previous hosts: " + "; ".join(left))
            rec["hosts"] = [p.to_dict() for p in plans]
            self._save(rec)

            with self.ctx.progress.task(f"creating {len(todo)} local host(s)", total=len(todo)) as t:
                use_pam = root_login_needs_pam() and os.path.exists("/etc/pam.d/sshd")
                for p in todo:
                    self._write_host_files(p, plans, pubkey, use_pam)
                self._host_keys(todo)
                for p in todo:
                    self._create_netns(ipr, p, rec)
                for p in todo:
                    p.pid = self._start_sshd(sshd, p)
                    p.start = process.start_time(p.pid)
                    checkpoint("local.sshd_started")
                    t.advance()
                rec["hosts"] = [p.to_dict() for p in plans]
                self._save(rec)
                checkpoint("local.sshd_recorded")
                self._wait_sshd(todo)

        hosts = [Host(alias=p.alias, address=p.address, user="root", port=22,
                      keyfile=str(self.ctx.ssh_key) if self.ctx.ssh_key else None,
                      roles=list(p.roles), host_key=self.host_key(p.alias),
                      extra={"enos_scratch": str(self.host_dir(p.alias) / "scratch"),
                             "enos_netns": p.ns, "enos_hostname": p.hostname})
                 for p in plans]
        pool = IpPool.from_range(rec["subnet"], exclude=[p.address for p in plans],
                                 gateway=rec["gateway"], name=rec["bridge"])
        return Resources(hosts=hosts, networks=[pool])

    # ------------------------------------------------------------------ teardown
    def _teardown_hosts(self, ipr, plans: List[HostPlan]) -> List[str]:
        """Kill every process of the hosts' namespaces, remove the namespaces, make sure their
        veths are gone. Return what is left (empty when all went)."""
        from pyroute2 import NetlinkError
        from enos.local import netns
        if not plans:
            return []
        left: List[str] = []
        names = [p.ns for p in plans]
        pids = {pid for lst in netns.netns_pids(names).values() for pid in lst}
        pids |= {p.pid for p in plans if p.pid and process.alive(p.pid) and self._is_ours(p.pid, p.start)}
        for pid in process.end_pids(pids):
            left.append(f"process {pid}")
        for p in plans:
            try:
                netns.remove_netns(p.ns)
            except OSError as e:
                left.append(f"namespace {p.ns} ({e})")
        # the kernel deletes a removed namespace's veths asynchronously, in one batch
        veths = {p.veth for p in plans}
        deadline = time.monotonic() + 3.0
        while True:
            present = veths & self._link_names(ipr)
            if not present or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        for v in sorted(present):
            try:
                ipr.link("del", ifname=v)
            except NetlinkError as e:
                if e.code != 19:  # ENODEV: gone meanwhile
                    left.append(f"veth {v} ({e})")
        # a re-created host gets a new MAC: drop the bridge's stale ARP entries, or this
        # machine keeps sending to the old MAC until the entry expires (seconds)
        br = ipr.link_lookup(ifname=_bridge_name(self.run_id))
        for p in plans if br else ():
            try:
                ipr.neigh("del", dst=p.address, ifindex=br[0])
            except NetlinkError:
                pass                     # no entry: nothing to drop
        return left

    def _is_ours(self, pid: int, start: Optional[int] = None) -> bool:
        """True when ``pid`` is one of this env's sshds: its recorded start time matches
        (``start``), or, not recorded, one of its arguments is a file of this run's host
        dirs (``.../local-<run id>/<alias>/sshd_config``)."""
        from enos.local import netns
        if start is not None:
            return process.start_time(pid) == start
        return pid in process.pids_with_arg(self._our_arg)

    def _our_arg(self, arg: str) -> bool:
        """True for an argument naming a file of this run's host dirs (exact run id)."""
        parts = Path(arg).parts
        return len(parts) >= 3 and parts[-3] == f"local-{self.run_id}" and parts[-1] == "sshd_config"

    def _our_link(self, name: str) -> bool:
        """True for this run's bridge or veths: ``eb<run id>``, ``ev<run id><n>`` (exact
        run id, then only digits: another run's id is never matched by its prefix)."""
        rid = self.run_id
        return name == f"eb{rid}" or (name.startswith(f"ev{rid}") and name[2 + len(rid):].isdigit())

    def _our_netns(self, name: str) -> bool:
        rid = self.run_id
        return name.startswith(f"enos-{rid}-") and name[len(f"enos-{rid}-"):].isdigit()

    @staticmethod
    def _link_names(ipr) -> set:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}

    def destroy(self) -> None:
        """Stop every process of each recorded namespace, remove veths, namespaces, bridge and
        per-host files. Idempotent (nothing recorded or already gone = done). Raises
        DestroyIncomplete listing what is left; NotRoot if there is something to remove
        and we are not root."""
        rec = self.ctx.journal.get(JOURNAL_KEY)
        if not rec:
            return
        if os.geteuid() != 0:
            raise NotRoot("destroying local hosts needs root")
        from pyroute2 import IPRoute, NetlinkError
        left: List[str] = []
        plans = [HostPlan(**h) for h in rec.get("hosts", [])]
        with IPRoute() as ipr:
            left += self._teardown_hosts(ipr, plans)
            # sshds recorded by nothing but their command line (crash before the PID record)
            from enos.local import netns
            strays = process.pids_with_arg(self._our_arg)
            left += [f"process {p}" for p in process.end_pids(strays)]
            br = rec.get("bridge")
            if br and not left:
                try:
                    ipr.link("del", ifname=br)
                except NetlinkError as e:
                    if e.code != 19:
                        left.append(f"bridge {br} ({e})")
            elif br:
                left.append(f"bridge {br} (kept: hosts still attached)")
        if left:
            raise DestroyIncomplete(left)
        shutil.rmtree(rec.get("dir") or self.base_dir, ignore_errors=True)
        self.ctx.journal.forget(JOURNAL_KEY)

    def sweep(self) -> List[str]:
        """Remove every namespace ``enos-<run_id>-<n>``, link ``eb<run_id>``/``ev<run_id><n>``
        and every process inside those namespaces or started with a file of
        ``local-<run_id>/`` as an argument, without any journal — matching the run id
        exactly, never as a prefix of another run's. Return what was removed. Raises
        DestroyIncomplete if something resists, NotRoot when not root."""
        if os.geteuid() != 0:
            raise NotRoot("sweeping local hosts needs root")
        from pyroute2 import IPRoute, NetlinkError
        from enos.local import netns
        rid = self.run_id
        removed: List[str] = []
        left: List[str] = []
        names = [n for n in netns.list_netns(f"enos-{rid}-") if self._our_netns(n)]
        pids = {p for lst in netns.netns_pids(names).values() for p in lst}
        pids |= set(process.pids_with_arg(self._our_arg))
        survivors = process.end_pids(pids)
        removed += [f"process {p}" for p in sorted(pids - set(survivors))]
        left += [f"process {p}" for p in survivors]
        for n in names:
            try:
                if netns.remove_netns(n):
                    removed.append(f"namespace {n}")
            except OSError as e:
                left.append(f"namespace {n} ({e})")
        with IPRoute() as ipr:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and any(
                    n.startswith("ev") and self._our_link(n) for n in self._link_names(ipr)):
                time.sleep(0.01)
            for name in sorted(self._link_names(ipr)):
                if self._our_link(name):
                    try:
                        ipr.link("del", ifname=name)
                        removed.append(f"link {name}")
                    except NetlinkError as e:
                        if e.code != 19:
                            left.append(f"link {name} ({e})")
        if left:
            raise DestroyIncomplete(left)
        return removed

    def info(self) -> dict:
        """Return the subnet, bridge and each host's namespace and sshd PID."""
        rec = self.ctx.journal.get(JOURNAL_KEY) or {}
        return {"subnet": rec.get("subnet"), "gateway": rec.get("gateway"), "bridge": rec.get("bridge"),
                "hosts": {h["alias"]: {"namespace": h["ns"], "address": h["address"], "sshd_pid": h.get("pid")}
                          for h in rec.get("hosts", [])}}


PROVIDER = LocalProvider
