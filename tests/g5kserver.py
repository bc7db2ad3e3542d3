"""A local HTTP server speaking the Grid'5000 REST API, serving the REAL reference data.

The sites, clusters and nodes it serves are the real ones of ``../shared/g5k-reference``
(read in place, see tests/g5kref.py): their ``network_adapters``, disks, queues, walltime
limits and exotic flags are what the fake's OAR obeys. Jobs, deployments, vlans and status
answers have the shapes ``API-SHAPES.md`` documents (tests/g5kmodel.py; each guess is
marked ``GUESS:`` there or here):

* collections are ``{"total", "offset", "items", "links"}``; items carry ``links``;
  fields that would be null are left out;
* errors are plain text (``text/plain``), OAR's refusals wrapped as g5k-api does
  (``Request to <oarapi> failed with status 400: {...}``), an advance reservation that
  does not fit is refused with ``# Reservation not valid --> KO (This reservation could run
  at <Europe/Paris time>)``;
* a batch job that cannot start now waits (``scheduled_at`` = OAR's predicted start) as
  on the real testbed; jobs occupy their nodes, vlans and subnets over time (a gantt), so
  busy nodes and future jobs can be seeded (:meth:`FakeG5k.seed_job`) to test slot search
  and reuse;
* interfaces move into a kavlan with ``POST /sites/{s}/vlans/{id}/nodes`` and a JSON list
  of ``node-ethN.site.grid5000.fr`` addresses (the reference ``network_address`` of a
  kavlan-capable adapter); a deployment with ``vlan`` moves the primary interfaces.

Endpoints (under ``/stable`` by default)::

    GET /   /sites   /sites/{s}   /sites/{s}/clusters[/{c}[/nodes[/{n}]]]
    GET /sites/{s}/status   /sites/{s}/clusters/{c}/status
    GET|POST /sites/{s}/jobs            GET|DELETE /sites/{s}/jobs/{id}
    GET|POST /sites/{s}/jobs/{id}/walltime
    GET|POST /sites/{s}/deployments     GET|DELETE /sites/{s}/deployments/{id}
    GET /sites/{s}/vlans[/{id}]         PUT /sites/{s}/vlans/{id}/dhcpd
    GET|POST /sites/{s}/vlans/{id}/nodes      GET|POST /sites/{s}/vlans/nodes
    GET /sites/{s}/vlans/nodes/{addr}   GET /sites/{s}/vlans/users[/{u}]
    GET /sites/{s}/vlans/{id}/users[/{u}]

Faults are injectable per endpoint (5xx, 429, slow replies, dropped connections, OAR
refusals) with a probability drawn from a seeded RNG; jobs can be made to die while
waiting, deployments to fail on chosen nodes. Every request is recorded (method, path,
status) for the tests to count. Basic auth is checked (401 otherwise).

Run it by hand: ``python tests/g5kserver.py --port 8765`` (all sites of the data).
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

import g5kmodel as M
import g5kroutes as R
from g5kref import Reference, need_reference, reservable_disks

#: the reference snapshot the data comes from (its README): the API's ``version`` field
VERSION = "9ebe1b1e12d4496acf54e276f6885445a57f8c04"
ITEM = R.ITEM
SitesArg = Union[None, Iterable[str], Dict[str, Optional[Dict[str, Optional[int]]]]]


@dataclass
class Fault:
    """An injected fault: requests whose method matches ``method`` (or ``*``) and whose path
    (after the base) matches the regex ``path`` fail with ``probability``, at most ``times``
    times. ``kind``: ``5xx`` (status ``status``), ``429``, ``slow`` (sleep ``delay`` then
    answer normally), ``drop`` (close the connection unanswered), ``drop_after`` (do what
    was asked, then close the connection unanswered: the client cannot know it was done),
    ``could_run`` (OAR's advance-reservation refusal, 2 hours from now)."""

    method: str
    path: str
    kind: str
    probability: float = 1.0
    times: Optional[int] = None
    status: int = 503
    delay: float = 0.0
    hits: int = 0


class FakeG5k:
    """The server. ``start()`` returns its API URL; ``stop()`` shuts it down.

    ``sites``: None (every site of the reference data, every node), a list of site uids,
    or ``{site: None | {cluster: None | node count}}`` to serve only those clusters (the
    first N nodes of each, in node-number order). Raises KeyError for a site or cluster
    the data does not have. ``users``: ``{login: password}``; ``waiting_s``: OAR's
    scheduling delay before a job that fits now starts; ``launching_s``: time in
    ``launching``; ``deploy_s``: time a deployment takes; ``seed``: RNG seed for faults;
    ``vlan_ids``: ``"str"`` or ``"int"``, the type of ``resources_by_type.vlans`` (both are
    seen, API-SHAPES.md §5)."""

    def __init__(self, sites: SitesArg = None, users: Optional[Dict[str, str]] = None,
                 base: str = "/stable", waiting_s: float = 0.2, launching_s: float = 0.1,
                 deploy_s: float = 0.2, seed: int = 0, host: str = "127.0.0.1", port: int = 0,
                 reference: Optional[Reference] = None, vlan_ids: str = "str"):
        self.ref = reference or need_reference()
        self.sites = _build_sites(self.ref, sites)
        self.users = dict(users or {"alice": "s3cret-pw"})
        self.base = base.rstrip("/")
        self.waiting_s, self.launching_s, self.deploy_s = waiting_s, launching_s, deploy_s
        self.vlan_ints = vlan_ids == "int"
        self.rng = random.Random(seed)
        self.host, self.port = host, port
        self.lock = threading.RLock()
        self.jobs: Dict[int, M.Job] = {}
        self.deployments: Dict[str, dict] = {}
        self.vlan_of: Dict[str, Tuple[str, int]] = {}   # address → (vlan id, job uid)
        self.faults: List[Fault] = []
        self.requests: List[tuple] = []
        self.die_while_waiting: List[str] = []     # job-name substrings: those jobs end in error
        self.deploy_failures: Dict[str, int] = {}  # node → how many deployments fail on it
        self.next_uid = 1000
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # --- lifecycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The API URL to give python-grid5000 (``http://127.0.0.1:PORT/stable``)."""
        return f"http://{self.host}:{self.port}{self.base}"

    public_url = url
    version = VERSION

    def start(self) -> str:
        """Serve in a background thread; return :attr:`url`."""
        handler = type("Handler", (_Handler,), {"api": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-g5k", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # --- helpers for tests -------------------------------------------------------------
    def count(self, method: Optional[str] = None, pattern: str = "") -> int:
        """Return how many requests matched ``method`` and the path regex ``pattern``."""
        rx = re.compile(pattern)
        with self.lock:
            return sum(1 for m, p, _ in self.requests
                       if (method is None or m == method) and rx.search(p))

    def active_jobs(self, name_contains: str = "") -> List[dict]:
        """Return the jobs not ended (waiting/launching/running/hold) whose name or command
        contains ``name_contains`` (enos marks its jobs' command with its run id), as API
        items plus ``site``."""
        now = time.time()
        with self.lock:
            return [{**j.item(now, self.base), "site": j.site} for j in self.jobs.values()
                    if j.active(now) and (name_contains in (j.spec.get("name") or "")
                                          or name_contains in (j.spec.get("command") or ""))]

    def add_fault(self, method: str, path: str, kind: str, **kw) -> Fault:
        """Add and return a :class:`Fault`."""
        f = Fault(method, path, kind, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def inject_job(self, site: str, name: str, user: str = "alice", state: str = "running",
                   command: str = "sleep 1d") -> dict:
        """Create a job holding no node directly (e.g. a duplicate of the same name);
        ``state`` running or waiting (an hour from now). Returns its API item."""
        now = time.time()
        start = now if state == "running" else now + 3600
        job = self._new_job(site, user, {"name": name, "command": command}, 3600, start)
        return job.item(now, self.base)

    def seed_job(self, site: str, *, nodes: Optional[List[str]] = None, cluster: Optional[str] = None,
                 count: Optional[int] = None, start: Optional[float] = None, end: Optional[float] = None,
                 walltime: Optional[int] = None, user: str = "bob", name: Optional[str] = None,
                 queue: str = "default", types: Optional[List[str]] = None, vlans: Optional[List[str]] = None,
                 besteffort: bool = False) -> dict:
        """Put a job on the gantt as-is (no admission check): ``nodes`` (FQDNs), or the
        first ``count`` nodes (all when None) of ``cluster``; over [``start`` (default now),
        ``end``) or ``walltime`` seconds (default 1 h). Someone else's by default: its
        nodes are busy for every other user. Returns its API item (with ``site``)."""
        now = time.time()
        s = self.sites[site]
        if nodes is None:
            pool = [n.fqdn for n in s.cluster_nodes(cluster)]
            nodes = pool if count is None else pool[:count]
        unknown = [n for n in nodes if n not in s.nodes]
        if unknown:
            raise KeyError(f"not nodes of {site} in this fake: {unknown}")
        start = now if start is None else float(start)
        wall = int(end - start) if end is not None else int(walltime or 3600)
        spec = {"name": name, "command": "sleep 1d", "queue": "besteffort" if besteffort else queue,
                "types": list(types or [])}
        with self.lock:
            job = self._new_job(site, user, spec, wall, start, launching=0.0)
            job.nodes = list(nodes)
            job.cores = {n: s.nodes[n].cores for n in nodes}
            job.vlans = [str(v) for v in vlans or []]
            return {**job.item(now, self.base), "site": site}

    def set_hard(self, node: str, hard: str) -> None:
        """Set a node's hardware state (alive, absent, suspected, dead, standby)."""
        for s in self.sites.values():
            if node in s.nodes:
                s.nodes[node].hard = hard
                return
        raise KeyError(node)

    def vlan_members(self, site: str, vlan: str) -> List[str]:
        """Return the interface addresses in ``vlan`` on ``site`` now."""
        with self.lock:
            return sorted(a for a in self.sites[site].addresses() if self._vlan(a) == str(vlan))

    # --- model -------------------------------------------------------------------------
    def _new_job(self, site: str, user: str, spec: dict, walltime: int, start: float,
                 launching: Optional[float] = None) -> M.Job:
        with self.lock:
            self.next_uid += 1
            now = time.time()
            die = any(s in (spec.get("name") or "") for s in self.die_while_waiting)
            # OAR counts in whole seconds: a job starts on a second
            job = M.Job(self.next_uid, site, user, dict(spec), walltime, now, float(math.ceil(start)),
                        self.launching_s if launching is None else launching,
                        die_at=now + self.waiting_s / 2 if die else None, vlan_ints=self.vlan_ints)
            self.jobs[job.uid] = job
            return job

    def _site_jobs(self, site: str) -> List[M.Job]:
        return [j for j in self.jobs.values() if j.site == site]

    def submit(self, site_uid: str, user: str, spec: dict) -> Tuple[int, Union[dict, str]]:
        """Create a job from a POST body; return (status, body: API item or error text)."""
        try:
            with self.lock:
                return 201, self._submit(self.sites[site_uid], user, spec).item(time.time(), self.base)
        except M.Refusal as r:
            return r.status, r.text

    def _submit(self, site: M.Site, user: str, spec: dict) -> M.Job:
        _validate_job(spec)
        try:
            terms, walltime = M.parse_resources(str(spec.get("resources") or "nodes=1"))
        except ValueError as e:
            raise M.oar_refusal(site.uid, f"[ADMISSION RULE] Error: cannot parse the resource request "
                                          f"'{e}'\nOarsub failed: please verify your request syntax.\n")
        why = M.check_terms(site, terms, spec, walltime)
        if why:
            raise M.oar_refusal(site.uid, why + "\n")
        now = time.time()
        if spec.get("reservation"):
            return self._reserve(site, user, spec, terms, walltime, now)
        found = M.earliest(site, terms, spec, walltime, now + self.waiting_s, self._site_jobs(site.uid), now)
        if found is None:
            raise M.not_enough(site.uid)
        return self._place(site, user, spec, walltime, *found)

    def _reserve(self, site, user, spec, terms, walltime, now) -> M.Job:
        at = M.parse_paris_date(spec["reservation"]) if not str(spec["reservation"]).strip() == "now" else now
        if at + walltime <= now:
            raise M.oar_refusal(site.uid, "# Reservation not valid --> KO (Reservation too old)\n")
        at = max(at, now)
        jobs = self._site_jobs(site.uid)
        busy = M.busy_intervals(jobs, now)
        got = M.place(site, terms, spec, walltime, at, busy)
        if got is not None:
            return self._place(site, user, spec, walltime, at, got)
        later = M.earliest(site, terms, spec, walltime, at, jobs, now)
        # OAR registered the job, then its scheduler refused it: it stays, in error
        job = self._new_job(site.uid, user, spec, walltime, at)
        job.message = (f"This reservation could run at {M.paris_date(later[0])}" if later
                       else "This reservation cannot run")
        job.stop(now, "error", job.message)
        raise M.could_run(site.uid, job.uid, later[0] if later else None)

    def _place(self, site: M.Site, user, spec, walltime, start, got) -> M.Job:
        nodes, vlans, subnets = got
        job = self._new_job(site.uid, user, spec, walltime, start)
        job.nodes, job.vlans, job.subnets = nodes, vlans, subnets
        job.cores = {n: site.nodes[n].cores for n in nodes}
        return job

    def _vlan(self, address: str) -> str:
        """The vlan an interface is in now: a kavlan lasts as long as the job that moved it."""
        v = self.vlan_of.get(address)
        if v is None:
            return "DEFAULT"
        job = self.jobs.get(v[1])
        if job is None or not job.active(time.time()):
            del self.vlan_of[address]
            return "DEFAULT"
        return v[0]

    def _user_vlans(self, site: str, user: str) -> Dict[str, M.Job]:
        now = time.time()
        return {v: j for j in self._site_jobs(site) if j.user == user and j.state(now) == "running"
                for v in j.vlans}

    def move_to_vlan(self, site_uid: str, user: str, vlan: str, addresses: list) -> Tuple[int, Union[dict, str]]:
        """``POST /sites/{s}/vlans/{id}/nodes``: move interfaces into ``vlan`` (API-SHAPES.md
        §3.3). Returns (status, body)."""
        if not isinstance(addresses, list) or not addresses:
            return 422, "Missing node list"
        site = self.sites[site_uid]
        with self.lock:
            if vlan not in site.vlans or vlan == "DEFAULT":
                return 404, f"Unknown vlan '{vlan}'"
            owner = self._user_vlans(site_uid, user).get(vlan)
            if owner is None:
                return 403, "Not enough privileges on Kavlan resources"
            known = site.addresses()
            mine = {n for j in self._site_jobs(site_uid) if j.user == user and j.state(time.time()) == "running"
                    for n in j.nodes}
            # GUESS: kavlan's answer for a node the user has not reserved (not in
            # API-SHAPES.md): the whole request is refused like a missing vlan right
            foreign = [a for a in addresses if a in known and known[a].fqdn not in mine]
            if foreign:
                return 403, f"Not enough privileges on Kavlan resources: {', '.join(foreign)} not reserved by {user}"
            out = {}
            for a in addresses:
                if a not in known:
                    out[a] = {"status": "failure", "message": "Unknown node"}
                elif self._vlan(a) == vlan:
                    out[a] = {"status": "unchanged", "message": "Node already in vlan"}
                else:
                    self.vlan_of[a] = (vlan, owner.uid)
                    out[a] = {"status": "success", "message": "Successfully added to vlan"}
            return 200, out

    def deploy(self, site_uid: str, user: str, spec: dict) -> Tuple[int, Union[dict, str]]:
        """Create a deployment (API-SHAPES.md §2); return (status, body)."""
        nodes = spec.get("nodes")
        if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) for n in nodes):
            return 400, "The deployment you are trying to submit is not valid: nodes must be a non-empty list of node FQDN"
        if not spec.get("environment"):
            return 400, "The deployment you are trying to submit is not valid: environment can't be blank"
        now = time.time()
        with self.lock:
            mine = {n: j for j in self._site_jobs(site_uid) if j.user == user and j.state(now) == "running"
                    and "deploy" in (j.spec.get("types") or []) for n in j.nodes}
            foreign = [n for n in nodes if n not in mine]
            if foreign:
                # GUESS: kadeploy's wording (API-SHAPES.md gives only the prefix and format)
                return 400, (f"Cannot launch deployment: Kadeploy error #2: the nodes {', '.join(foreign)} "
                             f"are not in a running deploy job of {user}")
            result = {}
            for n in nodes:
                fail = self.deploy_failures.get(n, 0) > 0
                if fail:
                    self.deploy_failures[n] -= 1
                result[n] = {"macro": "BootNewEnv" if fail else None, "micro": "Kexec" if fail else None,
                             "state": "KO" if fail else "OK"}
            uid = "D-" + str(uuid.uuid4())
            d = {"uid": uid, "site_uid": site_uid, "user_uid": user, "environment": spec["environment"],
                 "status": "processing", "nodes": list(nodes), "created_at": int(now), "updated_at": int(now),
                 "_result": result, "_done": now + self.deploy_s, "_key": spec.get("key"), "_jobs": {mine[n].uid for n in nodes}}
            for k in ("version", "arch", "vlan", "block_device", "partition_label", "reformat_tmp"):
                if spec.get(k) is not None:
                    d[k] = spec[k]
            if spec.get("key"):
                d["key"] = (spec["key"] if str(spec["key"]).startswith("http")
                            else M.key_url(f"http://{self.host}:{self.port}{self.base}", site_uid, user, spec["key"]))
            self.deployments[uid] = d
            return 201, self._deployment(d)

    def _deployment(self, d: dict) -> dict:
        now = time.time()
        if d["status"] == "processing" and now >= d["_done"]:
            d.update(status="terminated", result=d["_result"], updated_at=int(now))
            if d.get("vlan") is not None:
                job = next((self.jobs[u] for u in d["_jobs"]), None)
                for n, r in d["_result"].items():
                    if r["state"] == "OK" and job is not None:
                        self.vlan_of[n] = (str(d["vlan"]), job.uid)
        out = {k: v for k, v in d.items() if not k.startswith("_")}
        out["links"] = [{"rel": "self", "href": f"{self.base}/sites/{d['site_uid']}/deployments/{d['uid']}", "type": ITEM},
                        {"rel": "parent", "href": f"{self.base}/sites/{d['site_uid']}", "type": ITEM}]
        return out

    def status(self, site_uid: str, query: dict, cluster: Optional[str] = None) -> dict:
        """``GET /sites/{s}/status`` (or a cluster's): nodes, disks, vlans, subnets keyed by
        name, with each resource's current and future jobs (API-SHAPES.md §4)."""
        site = self.sites[site_uid]
        now = time.time()
        details = query.get("job_details", "yes") != "no"
        waiting = query.get("waiting", "yes") != "no"
        with self.lock:
            jobs = [j for j in self._site_jobs(site_uid) if j.active(now)
                    and (waiting or j.state(now) != "waiting")]
            by_res: Dict[str, List[M.Job]] = {}
            for j in jobs:
                for r in j.nodes + [f"vlan:{v}" for v in j.vlans] + [f"subnet:{s}" for s in j.subnets]:
                    by_res.setdefault(r, []).append(j)

            def entry(res: str, extra: dict) -> dict:
                running = [j for j in by_res.get(res, []) if j.state(now) in ("running", "launching")]
                e = {**extra, "soft": "busy" if running else "free"}
                if details:
                    e["reservations"] = [M.status_reservation(j, now, self.base) for j in by_res.get(res, [])]
                return e
            out = {"uid": int(now), "links": [{"rel": "self", "href": f"{self.base}/sites/{site_uid}"
                                               + (f"/clusters/{cluster}" if cluster else "") + "/status",
                                               "type": ITEM}]}
            nodes = [n for n in site.nodes.values() if cluster is None or n.cluster == cluster]
            if query.get("network_address"):
                nodes = [n for n in nodes if n.fqdn == query["network_address"]]
            if query.get("nodes", "yes") != "no":
                out["nodes"] = {}
                for n in nodes:
                    busy = sum(n.cores for j in by_res.get(n.fqdn, []) if j.state(now) == "running")
                    out["nodes"][n.fqdn] = entry(n.fqdn, {"hard": n.hard, "free_slots": n.cores - min(busy, n.cores),
                                                          "freeable_slots": 0, "busy_slots": min(busy, n.cores)})
            if query.get("disks", "yes") != "no":
                # GUESS: disks are never booked by this fake (no {type='disk'} terms): always free
                out["disks"] = {f"{d['id']}.{n.fqdn}": {"hard": "alive", "soft": "free", "diskpath": d.get("by_path"),
                                                        **({"reservations": []} if details else {})}
                                for n in nodes for d in reservable_disks(n.data)}
            if cluster is None and query.get("vlans", "yes") != "no":
                out["vlans"] = {v: entry(f"vlan:{v}", {"hard": "alive", "type": t})
                                for v, t in site.vlans.items() if v != "DEFAULT"}
            if cluster is None and query.get("subnets", "yes") != "no":
                out["subnets"] = {s: entry(f"subnet:{s}", {"hard": "alive"}) for s in site.subnets}
            return out


def _build_sites(ref: Reference, sites: SitesArg) -> Dict[str, M.Site]:
    if sites is None:
        return {s: M.Site(ref, s) for s in ref.site_uids}
    if not isinstance(sites, dict):
        return {s: M.Site(ref, s) for s in sites}
    out = {}
    for s, clusters in sites.items():
        if clusters is not None:
            for c in clusters:
                ref.cluster(s, c)     # KeyError naming the cluster the data does not have
        out[s] = M.Site(ref, s, clusters)
    return out


def _validate_job(spec: dict) -> None:
    """Raise the 400 g5k-api answers for an invalid job body (API-SHAPES.md §1.2)."""
    bad = "The job you are trying to submit is not valid: "
    if not isinstance(spec, dict):
        raise M.Refusal(400, bad + "the body must be an object")
    if "reservation" in spec and not isinstance(spec["reservation"], str):
        raise M.Refusal(400, bad + "`reservation` should be a String.")
    if not spec.get("command") and not spec.get("reservation"):
        # GUESS: the wording; the rule (command required unless reservation) is documented
        raise M.Refusal(400, bad + "you must give a command or a reservation")
    r = spec.get("reservation")
    if r and r.strip() != "now":
        try:
            M.parse_paris_date(r.split(",")[0])
        except ValueError:
            raise M.Refusal(400, bad + "Syntax error in reservation start date, should at least match the "
                                       "format: 'YYYY-MM-DD hh:mm:ss'. Please see documentation for "
                                       "available date syntaxes.") from None
    if "types" in spec and not isinstance(spec["types"], list):
        raise M.Refusal(400, bad + "`types` should be an Array.")


class _Handler(BaseHTTPRequestHandler):
    api: FakeG5k
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")

    def _send(self, status: int, body, headers=None):
        """Send JSON (dict/list) or plain text (str). JSON goes out as ``application/json``
        when the client accepts it (python-grid5000 asks for it and parses nothing else),
        else with the API's own vnd media types."""
        if isinstance(body, str):
            data, ctype = body.encode(), "text/plain; charset=utf-8"
        else:
            data = json.dumps(body).encode()
            accept = self.headers.get("Accept", "")
            ctype = ("application/json; charset=utf-8" if "json" in accept and "vnd." not in accept or not accept
                     else (R.COLLECTION if isinstance(body, dict) and "items" in body else R.ITEM))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _user(self) -> Optional[str]:
        h = self.headers.get("Authorization", "")
        if not h.startswith("Basic "):
            return None
        try:
            user, _, pw = base64.b64decode(h[6:]).decode().partition(":")
        except Exception:
            return None
        return user if self.api.users.get(user) == pw else None

    def _serve(self, method: str):
        api = self.api
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status = 0
        try:
            if not path.startswith(api.base):
                status = 404
                return self._send(404, "Not Found")
            path = path[len(api.base):] or "/"
            user = self._user()
            if user is None:
                status = 401
                return self._send(401, "Authorization Required", {"WWW-Authenticate": 'Basic realm="Grid5000"'})
            status = self._answer(method, path, query, raw, user)
        finally:
            with api.lock:
                api.requests.append((method, path if path.startswith("/") else "/" + path, status))

    def _answer(self, method: str, path: str, query: dict, raw: bytes, user: str) -> int:
        """Apply an injected fault or route the request; return the status sent (0: none)."""
        fault = self._fault(method, path)
        if fault is not None and fault.kind != "slow":
            return self._faulty(fault, method, path, query, raw, user)
        if fault is not None:
            time.sleep(fault.delay)
        if raw and "json" not in self.headers.get("Content-Type", ""):
            self._send(415, "Unsupported Media Type: send JSON with Content-Type application/json")
            return 415
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._send(400, "Bad Request: the body is not JSON")
            return 400
        out = self._route(method, path, query, body, user)
        self._send(*out)
        return out[0]

    def _route(self, method, path, query, body, user) -> tuple:
        try:
            out = R.route(R.Req(self.api, method, query, body, user), path)
        except R.Answer as a:
            return a.status, a.body
        except M.Refusal as r:
            return r.status, r.text
        return tuple(out)

    def _faulty(self, fault: Fault, method, path, query, raw, user) -> int:
        if fault.kind == "drop":
            self.close_connection = True
            return 0
        if fault.kind == "drop_after":
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            self._route(method, path, query, body, user)
            self.close_connection = True
            return 0
        if fault.kind == "429":
            self._send(429, "Too Many Requests", {"Retry-After": "1"})
            return 429
        if fault.kind == "could_run":
            site = path.split("/")[2] if path.count("/") >= 2 else "site"
            r = M.could_run(site, 0, time.time() + 7200)
            self._send(r.status, r.text)
            return r.status
        self._send(fault.status, f"Internal Server Error (injected {fault.status})")
        return fault.status

    def _fault(self, method: str, path: str) -> Optional[Fault]:
        api = self.api
        with api.lock:
            for f in api.faults:
                if f.method not in ("*", method) or not re.search(f.path, path):
                    continue
                if f.times is not None and f.hits >= f.times:
                    continue
                if api.rng.random() < f.probability:
                    f.hits += 1
                    return f
        return None


def main(argv=None) -> int:
    """Serve until interrupted; prints the API URL. Returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--site", action="append", help="serve this site (repeatable; default: all of the data)")
    ap.add_argument("--user", default="alice")
    ap.add_argument("--password", default="s3cret-pw")
    ap.add_argument("--waiting", type=float, default=1.0)
    args = ap.parse_args(argv)
    srv = FakeG5k(args.site, {args.user: args.password}, port=args.port, waiting_s=args.waiting)
    print(srv.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
