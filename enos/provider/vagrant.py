"""The ``vagrant`` provider: VMs booted by Vagrant (python-vagrant), with the libvirt
(vagrant-libvirt) or VirtualBox backend.

For an env of run id ``R``, ``init``:

1. journals the plan (:mod:`enos.vagrant.plan`): the Vagrant directory ``<env>/vagrant``,
   every machine name (``<role>-<n>``, domain ``enos-R-<role>-<n>``), its addresses on
   the private networks ``enos-R-net<i>`` and the management network ``enos-R-mgmt``;
2. (libvirt backend with an ``enos build vagrant`` box) uploads the box's kernel/initrd
   once and one seed volume per machine (the env's key, the hostname, the machine's own
   SSH host key, pinned in known_hosts) — see :mod:`enos.vagrant.libvirt_side`;
3. renders the Vagrantfile (:mod:`enos.vagrant.render`) and runs ``vagrant up`` (in
   parallel where the backend allows it) with ``ENOS_VAGRANT_RUN=R`` in its environment
   (:mod:`enos.vagrant.procs`), its output in ``<env>/vagrant/vagrant.log``;
4. reads every machine's SSH address from one ``vagrant ssh-config`` (kept in the journal).

``destroy`` uses the journal only: it kills the env's vagrant processes (a ``vagrant up``
left running by a kill -9 of enos), runs ``vagrant destroy -f`` when machines were created,
then removes whatever is left by name (domains, disks, seeds, networks). ``sweep`` finds
them by the ``enos-R-`` prefix without the state. ``docs/providers/vagrant.md`` is the
user's page.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import List

from enos import process
from enos.errors import DestroyIncomplete, EnosError, ProviderError, UsageError
from enos.failpoint import checkpoint
from enos.model import Check, Resources
from enos.provider.provider import DESTROY, IP_POOL, RESERVE, SWEEP, Provider
from enos.libvirt.connection import connect
from enos.libvirt.seed import build_seed, host_key
from enos.libvirt.storage import upload_once
from enos.state import atomic_write
from enos.vagrant import command, libvirt_side, plan
from enos.vagrant.diagnose import checks
from enos.vagrant.box import box_manifest
from enos.vagrant.flavours import DEFAULT_FLAVOUR, FLAVOURS, describe, flavour_names
from enos.vagrant.render import render_vagrantfile

JOURNAL_KEY = "vagrant"
BACKENDS = ("virtualbox", "libvirt")
DEFAULT_BACKEND = "virtualbox"          # as Enos: a file that names no backend means VirtualBox
DEFAULT_BOX = "enos/debian12"           # built by 'enos build vagrant'
DEFAULT_URI = "qemu:///system"
LIBVIRT_ONLY = ("uri", "pool", "driver")
_CIDR = {"type": "string", "pattern": r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$",
         "x-expected": "an IPv4 CIDR like 192.168.42.0/24"}
_ROLE = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_-]*$",
         "x-expected": "a role name (letters, digits, '_' or '-')"}
_FLAVOUR = {"enum": list(FLAVOURS), "x-expected": "one of " + flavour_names()}

SAMPLE = f"""\
# enos reservation for the 'vagrant' provider: VMs booted by Vagrant.
# Works as is after:   enos build vagrant   (builds the box enos/debian12 for libvirt)
# Check the machine:   enos check -f reservation.yaml
provider:
  type: vagrant
  backend: libvirt                 # libvirt (vagrant-libvirt) or virtualbox (Enos' default)
  box: {DEFAULT_BOX}               # default: the box of 'enos build vagrant'
  # user: root                     # the SSH user of the machines
  # uri: qemu:///system            # libvirt only: the libvirtd vagrant-libvirt talks to
  # pool: default                  # libvirt only: storage pool of the disks
  # driver: qemu                   # libvirt only: qemu (works everywhere) or kvm
  # flavour: tiny                  # size of machines whose label is not a flavour
  # boot_timeout: 900              # seconds for 'vagrant up'

resources:
  # compact form {{flavour: {{role: number}}}}; flavours: {describe()}
  tiny:
    control: 1
    compute: 1
  # Each VM has a NIC on two private networks (roles network_interface and
  # neutron_external_interface, host vars naming the NIC, e.g. network_interface: eth1);
  # 'enos info' shows the free addresses of each (the IP pools).

# EnOSlib form, with your own networks (one NIC per listed network):
# resources:
#   machines:
#     - roles: [control]
#       flavour: tiny              # or flavour_desc: {{core: 2, mem: 2048}}
#       number: 1
#     - roles: [compute]
#       flavour_desc: {{core: 1, mem: 768}}
#       number: 2
#       networks: [data]           # default: every network
#   networks:
#     - roles: [data]
#       cidr: 192.168.42.0/24
#     - roles: [admin]
#       cidr: 192.168.43.0/24
"""



class VagrantProvider(Provider):
    """VMs booted by Vagrant, libvirt or VirtualBox backend."""

    type = "vagrant"
    description = "VMs booted by Vagrant (vagrant-libvirt or VirtualBox), for a laptop or a single host"
    capabilities = frozenset({RESERVE, DESTROY, IP_POOL, SWEEP})
    requires = ("vagrant", "jinja2")
    extra = "vagrant"
    sample = SAMPLE
    schema = {
        "type": "object",
        "properties": {
            "type": {"const": "vagrant"},
            "backend": {"enum": list(BACKENDS), "default": DEFAULT_BACKEND,
                        "x-expected": "libvirt or virtualbox"},
            "box": {"type": "string", "minLength": 1, "default": DEFAULT_BOX,
                    "x-expected": "a Vagrant box name"},
            "user": {"type": "string", "minLength": 1, "pattern": r"^[a-z_][a-z0-9_-]*$", "default": "root",
                     "x-expected": "a user name"},
            "uri": {"type": "string", "minLength": 1,
                    "x-expected": "a libvirt URI like qemu:///system"},
            "pool": {"type": "string", "minLength": 1, "pattern": r"^[A-Za-z0-9_.-]+$",
                     "x-expected": "the name of a libvirt storage pool"},
            "driver": {"enum": ["qemu", "kvm"], "x-expected": "qemu or kvm"},
            "flavour": dict(_FLAVOUR, default=DEFAULT_FLAVOUR),
            "boot_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 900,
                             "x-expected": "a number of seconds > 0"},
            "resources": {
                "type": "object",
                "properties": {
                    "networks": {
                        "type": "array",
                        "items": {"type": "object",
                                  "properties": {"roles": {"type": "array", "minItems": 1, "items": _ROLE,
                                                           "x-expected": "a non-empty list of network roles"},
                                                 "cidr": _CIDR},
                                  "required": ["roles", "cidr"], "additionalProperties": False,
                                  "x-expected": "a network: {roles: [...], cidr: A.B.C.D/N}"},
                        "x-expected": "a list of networks {roles, cidr}"}}},
        },
        "required": ["type"],
        "additionalProperties": False,
    }
    machine_schema = {
        "type": "object",
        "properties": {
            "flavor": _FLAVOUR,
            "flavour_desc": {"type": "object",
                             "properties": {"core": {"type": "integer", "minimum": 1,
                                                     "x-expected": "a number of vCPUs ≥ 1"},
                                            "mem": {"type": "integer", "minimum": 128,
                                                    "x-expected": "MiB, an integer ≥ 128"}},
                             "required": ["core", "mem"], "additionalProperties": False,
                             "x-expected": "{core: vCPUs, mem: MiB}"},
            "networks": {"type": "array", "items": _ROLE,
                         "x-expected": "a list of network roles from resources.networks"},
        },
        "additionalProperties": False,
    }

    # ------------------------------------------------------------------ options
    @property
    def opts(self) -> dict:
        """The provider options with defaults applied."""
        o = dict(self.ctx.options or {})
        o.setdefault("backend", DEFAULT_BACKEND)
        o.setdefault("box", DEFAULT_BOX)
        o.setdefault("user", "root")
        o.setdefault("flavour", DEFAULT_FLAVOUR)
        o.setdefault("boot_timeout", 900)
        if o["backend"] == "libvirt":
            o.setdefault("uri", DEFAULT_URI)
            o.setdefault("pool", "default")
            o.setdefault("driver", "qemu")
        return o

    @classmethod
    def validate(cls, config) -> None:
        """Check flavours, the networks (CIDRs, overlaps, sizes, the roles machines name)
        and libvirt-only keys with another backend. Raises ConfigError (file:line)."""
        plan.check_config(config, DEFAULT_BACKEND, LIBVIRT_ONLY)

    # ------------------------------------------------------------------ journal
    def _journal(self) -> dict:
        return self.ctx.journal.get(JOURNAL_KEY) or {}

    def _save(self, rec: dict) -> None:
        self.ctx.journal.record(JOURNAL_KEY, rec)

    def _plan(self) -> dict:
        o = self.opts
        rec = plan.make_plan(self.ctx.config, self.ctx.run_id, o["flavour"])
        rec.update({"dir": str(Path(self.ctx.env_dir).resolve() / "vagrant"), "backend": o["backend"],
                    "box": o["box"], "uri": o.get("uri"), "pool": o.get("pool"), "up_started": False,
                    "addresses": {}, "host_keys": {}})
        return rec

    def _require_backend(self) -> None:
        o = self.opts
        if o["backend"] == "virtualbox" and not shutil.which("VBoxManage"):
            where = self.ctx.config.line_of(("provider", "backend"))
            src = f" ({self.ctx.config.file}:{where})" if where else " (the default backend, as in Enos)"
            raise UsageError(f"backend virtualbox{src} needs VirtualBox, which is not installed here "
                             "(no VBoxManage): install VirtualBox, or set 'backend: libvirt' in provider "
                             "(apt-get install vagrant-libvirt libvirt-daemon-system)")
        if o["backend"] == "libvirt" and not command.libvirt_plugin():
            raise UsageError("backend libvirt needs the vagrant-libvirt plugin: apt-get install vagrant-libvirt "
                             "(or: vagrant plugin install vagrant-libvirt)")

    # ------------------------------------------------------------------ init
    def init(self, force_deploy: bool = False) -> Resources:
        """Plan, journal, render the Vagrantfile, ``vagrant up``, read the SSH addresses;
        return the hosts and one IP pool per network role. Raises UsageError (vagrant or
        the backend missing: exit 2), ProviderError (a box missing, vagrant failing: the
        message has the tail of its log), Timeout."""
        if self.ctx.ssh_key is None:
            raise ProviderError("no env SSH key given to the vagrant provider")
        command.vagrant_bin()
        self._require_backend()
        rec = self._journal()
        if not rec.get("machines"):
            rec = self._plan()
            self._save(rec)                          # every name and address, before anything
        vdir = Path(rec["dir"])
        vdir.mkdir(parents=True, exist_ok=True)
        atomic_write(vdir / "Vagrantfile", self._render(rec, self._prepare_backend(rec)))
        checkpoint("vagrant.vagrantfile")
        run = self.ctx.run_id
        if not rec.get("addresses") or force_deploy or not command.all_running(rec, run):
            rec["up_started"] = True
            self._save(rec)
            command.up(rec, run, float(self.opts["boot_timeout"]), self.ctx.progress)
            rec["addresses"] = command.ssh_addresses(rec, run)
            self._save(rec)
        checkpoint("vagrant.addresses")
        hosts = plan.hosts(rec, self.opts["user"], str(self.ctx.ssh_key))
        return Resources(hosts=hosts, networks=plan.pools(rec))

    def _prepare_backend(self, rec: dict) -> dict:
        """libvirt + enos box: upload kernel/initrd and the seeds; return the boot settings
        for the template (``enos_box``, ``kernel``, ``initrd``, ``cmdline``)."""
        if rec["backend"] != "libvirt":
            return {"enos_box": False}
        manifest = box_manifest(rec["box"])
        if manifest is None:
            if rec["box"] == DEFAULT_BOX:
                raise ProviderError(f"the box {DEFAULT_BOX} is not installed: run 'enos build vagrant' "
                                    "(needs root, ~1 min, offline)")
            return {"enos_box": False}
        conn = connect(rec["uri"])
        try:
            pool = libvirt_side.pool(conn, rec["pool"])
            kernel, initrd = libvirt_side.box_boot_files(conn, pool, Path(manifest["dir"]), manifest["recipe_hash"])
            for m in rec["machines"]:
                comment = f"{m['alias']}@enos-{self.ctx.run_id}"
                sdir = Path(rec["dir"]) / "seeds" / m["alias"]
                if m["alias"] not in rec["host_keys"]:
                    rec["host_keys"][m["alias"]] = host_key(sdir / "seed", comment)
                    self._save(rec)
                img = build_seed(sdir, m["alias"], self.ctx.ssh_pubkey, comment)
                upload_once(conn, pool, m["seed"], img)
                checkpoint("vagrant.seed_created")
        finally:
            conn.close()
        return {"enos_box": True, "kernel": kernel, "initrd": initrd, "cmdline": manifest["cmdline"]}

    def _render(self, rec: dict, boot: dict) -> str:
        o = self.opts
        return render_vagrantfile(rec, run_id=self.ctx.run_id, backend=rec["backend"], box=rec["box"],
                                  user=o["user"], key=str(Path(self.ctx.ssh_key).resolve()),
                                  pubkey=self.ctx.ssh_pubkey, uri=rec.get("uri"), driver=o.get("driver", "qemu"),
                                  pool=rec.get("pool"), **boot)

    # ------------------------------------------------------------------ destroy
    def destroy(self) -> None:
        """Kill the env's vagrant processes, ``vagrant destroy -f`` if machines may exist,
        then remove by name whatever is left (libvirt: domains, disks, seeds, networks).
        Idempotent. Raises DestroyIncomplete listing what is left."""
        rec = self._journal()
        if not rec:
            return
        process.end_run(self.ctx.run_id, timeout=10.0)
        command.destroy(rec, self.ctx.run_id)
        if rec["backend"] == "libvirt":
            try:
                conn = connect(rec["uri"])
            except EnosError as e:
                raise DestroyIncomplete([f"libvirt at {rec['uri']}: {e}"]) from None
            try:
                left = libvirt_side.remove(conn, rec["pool"], rec)
            finally:
                conn.close()
        else:
            left = command.remove_virtualbox(rec)
        if left:
            raise DestroyIncomplete(left)
        self.ctx.journal.forget(JOURNAL_KEY)

    # ------------------------------------------------------------------ sweep
    def sweep(self) -> List[str]:
        """Kill the vagrant processes of the run id and remove every libvirt domain, volume
        and network named ``enos-<run id>-*`` at ``uri``; return what was removed. Raises
        ProviderError without a run id, DestroyIncomplete if something resists."""
        run = self.ctx.run_id
        if not run or len(run) < 4:
            raise ProviderError("refusing to sweep without a run id")
        removed = [f"vagrant process {pid}" for pid in process.end_run(run, timeout=10.0)]
        if self.opts["backend"] != "libvirt":
            return removed + command.sweep_virtualbox(run)
        conn = connect(self.opts["uri"])
        try:
            done, left = libvirt_side.sweep(conn, f"enos-{run}-")
        finally:
            conn.close()
        if left:
            raise DestroyIncomplete(left)
        return removed + done

    # ------------------------------------------------------------------ check / info
    def check(self) -> List[Check]:
        """Return the checks of ``enos check``: vagrant, the backend (vagrant-libvirt or
        VirtualBox), the box, and for libvirt libvirtd and virtlogd. Books nothing."""
        return checks(self.opts, DEFAULT_BOX)

    def record(self) -> dict:
        """Return :meth:`info`, the box (name, and enos' build manifest of it: the image
        and recipe it was built from) and the Vagrantfile enos wrote."""
        out = {"info": self.info()}
        rec = self._journal()
        if rec:
            out["box"] = {"name": rec["box"], "manifest": box_manifest(rec["box"])}
            vf = Path(rec["dir"]) / "Vagrantfile"
            if vf.is_file():
                out["vagrantfile"] = vf.read_text()
        return out

    def info(self) -> dict:
        """Return the Vagrant directory, backend, box and per-machine addresses."""
        rec = self._journal()
        if not rec:
            return {}
        return {"dir": rec["dir"], "backend": rec["backend"], "box": rec["box"], "uri": rec.get("uri"),
                "machines": {m["name"]: {"domain": m["domain"], "address": (rec.get("addresses") or {})
                                         .get(m["name"], {}).get("address"),
                                         "networks": {k: ip for k, ip in m["nics"]}}
                             for m in rec["machines"]},
                "log": str(Path(rec["dir"]) / "vagrant.log")}


PROVIDER = VagrantProvider
