"""One env's view of Grid'5000: its options (with defaults), credentials, API client, job
name and journal — what every part of the g5k provider is handed (``s`` in
:mod:`enos.g5k.jobs`, :mod:`enos.g5k.deploy`, :mod:`enos.g5k.resources`).

Journal (one key per site, written before and after each side effect)::

    job:<site>       {"site", "name", "submitting": true}  → then  {..., "uid": 1234}
                     (+ "reused": true for a job this env found, not submitted)
    deployed:<site>  {"job": uid, "env": env_name, "nodes": [...]}
    vlans:<site>     {"job": uid, "moved": {vlan id: [interface addresses]}}
"""
from __future__ import annotations

import datetime as _dt
import threading
from typing import Any, Dict, List, Tuple

from enos.errors import EnosError, Retryable
from enos.g5k.api import Api
from enos.g5k.credentials import load_credentials

DEFAULT_GATEWAY = "access.grid5000.fr"

DEFAULTS: Dict[str, Any] = {
    "walltime": "02:00:00", "reservation": None, "queue": "default",
    "project": None, "env_name": None, "env_version": None, "job_type": [], "key": "~/.ssh/id_rsa.pub", "dhcp": True,
    "gateway": DEFAULT_GATEWAY, "ssh_user": None, "deploy_retries": 2,
    "poll_interval": 5.0, "poll_max_interval": 30.0, "wait_timeout": None,
    "api_timeout": 30.0, "api_attempts": 6, "retry_base_delay": 0.5, "retry_max_delay": 20.0,
}


class Session:
    """The provider context of one env plus what Grid'5000 needs: ``opt(name)``, ``creds``,
    ``api`` (both built once, python-grid5000 imported lazily), ``job_name``, and
    thread-safe journal access (``record``, ``forget``, ``recorded_jobs``)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.lock = threading.RLock()
        self._api = None
        self._creds = None

    def opt(self, name: str) -> Any:
        """Return provider option ``name`` (the default when not given)."""
        v = (self.ctx.options or {}).get(name, None)
        return DEFAULTS.get(name) if v is None and name in DEFAULTS else v

    @property
    def creds(self):
        """The API credentials (loaded once). Raises AuthError."""
        if self._creds is None:
            self._creds = load_credentials()
        return self._creds

    @property
    def api(self):
        """The API wrapper (:class:`enos.g5k.api.Api`, built once)."""
        if self._api is None:
            self._api = Api(self.creds, timeout=float(self.opt("api_timeout")),
                            attempts=int(self.opt("api_attempts")),
                            base_delay=float(self.opt("retry_base_delay")),
                            max_delay=float(self.opt("retry_max_delay")))
        return self._api

    @property
    def named(self) -> bool:
        """True when the reservation names the job (``job_name``): enos then reuses the
        user's running or waiting job of exactly that name, on each site."""
        return bool((self.ctx.options or {}).get("job_name"))

    @property
    def job_name(self) -> str:
        """The OAR job name: ``job_name`` as given, else ``enos-<run_id>`` (this env's own)."""
        return str(self.ctx.options["job_name"]) if self.named else f"enos-{self.ctx.run_id}"

    @property
    def run_tag(self) -> str:
        """The mark of this run in the command of the jobs it submits (``enos-run-<id>``):
        ``enos destroy --sweep`` finds them by it, whatever their name."""
        return f"enos-run-{self.ctx.run_id}"

    @property
    def release_reused(self) -> bool:
        """True when ``enos destroy`` must also delete the jobs this env reused
        (``--release-jobs``); else they are kept."""
        return bool(getattr(self.ctx, "release_reused", False))

    def record(self, key: str, value: Any) -> None:
        """Journal ``key`` (written to the env state at once)."""
        with self.lock:
            self.ctx.journal.record(key, value)

    def forget(self, key: str) -> None:
        """Drop ``key`` from the journal."""
        with self.lock:
            self.ctx.journal.forget(key)

    def recorded_jobs(self) -> Dict[str, dict]:
        """Return {site: journal record} of every job this env booked (or was booking)."""
        with self.lock:
            return {k.split(":", 1)[1]: self.ctx.journal.get(k)
                    for k in list(self.ctx.journal.data) if k.startswith("job:")}


def iso(ts) -> str:
    """Return the epoch time ``ts`` as an ISO 8601 UTC string."""
    return _dt.datetime.fromtimestamp(int(ts), _dt.timezone.utc).isoformat(timespec="seconds")


def pick_error(errors: List[Tuple[str, BaseException]]) -> BaseException:
    """The most telling of several per-site errors: a non-retryable EnosError first."""
    for _, e in errors:
        if isinstance(e, EnosError) and not isinstance(e, Retryable):
            return e
    for _, e in errors:
        if isinstance(e, EnosError):
            return e
    return errors[0][1]
