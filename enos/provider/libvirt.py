"""The ``libvirt`` provider: VMs on a local or remote libvirt host, through libvirt-python.

For an env of run id ``R`` on the hypervisor at ``uri`` (default ``qemu:///system``),
``init`` creates, each tagged with ``R`` (names and ``<metadata>``):

* a NAT network ``enos-R-net0`` (bridge ``enosR0``) with DHCP on the upper half of its
  CIDR and dnsmasq's ``no-ping``; the lower half (minus the gateway) is the IP pool;
  ``extra_networks`` become isolated networks ``enos-R-<name>``;
* per VM ``A``: a copy-on-write qcow2 overlay ``enos-R-A.qcow2`` on the base image, a seed
  volume ``enos-R-A-seed.img`` (env public key, hostname, the VM's own SSH host key — see
  :mod:`enos.libvirt.seed`) and a domain ``enos-R-A`` with a fresh MAC;

then starts the VMs in parallel, waits for their DHCP leases and (``wait_ssh``) for SSH.
The base image (``enos build libvirt``) is uploaded once into the storage pool as
``<image>.qcow2``/``.vmlinuz``/``.initrd`` volumes shared by every env (never deleted by
``destroy``); the base stays read-only, only overlays are written.

Every name, UUID and MAC is recorded in the journal before anything is created and
``checkpoint("libvirt.*")`` follows each side effect, so ``destroy`` (or ``sweep``,
which finds resources by the run id in their metadata) cleans up a crash at any line.
The base image, the KVM probe and the configuration are documented in
``docs/providers/libvirt.md``.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import time
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlparse

from enos import names
from enos.errors import (AuthError, ConfigError, DestroyIncomplete, EnosError, ProviderError,
                         Timeout, Unavailable, UsageError)
from enos.failpoint import checkpoint
from enos.libvirt.cleanup import not_found, remove_network, remove_volume
from enos.model import Check, Host, IpPool, Resources
from enos.provider.provider import DESTROY, IP_POOL, RESERVE, SWEEP, Provider

JOURNAL_KEY = "libvirt"
DEFAULT_URI = "qemu:///system"
#: VM sizes, as Enos' Vagrant flavours: name → (vCPUs, memory MiB)
FLAVOURS: Dict[str, Tuple[int, int]] = {
    "tiny": (1, 512), "small": (1, 1024), "medium": (2, 2048), "big": (3, 3072),
    "large": (4, 4096), "extra-large": (6, 6144),
}
#: compact-form labels that mean "the default flavour"
GENERIC_LABELS = ("machines", "default", "vms", "hosts")
_CIDR = {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$",
         "x-expected": "an IPv4 CIDR like 10.30.0.0/24"}

SAMPLE = """\
# enos reservation for the 'libvirt' provider: VMs on a libvirt host.
# First build the base image once:   enos build libvirt   (needs root, ~40 s, cached)
provider:
  type: libvirt
  # uri: qemu:///system            # or qemu+ssh://user@host/system
  # image: /path/to/image.qcow2    # default: the image built by 'enos build libvirt'
  # domain_type: auto              # kvm | qemu | auto (KVM only if a KVM guest really boots)
  # pool: default                  # storage pool for the overlays and seeds
  # network: {cidr: 10.30.0.0/24}  # default: a free /24 picked for this environment
  # jump: root@192.0.2.10          # SSH jump host to reach the VMs' network

resources:
  # flavours: tiny (1 CPU, 512 MiB), small (1, 1 GiB), medium (2, 2 GiB), big (3, 3 GiB),
  #           large (4, 4 GiB), extra-large (6, 6 GiB)
  tiny:
    control: 1
    compute: 1

# explicit form:
# resources:
#   machines:
#     - roles: [compute]
#       number: 2
#       cpus: 2
#       memory: 2048
#       networks: [data]           # names from provider.extra_networks
"""


def _lv():
    import libvirt
    return libvirt


def _quiet_libvirt():
    lv = _lv()
    lv.registerErrorHandler(lambda *_: None, None)
    return lv


def _code(err) -> int:
    try:
        return int(err.get_error_code())
    except (AttributeError, TypeError, ValueError):   # pragma: no cover - not a libvirtError
        return -1


@contextlib.contextmanager
def _upload_lock(key: str):
    """Hold an exclusive flock named after ``key`` (in /run/enos, else the temp dir) for
    the duration of the block: envs on this machine upload one base image in turn. The
    kernel releases it if the holder dies."""
    import fcntl
    import hashlib
    import tempfile
    name = "libvirt-base-" + hashlib.sha256(key.encode()).hexdigest()[:16] + ".lock"
    for d in ("/run/enos", os.path.join(tempfile.gettempdir(), f"enos-{os.getuid()}")):
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(d, name), os.O_RDWR | os.O_CREAT, 0o600)
            break
        except OSError:
            continue
    else:  # pragma: no cover - no writable place at all: upload without turn-taking
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _mac() -> str:
    b = secrets.token_bytes(3)
    return "52:54:00:%02x:%02x:%02x" % (b[0], b[1], b[2])


def _qcow2_virtual_size(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(32)
    if head[:4] != b"QFI\xfb":
        raise ProviderError(f"{path} is not a qcow2 image")
    return int.from_bytes(head[24:32], "big")


def default_cidrs(run_id: str, count: int = 32) -> List[str]:
    """Return candidate /24s for an env's NAT network, starting at one derived from
    ``run_id`` (10.100.0.0/24 .. 10.199.255.0/24), so concurrent envs rarely collide."""
    start = int(run_id, 16) if all(c in "0123456789abcdef" for c in run_id.lower()) and run_id else 0
    out = []
    for i in range(count):
        n = (start + i) % (100 * 256)
        out.append(f"10.{100 + n // 256}.{n % 256}.0/24")
    return out


def jump_default(uri: str) -> Optional[str]:
    """Return the SSH jump host implied by a remote URI (``qemu+ssh://user@host:port/...``
    → ``user@host:port``), or None for a local one."""
    u = urlparse(uri)
    if not u.hostname or "+ssh" not in (u.scheme or ""):
        return None
    out = (f"{u.username}@" if u.username else "") + u.hostname
    return out + (f":{u.port}" if u.port else "")


class LibvirtProvider(Provider):
    """VMs on a libvirt host: NAT network, qcow2 overlays, seed disks, domains."""

    type = "libvirt"
    description = "VMs on a local or remote libvirt host (qemu:///system, qemu+ssh://...)"
    capabilities = frozenset({RESERVE, DESTROY, IP_POOL, SWEEP})
    requires = ("libvirt",)
    extra = "libvirt"
    sample = SAMPLE
    schema = {
        "type": "object",
        "properties": {
            "type": {"const": "libvirt"},
            "uri": {"type": "string", "default": DEFAULT_URI, "minLength": 1,
                    "x-expected": "a libvirt URI like qemu:///system or qemu+ssh://user@host/system"},
            "image": {"type": "string", "minLength": 1,
                      "x-expected": "the path of a qcow2 image (see 'enos build libvirt')"},
            "domain_type": {"enum": ["auto", "kvm", "qemu", "test"], "default": "auto",
                            "x-expected": "one of auto, kvm, qemu"},
            "pool": {"type": "string", "minLength": 1,
                     "x-expected": "the name of a libvirt storage pool"},
            "user": dict(names.USER, default="root"),
            "jump": names.JUMP,
            "flavour": {"enum": sorted(FLAVOURS), "default": "tiny",
                        "x-expected": "one of " + ", ".join(FLAVOURS)},
            "network": {"type": "object",
                        "properties": {"cidr": _CIDR},
                        "additionalProperties": False},
            "extra_networks": {
                "type": "array",
                "items": {"type": "object",
                          "properties": {"name": {"type": "string", "pattern": r"^[a-z][a-z0-9]{0,7}$",
                                                  "x-expected": "a short lower-case name (≤ 8 characters)"},
                                         "cidr": _CIDR,
                                         "dhcp": {"type": "boolean", "default": True}},
                          "required": ["name", "cidr"], "additionalProperties": False}},
            "boot_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 600,
                             "x-expected": "a number of seconds > 0"},
            "wait_ssh": {"type": "boolean", "default": True},
            "cmdline": {"type": "string"},
        },
        "required": ["type"],
        "additionalProperties": False,
    }
    machine_schema = {
        "type": "object",
        "properties": {
            "flavour": {"enum": sorted(FLAVOURS), "x-expected": "one of " + ", ".join(FLAVOURS)},
            "cpus": {"type": "integer", "minimum": 1, "x-expected": "an integer ≥ 1"},
            "memory": {"type": "integer", "minimum": 128, "x-expected": "MiB, an integer ≥ 128"},
            "networks": {"type": "array", "items": {"type": "string"},
                         "x-expected": "a list of names from provider.extra_networks"},
        },
    }

    def __init__(self, ctx):
        super().__init__(ctx)
        self._conn = None

    # ------------------------------------------------------------------ options
    @property
    def opts(self) -> dict:
        """The provider options with defaults applied."""
        o = dict(self.ctx.options or {})
        o.setdefault("uri", DEFAULT_URI)
        # once something is booked, the env lives at the journal's URI (destroy, info and a
        # resume go there even if the reservation's uri was edited since; init refuses that)
        o["uri"] = self._journal().get("uri") or o["uri"]
        o.setdefault("domain_type", "auto")
        o.setdefault("user", "root")
        o.setdefault("flavour", "tiny")
        o.setdefault("boot_timeout", 600)
        o.setdefault("wait_ssh", True)
        return o

    @classmethod
    def _size(cls, config, m) -> Tuple[int, int]:
        base = (config.options or {}).get("flavour", "tiny")
        label = m.options.get("flavour") or m.label
        if label and label not in GENERIC_LABELS:
            if label not in FLAVOURS:
                import difflib
                close = difflib.get_close_matches(label, FLAVOURS, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                # point at the word written: 'flavour:' of an explicit machine, else the
                # compact label ('resources.<label>.<role>' → 'resources.<label>')
                explicit = m.options.get("flavour") or m.keypath.rsplit(".", 1)[-1].isdigit()
                where = f"{m.keypath}.flavour" if explicit else m.keypath.rsplit(".", 1)[0]
                raise config.error(where, f"unknown flavour '{label}'{hint}; flavours: "
                                          + ", ".join(FLAVOURS))
            base = label
        cpus, mem = FLAVOURS[base]
        return int(m.options.get("cpus", cpus)), int(m.options.get("memory", mem))

    @classmethod
    def validate(cls, config) -> None:
        """Check flavours, extra network names and CIDRs. Raises ConfigError."""
        o = config.options or {}
        cidrs = []
        if (o.get("network") or {}).get("cidr"):
            cidrs.append(("provider.network.cidr", o["network"]["cidr"]))
        extra = {}
        for i, n in enumerate(o.get("extra_networks") or []):
            if n["name"] in extra:
                raise config.error(f"provider.extra_networks.{i}.name", f"duplicate network '{n['name']}'")
            extra[n["name"]] = n
            cidrs.append((f"provider.extra_networks.{i}.cidr", n["cidr"]))
        nets = []
        for path, c in cidrs:
            try:
                from enos.libvirt.xml import split_network
                split_network(c)
                net = ipaddress.ip_network(c, strict=False)
            except ValueError as e:
                raise config.error(path, f"expected an IPv4 CIDR with at least 6 addresses: {e}") from None
            for p2, n2 in nets:
                if net.overlaps(n2):
                    raise config.error(path, f"{net} overlaps {n2} ({p2})")
            nets.append((path, net))
        for m in config.machines:
            cls._size(config, m)
            for name in m.options.get("networks") or []:
                if name not in extra:
                    raise config.error(m.keypath, f"network '{name}' is not in provider.extra_networks "
                                                  f"({', '.join(extra) or 'none defined'})")

    @classmethod
    def preflight(cls, config) -> None:
        """Raise (exit 2, before anything is created) if the base image is missing: the
        file of ``provider.image`` (ConfigError at that key), or, by default, the image
        of ``enos build libvirt`` for this machine."""
        img = (config.options or {}).get("image")
        if img:
            p = Path(img).expanduser()
            if not p.is_absolute() and config.base_dir:
                p = Path(config.base_dir) / p
            if not p.is_file():
                raise config.error("provider.image", f"image {p} not found; build one with "
                                                     f"'enos build libvirt --output DIR'")
            return
        from enos.libvirt.image import find_cached_image
        try:
            cached = find_cached_image()
        except EnosError:
            cached = None
        if cached is None:
            raise UsageError("no base image for the libvirt provider: run 'enos build libvirt' "
                             "(root, ~40 s, cached in ~/.cache/enos/images) or set provider.image")

    # ------------------------------------------------------------------ connection
    def conn(self):
        """Return the (cached) libvirt connection to ``uri``. Raises AuthError or
        Unavailable (daemon unreachable) naming the URI."""
        if self._conn is not None:
            return self._conn
        lv = _quiet_libvirt()
        uri = self.opts["uri"]
        try:
            self._conn = lv.open(uri)
        except lv.libvirtError as e:
            if _code(e) == lv.VIR_ERR_AUTH_FAILED:
                raise AuthError(f"libvirt at {uri} refused us: {e}") from None
            raise Unavailable(f"cannot reach libvirt at {uri}: {e} (is libvirtd running? "
                              f"for a remote host, does 'virsh -c {uri} list' work?)") from None
        return self._conn

    def close(self) -> None:
        """Close the libvirt connection if open (a new one is opened when needed)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except _lv().libvirtError:   # closing a dead connection is fine
                pass
            self._conn = None

    def _is_test(self) -> bool:
        return self.conn().getType().upper() == "TEST"

    def _pool(self):
        conn = self.conn()
        lv = _lv()
        name = self.opts.get("pool")
        names = [name] if name else ["default", "default-pool"]
        for n in names:
            try:
                pool = conn.storagePoolLookupByName(n)
            except lv.libvirtError as e:
                if not_found(e):
                    continue
                raise ProviderError(f"storage pool {n}: {e}") from None
            if not pool.isActive():
                try:
                    pool.create(0)
                except lv.libvirtError as e:
                    raise ProviderError(f"storage pool {n} is inactive and cannot start: {e}") from None
            return pool
        want = name or "default"
        raise ProviderError(
            f"no storage pool '{want}' at {self.opts['uri']}; create one with: virsh -c {self.opts['uri']} "
            f"pool-define-as {want} dir --target /var/lib/libvirt/images && virsh -c {self.opts['uri']} "
            f"pool-build {want} && virsh -c {self.opts['uri']} pool-start {want} && "
            f"virsh -c {self.opts['uri']} pool-autostart {want}")

    # ------------------------------------------------------------------ image
    def image_files(self) -> dict:
        """Return the local files of the base image (``disk``, ``kernel``, ``initrd``,
        ``manifest``). Raises ProviderError if there is none (with the command to build it)."""
        from enos.libvirt.image import find_cached_image, image_files
        img = self.opts.get("image")
        if img:
            p = Path(img).expanduser()
            if not p.is_absolute() and self.ctx.config.base_dir:
                p = Path(self.ctx.config.base_dir) / p   # relative to the reservation file
            if not p.exists():
                raise ProviderError(f"image {p} not found (provider.image); build one with 'enos build libvirt'")
            return image_files(p)
        try:
            cached = find_cached_image()
        except EnosError:
            cached = None
        if cached is None:
            raise ProviderError("no base image: run 'enos build libvirt' (needs root, ~40 s, cached in "
                                "~/.cache/enos/images) or set provider.image")
        return image_files(cached)

    def image_arch(self, files: Optional[dict] = None) -> Tuple[str, Optional[str]]:
        """Return ``(guest arch, machine type)`` of the base image: from its manifest,
        else this machine's (a self-booting image of another arch needs a manifest)."""
        import json
        files = files if files is not None else self.image_files()
        if files.get("manifest"):
            m = json.loads(Path(files["manifest"]).read_text())
            if m.get("arch"):
                return m["arch"], m.get("machine")
        import os
        from enos.libvirt.image import ARCHES
        a = ARCHES.get(os.uname().machine)
        return (a["libvirt_arch"], a["machine"]) if a else (os.uname().machine, None)

    def _upload(self, pool, name: str, path: Path, fmt: str = "raw", mode: str = "0600") -> Any:
        """Create volume ``name`` (permissions ``mode``) in ``pool`` from the local file
        ``path`` (streamed, so it works with remote hosts); return the volume."""
        from enos.libvirt.xml import volume_xml
        lv = _lv()
        size = path.stat().st_size
        vol = pool.createXML(volume_xml(name, size, fmt=fmt, mode=mode), 0)
        try:
            st = self.conn().newStream(0)
            vol.upload(st, 0, size, 0)
            with open(path, "rb") as f:
                st.sendAll(lambda _s, n, fh: fh.read(n), f)
            st.finish()
        except lv.libvirtError as e:
            if _code(e) == lv.VIR_ERR_NO_SUPPORT and self._is_test():
                # the test driver cannot store data; nothing boots there anyway
                return vol
            try:
                vol.delete(0)
            except lv.libvirtError:
                pass
            raise ProviderError(f"upload of {path} to volume {name} failed: {e}") from None
        return vol

    def _vol(self, pool, name: str):
        lv = _lv()
        try:
            return pool.storageVolLookupByName(name)
        except lv.libvirtError as e:
            if not_found(e):
                return None
            raise

    def _base_volumes(self, pool, files: dict) -> dict:
        """Upload the base image files into the pool once (shared by every env); return
        their paths on the hypervisor: ``{"disk", "kernel", "initrd", "capacity"}``.
        Envs uploading the same base at once take turns (a flock per URI, pool and image
        on this machine); the second finds the first's upload complete."""
        stem = Path(files["disk"]).stem
        marker = f"{stem}.complete"
        wanted = [("disk", files["disk"], ".qcow2")]
        for k in ("kernel", "initrd"):
            if files.get(k):
                wanted.append((k, files[k], "." + k.replace("kernel", "vmlinuz")))
        if self._vol(pool, marker) is None:
            with _upload_lock(f"{self.opts['uri']} {pool.name()} {stem}"):
                self._upload_base(pool, stem, marker, wanted)
        out = {k: self._vol(pool, stem + suf).path() for k, _p, suf in wanted}
        out["capacity"] = _qcow2_virtual_size(Path(files["disk"]))
        return out

    def _upload_base(self, pool, stem: str, marker: str, wanted: list) -> None:
        """Under the upload lock: upload the base files unless another env just did."""
        pool.refresh(0)
        if self._vol(pool, marker) is None:
            with self.ctx.progress.task(f"uploading base image {stem} to pool {pool.name()}",
                                        total=len(wanted)) as t:
                for _k, path, suf in wanted:
                    old = self._vol(pool, stem + suf)
                    if old is not None:
                        old.delete(0)            # a partial upload from an interrupted run
                    self._upload(pool, stem + suf, Path(path), mode="0644")   # shared, read-only
                    t.advance()
                from enos.libvirt.xml import volume_xml
                pool.createXML(volume_xml(marker, 0, fmt="raw", mode="0644"), 0)
            pool.refresh(0)

    # ------------------------------------------------------------------ domain type
    def resolve_domain_type(self, kernel_path: Optional[str] = None) -> Tuple[str, str]:
        """Return ``(domain type, why)``: the configured one, or for ``auto`` KVM only if
        the hypervisor offers it and a kernel really boots under it (:mod:`enos.libvirt.kvm`),
        else QEMU emulation (TCG). Raises ProviderError if the asked type is not offered."""
        from enos.libvirt.xml import domain_types, emulator_of
        caps = self.conn().getCapabilities()
        try:
            arch = self.image_arch()[0]
        except EnosError:
            arch = "x86_64"
        offered = domain_types(caps, arch)
        want = self.opts["domain_type"]
        if want != "auto":
            if want not in offered:
                raise ProviderError(f"domain_type {want} is not offered by {self.opts['uri']} "
                                    f"(offered: {', '.join(offered) or 'none'})")
            return want, "asked for in the configuration"
        if "kvm" in offered and kernel_path:
            from enos.libvirt import kvm
            emulator = emulator_of(caps, arch) or f"qemu-system-{arch}"
            jump = self.opts.get("jump") or jump_default(self.opts["uri"])
            remote = urlparse(self.opts["uri"]).hostname
            ssh = ["ssh", "-o", "BatchMode=yes", jump] if remote and jump else None
            if remote and not ssh:
                ok, why = False, "cannot probe KVM on a remote host without SSH access"
            else:
                ok, why = kvm.probe(emulator, kernel_path, ssh=ssh, cache_key=remote or "local")
            if ok:
                return "kvm", why
            return ("qemu" if "qemu" in offered else offered[0]), why + "; using QEMU emulation (TCG)"
        if "qemu" in offered:
            if "kvm" in offered:
                return "qemu", ("the image has no kernel file to probe KVM with; using QEMU emulation "
                                "(TCG) — set domain_type: kvm if KVM works here")
            return "qemu", "the hypervisor does not offer KVM; using QEMU emulation (TCG)"
        if not offered:
            raise ProviderError(f"{self.opts['uri']} offers no {arch} domain type")
        return offered[0], f"the hypervisor only offers '{offered[0]}'"

    # ------------------------------------------------------------------ planning
    def _plan(self) -> dict:
        run = self.ctx.run_id
        o = self.opts
        main_cidr = (o.get("network") or {}).get("cidr")
        nets = [{"key": "net0", "name": f"enos-{run}-net0", "bridge": f"enos{run}0",
                 "cidr": main_cidr or default_cidrs(run)[0], "auto_cidr": not main_cidr,
                 "attempt": 0, "nat": True, "dhcp": True, "uuid": None}]
        for i, n in enumerate(o.get("extra_networks") or [], start=1):
            nets.append({"key": n["name"], "name": f"enos-{run}-{n['name']}", "bridge": f"enos{run}{i}",
                         "cidr": str(ipaddress.ip_network(n["cidr"], strict=False)), "auto_cidr": False,
                         "attempt": 0, "nat": False, "dhcp": bool(n.get("dhcp", True)), "uuid": None})
        vms = []
        counters: Dict[str, int] = {}
        for m in self.ctx.config.machines:
            cpus, mem = self._size(self.ctx.config, m)
            key = "-".join(m.roles) if m.roles else (m.label or "vm")
            for _ in range(int(m.count)):
                counters[key] = counters.get(key, 0) + 1
                alias = f"{key}-{counters[key]}"
                nics = [["net0", _mac()]] + [[n, _mac()] for n in (m.options.get("networks") or [])]
                vms.append({"alias": alias, "roles": list(m.roles), "cpus": cpus, "memory": mem,
                            "name": f"enos-{run}-{alias}", "uuid": str(uuidlib.uuid4()),
                            "overlay": f"enos-{run}-{alias}.qcow2",
                            "seed": f"enos-{run}-{alias}-seed.img", "nics": nics,
                            "console": f"enos-{run}-{alias}-console.log", "console_path": None,
                            "address": None, "host_key": None})
        return {"uri": o["uri"], "pool": None, "networks": nets, "vms": vms, "domain_type": None}

    def _journal(self) -> dict:
        return self.ctx.journal.get(JOURNAL_KEY) or {}

    def _save(self, rec: dict) -> None:
        self.ctx.journal.record(JOURNAL_KEY, rec)

    # ------------------------------------------------------------------ init
    def init(self, force_deploy: bool = False) -> Resources:
        """Create (or re-find, from the journal) the networks, volumes and domains; start
        the VMs; wait for their addresses (and SSH if ``wait_ssh``); return the hosts and
        one IP pool per network. Raises ProviderError, Unavailable, AuthError, Timeout."""
        if self.ctx.ssh_key is None:
            raise ProviderError("no env SSH key given to the libvirt provider")
        lv = _quiet_libvirt()
        rec = self._journal()
        configured = (self.ctx.options or {}).get("uri", DEFAULT_URI)
        if rec.get("uri") and rec["uri"] != configured:
            raise UsageError(f"this environment's VMs were created at {rec['uri']}, but provider.uri "
                             f"now says {configured}: put the uri back, or run 'enos destroy' (it "
                             f"frees what is at {rec['uri']}) before 'enos up'")
        if not rec.get("vms"):
            rec = self._plan()
            self._save(rec)                         # every name, UUID and MAC, before anything
        conn = self.conn()
        pool = self._pool()
        rec["pool"] = pool.name()
        self._save(rec)
        files = self.image_files()
        base = self._base_volumes(pool, files)
        checkpoint("libvirt.base_uploaded")
        if not rec.get("domain_type"):
            dtype, why = self.resolve_domain_type(base.get("kernel"))
            self.ctx.progress.info(f"libvirt: domain type {dtype} ({why})")
            rec["domain_type"], rec["domain_type_why"] = dtype, why
            self._save(rec)
        for net in rec["networks"]:
            self._ensure_network(conn, rec, net)
        cmdline = self.opts.get("cmdline")
        if cmdline is None and files.get("manifest"):
            import json
            cmdline = json.loads(Path(files["manifest"]).read_text()).get("cmdline")
        base["arch"], base["machine"] = self.image_arch(files)
        for vm in rec["vms"]:
            self._ensure_vm(conn, pool, rec, vm, base, cmdline)
        self._start_all(conn, rec)
        checkpoint("libvirt.domains_started")
        self._wait_addresses(conn, rec)
        hosts = self._hosts(rec)
        if self.opts["wait_ssh"] and hosts:
            self._wait_ssh(hosts, rec)
        return Resources(hosts=hosts, networks=self._pools(rec, hosts))

    def _ensure_network(self, conn, rec: dict, net: dict) -> None:
        from enos.libvirt.xml import network_xml
        lv = _lv()
        candidates = default_cidrs(self.ctx.run_id) if net["auto_cidr"] else [net["cidr"]]
        while True:
            try:
                n = conn.networkLookupByName(net["name"])
            except lv.libvirtError as e:
                if not not_found(e):
                    raise ProviderError(f"network {net['name']}: {e}") from None
                n = conn.networkDefineXML(network_xml(net["name"], net["bridge"], net["cidr"],
                                                      self.ctx.run_id, nat=net["nat"], dhcp=net["dhcp"]))
                net["uuid"] = n.UUIDString()
                self._save(rec)
                checkpoint("libvirt.network_defined")
            if n.isActive():
                return
            try:
                n.create()
                checkpoint("libvirt.network_started")
                return
            except lv.libvirtError as e:
                # the subnet is in use on the hypervisor: try the next candidate /24
                if not net["auto_cidr"] or net["attempt"] + 1 >= len(candidates):
                    raise ProviderError(f"cannot start network {net['name']} ({net['cidr']}): {e}") from None
                n.undefine()
                net["attempt"] += 1
                net["cidr"] = candidates[net["attempt"]]
                net["uuid"] = None
                self._save(rec)

    def _ensure_vm(self, conn, pool, rec: dict, vm: dict, base: dict, cmdline: Optional[str]) -> None:
        from enos.libvirt.seed import build_seed, host_key
        from enos.libvirt.xml import domain_xml, volume_xml
        lv = _lv()
        vdir = Path(self.ctx.env_dir) / "libvirt" / vm["alias"]
        if self._vol(pool, vm["overlay"]) is None:
            pool.createXML(volume_xml(vm["overlay"], base["capacity"], backing=base["disk"]), 0)
            checkpoint("libvirt.overlay_created")
        if vm.get("host_key") is None:
            vm["host_key"] = host_key(vdir / "seed", f"{vm['alias']}@enos-{self.ctx.run_id}")
            self._save(rec)
        if self._vol(pool, vm["seed"]) is None:
            from enos.libvirt.xml import split_network
            dns = split_network(rec["networks"][0]["cidr"])["gateway"]   # libvirt's dnsmasq
            img = build_seed(vdir, vm["alias"], self.ctx.ssh_pubkey, f"{vm['alias']}@enos-{self.ctx.run_id}",
                             resolv_conf=f"nameserver {dns}\n")
            self._upload(pool, vm["seed"], img)
            checkpoint("libvirt.seed_created")
        if vm.get("console") and not vm.get("console_path"):
            # the serial console log is a volume of the pool: its path comes from libvirt,
            # and destroy deletes it through libvirt (remote hypervisors too)
            vol = self._vol(pool, vm["console"]) or pool.createXML(volume_xml(vm["console"], 0, fmt="raw"), 0)
            vm["console_path"] = vol.path()
            self._save(rec)
        try:
            conn.lookupByUUIDString(vm["uuid"])
            return
        except lv.libvirtError as e:
            if not not_found(e):
                raise ProviderError(f"domain {vm['name']}: {e}") from None
        nets = {n["key"]: n["name"] for n in rec["networks"]}
        xml = domain_xml(name=vm["name"], uuid=vm["uuid"], run_id=self.ctx.run_id, alias=vm["alias"],
                         domain_type=rec["domain_type"], cpus=vm["cpus"], memory_mib=vm["memory"],
                         pool=pool.name(), overlay=vm["overlay"], seed=vm["seed"],
                         nics=[(nets[k], mac) for k, mac in vm["nics"]],
                         kernel=base.get("kernel"), initrd=base.get("initrd"), cmdline=cmdline,
                         console_log=self._console_log(vm), arch=base.get("arch", "x86_64"),
                         machine=base.get("machine"))
        try:
            conn.defineXML(xml)
        except lv.libvirtError as e:
            raise ProviderError(f"cannot define domain {vm['name']}: {e}") from None
        checkpoint("libvirt.domain_defined")

    @staticmethod
    def _console_log(vm: dict) -> Optional[str]:
        """The hypervisor-side path of the VM's serial console log (a volume of the pool)."""
        return vm.get("console_path")

    def _start_all(self, conn, rec: dict) -> None:
        lv = _lv()

        def start(vm):
            dom = conn.lookupByUUIDString(vm["uuid"])
            if not dom.isActive():
                try:
                    dom.create()
                except lv.libvirtError as e:
                    return f"{vm['alias']}: {e}"
            return None
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(rec["vms"])))) as ex:
            errors = [e for e in ex.map(start, rec["vms"]) if e]
        if errors:
            raise ProviderError("cannot start VMs: " + "; ".join(errors))

    def _address_of(self, conn, rec: dict, vm: dict) -> Optional[str]:
        lv = _lv()
        net0 = ipaddress.ip_network(rec["networks"][0]["cidr"], strict=False)
        mac = vm["nics"][0][1].lower()
        dom = conn.lookupByUUIDString(vm["uuid"])
        try:
            ifaces = dom.interfaceAddresses(lv.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE) or {}
        except lv.libvirtError:
            ifaces = {}
        for info in ifaces.values():
            if (info.get("hwaddr") or "").lower() != mac:
                continue
            for a in info.get("addrs") or []:
                if a.get("type") == lv.VIR_IP_ADDR_TYPE_IPV4 and ipaddress.ip_address(a["addr"]) in net0:
                    return a["addr"]
        return None

    def _wait_addresses(self, conn, rec: dict) -> None:
        timeout = float(self.opts["boot_timeout"])
        deadline = time.monotonic() + timeout
        pending = [vm for vm in rec["vms"] if not vm.get("address")]
        with self.ctx.progress.task("waiting for the VMs' DHCP leases", total=len(rec["vms"])) as t:
            t.update(completed=len(rec["vms"]) - len(pending))
            while pending:
                for vm in list(pending):
                    addr = self._address_of(conn, rec, vm)
                    if addr:
                        vm["address"] = addr
                        pending.remove(vm)
                        self._save(rec)
                        t.update(f"{len(pending)} left" if pending else "")
                        t.advance()
                if not pending:
                    break
                if time.monotonic() > deadline:
                    late = ", ".join(f"{vm['alias']} (console log: {self._console_log(vm)} on the "
                                     f"hypervisor)" for vm in pending)
                    raise Timeout(f"no DHCP lease within {timeout:.0f}s for {late}")
                t.update(f"{len(pending)} left, e.g. {pending[0]['alias']}")
                time.sleep(1.0)
        checkpoint("libvirt.addresses")

    def _hosts(self, rec: dict) -> List[Host]:
        jump = self.opts.get("jump") or jump_default(self.opts["uri"])
        nets = {n["key"]: n["name"] for n in rec["networks"]}
        return [Host(alias=vm["alias"], address=vm["address"], user=self.opts["user"], port=22,
                     keyfile=str(self.ctx.ssh_key), roles=list(vm["roles"]), jump=jump,
                     host_key=vm.get("host_key"),
                     extra={"enos_libvirt_domain": vm["name"],
                            "enos_libvirt_console_log": self._console_log(vm),
                            "enos_libvirt_networks": {nets[k]: mac for k, mac in vm["nics"]}})
                for vm in rec["vms"]]

    def _wait_ssh(self, hosts: List[Host], rec: dict) -> None:
        from enos.errors import SshUnreachable
        from enos.ssh.client import render_known_hosts, render_ssh_config, wait_for_ssh
        from enos.state import atomic_write
        d = Path(self.ctx.env_dir) / "libvirt"
        d.mkdir(parents=True, exist_ok=True)
        kh = d / "known_hosts"
        atomic_write(kh, render_known_hosts(hosts))
        cfg = d / "ssh_config"
        atomic_write(cfg, render_ssh_config(hosts, kh, self.ctx.run_id))
        try:
            wait_for_ssh(cfg, [h.alias for h in hosts], timeout=float(self.opts["boot_timeout"]),
                         progress=self.ctx.progress, description="booting the VMs (until sshd answers)")
        except SshUnreachable as e:
            logs = {vm["alias"]: self._console_log(vm) for vm in rec["vms"]}
            late = "; ".join(f"{a}: {err} (console log: {logs.get(a)} on the hypervisor)"
                             for a, err in sorted(e.hosts.items()))
            raise Timeout(f"VMs did not answer SSH within {self.opts['boot_timeout']}s: {late}") from None
        checkpoint("libvirt.ssh_ready")

    def _pools(self, rec: dict, hosts: List[Host]) -> List[IpPool]:
        from enos.libvirt.xml import split_network
        used = {h.address for h in hosts}
        out = []
        for n in rec["networks"]:
            plan = split_network(n["cidr"])
            roles = sorted({r for vm in rec["vms"] for k, _ in vm["nics"] if k == n["key"]
                            for r in vm["roles"]}) if n["key"] != "net0" else []
            out.append(IpPool.from_range(plan["cidr"], exclude=used, start=plan["pool_start"],
                                         end=plan["pool_end"], gateway=plan["gateway"],
                                         dns=plan["gateway"] if n["nat"] else None,
                                         roles=roles, name=n["name"]))
        return out

    # ------------------------------------------------------------------ names
    def before_preinstall(self, env) -> None:
        """Give every VM the env's host names: an ``# enos env`` block (``address alias``
        per VM, first NIC) replaces any earlier one in each VM's ``/etc/hosts``, so VMs
        reach each other by alias. Raises CommandFailed naming the VMs where it failed."""
        import shlex
        from enos.ssh.remote import run_command
        hosts = env.resources.hosts if env.resources else []
        if not hosts:
            return
        block = (f"# BEGIN enos env {self.ctx.run_id}\n"
                 + "".join(f"{h.address}\t{h.alias}\n" for h in hosts)
                 + f"# END enos env {self.ctx.run_id}\n")
        cmd = (f"sed -i '/^# BEGIN enos env /,/^# END enos env /d' /etc/hosts && "
               f"printf %s {shlex.quote(block)} >> /etc/hosts")
        if self.opts["user"] != "root":
            cmd = f"sudo -n sh -c {shlex.quote(cmd)}"
        run_command(env.ssh_config, hosts, cmd)

    # ------------------------------------------------------------------ destroy
    def destroy(self) -> None:
        """Destroy and undefine the recorded domains, delete their overlays and seeds, then
        the networks. Not-found counts as destroyed. Raises DestroyIncomplete listing what
        is left (after trying everything)."""
        rec = self._journal()
        if not rec:
            return
        lv = _quiet_libvirt()
        conn = self.conn()
        left: List[str] = []
        for vm in rec.get("vms", []):
            err = self._remove_domain(conn, uuid=vm["uuid"], name=vm["name"])
            if err:
                left.append(err)
        pool = None
        if rec.get("pool"):
            try:
                pool = conn.storagePoolLookupByName(rec["pool"])
            except lv.libvirtError as e:
                if not not_found(e):
                    left.append(f"pool {rec['pool']}: {e}")
        if pool is not None:
            for vm in rec.get("vms", []):
                for name in (vm["overlay"], vm["seed"], *self._console_volumes(pool, vm.get("console"))):
                    err = remove_volume(pool, name)
                    if err:
                        left.append(err)
        for net in rec.get("networks", []):
            err = remove_network(conn, net["name"])
            if err:
                left.append(err)
        self._remove_qemu_logs([vm["name"] for vm in rec.get("vms", [])])
        if left:
            raise DestroyIncomplete(left)
        self.ctx.journal.forget(JOURNAL_KEY)

    def _remove_domain(self, conn, uuid: Optional[str] = None, name: Optional[str] = None,
                       dom=None) -> Optional[str]:
        lv = _lv()
        try:
            if dom is None:
                try:
                    dom = conn.lookupByUUIDString(uuid)
                except lv.libvirtError as e:
                    if not not_found(e) or not name:
                        raise
                    dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            checkpoint("libvirt.destroy.domain_stopped")
            flags = lv.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | lv.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            try:
                dom.undefineFlags(flags)
            except lv.libvirtError:
                dom.undefine()
            return None
        except lv.libvirtError as e:
            if not_found(e):
                return None
            return f"domain {name or uuid}: {e}"

    def _console_volumes(self, pool, console: Optional[str]) -> List[str]:
        """The console log volume and its rotations (virtlogd's ``.0``, ``.1``...)."""
        if not console:
            return []
        try:
            pool.refresh(0)
            names = [v.name() for v in pool.listAllVolumes(0)]
        except _lv().libvirtError:
            names = []
        return [console] + [n for n in names if n.startswith(console + ".")]

    def _remove_qemu_logs(self, domains: List[str]) -> None:
        """Delete libvirt's QEMU logs of ``domains`` on a local daemon (a remote host's
        stay there: libvirt's API cannot reach them); a failure is reported, not fatal."""
        from enos.libvirt.logs import remove_domain_logs
        for problem in remove_domain_logs(self.opts["uri"], domains):
            self.ctx.progress.info(f"libvirt: could not remove {problem}")

    # ------------------------------------------------------------------ sweep
    def sweep(self) -> List[str]:
        """Remove every domain and network whose ``<metadata>`` carries this run id, and
        every volume named ``enos-<run id>-*`` in the pools; return what was removed.
        Never acts on an empty run id. Raises DestroyIncomplete if something resists."""
        from enos.libvirt.xml import run_id_of
        run = self.ctx.run_id
        if not run or len(run) < 4:
            raise ProviderError("refusing to sweep without a run id")
        lv = _quiet_libvirt()
        conn = self.conn()
        removed, left = [], []
        swept_domains = []
        for dom in conn.listAllDomains(0):
            if run_id_of(dom.XMLDesc(0)) == run:
                name = dom.name()
                err = self._remove_domain(conn, dom=dom, name=name)
                (left if err else removed).append(err or f"domain {name}")
                swept_domains.append(name)
        for pool in conn.listAllStoragePools(lv.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            for vol in pool.listAllVolumes(0):
                if vol.name().startswith(f"enos-{run}-"):
                    err = remove_volume(pool, vol.name())
                    (left if err else removed).append(err or f"volume {vol.name()}")
        for net in conn.listAllNetworks(0):
            if run_id_of(net.XMLDesc(0)) == run:
                err = remove_network(conn, net.name())
                (left if err else removed).append(err or f"network {net.name()}")
        self._remove_qemu_logs(swept_domains)
        if left:
            raise DestroyIncomplete(left)
        return removed

    # ------------------------------------------------------------------ check / info
    def check(self) -> List[Check]:
        """Return the checks of ``enos check`` (:mod:`enos.libvirt.diagnose`): the daemon
        and its version, virtlogd, the storage pool, the network driver, the base image,
        then KVM or QEMU emulation (TCG: a warning, VMs work but slower). Each failing
        check carries the exact command that fixes it. Books nothing, starts nothing."""
        from enos.libvirt.diagnose import diagnose
        uri = self.opts["uri"]
        conn, out = diagnose(uri, self.opts.get("pool"))
        kernel = None
        try:
            files = self.image_files()
            out.append(Check("base image", True, str(files["disk"])))
            kernel = str(files["kernel"]) if files.get("kernel") else None
        except EnosError as e:
            out.append(Check("base image", False, str(e),
                             "enos build libvirt" if not self.opts.get("image")
                             else "enos build libvirt --output DIR, then set provider.image"))
        if conn is None:
            return out
        self._conn = conn
        try:
            dtype, why = self.resolve_domain_type(kernel if not urlparse(uri).hostname else None)
        except EnosError as e:
            out.append(Check("domain type", False, str(e), "set provider.domain_type to one the host offers"))
            return out
        if dtype == "kvm":
            out.append(Check("KVM", True, why))
        else:
            out.append(Check("KVM", True, f"domain type {dtype}: {why}", warn=True,
                             fix="none needed: VMs boot under QEMU emulation (TCG), several times "
                                 "slower; for KVM, run on a machine with working hardware "
                                 "virtualisation"))
        return out

    def info(self) -> dict:
        """Return per-VM domain state, address and console log, and the domain type."""
        rec = self._journal()
        if not rec:
            return {}
        out: Dict[str, Any] = {"uri": rec.get("uri"), "domain_type": rec.get("domain_type"),
                               "networks": {n["name"]: n["cidr"] for n in rec.get("networks", [])}, "vms": {}}
        lv = _quiet_libvirt()
        try:
            conn = self.conn()
        except EnosError as e:
            out["error"] = str(e)
            return out
        states = {lv.VIR_DOMAIN_RUNNING: "running", lv.VIR_DOMAIN_SHUTOFF: "shut off",
                  lv.VIR_DOMAIN_PAUSED: "paused", lv.VIR_DOMAIN_CRASHED: "crashed"}
        for vm in rec.get("vms", []):
            try:
                st = states.get(conn.lookupByUUIDString(vm["uuid"]).state()[0], "other")
            except lv.libvirtError:
                st = "absent"
            out["vms"][vm["alias"]] = {"domain": vm["name"], "state": st, "address": vm.get("address"),
                                       "console_log": self._console_log(vm)}
        return out


PROVIDER = LibvirtProvider
