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

This module is the contract adapter (schema, init's sequence, destroy, sweep, check, info);
the rest is in :mod:`enos.libvirt`: ``session`` (options, connection, pool, base image,
domain type), ``plan`` (flavours, CIDRs, names, MACs), ``machines`` (networks, volumes,
domains, leases, sshd), ``storage`` (pools, volumes, uploads), ``cleanup``, ``xml``,
``seed``, ``image`` (``enos build libvirt``), ``kvm``, ``diagnose``, ``logs``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import urlparse

from enos import names
from enos.errors import DestroyIncomplete, EnosError, ProviderError, UsageError
from enos.failpoint import checkpoint
from enos.libvirt import image, machines
from enos.libvirt.cleanup import not_found, remove_domain, remove_network, remove_volume
from enos.libvirt.connection import quiet_libvirt
from enos.libvirt.diagnose import diagnose
from enos.libvirt.logs import remove_domain_logs
# FLAVOURS, default_cidrs, jump_default: re-exported (they were defined here)
from enos.libvirt.plan import (DEFAULT_URI, FLAVOURS, check_config, default_cidrs, jump_default,  # noqa: F401
                               make_plan)
from enos.libvirt.session import JOURNAL_KEY, Session
from enos.libvirt.storage import base_volumes, console_volumes
from enos.libvirt.xml import run_id_of
from enos.model import Check, Resources
from enos.provider.provider import DESTROY, IP_POOL, RESERVE, SWEEP, Provider

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
        self.session = Session(ctx)

    @property
    def opts(self) -> dict:
        """The provider options with defaults applied (the URI the journal recorded wins)."""
        return self.session.opts

    def conn(self):
        """Return the (cached) libvirt connection. Raises AuthError or Unavailable."""
        return self.session.conn()

    def close(self) -> None:
        """Close the libvirt connection if open (a new one is opened when needed)."""
        self.session.close()

    @classmethod
    def validate(cls, config) -> None:
        """Check flavours, extra network names and CIDRs. Raises ConfigError."""
        check_config(config)

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
        try:
            cached = image.find_cached_image()
        except EnosError:
            cached = None
        if cached is None:
            raise UsageError("no base image for the libvirt provider: run 'enos build libvirt' "
                             "(root, ~40 s, cached in ~/.cache/enos/images) or set provider.image")

    # ------------------------------------------------------------------ init
    def init(self, force_deploy: bool = False) -> Resources:
        """Create (or re-find, from the journal) the networks, volumes and domains; start
        the VMs; wait for their addresses (and SSH if ``wait_ssh``); return the hosts and
        one IP pool per network. Raises ProviderError, Unavailable, AuthError, Timeout."""
        s = self.session
        rec = self._planned()
        conn, pool = s.conn(), s.pool()
        rec["pool"] = pool.name()
        s.save(rec)
        files = s.image_files()
        base = base_volumes(conn, pool, files, s.opts["uri"], self.ctx.progress)
        checkpoint("libvirt.base_uploaded")
        if not rec.get("domain_type"):
            dtype, why = s.resolve_domain_type(base.get("kernel"))
            self.ctx.progress.info(f"libvirt: domain type {dtype} ({why})")
            rec["domain_type"], rec["domain_type_why"] = dtype, why
            s.save(rec)
        for net in rec["networks"]:
            machines.ensure_network(s, conn, rec, net)
        cmdline = s.opts.get("cmdline")
        if cmdline is None and files.get("manifest"):
            cmdline = json.loads(Path(files["manifest"]).read_text()).get("cmdline")
        base["arch"], base["machine"] = s.image_arch(files)
        for vm in rec["vms"]:
            machines.ensure_vm(s, conn, pool, rec, vm, base, cmdline)
        machines.start_all(conn, rec)
        checkpoint("libvirt.domains_started")
        machines.wait_addresses(s, conn, rec)
        hosts = machines.vm_hosts(s, rec)
        if s.opts["wait_ssh"] and hosts:
            machines.wait_ssh(s, hosts, rec)
        return Resources(hosts=hosts, networks=machines.vm_pools(rec, hosts))

    def _planned(self) -> dict:
        """The journal record, planned and journalled first if this env is new. Raises
        UsageError when the reservation's URI is not the one the env's VMs live at."""
        if self.ctx.ssh_key is None:
            raise ProviderError("no env SSH key given to the libvirt provider")
        rec = self.session.journal()
        configured = (self.ctx.options or {}).get("uri", DEFAULT_URI)
        if rec.get("uri") and rec["uri"] != configured:
            raise UsageError(f"this environment's VMs were created at {rec['uri']}, but provider.uri "
                             f"now says {configured}: put the uri back, or run 'enos destroy' (it "
                             f"frees what is at {rec['uri']}) before 'enos up'")
        if not rec.get("vms"):
            rec = make_plan(self.session)
            self.session.save(rec)                   # every name, UUID and MAC, before anything
        return rec

    def before_preinstall(self, env) -> None:
        """Give every VM the env's host names in its ``/etc/hosts`` (so VMs reach each
        other by alias). Raises CommandFailed naming the VMs where it failed."""
        machines.set_host_names(self.session, env)

    # ------------------------------------------------------------------ destroy
    def destroy(self) -> None:
        """Destroy and undefine the recorded domains, delete their overlays and seeds, then
        the networks. Not-found counts as destroyed. Raises DestroyIncomplete listing what
        is left (after trying everything)."""
        rec = self.session.journal()
        if not rec:
            return
        lv = quiet_libvirt()
        conn = self.conn()
        left: List[str] = [e for vm in rec.get("vms", [])
                           if (e := remove_domain(conn, uuid=vm["uuid"], name=vm["name"]))]
        pool = None
        if rec.get("pool"):
            try:
                pool = conn.storagePoolLookupByName(rec["pool"])
            except lv.libvirtError as e:
                if not not_found(e):
                    left.append(f"pool {rec['pool']}: {e}")
        if pool is not None:
            for vm in rec.get("vms", []):
                for name in (vm["overlay"], vm["seed"], *console_volumes(pool, vm.get("console"))):
                    err = remove_volume(pool, name)
                    if err:
                        left.append(err)
        left += [e for net in rec.get("networks", []) if (e := remove_network(conn, net["name"]))]
        self._remove_qemu_logs([vm["name"] for vm in rec.get("vms", [])])
        if left:
            raise DestroyIncomplete(left)
        self.ctx.journal.forget(JOURNAL_KEY)

    def _remove_qemu_logs(self, domains: List[str]) -> None:
        """Delete libvirt's QEMU logs of ``domains`` on a local daemon (a remote host's
        stay there: libvirt's API cannot reach them); a failure is reported, not fatal."""
        for problem in remove_domain_logs(self.opts["uri"], domains):
            self.ctx.progress.info(f"libvirt: could not remove {problem}")

    # ------------------------------------------------------------------ sweep
    def sweep(self) -> List[str]:
        """Remove every domain and network whose ``<metadata>`` carries this run id, and
        every volume named ``enos-<run id>-*`` in the pools; return what was removed.
        Never acts on an empty run id. Raises DestroyIncomplete if something resists."""
        run = self.ctx.run_id
        if not run or len(run) < 4:
            raise ProviderError("refusing to sweep without a run id")
        lv = quiet_libvirt()
        conn = self.conn()
        removed, left = [], []
        swept_domains = []
        for dom in conn.listAllDomains(0):
            if run_id_of(dom.XMLDesc(0)) == run:
                name = dom.name()
                err = remove_domain(conn, dom=dom, name=name)
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
        uri = self.opts["uri"]
        conn, out = diagnose(uri, self.opts.get("pool"))
        kernel = None
        try:
            files = self.session.image_files()
            out.append(Check("base image", True, str(files["disk"])))
            kernel = str(files["kernel"]) if files.get("kernel") else None
        except EnosError as e:
            out.append(Check("base image", False, str(e),
                             "enos build libvirt" if not self.opts.get("image")
                             else "enos build libvirt --output DIR, then set provider.image"))
        if conn is None:
            return out
        self.session._conn = conn
        try:
            dtype, why = self.session.resolve_domain_type(kernel if not urlparse(uri).hostname else None)
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

    def record(self) -> dict:
        """Return :meth:`info` and the base image the VMs were made from: its files, the
        disk's SHA-256 and its build manifest (what it was built from)."""
        out: Dict[str, Any] = {"info": self.info()}
        try:
            files = self.session.image_files()
        except EnosError as e:
            out["image_error"] = str(e)
            return out
        out["image"] = {k: str(v) for k, v in files.items() if v}
        disk = files.get("disk")
        if disk:
            out["image"]["disk_sha256"] = image.file_sha256(Path(disk))
        if files.get("manifest"):
            try:
                out["image"]["manifest"] = json.loads(Path(files["manifest"]).read_text())
            except (OSError, ValueError) as e:
                out["image"]["manifest_error"] = str(e)
        return out

    def info(self) -> dict:
        """Return per-VM domain state, address and console log, and the domain type."""
        rec = self.session.journal()
        if not rec:
            return {}
        out: Dict[str, Any] = {"uri": rec.get("uri"), "domain_type": rec.get("domain_type"),
                               "networks": {n["name"]: n["cidr"] for n in rec.get("networks", [])}, "vms": {}}
        lv = quiet_libvirt()
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
                                       "console_log": machines.console_log(vm)}
        return out


PROVIDER = LibvirtProvider
