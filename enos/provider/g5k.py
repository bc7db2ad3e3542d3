"""The ``g5k`` provider: Grid'5000 through its REST API (python-grid5000), no ``oarsub``.

One OAR job per site (submitted concurrently), named ``job_name`` (then the user's running
or waiting job of that name is reused; ``job_ids``/``oargrid_jobids`` give jobs to attach
to) or ``enos-<run_id>``; an optional kadeploy deployment (``env_name``); secondary
interfaces moved into their kavlans; hosts are the nodes' FQDNs (or kavlan names) reached
through the access gateway (one connection master); IP pools come from reserved subnets or
kavlans; the earliest slot from the sites' status. See ``docs/providers/g5k.md``.

This module is the contract adapter (schema, init, destroy, sweep, extend, info, check);
everything else is in :mod:`enos.g5k`: ``session`` (options, credentials, API client,
journal), ``jobs`` (submit, find, wait, delete, sweep, extend), ``deploy`` (kadeploy),
``resources`` (hosts and IP pools), ``plan`` (machine groups → OAR terms), ``oar``,
``api``, ``credentials``, ``diagnose`` (``enos check``).
"""
from __future__ import annotations

from typing import Any, List, Optional

from enos import failpoint, names
from enos.g5k import advance, deploy, jobs, networks, plan, resources, reuse
from enos.g5k import record as g5k_record
from enos.g5k.diagnose import checks
from enos.g5k.session import DEFAULT_GATEWAY, DEFAULTS, Session  # noqa: F401 (re-exported)
from enos.errors import UsageError
from enos.model import Check, Resources
from enos.provider.provider import (ADVANCE_RESERVATION, DEPLOY_OS, DESTROY, EXTEND_WALLTIME, IP_POOL, RESERVE,
                                    SWEEP, Provider)

WALLTIME_PATTERN = r"^\d+:[0-5]?\d(:[0-5]?\d)?$"
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"
NETWORK_TYPES = ["prod", "kavlan", "kavlan-local", "kavlan-global", "slash_22", "slash_16"]

_STR = {"type": "string", "minLength": 1, "x-expected": "a non-empty string"}
_NUM = {"type": "number", "exclusiveMinimum": 0, "x-expected": "a number > 0"}
_ROLES = {"oneOf": [_STR, {"type": "array", "items": _STR, "minItems": 1}],
          "x-expected": "a role name or a list of role names"}

_MACHINE = {
    # the keys of an explicit machine entry besides roles/cluster/nodes (checked by the core)
    "type": "object",
    "properties": {
        "servers": {"type": "array", "items": _STR, "minItems": 1,
                    "x-expected": "a list of node FQDNs (paradoxe-1.rennes.grid5000.fr)"},
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
    defaults = DEFAULTS
    schema = {
        "type": "object",
        "properties": {
            "type": {"const": "g5k"},
            "job_name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$",
                         "x-expected": "a job name of letters, digits, '_', '.', '-' (your running or waiting "
                                       "job of that name is reused)"},
            "job_ids": {"type": "object", "minProperties": 1,
                        "additionalProperties": {"type": "integer", "minimum": 1, "x-expected": "an OAR job id"},
                        "x-expected": "a mapping site → the OAR job id to use there ({nancy: 1234})"},
            "oargrid_jobids": {"type": "array", "minItems": 1,
                               "items": {"type": "array", "minItems": 2, "maxItems": 2,
                                         "prefixItems": [_STR, {"type": "integer", "minimum": 1}],
                                         "x-expected": "a pair [site, OAR job id]"},
                               "x-expected": "a list of [site, job id] pairs (Enos' form of job_ids)"},
            "gateway_key": {**names.PATH, "x-expected": "the path of the private key the SSH gateway accepts"},
            "walltime": {"type": "string", "pattern": WALLTIME_PATTERN,
                         "x-expected": "a walltime HH:MM[:SS] (more than 24 hours allowed)"},
            "reservation": {"type": ["string", "null"], "pattern": DATE_PATTERN,
                            "x-expected": "a date 'YYYY-MM-DD HH:MM:SS'"},
            "queue": _STR,
            "project": _STR,
            "env_name": {"type": ["string", "null"], "minLength": 1,
                         "x-expected": "a kadeploy environment name (debian12-min, ...)"},
            "env_version": {"type": "integer", "minimum": 1,
                            "x-expected": "the kadeploy version of env_name to deploy (an integer ≥ 1; "
                                          "kadeploy's latest when absent)"},
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
        "dependentRequired": {"env_version": ["env_name"]},
        "additionalProperties": False,
    }
    sample = """\
# Grid'5000: credentials in ~/.python-grid5000.yaml (username, password), see docs/providers/g5k.md
provider:
  type: g5k
  job_name: my-experiment      # your running/waiting job of that name is reused, else booked so
  #                            # (without job_name: enos-<run id>, this environment's own)
  # job_ids: {nancy: 1234}     # or attach to given jobs (Enos' oargrid_jobids: [[nancy, 1234]])
  walltime: "02:00:00"         # HH:MM[:SS]
  # env_name: debian12-min     # deploy this environment (nodes then reached as root)
  # env_version: 2024012345    # pin its kadeploy version (kadeploy's latest when absent)
  # reservation: "2030-01-01 19:00:00"
  # gateway: access.grid5000.fr   # SSH jump host from outside Grid'5000 (false inside)
  # gateway_key: ~/.ssh/id_g5k    # the private key the gateway accepts (default: agent/default keys)

resources:
  paradoxe:                    # a cluster (rennes)
    control: 1                 # role: number of nodes
    compute: 2
"""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.g5k = Session(ctx)

    # --- configuration ---------------------------------------------------------------
    def opt(self, name: str) -> Any:
        """Return provider option ``name`` (the default when not given)."""
        return self.g5k.opt(name)

    @property
    def creds(self):
        """The API credentials (loaded once). Raises AuthError."""
        return self.g5k.creds

    @property
    def api(self):
        """The API wrapper (built once; imports python-grid5000 lazily)."""
        return self.g5k.api

    @property
    def job_name(self) -> str:
        """The OAR job name: ``job_name`` as given, else ``enos-<run_id>``."""
        return self.g5k.job_name

    @classmethod
    def validate(cls, config) -> None:
        """Check the machine groups and networks are consistent. Raises ConfigError."""
        groups, nets = plan.groups_and_networks(config)
        errors = plan.check_plan(groups, nets)
        if errors:
            kp, msg = errors[0]
            raise config.error(kp, msg)
        try:
            reuse.given_jobs(config.options or {})
        except reuse.ReuseError as e:
            raise config.error("provider.oargrid_jobids", str(e)) from None

    # --- init ------------------------------------------------------------------------
    def init(self, force_deploy: bool = False) -> Resources:
        """Book (or re-find) one job per site, wait for them, deploy if asked; return the
        hosts and IP pools. Raises AuthError, ReservationUnavailable, ProviderError,
        Unavailable/Timeout/RateLimited (after retries), ConfigError."""
        g5k = self.g5k
        groups, nets = plan.groups_and_networks(self.ctx.config)
        errors = plan.check_plan(groups, nets)
        if errors:
            raise self.ctx.config.error(*errors[0])
        jobs.resolve_sites(g5k, groups)
        given = self._given_jobs(groups)
        secondaries = networks.plan_secondaries(g5k, groups, nets)     # refused before booking
        deployed = bool(self.opt("env_name"))
        needs = reuse.needs(groups, nets, deploy=deployed)
        booked = jobs.wait_running(g5k, jobs.book(g5k, plan.site_terms(groups, nets), needs, given))
        failpoint.checkpoint("g5k.jobs_running")
        pairs = resources.assign(groups, booked)
        vlan_of = resources.vlans(g5k, nets, booked)
        if deployed:
            deploy.deploy_all(g5k, pairs, nets, vlan_of, booked, force_deploy)
        networks.move_secondaries(g5k, groups, pairs, secondaries, vlan_of, booked)
        hosts = resources.hosts(g5k, pairs, nets, vlan_of, booked, deployed, groups, secondaries)
        if nets:
            g5k.record("networks", networks.rows([h.to_dict() for h in hosts]))
        return Resources(hosts=hosts, networks=resources.pools(g5k, nets, booked, vlan_of))

    def earliest_slot(self, walltime: Optional[str], start: float, until: Optional[float] = None) -> Optional[dict]:
        """Return the earliest window when every requested cluster (and vlan, subnet) of
        every site is free for ``walltime`` (default the reservation's), from the sites'
        status: ``{"start", "end", "oar_date" (Europe/Paris), "sites": {site: {cluster: free
        nodes}}, "instants_tried"}``, or None. Books nothing. Raises ConfigError (unknown
        cluster, bad walltime), AuthError, Unavailable."""
        groups, nets = plan.groups_and_networks(self.ctx.config)
        errors = plan.check_plan(groups, nets)
        if errors:
            raise self.ctx.config.error(*errors[0])
        jobs.resolve_sites(self.g5k, groups)
        try:
            return advance.earliest_slot(self.g5k, groups, nets, walltime, start, until)
        except ValueError as e:
            raise UsageError(f"--walltime: {e}") from None

    def _given_jobs(self, groups) -> dict:
        """Return {site: job id} of ``job_ids``/``oargrid_jobids``. Raises ConfigError when
        they disagree, name a site the reservation does not use, or miss one it uses."""
        opts = self.ctx.options or {}
        if not opts.get("job_ids") and not opts.get("oargrid_jobids"):
            return {}
        try:
            given = reuse.given_jobs(opts)
        except reuse.ReuseError as e:
            raise self.ctx.config.error("provider.oargrid_jobids", str(e)) from None
        key = "provider.job_ids" if opts.get("job_ids") else "provider.oargrid_jobids"
        sites = {g.site for g in groups}
        if set(given) - sites:
            raise self.ctx.config.error(key, f"job(s) given on {', '.join(sorted(set(given) - sites))}, where the "
                                             f"reservation asks for nothing (it uses {', '.join(sorted(sites))})")
        if sites - set(given):
            raise self.ctx.config.error(key, f"no job given on {', '.join(sorted(sites - set(given)))}, where the "
                                             f"reservation asks for machines")
        return given

    # --- destroy / sweep / extend / info / check ---------------------------------------
    def destroy(self) -> None:
        """Delete every recorded job (by uid, or by name when the uid was never recorded);
        already-gone jobs count as deleted. Raises DestroyIncomplete listing what is left."""
        jobs.delete_recorded(self.g5k)

    def sweep(self) -> List[str]:
        """Delete every active job of this user named ``enos-<run_id>-*`` on every site;
        return what was deleted. Raises DestroyIncomplete if some could not be."""
        return jobs.sweep(self.g5k)

    def extend(self, walltime: str) -> dict:
        """Ask for ``walltime`` (``+H:MM``) more on every recorded job; return per site the
        job, the API's answer and the new walltime. Raises UsageError (bad value, no job),
        ProviderError (refused, e.g. job not running)."""
        return jobs.extend(self.g5k, walltime)

    def info(self) -> dict:
        """Return ``{"jobs": [...], "networks": [...]}``: per recorded job its site, uid,
        name, whether it was reused, state, walltime, remaining walltime and predicted
        start; per host and network its interface and address (when networks are declared)."""
        out = jobs.jobs_info(self.g5k)
        rows = self.ctx.journal.get("networks")
        if rows:
            out["networks"] = rows
        return out

    def record(self) -> dict:
        """Return the jobs (site, uid, state, walltime, nodes), each node's Reference API
        description and the deployed environment (see :mod:`enos.g5k.record`)."""
        return g5k_record.record(self.g5k)

    def check(self) -> List[Check]:
        """Return checks: credentials readable, accepted by the API, SSH key present,
        gateway reachable. Books nothing."""
        return checks(self.g5k)
