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

import ipaddress
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import List

from enos import names, process
from enos.errors import DestroyIncomplete, NotRoot, ProviderError
from enos.failpoint import checkpoint
from enos.local import guard, netns
from enos.local.diagnose import checks
from enos.local.netlink import IPRoute
from enos.local.network import create_netns, ensure_bridge, is_ours, link_names, teardown_hosts
from enos.local.plan import (HostPlan, bridge_name, check_config, journal_hosts, our_arg, our_link,
                             our_netns, plan_hosts, subnet_lock, subnet_option, used_networks)
from enos.local.sshd import (find_sshd, healthy, host_key, host_keys, root_login_needs_pam, start_sshd,
                             wait_sshd, write_host_files)
from enos.model import Check, Host, IpPool, Resources
from enos.provider.provider import DESTROY, IP_POOL, RESERVE, SWEEP, Provider

JOURNAL_KEY = "local"

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



class LocalProvider(Provider):
    """Hosts as network namespaces of this machine, each with its own sshd."""

    type = "local"
    description = "hosts as network namespaces of this machine, each running its own sshd (needs root)"
    capabilities = frozenset({RESERVE, DESTROY, IP_POOL, SWEEP})
    hosts_share_this_machine = True
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
    def validate(cls, config) -> None:
        """Check the subnet option and that the hosts fit in it. Raises ConfigError."""
        check_config(config)

    @classmethod
    def preflight(cls, config) -> None:
        """Raise ConfigError when the ``subnet`` option overlaps a network already in use
        on this machine (an address or a route), before anything is created."""
        wanted = subnet_option(config)
        if wanted is None:
            return
        with IPRoute() as ipr:
            clash = [u for u in used_networks(ipr) if u.overlaps(wanted)]
        if clash:
            raise config.error("provider.subnet", f"{wanted} overlaps {clash[0]}, already used on this "
                                                  f"machine; choose another subnet or remove the option "
                                                  f"to pick a free one")

    def check(self) -> List[Check]:
        """Return whether root, sshd, ip, unshare and ssh-keygen are available."""
        return checks()

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

    def host_key(self, alias: str) -> str:
        """Return the public host key of ``alias`` as ``"ssh-ed25519 AAAA..."``."""
        return host_key(self.host_dir(alias))

    def _save(self, rec: dict) -> None:
        self.ctx.journal.record(JOURNAL_KEY, rec)

    def _is_ours(self, pid: int, start=None) -> bool:
        """True when ``pid`` is one of this env's sshds (see :func:`enos.local.network.is_ours`)."""
        return is_ours(pid, self.run_id, start)

    # ------------------------------------------------------------------ init
    def init(self, force_deploy: bool = False) -> Resources:
        """Create (or re-find) the bridge, namespaces and sshds; return the hosts and the
        subnet's remaining addresses as an IP pool.

        Raises NotRoot (exit 2) when not root, before creating anything; ConfigError for a
        subnet clashing with this machine's; ProviderError when a step fails."""
        sshd = self._preflight()
        self._keep_range_local()
        rec = self.ctx.journal.get(JOURNAL_KEY) or {}
        _, problems = journal_hosts(rec, self.run_id)
        if problems:
            raise ProviderError(f"the local provider's journal of run {self.run_id} is damaged ("
                                f"{'; '.join(problems)}): 'enos destroy' frees what it names and sweeps "
                                f"the rest of the run by its id; then 'enos up' books it again")
        with IPRoute() as ipr:
            rec = ensure_bridge(ipr, rec, self.ctx.config, self.run_id, self.base_dir, self._save)
            plans = plan_hosts(self.ctx.config, self.run_id, ipaddress.ip_network(rec["subnet"]), rec["gateway"])
            todo = self._replan(ipr, rec, plans, force_deploy)
            with self.ctx.progress.task(f"creating {len(todo)} local host(s)", total=len(todo)) as t:
                self._create_hosts(ipr, rec, plans, todo, sshd, t)
        hosts = [Host(alias=p.alias, address=p.address, user="root", port=22,
                      keyfile=str(self.ctx.ssh_key) if self.ctx.ssh_key else None,
                      roles=list(p.roles), host_key=self.host_key(p.alias),
                      extra={"enos_scratch": str(self.host_dir(p.alias) / "scratch"),
                             "enos_netns": p.ns, "enos_hostname": p.hostname})
                 for p in plans]
        pool = IpPool.from_range(rec["subnet"], exclude=[p.address for p in plans],
                                 gateway=rec["gateway"], name=rec["bridge"])
        return Resources(hosts=hosts, networks=[pool])

    def _keep_range_local(self) -> None:
        """Install the policy rules keeping the provider's range on this machine."""
        with subnet_lock():
            try:
                added = guard.ensure_rules()
            except (OSError, subprocess.SubprocessError) as e:
                raise ProviderError(f"cannot keep {guard.RANGE_TEXT} local (policy rules): {e}") from None
        for rule in added:
            self.ctx.log.info("installed %s", rule)

    def _replan(self, ipr, rec: dict, plans: List[HostPlan], force: bool) -> List[HostPlan]:
        """Journal every planned name, keep the healthy hosts of an earlier run, tear down
        the others and those no longer asked for; return the hosts to create."""
        old = {p.alias: p for p in journal_hosts(rec, self.run_id)[0]}
        stale = [p for a, p in old.items() if a not in {q.alias for q in plans}]
        todo = []
        for p in plans:
            prev = old.get(p.alias)
            if prev is not None and prev.ns == p.ns and prev.address == p.address \
                    and not force and healthy(prev) \
                    and (self.host_dir(p.alias) / "ssh_host_ed25519_key.pub").is_file():   # its files still there
                p.pid, p.start = prev.pid, prev.start
            else:
                todo.append(p)
        # record every name before creating anything
        rec["hosts"] = [p.to_dict() for p in plans] + [s.to_dict() for s in stale]
        self._save(rec)
        checkpoint("local.hosts_planned")
        if stale or todo:
            left = teardown_hosts(ipr, stale + todo, self.run_id)
            if left:
                raise ProviderError("cannot clear previous hosts: " + "; ".join(left))
        rec["hosts"] = [p.to_dict() for p in plans]
        self._save(rec)
        return todo

    def _create_hosts(self, ipr, rec: dict, plans: List[HostPlan], todo: List[HostPlan], sshd: str, task) -> None:
        """Files, host keys, namespaces, then the sshds of ``todo`` (journalled), and wait
        until they listen."""
        use_pam = root_login_needs_pam() and os.path.exists("/etc/pam.d/sshd")
        for p in todo:
            write_host_files(self.host_dir(p.alias), p, plans, self.ctx.ssh_pubkey, use_pam, self.run_id)
        host_keys({p.alias: self.host_dir(p.alias) for p in todo}, self.run_id)
        for p in todo:
            create_netns(ipr, p, rec)
        for p in todo:
            p.pid = start_sshd(sshd, self.host_dir(p.alias), p)
            p.start = process.start_time(p.pid)
            checkpoint("local.sshd_started")
            task.advance()
        rec["hosts"] = [p.to_dict() for p in plans]
        self._save(rec)
        checkpoint("local.sshd_recorded")
        wait_sshd(todo, {p.alias: self.host_dir(p.alias) for p in todo})

    # ------------------------------------------------------------------ destroy / sweep
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
        from pyroute2 import NetlinkError
        # only what is this run's is acted on; a damaged journal is completed by a sweep
        # of the run id (every name carries it) below
        plans, problems = journal_hosts(rec, self.run_id)
        rec = rec if isinstance(rec, dict) else {}
        with IPRoute() as ipr:
            left = teardown_hosts(ipr, plans, self.run_id)
            # sshds recorded by nothing but their command line (crash before the PID record)
            strays = process.pids_with_arg(lambda arg: our_arg(self.run_id, arg))
            left += [f"process {p}" for p in process.end_pids(strays)]
            br = rec.get("bridge") if rec.get("bridge") == bridge_name(self.run_id) else None
            if br and not left:
                try:
                    ipr.link("del", ifname=br)
                except NetlinkError as e:
                    if e.code != 19:
                        left.append(f"bridge {br} ({e})")
            elif br:
                left.append(f"bridge {br} (kept: hosts still attached)")
        if problems:
            self.ctx.log.warning("the journal of run %s is damaged (%s); sweeping the run id for what it "
                                 "does not name", self.run_id, "; ".join(problems))
            try:
                for what in self.sweep():
                    self.ctx.log.warning("swept %s", what)
                left = []
            except DestroyIncomplete as e:
                left = list(e.left)
        if left:
            raise DestroyIncomplete(left)
        d = rec.get("dir") if isinstance(rec.get("dir"), str) and Path(rec["dir"]).name == f"local-{self.run_id}" \
            else self.base_dir
        shutil.rmtree(d, ignore_errors=True)
        self.ctx.journal.forget(JOURNAL_KEY)

    def sweep(self) -> List[str]:
        """Remove every namespace ``enos-<run_id>-<n>``, link ``eb<run_id>``/``ev<run_id><n>``
        and every process inside those namespaces or started with a file of
        ``local-<run_id>/`` as an argument, without any journal — matching the run id
        exactly, never as a prefix of another run's. Return what was removed. Raises
        DestroyIncomplete if something resists, NotRoot when not root."""
        if os.geteuid() != 0:
            raise NotRoot("sweeping local hosts needs root")
        from pyroute2 import NetlinkError
        rid = self.run_id
        removed: List[str] = []
        left: List[str] = []
        found = [n for n in netns.list_netns(f"enos-{rid}-") if our_netns(rid, n)]
        pids = {p for lst in netns.netns_pids(found).values() for p in lst}
        pids |= set(process.pids_with_arg(lambda arg: our_arg(rid, arg)))
        survivors = process.end_pids(pids)
        removed += [f"process {p}" for p in sorted(pids - set(survivors))]
        left += [f"process {p}" for p in survivors]
        for n in found:
            try:
                if netns.remove_netns(n):
                    removed.append(f"namespace {n}")
            except OSError as e:
                left.append(f"namespace {n} ({e})")
        with IPRoute() as ipr:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and any(
                    n.startswith("ev") and our_link(rid, n) for n in link_names(ipr)):
                time.sleep(0.01)
            for name in sorted(link_names(ipr)):
                if our_link(rid, name):
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
        plans, problems = journal_hosts(rec, self.run_id)
        rec = rec if isinstance(rec, dict) else {}
        out = {"subnet": rec.get("subnet"), "gateway": rec.get("gateway"), "bridge": rec.get("bridge"),
               "hosts": {p.alias: {"namespace": p.ns, "address": p.address, "sshd_pid": p.pid} for p in plans}}
        if problems:
            out["journal damaged"] = "; ".join(problems)
        return out


PROVIDER = LocalProvider
