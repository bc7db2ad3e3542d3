"""A local HTTP server speaking the parts of the Grid'5000 REST API that enos uses.

It follows the documented shapes (lists as ``{"total", "offset", "items"}``, OAR job JSON with
``uid``, ``state``, ``assigned_nodes``, ``resources_by_type``, ``scheduled_at``, ...) and is driven
by the real python-grid5000 client. Endpoints (under a base path, ``/stable`` by default)::

    GET    /                                   GET /sites, /sites/{s}
    GET    /sites/{s}/clusters[/{c}[/nodes]]    GET /sites/{s}/servers/dns
    GET    /sites/{s}/vlans[/{id}]
    GET    /sites/{s}/jobs?state=&name=&user=   POST /sites/{s}/jobs
    GET    /sites/{s}/jobs/{id}                 DELETE /sites/{s}/jobs/{id}
    GET    /sites/{s}/jobs/{id}/walltime        POST /sites/{s}/jobs/{id}/walltime
    GET    /sites/{s}/deployments[?user=]       POST /sites/{s}/deployments
    GET    /sites/{s}/deployments/{id}

Jobs move waiting → launching → running → terminated with time (``waiting_s``,
``launching_s``, the walltime); a reservation date delays the start. Nodes are allocated
from the clusters' free nodes; a job that cannot get them now is refused with OAR's
"could run at" message. Faults are injectable per endpoint (5xx, 429, slow replies, dropped
connections, "could run at" refusals) with a probability drawn from a seeded RNG, jobs can
be made to die while waiting, deployments to fail on chosen nodes. Every request is recorded
(method, path, status) for the tests to count. Basic auth is checked (401 otherwise).

Run it by hand: ``python tests/g5kserver.py --sites 5 --nodes 200 --port 8765``.
"""
from __future__ import annotations

import argparse
import base64
import datetime as _dt
import ipaddress
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional
from urllib.parse import parse_qs, unquote, urlsplit

ACTIVE = ("waiting", "launching", "running", "hold")
DEFAULT_SITES = {"rennes": {"paravance": 8, "parasilo": 4}, "nancy": {"grisou": 8}}
DATE_FMT = "%Y-%m-%d %H:%M:%S"


@dataclass
class Fault:
    """An injected fault: requests whose method matches ``method`` (or ``*``) and whose path
    (after the base) matches the regex ``path`` fail with ``probability``, at most ``times``
    times. ``kind``: ``5xx`` (status ``status``), ``429``, ``slow`` (sleep ``delay`` then
    answer normally), ``drop`` (close the connection unanswered), ``drop_after`` (do what
    was asked, then close the connection unanswered: the client cannot know it was done),
    ``could_run`` (OAR refusal)."""

    method: str
    path: str
    kind: str
    probability: float = 1.0
    times: Optional[int] = None
    status: int = 503
    delay: float = 0.0
    hits: int = 0


class _Site:
    def __init__(self, index: int, uid: str, clusters: Dict[str, int], domain: str):
        self.index, self.uid = index, uid
        self.clusters = {c: [f"{c}-{i}.{uid}.{domain}" for i in range(1, n + 1)]
                         for c, n in clusters.items()}
        base = 40 + index * 20
        self.vlans: Dict[str, dict] = {}
        for v in range(1, 10):
            kind = "kavlan-local" if v <= 3 else "kavlan"
            net = ipaddress.ip_network(f"10.{base + v}.0.0/18")
            self.vlans[str(v)] = {"type": kind, "network": str(net),
                                  "gateway": str(net.broadcast_address - 1)}
        g = ipaddress.ip_network(f"10.{(100 + index * 4) % 256}.0.0/14")
        gvid = str(10 + index)
        gnet = ipaddress.ip_network(f"10.{(200 + index) % 256}.0.0/18")
        self.vlans[gvid] = {"type": "kavlan-global", "network": str(gnet),
                            "gateway": str(gnet.broadcast_address - 1)}
        self.g5ksubnet = {"network": str(g), "gateway": str(g.broadcast_address - 1)}
        self.subnets = [str(s) for s in g.subnets(new_prefix=22)][:-1]
        self.dns = f"172.16.{index * 4 % 256}.25"

    def to_json(self) -> dict:
        return {"uid": self.uid, "name": self.uid.capitalize(), "type": "site",
                "g5ksubnet": self.g5ksubnet,
                "kavlans": {k: {"network": v["network"], "gateway": v["gateway"]}
                            for k, v in self.vlans.items()},
                "links": [{"rel": "jobs", "href": f"/sites/{self.uid}/jobs"}]}

    def nodes(self) -> List[str]:
        return [n for ns in self.clusters.values() for n in ns]


class FakeG5k:
    """The server. ``start()`` returns its API URL; ``stop()`` shuts it down.

    ``sites``: ``{site: {cluster: node count}}``; ``users``: ``{login: password}``;
    ``waiting_s``/``launching_s``: time a job spends in those states; ``deploy_s``: time a
    deployment takes; ``seed``: RNG seed for faults."""

    def __init__(self, sites: Optional[Dict[str, Dict[str, int]]] = None,
                 users: Optional[Dict[str, str]] = None, base: str = "/stable",
                 waiting_s: float = 0.2, launching_s: float = 0.1, deploy_s: float = 0.2,
                 seed: int = 0, domain: str = "grid5000.fr", host: str = "127.0.0.1", port: int = 0):
        self.sites = {uid: _Site(i, uid, cl, domain)
                      for i, (uid, cl) in enumerate((sites or DEFAULT_SITES).items())}
        self.users = dict(users or {"alice": "s3cret-pw"})
        self.base = base.rstrip("/")
        self.waiting_s, self.launching_s, self.deploy_s = waiting_s, launching_s, deploy_s
        self.rng = random.Random(seed)
        self.host, self.port = host, port
        self.lock = threading.RLock()
        self.jobs: Dict[int, dict] = {}
        self.deployments: Dict[str, dict] = {}
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
        """Return the jobs not ended (waiting/launching/running/hold) whose name contains
        ``name_contains``."""
        with self.lock:
            out = []
            for j in self.jobs.values():
                self._advance(j)
                if j["state"] in ACTIVE and name_contains in (j.get("name") or ""):
                    out.append(dict(j))
            return out

    def add_fault(self, method: str, path: str, kind: str, **kw) -> Fault:
        """Add and return a :class:`Fault`."""
        f = Fault(method, path, kind, **kw)
        with self.lock:
            self.faults.append(f)
        return f

    def inject_job(self, site: str, name: str, user: str = "alice", state: str = "running") -> dict:
        """Create a job directly (no nodes), e.g. a duplicate of the same name."""
        with self.lock:
            uid = self._uid()
            now = time.time()
            job = self._job_json(uid, site, user, {"name": name}, [], {}, 3600, now, now)
            job["state"] = state
            if state == "running":
                job.update(started_at=int(now), _started=now)
            self.jobs[uid] = job
            return dict(job)

    # --- model -------------------------------------------------------------------------
    def _uid(self) -> int:
        self.next_uid += 1
        return self.next_uid

    def _job_json(self, uid, site, user, spec, nodes, rbt, walltime, now, scheduled) -> dict:
        return {"uid": uid, "site": site, "user": user, "user_uid": user, "name": spec.get("name"),
                "queue": spec.get("queue") or "default", "project": spec.get("project") or user,
                "types": list(spec.get("types") or []), "mode": "PASSIVE",
                "command": spec.get("command", ""), "directory": f"/home/{user}",
                "properties": "", "message": "", "state": "waiting", "walltime": walltime,
                "submitted_at": int(now), "scheduled_at": int(scheduled), "started_at": None,
                "stopped_at": None, "reservation": "Scheduled" if spec.get("reservation") else "None",
                "events": [], "resources_by_type": rbt, "assigned_nodes": nodes,
                "links": [{"rel": "self", "href": f"{self.base}/sites/{site}/jobs/{uid}"}],
                "_launch_at": scheduled, "_die": any(s in (spec.get("name") or "") for s in self.die_while_waiting)}

    def _advance(self, job: dict) -> None:
        now = time.time()
        st = job["state"]
        if st == "waiting":
            if job["_die"] and now >= job["submitted_at"] + self.waiting_s / 2:
                job.update(state="error", stopped_at=int(now), message="job killed while waiting")
                job["events"].append({"type": "FRAG_JOB_REQUEST", "description": "job died while waiting"})
                return
            if now >= job["_launch_at"]:
                job["state"] = "launching"
                st = "launching"
        if st == "launching" and now >= job["_launch_at"] + self.launching_s:
            job.update(state="running", started_at=int(job["_launch_at"] + self.launching_s))
            job["_started"] = job["_launch_at"] + self.launching_s
            st = "running"
        if st == "running" and now >= job["_started"] + job["walltime"]:
            job.update(state="terminated", stopped_at=int(job["_started"] + job["walltime"]))

    def _busy(self, site: str) -> Dict[str, dict]:
        busy = {}
        for j in self.jobs.values():
            self._advance(j)
            if j["site"] == site and j["state"] in ACTIVE:
                for n in j["assigned_nodes"]:
                    busy[n] = j
        return busy

    def _next_free(self, busy_jobs) -> str:
        ends = [(j.get("_started") or j["_launch_at"] + self.launching_s) + j["walltime"] for j in busy_jobs]
        when = max(ends) if ends else time.time() + 3600
        return _dt.datetime.fromtimestamp(when).strftime(DATE_FMT)

    def submit(self, site_uid: str, user: str, spec: dict):
        """Create a job from a POST body; return (status, body)."""
        site = self.sites[site_uid]
        res = spec.get("resources") or "nodes=1"
        if not spec.get("command") and "deploy" not in (spec.get("types") or []):
            pass  # the real API accepts a job without command only with some types; be lenient
        m = re.search(r",?walltime=(\d+(?::\d+){0,2})", res)
        walltime = 3600
        if m:
            parts = [int(x) for x in m.group(1).split(":")] + [0, 0]
            walltime = parts[0] * 3600 + parts[1] * 60 + parts[2]
            res = (res[:m.start()] + res[m.end():]).strip(",")
        with self.lock:
            busy = self._busy(site_uid)
            nodes: List[str] = []
            rbt: Dict[str, list] = {"cores": []}
            blockers = []
            short = False
            for term in filter(None, res.split("+")):
                term = term.strip()
                if (mm := re.fullmatch(r"\{cluster='([\w-]+)'\}/nodes=(\d+)", term)):
                    cluster, n = mm.group(1), int(mm.group(2))
                    if cluster not in site.clusters:
                        return 400, _err(400, f"Bad resources request: there is no cluster '{cluster}' on {site_uid}")
                    if len(site.clusters[cluster]) < n:
                        return 400, _err(400, f"Bad resources request: cluster '{cluster}' has only "
                                              f"{len(site.clusters[cluster])} nodes")
                    free = [x for x in site.clusters[cluster] if x not in busy and x not in nodes]
                    if len(free) < n:
                        short = True
                        blockers += [busy[x] for x in site.clusters[cluster] if x in busy]
                        continue
                    nodes += free[:n]
                elif (mm := re.fullmatch(r"\{network_address='([^']+)'\}/nodes=1", term)):
                    fq = mm.group(1)
                    if fq not in site.nodes():
                        return 400, _err(400, f"Bad resources request: there is no node '{fq}' on {site_uid}")
                    if fq in busy:
                        short = True
                        blockers.append(busy[fq])
                        continue
                    if fq not in nodes:
                        nodes.append(fq)
                elif (mm := re.fullmatch(r"\{type='(kavlan(?:-local|-global)?)'\}/vlan=1", term)):
                    taken = {v for j in self.jobs.values() if j["site"] == site_uid and j["state"] in ACTIVE
                             for v in j["resources_by_type"].get("vlans", [])}
                    free = [v for v, d in site.vlans.items() if d["type"] == mm.group(1) and v not in taken]
                    if not free:
                        short = True
                        blockers += [j for j in self.jobs.values() if j["site"] == site_uid and j["state"] in ACTIVE
                                     and j["resources_by_type"].get("vlans")]
                        continue
                    rbt.setdefault("vlans", []).append(free[0])
                elif (mm := re.fullmatch(r"slash_(22|16)=(\d+)", term)):
                    size, count = mm.group(1), int(mm.group(2))
                    taken = {s for j in self.jobs.values() if j["site"] == site_uid and j["state"] in ACTIVE
                             for s in j["resources_by_type"].get("subnets", [])}
                    taken |= set(rbt.get("subnets", []))
                    want = count * (64 if size == "16" else 1)
                    got = self._subnets(site, taken, size, count)
                    if len(got) < want:
                        return 400, _err(400, "Bad resources request: not enough subnets")
                    rbt.setdefault("subnets", []).extend(got)
                elif (mm := re.fullmatch(r"nodes=(\d+)", term)):
                    free = [x for x in site.nodes() if x not in busy and x not in nodes]
                    n = int(mm.group(1))
                    if len(site.nodes()) < n:
                        return 400, _err(400, f"Bad resources request: {site_uid} has only {len(site.nodes())} nodes")
                    if len(free) < n:
                        short = True
                        blockers += list({id(j): j for j in busy.values()}.values())
                        continue
                    nodes += free[:n]
                else:
                    return 400, _err(400, f"Bad resources request: cannot parse '{term}'")
            if short:
                when = self._next_free(blockers)
                return 400, _err(400, "There are not enough resources for your request. "
                                 f"OAR: your job could run at {when}")
            now = time.time()
            scheduled = now + self.waiting_s
            if spec.get("reservation"):
                try:
                    r = spec["reservation"]
                    at = (float(r) if str(r).isdigit()
                          else time.mktime(_dt.datetime.strptime(str(r), DATE_FMT).timetuple()))
                except ValueError:
                    return 400, _err(400, f"Bad reservation date '{spec['reservation']}'")
                scheduled = max(scheduled, at)
            rbt["cores"] = [f"{n}/{i}" for n in nodes for i in range(2)]
            uid = self._uid()
            job = self._job_json(uid, site_uid, user, spec, nodes, rbt, walltime, now, scheduled)
            self.jobs[uid] = job
            return 201, _public(job)

    def _subnets(self, site: _Site, taken, size: str, count: int) -> List[str]:
        if size == "22":
            return [s for s in site.subnets if s not in taken][:count]
        out: List[str] = []
        by16: Dict[str, List[str]] = {}
        for s in site.subnets:
            key = str(ipaddress.ip_network(s).supernet(new_prefix=16))
            by16.setdefault(key, []).append(s)
        for key, subs in by16.items():
            if len(out) >= 64 * count:
                break
            if len(subs) == 64 and not (set(subs) & taken):
                out += subs
        return out

    def deploy(self, site_uid: str, user: str, spec: dict):
        """Create a deployment; return (status, body)."""
        nodes = list(spec.get("nodes") or [])
        if not nodes or not spec.get("environment"):
            return 400, _err(400, "a deployment needs 'nodes' and 'environment'")
        with self.lock:
            mine = {n for j in self.jobs.values() if j["site"] == site_uid and j["user"] == user
                    and (self._advance(j) or j["state"] == "running") and "deploy" in j["types"]
                    for n in j["assigned_nodes"]}
            foreign = [n for n in nodes if n not in mine]
            if foreign:
                return 400, _err(400, f"nodes not in a running deploy job of {user}: {', '.join(foreign)}")
            uid = "D-" + uuid.uuid4().hex[:12]
            result = {}
            for n in nodes:
                fail = self.deploy_failures.get(n, 0) > 0
                if fail:
                    self.deploy_failures[n] -= 1
                result[n] = {"macro": "", "micro": "", "state": "KO" if fail else "OK",
                             "last_cmd_stderr": "kexec failed" if fail else ""}
            now = time.time()
            d = {"uid": uid, "site_uid": site_uid, "user_uid": user, "environment": spec["environment"],
                 "nodes": nodes, "vlan": spec.get("vlan"), "status": "processing",
                 "created_at": int(now), "updated_at": int(now), "result": {},
                 "_result": result, "_done": now + self.deploy_s, "_key": spec.get("key"),
                 "links": [{"rel": "self", "href": f"{self.base}/sites/{site_uid}/deployments/{uid}"}]}
            self.deployments[uid] = d
            return 201, _public(d)

    def _deployment(self, d: dict) -> dict:
        if d["status"] == "processing" and time.time() >= d["_done"]:
            d.update(status="terminated", result=d["_result"], updated_at=int(time.time()))
        return _public(d)


def _public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def _err(code: int, message: str) -> dict:
    return {"code": code, "message": message, "title": {400: "Bad Request", 401: "Unauthorized",
                                                         404: "Not Found"}.get(code, "Error")}


def _list(items) -> dict:
    items = list(items)
    return {"total": len(items), "offset": 0, "items": items, "links": []}


class _Handler(BaseHTTPRequestHandler):
    api: FakeG5k
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_DELETE(self):
        self._serve("DELETE")

    def _send(self, status: int, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
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
        status = 500
        try:
            if not path.startswith(api.base):
                status = 404
                return self._send(404, _err(404, f"no such path {path}"))
            path = path[len(api.base):] or "/"
            user = self._user()
            if user is None:
                status = 401
                return self._send(401, _err(401, "Authorization Required"),
                                  {"WWW-Authenticate": 'Basic realm="Grid5000"'})
            fault = self._fault(method, path)
            if fault is not None:
                if fault.kind == "slow":
                    time.sleep(fault.delay)
                elif fault.kind == "drop":
                    status = 0
                    self.close_connection = True
                    return
                elif fault.kind == "drop_after":
                    try:
                        body = json.loads(raw) if raw else {}
                    except ValueError:
                        body = {}
                    self._route(method, path, query, body, user)
                    status = 0
                    self.close_connection = True
                    return
                elif fault.kind == "429":
                    status = 429
                    return self._send(429, _err(429, "Too Many Requests"), {"Retry-After": "1"})
                elif fault.kind == "could_run":
                    status = 400
                    when = (_dt.datetime.now() + _dt.timedelta(hours=2)).strftime(DATE_FMT)
                    return self._send(400, _err(400, "There are not enough resources for your "
                                                     f"request. OAR: your job could run at {when}"))
                else:
                    status = fault.status
                    return self._send(fault.status, _err(fault.status, "Internal Server Error (injected)"))
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                status = 400
                return self._send(400, _err(400, "body is not JSON"))
            status, out = self._route(method, path, query, body, user)
            return self._send(status, out)
        finally:
            with api.lock:
                api.requests.append((method, path if path.startswith("/") else "/" + path, status))

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

    def _route(self, method, path, query, body, user):
        api = self.api
        seg = [s for s in path.split("/") if s]
        if not seg:
            return 200, {"uid": "stable", "type": "grid", "links": [{"rel": "sites", "href": f"{api.base}/sites"}]}
        if seg[0] != "sites":
            return 404, _err(404, f"no such resource {path}")
        if len(seg) == 1:
            return 200, _list(s.to_json() for s in api.sites.values())
        site = api.sites.get(seg[1])
        if site is None:
            return 404, _err(404, f"no such site {seg[1]}")
        if len(seg) == 2:
            return 200, site.to_json()
        kind, rest = seg[2], seg[3:]
        if kind == "clusters":
            if not rest:
                return 200, _list({"uid": c, "site": site.uid} for c in site.clusters)
            if rest[0] not in site.clusters:
                return 404, _err(404, f"no such cluster {rest[0]}")
            if len(rest) == 1:
                return 200, {"uid": rest[0], "site": site.uid}
            return 200, _list({"uid": n.split(".")[0], "network_address": n} for n in site.clusters[rest[0]])
        if kind == "servers" and rest == ["dns"]:
            return 200, {"uid": "dns", "network_adapters": {"default": {"ip": site.dns}}}
        if kind == "vlans":
            if not rest:
                return 200, _list({"uid": v, "type": d["type"]} for v, d in site.vlans.items())
            d = site.vlans.get(rest[0])
            return (200, {"uid": rest[0], **d}) if d else (404, _err(404, "no such vlan"))
        if kind == "jobs":
            return self._jobs(method, site, rest, query, body, user)
        if kind == "deployments":
            with api.lock:
                if method == "POST" and not rest:
                    return api.deploy(site.uid, user, body)
                if method == "GET" and not rest:
                    ds = [api._deployment(d) for d in api.deployments.values()
                          if d["site_uid"] == site.uid and (not query.get("user") or d["user_uid"] == query["user"])]
                    return 200, _list(ds)
                d = api.deployments.get(rest[0]) if rest else None
                if d is None or d["site_uid"] != site.uid:
                    return 404, _err(404, "no such deployment")
                return 200, api._deployment(d)
        return 404, _err(404, f"no such resource {path}")

    def _jobs(self, method, site, rest, query, body, user):
        api = self.api
        if not rest:
            if method == "POST":
                return api.submit(site.uid, user, body)
            states = query.get("state", "").split(",") if query.get("state") else None
            with api.lock:
                out = []
                for j in api.jobs.values():
                    api._advance(j)
                    if j["site"] != site.uid:
                        continue
                    if states and j["state"] not in states:
                        continue
                    if query.get("name") and j.get("name") != query["name"]:
                        continue
                    if query.get("user") and j["user"] != query["user"]:
                        continue
                    item = _public(j)
                    for k in ("assigned_nodes", "resources_by_type", "events"):
                        item.pop(k, None)
                    out.append(item)
                return 200, _list(out)
        try:
            uid = int(rest[0])
        except ValueError:
            return 404, _err(404, "no such job")
        with api.lock:
            job = api.jobs.get(uid)
            if job is None or job["site"] != site.uid:
                return 404, _err(404, f"no such job {rest[0]}")
            api._advance(job)
            if len(rest) == 1:
                if method == "GET":
                    return 200, _public(job)
                if method == "DELETE":
                    if job["user"] != user:
                        return 403, _err(403, "not your job")
                    if job["state"] not in ACTIVE:
                        return 400, _err(400, f"This job was already killed (state {job['state']})")
                    job.update(state="error", stopped_at=int(time.time()))
                    job["events"].append({"type": "FRAG_JOB_REQUEST", "description": f"deleted by {user}"})
                    return 202, {"status": "Delete request registered", "job_id": uid,
                                 "oardel_output": f"Deleting the job = {uid} ...REGISTERED."}
            if rest[1:] == ["walltime"]:
                if method == "GET":
                    return 200, {"walltime": _fmt(job["walltime"]), "granted": _fmt(job.get("_granted", 0), "+"),
                                 "pending": "+0:00:00", "possible": "+99:00:00", "delay_next_jobs": "no"}
                if method == "POST":
                    if job["state"] != "running":
                        return 400, _err(400, "Walltime changes can only be requested for a running job")
                    m = re.fullmatch(r"([+-]?)(\d+)(?::(\d+))?(?::(\d+))?", str(body.get("walltime", "")))
                    if not m:
                        return 400, _err(400, f"bad walltime change {body.get('walltime')!r}")
                    secs = int(m.group(2)) * 3600 + int(m.group(3) or 0) * 60 + int(m.group(4) or 0)
                    secs = -secs if m.group(1) == "-" else secs
                    job["walltime"] = max(60, job["walltime"] + secs)
                    job["_granted"] = job.get("_granted", 0) + secs
                    return 202, {"status": "Accepted", "job_id": uid,
                                 "message": f"Walltime change request accepted for job {uid}"}
        return 404, _err(404, "no such resource")


def _fmt(seconds: int, sign: str = "") -> str:
    s = abs(int(seconds))
    return f"{sign}{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def main(argv=None) -> int:
    """Serve until interrupted; prints the API URL. Returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--sites", type=int, default=2)
    ap.add_argument("--nodes", type=int, default=20, help="nodes per cluster (2 clusters per site)")
    ap.add_argument("--user", default="alice")
    ap.add_argument("--password", default="s3cret-pw")
    ap.add_argument("--waiting", type=float, default=1.0)
    args = ap.parse_args(argv)
    names = ["rennes", "nancy", "lyon", "lille", "nantes", "grenoble", "luxembourg", "sophia"]
    sites = {names[i % len(names)] + ("" if i < len(names) else str(i)):
             {f"c{i}a": args.nodes, f"c{i}b": args.nodes} for i in range(args.sites)}
    srv = FakeG5k(sites, {args.user: args.password}, port=args.port, waiting_s=args.waiting)
    print(srv.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
