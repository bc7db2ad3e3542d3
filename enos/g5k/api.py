"""A thin wrapper over python-grid5000: typed errors, retries with backoff, request counting.

Every call goes through :meth:`Api.call`, which maps the library's and requests' failures
to :mod:`enos.errors` and retries the transient ones (5xx, 429, timeouts, refused
connections). python-grid5000's own urllib3 retries are turned off so that there is one
retry policy, ours, and so that a non-idempotent POST is never replayed blindly: callers
that create something check whether it exists before trying again.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional, TypeVar

from enos.errors import (AuthError, ProviderError, RateLimited, ReservationUnavailable, Timeout,
                         Unavailable)
from enos.g5k.credentials import Credentials
from enos.g5k.oar import could_run_at
from enos.retry import retry

log = logging.getLogger("enos.provider.g5k")
T = TypeVar("T")


class NotFound(ProviderError):
    """The API answered 404 for this object."""


class ApiError(ProviderError):
    """The API refused a request (4xx other than 401/403/404/429). ``status`` is the code."""

    def __init__(self, message: str, status: Optional[int] = None):
        self.status = status
        super().__init__(message)


class Api:
    """The Grid'5000 API as enos uses it. ``requests`` counts HTTP requests sent (retries
    included); ``retries`` counts retried failures."""

    def __init__(self, creds: Credentials, *, timeout: float = 30.0, attempts: int = 6,
                 base_delay: float = 0.5, max_delay: float = 20.0):
        self.creds = creds
        self.timeout = timeout
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.requests = 0
        self.retries = 0
        self._lock = threading.Lock()
        self._client = None

    # --- the client ------------------------------------------------------------------
    @property
    def client(self):
        """The python-grid5000 client, built on first use (imports ``grid5000``)."""
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    def _build(self):
        from grid5000 import Grid5000
        from requests.adapters import HTTPAdapter
        c = self.creds
        gk = Grid5000(uri=c.uri.rstrip("/"), username=c.username, password=c.password,
                      verify_ssl=c.verify_ssl, timeout=self.timeout)
        api = self

        class CountingAdapter(HTTPAdapter):
            def send(self, request, **kw):
                with api._lock:
                    api.requests += 1
                log.debug("%s %s", request.method, request.path_url)
                return super().send(request, **kw)

        adapter = CountingAdapter(max_retries=0, pool_connections=8, pool_maxsize=32)
        gk.session.mount("http://", adapter)
        gk.session.mount("https://", adapter)
        return gk

    # --- calls -----------------------------------------------------------------------
    def call(self, what: str, fn: Callable[[Any], T], *, retries: bool = True) -> T:
        """Return ``fn(client)``, retrying transient failures; ``what`` names the call in
        errors. Raises AuthError, ReservationUnavailable, NotFound, ApiError, and, once
        retries are exhausted, Unavailable / Timeout / RateLimited."""
        def once():
            return self._translate(what, fn)

        def note(attempt, exc, delay):
            with self._lock:
                self.retries += 1
            log.info("%s: %s; retry %d in %.1fs", what, exc, attempt, delay)

        if not retries:
            return once()
        return retry(once, attempts=self.attempts, base_delay=self.base_delay,
                     max_delay=self.max_delay, on_retry=note)

    def _translate(self, what: str, fn):
        import requests
        from grid5000.exceptions import Grid5000AuthenticationError, Grid5000Error
        try:
            return fn(self.client)
        except Grid5000AuthenticationError as e:
            raise AuthError(f"{what}: the Grid'5000 API at {self.creds.uri} refused the credentials "
                            f"of '{self.creds.username}' (from {self.creds.source}): "
                            f"{e.response_code} {_msg(e)}") from None
        except Grid5000Error as e:
            code = e.response_code
            msg = _msg(e)
            if code == 403:
                raise AuthError(f"{what}: the Grid'5000 API at {self.creds.uri} forbids this to "
                                f"'{self.creds.username}': {msg}") from None
            if code == 404:
                raise NotFound(f"{what}: not found ({msg})") from None
            if code == 429:
                raise RateLimited(f"{what}: rate limited by the Grid'5000 API (429)") from None
            if code is not None and code >= 500:
                raise Unavailable(f"{what}: Grid'5000 API error {code}: {msg[:200]}") from None
            slot = could_run_at(msg)
            if slot:
                raise ReservationUnavailable(f"{what}: OAR refused the job", next_slot=slot) from None
            raise ApiError(f"{what}: Grid'5000 API refused the request ({code}): {msg[:500]}", code) from None
        except requests.exceptions.Timeout:
            raise Timeout(f"{what}: no answer from {self.creds.uri} within {self.timeout:.0f}s") from None
        except requests.exceptions.ConnectionError as e:
            raise Unavailable(f"{what}: cannot reach {self.creds.uri}: {type(e).__name__}") from None
        except requests.exceptions.RetryError:
            raise Unavailable(f"{what}: {self.creds.uri} keeps failing") from None
        except ValueError as e:  # unparsable JSON
            raise Unavailable(f"{what}: unreadable answer from {self.creds.uri}: {e}") from None

    # --- the endpoints enos uses -----------------------------------------------------
    def sites(self) -> List[str]:
        """Return the site uids."""
        return self.call("list sites", lambda gk: [s.uid for s in gk.sites.list()])

    def site(self, site: str) -> Dict[str, Any]:
        """Return the site's description (``GET /sites/{site}``) as a dict."""
        return self.call(f"get site {site}", lambda gk: gk.sites[site].to_dict())

    def clusters(self, site: str) -> List[str]:
        """Return the cluster uids of ``site``."""
        from grid5000.objects import ClusterManager
        return self.call(f"list clusters of {site}",
                         lambda gk: [c.uid for c in ClusterManager(gk, parent=_Parent(site)).list()])

    def node(self, site: str, cluster: str, uid: str) -> Dict[str, Any]:
        """Return the Reference API's description of node ``uid`` (its hardware, network
        adapters, ... as the API serves it)."""
        from grid5000.objects import NodeManager
        parent = _Parent(site)
        parent.uid = cluster                  # NodeManager reads the cluster from the parent's uid
        return self.call(f"get node {uid} of {site}/{cluster}",
                         lambda gk: NodeManager(gk, parent=parent)[uid].to_dict())

    def dns(self, site: str) -> Optional[str]:
        """Return the site's DNS server address (None if the API does not say)."""
        from grid5000.objects import ServerManager
        def get(gk):
            srv = ServerManager(gk, parent=_Parent(site))["dns"].to_dict()
            return ((srv.get("network_adapters") or {}).get("default") or {}).get("ip")
        try:
            return self.call(f"get dns of {site}", get)
        except NotFound:
            return None

    def _jobs(self, gk, site):
        from grid5000.objects import JobManager
        return JobManager(gk, parent=_Parent(site))

    def submit(self, site: str, spec: Dict[str, Any]) -> Dict[str, Any]:
        """POST a job (once: no retry, the caller checks by name first). Returns its dict."""
        return self.call(f"submit job on {site}", lambda gk: self._jobs(gk, site).create(spec).to_dict(),
                         retries=False)

    def job(self, site: str, uid: int) -> Dict[str, Any]:
        """Return the job's dict (state, assigned_nodes, resources_by_type, ...)."""
        return self.call(f"get job {uid} on {site}", lambda gk: self._jobs(gk, site).get(int(uid)).to_dict())

    def jobs(self, site: str, *, name: Optional[str] = None, states=None,
             user: Optional[str] = None) -> List[Dict[str, Any]]:
        """Return the site's jobs filtered by name, states and user (server-side query
        parameters, checked again here)."""
        q: Dict[str, Any] = {}
        if name:
            q["name"] = name
        if states:
            q["state"] = ",".join(states)
        if user:
            q["user"] = user
        items = self.call(f"list jobs on {site}", lambda gk: [j.to_dict() for j in self._jobs(gk, site).list(**q)])
        return [j for j in items
                if (not name or j.get("name") == name) and (not states or j.get("state") in states)]

    def delete_job(self, site: str, uid: int) -> bool:
        """Delete a job; return False if it was already gone (404 or already killed)."""
        try:
            self.call(f"delete job {uid} on {site}", lambda gk: self._jobs(gk, site).delete(int(uid)))
            return True
        except NotFound:
            return False
        except ApiError as e:
            if "already" in str(e).lower():
                return False
            raise

    def change_walltime(self, site: str, uid: int, delta: str) -> Dict[str, Any]:
        """POST a walltime change (``+H:MM:SS``) of a running job, once (not retried: a
        change whose answer was lost may have been granted; the caller reads
        :meth:`walltime` before posting again). Return the API's answer."""
        from grid5000.objects import WallTimeManager
        def post(gk):
            mgr = WallTimeManager(gk, parent=_Parent(site, uid))
            return gk.http_post(mgr.path, post_data={"walltime": delta})
        return self.call(f"change walltime of job {uid} on {site}", post, retries=False)

    def walltime(self, site: str, uid: int) -> Dict[str, Any]:
        """Return the job's walltime record (``walltime``, ``granted``, ``pending``)."""
        from grid5000.objects import WallTimeManager
        def get(gk):
            mgr = WallTimeManager(gk, parent=_Parent(site, uid))
            return gk.http_get(mgr.path)
        return self.call(f"get walltime of job {uid} on {site}", get)

    def deploy(self, site: str, spec: Dict[str, Any]) -> Dict[str, Any]:
        """POST a deployment (not retried blindly: the caller lists deployments first)."""
        from grid5000.objects import DeploymentManager
        return self.call(f"deploy on {site}",
                         lambda gk: DeploymentManager(gk, parent=_Parent(site)).create(spec).to_dict(),
                         retries=False)

    def deployment(self, site: str, uid: str) -> Dict[str, Any]:
        """Return a deployment's dict (``status``, ``result``)."""
        from grid5000.objects import DeploymentManager
        return self.call(f"get deployment {uid} on {site}",
                         lambda gk: DeploymentManager(gk, parent=_Parent(site)).get(uid).to_dict())

    def deployments(self, site: str, user: Optional[str] = None) -> List[Dict[str, Any]]:
        """Return the site's deployments (of ``user`` if given)."""
        from grid5000.objects import DeploymentManager
        q = {"user": user} if user else {}
        return self.call(f"list deployments on {site}",
                         lambda gk: [d.to_dict() for d in DeploymentManager(gk, parent=_Parent(site)).list(**q)])


    def vlan_types(self, site: str) -> Dict[str, str]:
        """Return {vlan id (str): type} of ``site``'s vlans (``kavlan-local``, ``kavlan``,
        ``kavlan-global``...)."""
        from grid5000.objects import VlanManager
        items = self.call(f"list vlans of {site}", lambda gk: [v.to_dict() for v in VlanManager(gk, parent=_Parent(site)).list()])
        return {str(v.get("uid")): str(v.get("type")) for v in items}

    def cluster_nodes(self, site: str, cluster: str) -> List[Dict[str, Any]]:
        """Return the Reference API descriptions of ``cluster``'s nodes (``network_adapters``,
        ``kavlan``, ``supported_job_types``...)."""
        from grid5000.objects import NodeManager
        parent = _Parent(cluster)
        parent.site = site
        return self.call(f"list nodes of {site}/{cluster}",
                         lambda gk: [n.to_dict() for n in NodeManager(gk, parent=parent).list()])

    def status(self, site: str) -> Dict[str, Any]:
        """Return ``GET /sites/{site}/status`` (nodes, vlans, subnets with their current and
        future jobs; disks left out)."""
        from grid5000.objects import SiteStatusManager
        return self.call(f"get the status of {site}",
                         lambda gk: SiteStatusManager(gk, parent=_Parent(site)).list(disks="no").to_dict())

    def move_to_vlan(self, site: str, vlan: str, addresses: List[str]) -> Dict[str, Any]:
        """``POST /sites/{site}/vlans/{vlan}/nodes`` with the interfaces' network addresses;
        return the per-address answer ({addr: {status, message}}). Safe to repeat (an
        interface already there answers "unchanged")."""
        from grid5000.objects import VlanManager
        def post(gk):
            path = VlanManager(gk, parent=_Parent(site)).path + f"/{vlan}/nodes"
            return gk.http_post(path, post_data=list(addresses))
        return self.call(f"move {len(addresses)} interface(s) into vlan {vlan} on {site}", post)


class _Parent:
    """Stands for a python-grid5000 parent object (only its path attributes are read), so
    managers can be built without fetching the site or job first (one request saved)."""

    def __init__(self, site: str, job: Optional[int] = None):
        self.uid = job if job is not None else site
        self.site = site


def _msg(e) -> str:
    m = getattr(e, "error_message", "") or ""
    if isinstance(m, bytes):
        m = m.decode(errors="replace")
    return str(m)
