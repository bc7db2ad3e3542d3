"""The ``g5k`` provider: Grid'5000 through its REST API (python-grid5000), no ``oarsub``.

One OAR job per site (submitted concurrently), named ``enos-<run_id>-<job_name>``; an
optional kadeploy deployment (``env_name``); hosts are the nodes' FQDNs (or kavlan names)
reached through the access gateway as a jump host; IP pools come from reserved subnets or
kavlans. See ``docs/providers/g5k.md``.

Journal (one key per site, written before and after each side effect)::

    job:<site>       {"site", "name", "submitting": true}  → then  {..., "uid": 1234}
    deployed:<site>  {"job": uid, "env": env_name, "nodes": [...]}

A crash between the POST and the uid being recorded is why jobs are also found by name.
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from enos import failpoint, names, signals
from enos.errors import (AuthError, DestroyIncomplete, EnosError, ProviderError, Retryable,
                         UsageError)
from enos.model import Check, Host, IpPool, Resources
from enos.provider.provider import (ADVANCE_RESERVATION, DEPLOY_OS, DESTROY, EXTEND_WALLTIME, IP_POOL, RESERVE,
                                    SWEEP, Provider)

WALLTIME_PATTERN = r"^\d+:[0-5]?\d(:[0-5]?\d)?$"
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
NETWORK_TYPES = ["prod", "kavlan", "kavlan-local", "kavlan-global", "slash_22", "slash_16"]
DEFAULT_GATEWAY = "access.grid5000.fr"

DEFAULTS: Dict[str, Any] = {
    "job_name": "enos", "walltime": "02:00:00", "reservation": None, "queue": "default",
    "project": None, "env_name": None, "job_type": [], "key": "~/.ssh/id_rsa.pub", "dhcp": True,
    "gateway": DEFAULT_GATEWAY, "ssh_user": None, "deploy_retries": 2,
    "poll_interval": 5.0, "poll_max_interval": 30.0, "wait_timeout": None,
    "api_timeout": 30.0, "api_attempts": 6, "retry_base_delay": 0.5, "retry_max_delay": 20.0,
}

_STR = {"type": "string", "minLength": 1, "x-expected": "a non-empty string"}
_NUM = {"type": "number", "exclusiveMinimum": 0, "x-expected": "a number > 0"}
_ROLES = {"oneOf": [_STR, {"type": "array", "items": _STR, "minItems": 1}],
          "x-expected": "a role name or a list of role names"}

_MACHINE = {
    # the keys of an explicit machine entry besides roles/cluster/nodes (checked by the core)
    "type": "object",
    "properties": {
        "servers": {"type": "array", "items": _STR, "minItems": 1,
                    "x-expected": "a list of node FQDNs (paravance-1.rennes.grid5000.fr)"},
        "primary_network": _STR,
        "secondary_networks": {"type": "array", "items": _STR, "x-expected": "a list of network ids"},
        "min": {"type": "integer", "minimum": 0, "x-expected": "an integer ≥ 0"},
    },
    "additionalProperties": False,
    "x-expected": "a machine group {cluster | servers, nodes, roles, primary_network, secondary_networks}",
}

_NETWORK = {
    "type": "object",
    "properties": {
        "id": _STR,
        "type": {"enum": NETWORK_TYPES, "x-expected": "one of " + ", ".join(NETWORK_TYPES)},
        "roles": _ROLES,
        "site": _STR,
    },
    "required": ["id", "type"],
    "additionalProperties": False,
    "x-expected": "a network {id, type, roles, site}",
}


class G5k(Provider):
    """Grid'5000 through its REST API: OAR jobs per site, kadeploy deployments, kavlans,
    subnets, walltime extension."""

    type = "g5k"
    extra = "g5k"
    requires = ("grid5000",)
    description = "Grid'5000 testbed (OAR jobs and kadeploy deployments through the REST API)"
    capabilities = frozenset({RESERVE, DESTROY, IP_POOL, DEPLOY_OS, EXTEND_WALLTIME,
                              ADVANCE_RESERVATION, SWEEP})
    machine_schema = _MACHINE
    schema = {
        "type": "object",
        "properties": {
            "type": {"const": "g5k"},
            "job_name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$",
                         "x-expected": "a job name of letters, digits, '_', '.', '-'"},
            "walltime": {"type": "string", "pattern": WALLTIME_PATTERN,
                         "x-expected": "a walltime HH:MM[:SS] (more than 24 hours allowed)"},
            "reservation": {"type": ["string", "null"], "pattern": DATE_PATTERN,
                            "x-expected": "a date 'YYYY-MM-DD HH:MM:SS'"},
            "queue": _STR,
            "project": _STR,
            "env_name": {"type": ["string", "null"], "minLength": 1,
                         "x-expected": "a kadeploy environment name (debian12-min, ...)"},
            "job_type": {"oneOf": [_STR, {"type": "array", "items": _STR}],
                         "x-expected": "an OAR job type or a list of them"},
            "key": {**_STR, "x-expected": "the path of a public SSH key"},
            "dhcp": {"type": "boolean"},
            "gateway": {"anyOf": [names.JUMP, {"type": ["boolean", "null"]}],
                        "x-expected": "'[user@]host[:port]' of the SSH jump host, or false for none"},
            "ssh_user": names.USER,
            "deploy_retries": {"type": "integer", "minimum": 0, "x-expected": "an integer ≥ 0"},
            "poll_interval": _NUM, "poll_max_interval": _NUM,
            "wait_timeout": {"type": ["number", "null"], "exclusiveMinimum": 0},
            "api_timeout": _NUM,
            "api_attempts": {"type": "integer", "minimum": 1, "x-expected": "an integer ≥ 1"},
            "retry_base_delay": {"type": "number", "minimum": 0},
            "retry_max_delay": {"type": "number", "minimum": 0},
            "resources": {
                "type": "object",
                "properties": {"networks": {"type": "array", "items": _NETWORK}},
                "x-expected": "{machines: [...], networks: [...]}",
            },
        },
        "additionalProperties": False,
    }
    sample = """\
# Grid'5000: credentials in ~/.python-grid5000.yaml (username, password), see docs/providers/g5k.md
provider:
  type: g5k
  job_name: my-experiment      # the OAR job is named enos-<run id>-my-experiment
  walltime: "02:00:00"         # HH:MM[:SS]
  # env_name: debian12-min     # deploy this environment (nodes then reached as root)
  # reservation: "2030-01-01 19:00:00"
  # gateway: access.grid5000.fr   # SSH jump host from outside Grid'5000 (false inside)

resources:
  paravance:                   # a cluster
    control: 1                 # role: number of nodes
    compute: 2
"""

    def __init__(self, ctx):
        super().__init__(ctx)
        self._api_obj = None
        self._creds = None
        self._jlock = threading.RLock()

    # --- configuration ---------------------------------------------------------------
    def opt(self, name: str) -> Any:
        """Return provider option ``name`` (the default when not given)."""
        v = (self.ctx.options or {}).get(name, None)
        return DEFAULTS.get(name) if v is None and name in DEFAULTS else v

    @classmethod
    def validate(cls, config) -> None:
        """Check the machine groups and networks are consistent. Raises ConfigError."""
        from enos.g5k.plan import check_plan, groups_and_networks
        groups, nets = groups_and_networks(config)
        errors = check_plan(groups, nets)
        if errors:
            kp, msg = errors[0]
            raise config.error(kp, msg)

    @property
    def creds(self):
        """The API credentials (loaded once). Raises AuthError."""
        if self._creds is None:
            from enos.g5k.credentials import load_credentials
            self._creds = load_credentials()
        return self._creds

    @property
    def api(self):
        """The API wrapper (built once; imports python-grid5000 lazily)."""
        if self._api_obj is None:
            from enos.g5k.api import Api
            self._api_obj = Api(self.creds, timeout=float(self.opt("api_timeout")),
                                attempts=int(self.opt("api_attempts")),
                                base_delay=float(self.opt("retry_base_delay")),
                                max_delay=float(self.opt("retry_max_delay")))
        return self._api_obj

    @property
    def job_name(self) -> str:
        """The OAR job name: ``enos-<run_id>-<job_name>``."""
        return f"enos-{self.ctx.run_id}-{self.opt('job_name')}"

    # --- journal helpers (thread-safe) ---------------------------------------------------
    def _record(self, key: str, value: Any) -> None:
        with self._jlock:
            self.ctx.journal.record(key, value)

    def _forget(self, key: str) -> None:
        with self._jlock:
            self.ctx.journal.forget(key)

    def _recorded_jobs(self) -> Dict[str, dict]:
        with self._jlock:
            return {k.split(":", 1)[1]: self.ctx.journal.get(k)
                    for k in list(self.ctx.journal.data) if k.startswith("job:")}

    # --- init ------------------------------------------------------------------------
    def init(self, force_deploy: bool = False) -> Resources:
        """Book (or re-find) one job per site, wait for them, deploy if asked; return the
        hosts and IP pools. Raises AuthError, ReservationUnavailable, ProviderError,
        Unavailable/Timeout/RateLimited (after retries), ConfigError."""
        from enos.g5k import plan
        groups, nets = plan.groups_and_networks(self.ctx.config)
        errors = plan.check_plan(groups, nets)
        if errors:
            raise self.ctx.config.error(*errors[0])
        self._resolve_sites(groups)
        terms = plan.site_terms(groups, nets)
        jobs = self._get_or_submit(terms)
        jobs = self._wait_running(jobs)
        failpoint.checkpoint("g5k.jobs_running")
        pairs = self._assign(groups, jobs)
        vlan_of = self._vlans(nets, jobs)
        deployed = False
        if self.opt("env_name"):
            self._deploy_all(pairs, nets, vlan_of, jobs, force_deploy)
            deployed = True
        hosts = self._hosts(pairs, nets, vlan_of, jobs, deployed)
        pools = self._pools(nets, jobs, vlan_of)
        return Resources(hosts=hosts, networks=pools)

    def _resolve_sites(self, groups) -> None:
        from enos.g5k.plan import sites_needing_lookup
        wanted = sites_needing_lookup(groups)
        if not wanted:
            return
        sites = self.api.sites()
        found: Dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=min(8, len(sites)) or 1) as ex:
            for site, clusters in zip(sites, ex.map(self.api.clusters, sites)):
                for c in clusters:
                    found.setdefault(c, site)
        for g in groups:
            if not g.site and g.cluster:
                if g.cluster not in found:
                    raise self.ctx.config.error(g.keypath, f"no Grid'5000 cluster named '{g.cluster}' "
                                                f"(known: {', '.join(sorted(found)) or 'none'})")
                g.site = found[g.cluster]

    def _spec(self, terms: List[str]) -> dict:
        from enos.g5k import oar
        types = self.opt("job_type")
        types = [types] if isinstance(types, str) else list(types or [])
        if self.opt("env_name") and "deploy" not in types:
            types.append("deploy")
        spec = {"name": self.job_name, "resources": oar.resource_expression(terms, self.opt("walltime")),
                "command": "sleep 31536000", "types": types, "queue": self.opt("queue")}
        if self.opt("project"):
            spec["project"] = self.opt("project")
        if self.opt("reservation"):
            spec["reservation"] = self.opt("reservation")
        return spec

    def _find_by_name(self, site: str) -> List[dict]:
        from enos.g5k.oar import ACTIVE_STATES
        return self.api.jobs(site, name=self.job_name, states=ACTIVE_STATES, user=self.creds.username)

    def _reconnect(self, site: str, rec: Optional[dict]) -> Optional[dict]:
        """Return the live job of ``site`` this env already booked, or None."""
        from enos.g5k.api import NotFound
        from enos.g5k.oar import ACTIVE_STATES
        if not rec:
            return None   # nothing recorded: this run id never submitted on this site
        if rec.get("uid") is not None:
            try:
                job = self.api.job(site, rec["uid"])
            except NotFound:
                job = None
            if job and job.get("state") in ACTIVE_STATES:
                return job
            self.ctx.progress.info(f"g5k: job {rec['uid']} on {site} is gone "
                                   f"({job.get('state') if job else 'not found'}); booking again")
            self._forget(f"job:{site}")
            self._forget(f"deployed:{site}")
            return None
        found = self._find_by_name(site)
        if len(found) > 1:
            raise ProviderError(f"two jobs named {self.job_name} on {site}: "
                                + ", ".join(f"{j['uid']} ({j.get('state')})" for j in found)
                                + "; delete one (enos destroy deletes both)")
        if found:
            self._record(f"job:{site}", {"site": site, "name": self.job_name, "uid": found[0]["uid"]})
            return self.api.job(site, found[0]["uid"])
        self._forget(f"job:{site}")
        return None

    def _submit(self, site: str, terms: List[str]) -> dict:
        from enos.retry import retry
        spec = self._spec(terms)
        self._record(f"job:{site}", {"site": site, "name": self.job_name, "submitting": True})
        failpoint.checkpoint("g5k.job_submitting")
        tries = {"n": 0}

        def attempt():
            tries["n"] += 1
            if tries["n"] > 1:   # the failed POST may have created the job: look before re-posting
                found = self._find_by_name(site)
                if found:
                    return found[0]
            return self.api.submit(site, spec)

        job = retry(attempt, attempts=self.api.attempts, base_delay=self.api.base_delay,
                    max_delay=self.api.max_delay)
        self._record(f"job:{site}", {"site": site, "name": self.job_name, "uid": job["uid"]})
        failpoint.checkpoint("g5k.job_submitted")
        self.ctx.progress.info(f"g5k: job {job['uid']} submitted on {site}")
        return job

    def _get_or_submit(self, terms: Dict[str, List[str]]) -> Dict[str, dict]:
        recorded = self._recorded_jobs()
        for site in recorded:
            if site not in terms:
                raise UsageError(f"this environment holds a job on {site}, which the reservation no "
                                 f"longer asks for: run 'enos destroy' first")
        jobs: Dict[str, dict] = {}
        errors: List[Tuple[str, BaseException]] = []
        new_sites: List[str] = []

        def one(site):
            job = self._reconnect(site, recorded.get(site))
            if job is None:
                job = self._submit(site, terms[site])
                new_sites.append(site)
            else:
                self.ctx.progress.info(f"g5k: reusing job {job['uid']} on {site} ({job.get('state')})")
            return job

        with ThreadPoolExecutor(max_workers=min(16, len(terms)) or 1) as ex:
            futs = {site: ex.submit(one, site) for site in terms}
            for site, f in futs.items():
                try:
                    jobs[site] = f.result()
                except KeyboardInterrupt:
                    raise               # a signal: the journal lets destroy free what was booked
                except BaseException as e:  # noqa: B902 - collected and re-raised below
                    errors.append((site, e))
        if errors:
            # a permanent failure on one site: give back what this call booked everywhere
            self._delete_jobs([s for s in new_sites if s in jobs], jobs)
            self._cleanup_unfinished([s for s, _ in errors])
            raise _pick_error(errors)
        return jobs

    def _cleanup_unfinished(self, sites: List[str]) -> None:
        """After a failed submission, remove any job created on these sites (found by name)."""
        for site in sites:
            rec = self.ctx.journal.get(f"job:{site}")
            if not rec:
                continue
            try:
                for j in self._find_by_name(site) if rec.get("uid") is None else [{"uid": rec["uid"]}]:
                    self.api.delete_job(site, j["uid"])
                self._forget(f"job:{site}")
            except EnosError:
                pass  # left in the journal: destroy will retry

    def _delete_jobs(self, sites: List[str], jobs: Dict[str, dict]) -> None:
        for site in sites:
            try:
                self.api.delete_job(site, jobs[site]["uid"])
                self._forget(f"job:{site}")
                self._forget(f"deployed:{site}")
                failpoint.checkpoint("g5k.job_deleted")
            except EnosError as e:
                self.ctx.log.warning("could not delete job %s on %s: %s (enos destroy will retry)",
                                     jobs[site]["uid"], site, e)

    def _wait_running(self, jobs: Dict[str, dict]) -> Dict[str, dict]:
        from enos.errors import Timeout
        from enos.g5k.oar import ENDED_STATES
        delay = float(self.opt("poll_interval"))
        cap = float(self.opt("poll_max_interval"))
        limit = self.opt("wait_timeout")
        started = time.monotonic()
        with self.ctx.progress.task("waiting for Grid'5000 jobs", total=len(jobs)) as t:
            while True:
                ended = [(s, j) for s, j in jobs.items() if j.get("state") in ENDED_STATES]
                if ended:
                    site, job = ended[0]
                    self._forget(f"job:{site}")
                    self._delete_jobs([s for s in jobs if s != site], jobs)
                    why = job.get("message") or "; ".join(e.get("description", "") for e in job.get("events") or [])
                    raise ProviderError(f"job {job['uid']} on {site} ended ({job['state']}) while waiting"
                                        + (f": {why}" if why else "") + "; the other sites' jobs were deleted")
                running = [s for s, j in jobs.items() if j.get("state") == "running"]
                t.update("; ".join(f"{s}: {j.get('state')}" + _eta(j) for s, j in sorted(jobs.items())),
                         completed=len(running))
                if len(running) == len(jobs):
                    return jobs
                if limit and time.monotonic() - started > float(limit):
                    raise Timeout(f"Grid'5000 jobs not running after {float(limit):.0f}s (they are kept: "
                                  f"'enos up' again waits for them, 'enos destroy' deletes them)")
                signals.interruptible_sleep(delay)
                delay = min(cap, delay * 1.5)
                for site in [s for s, j in jobs.items() if j.get("state") != "running"]:
                    jobs[site] = self.api.job(site, jobs[site]["uid"])

    def _assign(self, groups, jobs) -> List[Tuple[Any, str]]:
        from enos.g5k.plan import assign_nodes
        try:
            return assign_nodes(groups, {s: list(j.get("assigned_nodes") or []) for s, j in jobs.items()})
        except ValueError as e:
            raise ProviderError(f"unexpected OAR answer: {e}") from None

    def _vlans(self, nets, jobs) -> Dict[str, str]:
        """Return network id → the vlan id OAR gave (kavlan networks only)."""
        from enos.g5k.oar import KAVLAN_TYPES
        out: Dict[str, str] = {}
        given = {s: list((j.get("resources_by_type") or {}).get("vlans") or []) for s, j in jobs.items()}
        for n in nets:
            if n.type in KAVLAN_TYPES:
                if not given.get(n.site):
                    raise ProviderError(f"the job on {n.site} got no vlan for network '{n.id}'")
                out[n.id] = str(given[n.site].pop(0))
        return out

    # --- deployment ------------------------------------------------------------------
    def _deploy_keys(self) -> str:
        keys = []
        if self.ctx.ssh_key is not None:
            keys.append(self.ctx.ssh_pubkey)
        user_key = Path(os.path.expanduser(str(self.opt("key"))))
        if user_key.is_file():
            keys.append(user_key.read_text().strip())
        return "\n".join(keys)

    def _deploy_all(self, pairs, nets, vlan_of, jobs, force: bool) -> None:
        by_target: Dict[Tuple[str, Optional[str]], List[str]] = {}
        for g, fq in pairs:
            vlan = vlan_of.get(g.primary_network) if g.primary_network else None
            by_target.setdefault((g.site, vlan), []).append(fq)
        errors: List[Tuple[str, BaseException]] = []
        with ThreadPoolExecutor(max_workers=min(8, len(by_target)) or 1) as ex:
            futs = {k: ex.submit(self._deploy_site, k[0], k[1], nodes, jobs[k[0]], force)
                    for k, nodes in by_target.items()}
            for (site, _), f in futs.items():
                try:
                    f.result()
                except KeyboardInterrupt:
                    raise               # a signal: the workers stop at their next poll
                except BaseException as e:  # noqa: B902
                    errors.append((site, e))
        if errors:
            raise _pick_error(errors)

    def _already_deployed(self, site: str, job: dict, env: str) -> set:
        rec = self.ctx.journal.get(f"deployed:{site}") or {}
        if rec.get("job") == job["uid"] and rec.get("env") == env:
            return set(rec.get("nodes") or [])
        started = job.get("started_at") or 0
        done = set()
        try:
            for d in self.api.deployments(site, user=self.creds.username):
                if d.get("environment") == env and d.get("status") == "terminated" \
                        and (d.get("created_at") or 0) >= started:
                    done |= {n for n, r in (d.get("result") or {}).items() if r.get("state") == "OK"}
        except ProviderError:
            return set()
        return done & set(job.get("assigned_nodes") or [])

    def _deploy_site(self, site: str, vlan: Optional[str], nodes: List[str], job: dict, force: bool) -> None:
        env = self.opt("env_name")
        done = set() if force else self._already_deployed(site, job, env)
        todo = sorted(set(nodes) - done)
        if not todo:
            self.ctx.progress.info(f"g5k: {len(nodes)} node(s) on {site} already run {env}")
            return
        keys = self._deploy_keys()
        retries = int(self.opt("deploy_retries"))
        for attempt in range(retries + 1):
            spec = {"nodes": todo, "environment": env, "key": keys}
            if vlan:
                spec["vlan"] = vlan
            dep = self._post_deployment(site, spec)
            failpoint.checkpoint("g5k.deployment_submitted")
            dep = self._wait_deployment(site, dep, len(todo))
            ok = [n for n, r in (dep.get("result") or {}).items() if r.get("state") == "OK"]
            done |= set(ok)
            with self._jlock:
                self._record(f"deployed:{site}", {"job": job["uid"], "env": env, "nodes": sorted(done)})
            failpoint.checkpoint("g5k.deployed")
            todo = sorted(set(todo) - set(ok))
            if not todo:
                return
            if attempt < retries:
                self.ctx.progress.info(f"g5k: deployment failed on {', '.join(todo)}; retrying "
                                       f"({attempt + 1}/{retries})")
        raise ProviderError(f"deployment of {env} on {site} failed on {', '.join(todo)} after "
                            f"{retries + 1} attempt(s); the job is kept ('enos up' retries, 'enos destroy' frees it)")

    def _post_deployment(self, site: str, spec: dict) -> dict:
        from enos.retry import retry
        tries = {"n": 0}
        since = int(time.time()) - 5

        def attempt():
            tries["n"] += 1
            if tries["n"] > 1:
                for d in self.api.deployments(site, user=self.creds.username):
                    if sorted(d.get("nodes") or []) == sorted(spec["nodes"]) and \
                            d.get("environment") == spec["environment"] and (d.get("created_at") or 0) >= since:
                        return d
            return self.api.deploy(site, spec)
        return retry(attempt, attempts=self.api.attempts, base_delay=self.api.base_delay,
                     max_delay=self.api.max_delay)

    def _wait_deployment(self, site: str, dep: dict, n: int) -> dict:
        delay = float(self.opt("poll_interval"))
        cap = float(self.opt("poll_max_interval"))
        with self.ctx.progress.task(f"deploying {self.opt('env_name')} on {n} node(s) of {site}") as t:
            while dep.get("status") == "processing" or dep.get("status") == "waiting":
                t.update(f"deployment {dep['uid']}: {dep.get('status')}")
                signals.interruptible_sleep(delay)   # in a worker thread: wakes on a signal
                delay = min(cap, delay * 1.5)
                dep = self.api.deployment(site, dep["uid"])
        if dep.get("status") not in ("terminated",):
            dep.setdefault("result", {})
            for node in dep.get("nodes") or []:
                dep["result"].setdefault(node, {"state": "KO"})
        return dep

    # --- results ---------------------------------------------------------------------
    def _jump(self) -> Optional[str]:
        gw = self.ctx.options.get("gateway", "__unset__") if self.ctx.options else "__unset__"
        if gw == "__unset__" or gw is None:
            if socket.getfqdn().endswith(".grid5000.fr"):
                return None   # inside Grid'5000: nodes are reachable directly
            gw = DEFAULT_GATEWAY
        if gw is False or gw == "":
            return None
        gw = str(gw)
        return gw if "@" in gw else f"{self.creds.username}@{gw}"

    def _hosts(self, pairs, nets, vlan_of, jobs, deployed: bool) -> List[Host]:
        from enos.g5k.oar import kavlan_name, node_cluster
        jump = self._jump()
        if deployed:
            user, keyfile = "root", (str(self.ctx.ssh_key) if self.ctx.ssh_key else None)
        else:
            user = self.opt("ssh_user") or self.creds.username
            pub = os.path.expanduser(str(self.opt("key")))
            priv = pub[:-4] if pub.endswith(".pub") else pub
            keyfile = priv if os.path.isfile(priv) else None
        hosts = []
        for g, fq in pairs:
            vlan = vlan_of.get(g.primary_network) if g.primary_network else None
            address = kavlan_name(fq, vlan) if vlan else fq
            extra = {"g5k_site": g.site, "g5k_cluster": node_cluster(fq), "g5k_fqdn": fq,
                     "g5k_job": jobs[g.site]["uid"]}
            if vlan:
                extra["g5k_vlan"] = vlan
            hosts.append(Host(alias=fq.split(".")[0], address=address, user=user, keyfile=keyfile,
                              roles=list(g.roles), extra=extra, jump=jump))
        return hosts

    def _pools(self, nets, jobs, vlan_of) -> List[IpPool]:
        from enos.g5k.oar import KAVLAN_TYPES, SUBNET_TYPES
        pools: List[IpPool] = []
        subnets = {s: list((j.get("resources_by_type") or {}).get("subnets") or []) for s, j in jobs.items()}
        site_info: Dict[str, dict] = {}
        dns: Dict[str, Optional[str]] = {}
        for n in nets:
            if n.type not in KAVLAN_TYPES + SUBNET_TYPES:
                continue
            if n.site not in site_info:
                site_info[n.site] = self.api.site(n.site)
                dns[n.site] = self.api.dns(n.site)
            info = site_info[n.site]
            if n.type in SUBNET_TYPES:
                want = 64 if n.type == "slash_16" else 1
                mine, subnets[n.site] = subnets[n.site][:want], subnets[n.site][want:]
                gw = (info.get("g5ksubnet") or {}).get("gateway")
                for cidr in mine:
                    pools.append(IpPool.from_range(cidr, gateway=gw, dns=dns[n.site], roles=list(n.roles),
                                                   name=n.id))
            else:
                v = (info.get("kavlans") or {}).get(vlan_of[n.id]) or {}
                if not v.get("network"):
                    raise ProviderError(f"the API gives no address range for kavlan {vlan_of[n.id]} on {n.site}")
                pools.append(IpPool.from_range(v["network"], gateway=v.get("gateway"), dns=dns[n.site],
                                               roles=list(n.roles), name=n.id))
        return pools

    # --- destroy / sweep -------------------------------------------------------------
    def destroy(self) -> None:
        """Delete every recorded job (by uid, or by name when the uid was never recorded);
        already-gone jobs count as deleted. Raises DestroyIncomplete listing what is left."""
        recorded = self._recorded_jobs()
        leftovers: List[str] = []
        for site, rec in sorted(recorded.items()):
            try:
                uids = [rec["uid"]] if rec.get("uid") is not None else [j["uid"] for j in self._find_by_name(site)]
                for uid in uids:
                    self.api.delete_job(site, uid)
                    failpoint.checkpoint("g5k.job_deleted")
                self._forget(f"job:{site}")
                self._forget(f"deployed:{site}")
                if uids:
                    self.ctx.progress.info(f"g5k: deleted job {', '.join(map(str, uids))} on {site}")
            except EnosError as e:
                leftovers.append(f"job {rec.get('uid') or rec.get('name')} on {site}: {e}")
        if leftovers:
            raise DestroyIncomplete(leftovers)

    def sweep(self) -> List[str]:
        """Delete every active job of this user named ``enos-<run_id>-*`` on every site;
        return what was deleted. Raises DestroyIncomplete if some could not be."""
        from enos.g5k.oar import ACTIVE_STATES
        prefix = f"enos-{self.ctx.run_id}-"
        removed: List[str] = []
        leftovers: List[str] = []

        def one(site):
            out, bad = [], []
            for j in self.api.jobs(site, states=ACTIVE_STATES, user=self.creds.username):
                if str(j.get("name") or "").startswith(prefix):
                    try:
                        self.api.delete_job(site, j["uid"])
                        out.append(f"job {j['uid']} ({j['name']}) on {site}")
                    except EnosError as e:
                        bad.append(f"job {j['uid']} on {site}: {e}")
            return out, bad

        sites = self.api.sites()
        with ThreadPoolExecutor(max_workers=min(8, len(sites)) or 1) as ex:
            for out, bad in ex.map(one, sites):
                removed += out
                leftovers += bad
        for site in list(self._recorded_jobs()):
            self._forget(f"job:{site}")
        if leftovers:
            raise DestroyIncomplete(leftovers)
        return removed

    # --- extend / info / check ----------------------------------------------------------
    def extend(self, walltime: str) -> dict:
        """Ask for ``walltime`` (``+H:MM``) more on every recorded job; return per site the
        job, the API's answer and the new walltime. Raises UsageError (bad value, no job),
        ProviderError (refused, e.g. job not running)."""
        from enos.g5k.oar import format_extension, format_walltime, parse_extension
        try:
            delta = parse_extension(walltime)
        except ValueError as e:
            raise UsageError(str(e)) from None
        recorded = {s: r for s, r in self._recorded_jobs().items() if r.get("uid") is not None}
        if not recorded:
            raise UsageError("this environment has no Grid'5000 job to extend")
        out = {}
        for site, rec in sorted(recorded.items()):
            answer = self._extend_once(site, rec["uid"], format_extension(delta))
            job = self.api.job(site, rec["uid"])
            out[site] = {"job": rec["uid"], "status": answer.get("status"), "message": answer.get("message"),
                         "walltime": format_walltime(job.get("walltime") or 0),
                         "end": _iso((job.get("started_at") or job.get("scheduled_at") or 0) + (job.get("walltime") or 0))}
        return out

    def _extend_once(self, site: str, uid: int, ext: str) -> dict:
        """POST the walltime change of job ``uid``; when the answer is lost (a retryable
        failure), read the job's walltime record and post again only if the change is in
        neither ``granted`` nor ``pending``. Return the API's answer (or a note that the
        change was found granted). Raises the API's errors once attempts are exhausted."""
        from enos.errors import Retryable
        from enos.retry import retry
        before = self.api.walltime(site, uid)
        mark = (before.get("granted"), before.get("pending"), before.get("walltime"))

        def attempt():
            now = self.api.walltime(site, uid)
            if (now.get("granted"), now.get("pending"), now.get("walltime")) != mark:
                return {"status": "Accepted", "message": "the change was granted (its answer had been lost)"}
            return self.api.change_walltime(site, uid, ext)

        def first():
            try:
                return self.api.change_walltime(site, uid, ext)
            except Retryable as e:
                self.ctx.log.info("g5k: walltime change of job %s on %s: %s; reading the job before "
                                  "asking again", uid, site, e)
                return retry(attempt, attempts=self.api.attempts, base_delay=self.api.base_delay,
                             max_delay=self.api.max_delay)
        return first()

    def info(self) -> dict:
        """Return ``{"jobs": [...]}``: per recorded job its site, uid, name, state,
        walltime, remaining walltime and predicted start."""
        from enos.g5k.api import NotFound
        from enos.g5k.oar import format_walltime
        jobs = []
        now = time.time()
        for site, rec in sorted(self._recorded_jobs().items()):
            entry = {"site": site, "uid": rec.get("uid"), "name": rec.get("name")}
            if rec.get("uid") is None:
                entry["state"] = "unknown (submission interrupted)"
                jobs.append(entry)
                continue
            try:
                j = self.api.job(site, rec["uid"])
            except NotFound:
                entry["state"] = "gone"
                jobs.append(entry)
                continue
            wall = int(j.get("walltime") or 0)
            entry.update(state=j.get("state"), walltime=format_walltime(wall), nodes=len(j.get("assigned_nodes") or []))
            if j.get("state") == "running" and j.get("started_at"):
                entry["remaining"] = format_walltime(max(0, j["started_at"] + wall - now))
                entry["ends_at"] = _iso(j["started_at"] + wall)
            elif j.get("scheduled_at"):
                entry["remaining"] = format_walltime(wall)
                entry["starts_at"] = _iso(j["scheduled_at"])
            jobs.append(entry)
        return {"jobs": jobs, "api": self.creds.uri if jobs else None}

    def check(self) -> List[Check]:
        """Return checks: credentials readable, accepted by the API, SSH key present,
        gateway reachable. Books nothing."""
        checks: List[Check] = []
        try:
            creds = self.creds
            checks.append(Check("Grid'5000 credentials", True, str(creds)))
        except AuthError as e:
            checks.append(Check("Grid'5000 credentials", False, str(e),
                                "write ~/.python-grid5000.yaml (username, password; chmod 600) "
                                "or set G5K_USERNAME/G5K_PASSWORD"))
            creds = None
        if creds is not None:
            try:
                self.api.call("check credentials", lambda gk: gk.root.get(), retries=False)
                self.api.call("check credentials", lambda gk: gk.sites.list(), retries=False)
                checks.append(Check("Grid'5000 API accepts the credentials", True, creds.uri))
            except EnosError as e:
                checks.append(Check("Grid'5000 API accepts the credentials", False, str(e),
                                    "check the password (the API answers 401 to a wrong one) and G5K_API_URL"))
        pub = Path(os.path.expanduser(str(self.opt("key"))))
        priv = Path(str(pub)[:-4]) if str(pub).endswith(".pub") else pub
        checks.append(Check("SSH key", pub.is_file() and priv.is_file(), f"{priv} (+ .pub)",
                            f"ssh-keygen -t ed25519 -f {priv}, and register {pub} in your Grid'5000 account"))
        jump = self._jump() if creds is not None else None
        if jump:
            hostport = jump.split("@", 1)[-1]
            host, _, port = hostport.partition(":")
            try:
                with socket.create_connection((host, int(port or 22)), timeout=5):
                    pass
                checks.append(Check("SSH gateway reachable", True, hostport))
            except OSError as e:
                checks.append(Check("SSH gateway reachable", False, f"{hostport}: {e}",
                                    "check the network, or set 'gateway: false' inside Grid'5000"))
        return checks


def _eta(job: dict) -> str:
    if job.get("state") in ("waiting", "hold") and job.get("scheduled_at"):
        return f" (start {_iso(job['scheduled_at'])})"
    return ""


def _iso(ts) -> str:
    return _dt.datetime.fromtimestamp(int(ts), _dt.timezone.utc).isoformat(timespec="seconds")


def _pick_error(errors: List[Tuple[str, BaseException]]) -> BaseException:
    """The most telling of several per-site errors: a non-retryable EnosError first."""
    for _, e in errors:
        if isinstance(e, EnosError) and not isinstance(e, Retryable):
            return e
    for _, e in errors:
        if isinstance(e, EnosError):
            return e
    return errors[0][1]
