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

import ipaddress
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from enos import process
from enos.errors import DestroyIncomplete, EnosError, ProviderError, UsageError
from enos.failpoint import checkpoint
from enos.model import Check, Host, IpPool, Resources
from enos.provider.provider import DESTROY, IP_POOL, RESERVE, SWEEP, Provider
from enos.vagrant.flavours import DEFAULT_FLAVOUR, FLAVOURS, describe, flavour_names

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


def _vagrant_env(run_id: str) -> Dict[str, str]:
    env = process.run_environ(run_id)
    env.update({"VAGRANT_CHECKPOINT_DISABLE": "1",
                "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1", "VAGRANT_NO_COLOR": "1"})
    return env


def parse_ssh_config(text: str) -> Dict[str, Dict[str, str]]:
    """Return ``{host: {option: value}}`` of ``vagrant ssh-config`` output."""
    out: Dict[str, Dict[str, str]] = {}
    cur: Optional[Dict[str, str]] = None
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            continue
        key, value = parts
        if key == "Host":
            cur = out.setdefault(value, {})
        elif cur is not None:
            cur[key] = value.strip('"')
    return out


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
        import difflib
        from enos.vagrant.plan import FIRST_HOST, machine_size
        o = config.options or {}
        backend = o.get("backend", DEFAULT_BACKEND)
        for key in LIBVIRT_ONLY:
            if key in o and backend != "libvirt":
                raise config.error(f"provider.{key}", f"'{key}' is only for backend: libvirt "
                                                      f"(this file asks for {backend})")
        base = o.get("flavour", DEFAULT_FLAVOUR)
        for m in config.machines:
            opts = m.options or {}
            if "flavour_desc" in opts and (m.label or "flavor" in opts):
                raise config.error(m.keypath, "give either a flavour or 'flavour_desc', not both")
            if m.label and "flavor" in opts:
                raise config.error(m.keypath, "give either 'flavour' or 'flavor', not both")
            try:
                machine_size(m, base)
            except KeyError as e:
                name = e.args[0]
                close = difflib.get_close_matches(str(name), FLAVOURS, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                where = m.keypath if m.group is None else m.keypath
                raise config.error(where, f"unknown flavour '{name}'{hint}; flavours: {describe()}") from None
        nets = []
        roles: Dict[str, int] = {}
        for i, n in enumerate(config.networks or []):
            path = f"resources.networks.{i}.cidr"
            if (config.raw.get("provider") or {}).get("resources") if isinstance(config.raw.get("provider"), dict) else False:
                path = "provider." + path
            try:
                net = ipaddress.ip_network(n["cidr"], strict=False)
            except ValueError as e:
                raise config.error(path, f"expected an IPv4 CIDR: {e}") from None
            if net.num_addresses < 16:
                raise config.error(path, f"{net} is too small: give at least a /28")
            for p2, n2 in nets:
                if net.overlaps(n2):
                    raise config.error(path, f"{net} overlaps {n2} ({p2})")
            nets.append((path, net))
            for r in n["roles"]:
                roles[r] = i
        total = sum(m.count for m in config.machines)
        for path, net in nets:
            if FIRST_HOST + total >= net.num_addresses - 1:
                raise config.error(path, f"{net} cannot hold {total} machines from .{FIRST_HOST} up")
        for m in config.machines:
            for r in (m.options or {}).get("networks") or []:
                if r not in roles:
                    known = ", ".join(sorted(roles)) or "none: add resources.networks"
                    raise config.error(m.keypath, f"network role '{r}' is not in resources.networks ({known})")

    # ------------------------------------------------------------------ journal
    def _journal(self) -> dict:
        return self.ctx.journal.get(JOURNAL_KEY) or {}

    def _save(self, rec: dict) -> None:
        self.ctx.journal.record(JOURNAL_KEY, rec)

    def _plan(self) -> dict:
        from enos.vagrant.plan import make_plan
        o = self.opts
        rec = make_plan(self.ctx.config, self.ctx.run_id, o["flavour"])
        rec.update({"dir": str(Path(self.ctx.env_dir).resolve() / "vagrant"), "backend": o["backend"],
                    "box": o["box"], "uri": o.get("uri"), "pool": o.get("pool"), "up_started": False,
                    "addresses": {}, "host_keys": {}})
        return rec

    # ------------------------------------------------------------------ backend
    def _vagrant_bin(self) -> str:
        path = shutil.which("vagrant")
        if not path:
            raise UsageError("vagrant is not installed: apt-get install vagrant vagrant-libvirt "
                             "(Debian/Ubuntu; see docs/providers/vagrant.md for macOS)")
        return path

    def _require_backend(self) -> None:
        o = self.opts
        if o["backend"] == "virtualbox" and not shutil.which("VBoxManage"):
            where = self.ctx.config.line_of(("provider", "backend"))
            src = f" ({self.ctx.config.file}:{where})" if where else " (the default backend, as in Enos)"
            raise UsageError(f"backend virtualbox{src} needs VirtualBox, which is not installed here "
                             "(no VBoxManage): install VirtualBox, or set 'backend: libvirt' in provider "
                             "(apt-get install vagrant-libvirt libvirt-daemon-system)")
        if o["backend"] == "libvirt" and not self._libvirt_plugin():
            raise UsageError("backend libvirt needs the vagrant-libvirt plugin: apt-get install vagrant-libvirt "
                             "(or: vagrant plugin install vagrant-libvirt)")

    @staticmethod
    def _libvirt_plugin() -> Optional[str]:
        """Return where the vagrant-libvirt plugin is installed (Debian package or
        ``vagrant plugin install``), or None."""
        from enos.vagrant.box import vagrant_home
        roots = [Path("/usr/share/rubygems-integration/all/gems"), Path("/usr/share/vagrant-plugins")]
        roots += sorted((vagrant_home() / "gems").glob("*/gems"))      # vagrant plugin install
        for root in roots:
            if root.is_dir():
                for p in root.glob("vagrant-libvirt-*"):
                    if p.is_dir():
                        return str(p)
        return None

    def _vagrant(self, rec: dict, log) -> Any:
        import vagrant
        from contextlib import contextmanager

        @contextmanager
        def to_log():
            yield log
        return vagrant.Vagrant(root=rec["dir"], env=_vagrant_env(self.ctx.run_id), out_cm=to_log, err_cm=to_log)

    # ------------------------------------------------------------------ init
    def init(self, force_deploy: bool = False) -> Resources:
        """Plan, journal, render the Vagrantfile, ``vagrant up``, read the SSH addresses;
        return the hosts and one IP pool per network role. Raises UsageError (vagrant or
        the backend missing: exit 2), ProviderError (a box missing, vagrant failing: the
        message has the tail of its log), Timeout."""
        from enos.state import atomic_write
        if self.ctx.ssh_key is None:
            raise ProviderError("no env SSH key given to the vagrant provider")
        self._vagrant_bin()
        self._require_backend()
        rec = self._journal()
        if not rec.get("machines"):
            rec = self._plan()
            self._save(rec)                          # every name and address, before anything
        vdir = Path(rec["dir"])
        vdir.mkdir(parents=True, exist_ok=True)
        boot = self._prepare_backend(rec)
        text = self._render(rec, boot)
        atomic_write(vdir / "Vagrantfile", text)
        checkpoint("vagrant.vagrantfile")
        if not rec.get("addresses") or force_deploy or not self._all_running(rec):
            rec["up_started"] = True
            self._save(rec)
            self._up(rec)
            rec["addresses"] = self._ssh_addresses(rec)
            self._save(rec)
        checkpoint("vagrant.addresses")
        hosts = self._hosts(rec)
        return Resources(hosts=hosts, networks=self._pools(rec))

    def _prepare_backend(self, rec: dict) -> dict:
        """libvirt + enos box: upload kernel/initrd and the seeds; return the boot settings
        for the template (``enos_box``, ``kernel``, ``initrd``, ``cmdline``)."""
        from enos.vagrant.box import box_manifest
        if rec["backend"] != "libvirt":
            return {"enos_box": False}
        manifest = box_manifest(rec["box"])
        if manifest is None:
            if rec["box"] == DEFAULT_BOX:
                raise ProviderError(f"the box {DEFAULT_BOX} is not installed: run 'enos build vagrant' "
                                    "(needs root, ~1 min, offline)")
            return {"enos_box": False}
        from enos.libvirt.seed import build_seed, host_key
        from enos.vagrant import libvirt_side
        conn = libvirt_side.connect(rec["uri"])
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
                libvirt_side.upload(conn, pool, m["seed"], img)
                checkpoint("vagrant.seed_created")
        finally:
            conn.close()
        return {"enos_box": True, "kernel": kernel, "initrd": initrd, "cmdline": manifest["cmdline"]}

    def _render(self, rec: dict, boot: dict) -> str:
        from enos.vagrant.render import render_vagrantfile
        o = self.opts
        return render_vagrantfile(rec, run_id=self.ctx.run_id, backend=rec["backend"], box=rec["box"],
                                  user=o["user"], key=str(Path(self.ctx.ssh_key).resolve()),
                                  pubkey=self.ctx.ssh_pubkey, uri=rec.get("uri"), driver=o.get("driver", "qemu"),
                                  pool=rec.get("pool"), **boot)

    def _all_running(self, rec: dict) -> bool:
        """True if every planned machine is running (one ``vagrant status``)."""
        try:
            with open(Path(rec["dir"]) / "vagrant.log", "a") as log:
                st = self._vagrant(rec, log).status()
        except Exception:   # noqa: BLE001 - any failure means: run up again
            return False
        running = {s.name for s in st if s.state == "running"}
        return all(m["name"] in running for m in rec["machines"])

    def _up(self, rec: dict) -> None:
        logf = Path(rec["dir"]) / "vagrant.log"
        timeout = float(self.opts["boot_timeout"])
        names = [m["name"] for m in rec["machines"]]
        with open(logf, "a") as log, \
                self.ctx.progress.task(f"vagrant up ({rec['backend']})", total=len(names)) as task:
            v = self._vagrant(rec, log)
            deadline = time.monotonic() + timeout
            try:
                ready = set()
                for line in v.up(provider=rec["backend"], stream_output=True):
                    log.write(line)
                    log.flush()
                    text = line.strip()
                    for n in names:
                        if text.startswith(f"==> {n}: Machine booted and ready") and n not in ready:
                            ready.add(n)
                            task.advance()
                    if text.startswith("==>"):
                        task.update(text[4:][:70])
                    if time.monotonic() > deadline:
                        raise EnosError(f"vagrant up did not finish within {timeout:.0f}s")
            except subprocess.CalledProcessError as e:
                process.end_run(self.ctx.run_id, timeout=10.0)
                raise ProviderError(f"vagrant up failed (exit {e.returncode}); its log ({logf}) ends with:\n"
                                    + self._tail(logf)) from None
            except EnosError as e:
                process.end_run(self.ctx.run_id, timeout=10.0)
                from enos.errors import Timeout
                raise Timeout(f"{e}; log: {logf}") from None
            except BaseException:
                process.end_run(self.ctx.run_id, timeout=10.0)      # Ctrl-C/SIGTERM: no vagrant left behind
                raise
        checkpoint("vagrant.up_done")

    @staticmethod
    def _tail(path: Path, lines: int = 15) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _ssh_addresses(self, rec: dict) -> Dict[str, Dict[str, Any]]:
        import vagrant  # noqa: F401 - python-vagrant is the way we talk to vagrant
        logf = Path(rec["dir"]) / "vagrant.log"
        with open(logf, "a") as log:
            try:
                text = self._vagrant(rec, log).ssh_config()
            except subprocess.CalledProcessError as e:
                raise ProviderError(f"vagrant ssh-config failed (exit {e.returncode}):\n" + self._tail(logf)) from None
        conf = parse_ssh_config(text)
        out = {}
        for m in rec["machines"]:
            c = conf.get(m["name"])
            if not c or not c.get("HostName"):
                raise ProviderError(f"vagrant ssh-config has no address for {m['name']}:\n{text[-1000:]}")
            out[m["name"]] = {"address": c["HostName"], "port": int(c.get("Port", 22)),
                              "vagrant_user": c.get("User")}
        return out

    def _hosts(self, rec: dict) -> List[Host]:
        nets = {n["key"]: n for n in rec["networks"]}
        hosts = []
        for m in rec["machines"]:
            a = rec["addresses"][m["name"]]
            extra: Dict[str, Any] = {"enos_vagrant_machine": m["name"], "enos_vagrant_dir": rec["dir"]}
            for i, (key, ip) in enumerate(m["nics"], start=1):
                for role in nets[key]["roles"]:
                    extra[role] = f"eth{i}"            # as Enos: network_interface: eth1
                    extra[f"{role}_ip"] = ip
            hosts.append(Host(alias=m["alias"], address=a["address"], user=self.opts["user"],
                              port=a["port"], keyfile=str(self.ctx.ssh_key), roles=list(m["roles"]),
                              extra=extra, host_key=(rec.get("host_keys") or {}).get(m["alias"])))
        return hosts

    def _pools(self, rec: dict) -> List[IpPool]:
        from enos.vagrant.plan import gateway
        out = []
        for n in rec["networks"]:
            used = [ip for m in rec["machines"] for key, ip in m["nics"] if key == n["key"]]
            out.append(IpPool.from_range(n["cidr"], exclude=used, gateway=gateway(n["cidr"]),
                                         roles=list(n["roles"]), name=n["name"]))
        return out

    # ------------------------------------------------------------------ destroy
    def destroy(self) -> None:
        """Kill the env's vagrant processes, ``vagrant destroy -f`` if machines may exist,
        then remove by name whatever is left (libvirt: domains, disks, seeds, networks).
        Idempotent. Raises DestroyIncomplete listing what is left."""
        rec = self._journal()
        if not rec:
            return
        process.end_run(self.ctx.run_id, timeout=10.0)
        left: List[str] = []
        vdir = Path(rec["dir"])
        if rec.get("up_started") and (vdir / "Vagrantfile").exists() and (vdir / ".vagrant").exists() \
                and shutil.which("vagrant"):
            with open(vdir / "vagrant.log", "a") as log:
                try:
                    self._vagrant(rec, log).destroy()
                except subprocess.CalledProcessError as e:
                    log.write(f"enos: vagrant destroy failed (exit {e.returncode}); removing by name\n")
            checkpoint("vagrant.destroy.vagrant_done")
        if rec["backend"] == "libvirt":
            from enos.vagrant import libvirt_side
            try:
                conn = libvirt_side.connect(rec["uri"])
            except EnosError as e:
                raise DestroyIncomplete([f"libvirt at {rec['uri']}: {e}"]) from None
            try:
                left += libvirt_side.remove(conn, rec["pool"], rec)
            finally:
                conn.close()
        else:
            left += self._remove_virtualbox(rec)
        if left:
            raise DestroyIncomplete(left)
        self.ctx.journal.forget(JOURNAL_KEY)

    @staticmethod
    def _remove_virtualbox(rec: dict) -> List[str]:
        vbox = shutil.which("VBoxManage")
        if not vbox:
            return []
        left = []
        for m in rec["machines"]:
            p = subprocess.run([vbox, "unregistervm", m["domain"], "--delete"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL)
            if p.returncode != 0 and "Could not find" not in p.stderr:
                left.append(f"VirtualBox VM {m['domain']}: {p.stderr.strip()[-200:]}")
        return left

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
            vbox = shutil.which("VBoxManage")
            if vbox:
                names = subprocess.run([vbox, "list", "vms"], capture_output=True, text=True).stdout
                for line in names.splitlines():
                    name = line.split('"')[1] if '"' in line else ""
                    if name.startswith(f"enos-{run}-"):
                        subprocess.run([vbox, "unregistervm", name, "--delete"], capture_output=True)
                        removed.append(f"VirtualBox VM {name}")
            return removed
        from enos.vagrant import libvirt_side
        conn = libvirt_side.connect(self.opts["uri"])
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
        from enos.vagrant.box import box_dir
        o = self.opts
        out: List[Check] = []
        vagrant = shutil.which("vagrant")
        version = ""
        if vagrant:
            p = subprocess.run([vagrant, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               env=_vagrant_env("check"), timeout=60)
            version = p.stdout.strip()
        out.append(Check("vagrant", bool(vagrant), version or "not installed",
                         "apt-get install vagrant (macOS: brew install --cask vagrant)"))
        if o["backend"] == "libvirt":
            plugin = self._libvirt_plugin()
            out.append(Check("vagrant-libvirt plugin (backend libvirt)", bool(plugin), plugin or "not installed",
                             "apt-get install vagrant-libvirt (or: vagrant plugin install vagrant-libvirt)"))
        else:
            vbox = shutil.which("VBoxManage")
            out.append(Check("VirtualBox (backend virtualbox)", bool(vbox), vbox or "VBoxManage not found",
                             "install VirtualBox (https://www.virtualbox.org/wiki/Downloads), "
                             "or set 'backend: libvirt' in provider"))
        d = box_dir(o["box"], o["backend"])
        fix = ("enos build vagrant" if o["box"] == DEFAULT_BOX and o["backend"] == "libvirt"
               else f"vagrant box add {o['box']} --provider {o['backend']}")
        out.append(Check(f"box {o['box']} ({o['backend']})", d is not None, str(d) if d else "not installed", fix))
        if o["backend"] == "libvirt":
            try:
                from enos.libvirt.diagnose import diagnose
            except ImportError:       # libvirt-python missing
                out.append(Check("libvirt-python", False, "not installed", "pip install 'enos[libvirt]'"))
                return out
            conn, checks = diagnose(o["uri"], o["pool"])     # libvirtd, virtlogd, pool, network
            out += checks
            if conn is not None:
                conn.close()
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
