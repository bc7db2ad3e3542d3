"""The URL routes of the fake Grid'5000 API (tests/g5kserver.py): each returns
``(status, body[, headers])`` where a dict/list body is sent as JSON and a str body as
plain text (the API's errors are plain text, API-SHAPES.md "Common conventions")."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import List, Optional

import g5kmodel as M

ITEM = "application/vnd.grid5000.item+json"
COLLECTION = "application/vnd.grid5000.collection+json"


def link(rel: str, href: str, kind: str = ITEM) -> dict:
    """One ``links`` entry."""
    return {"rel": rel, "href": href, "type": kind}


def collection(items: list, self_href: str, parent: Optional[str], total: Optional[int] = None,
               offset: int = 0) -> dict:
    """Return ``{total, offset, items, links}``."""
    links = [link("self", self_href, COLLECTION)] + ([link("parent", parent)] if parent else [])
    return {"total": len(items) if total is None else total, "offset": offset, "items": items, "links": links}


def page(items: list, query: dict, self_href: str, parent: str) -> dict:
    """A collection cut by ``offset``/``limit`` (default 50, max 500: jobs, deployments)."""
    try:
        offset = max(0, int(query.get("offset", 0)))
        limit = min(500, max(0, int(query.get("limit", 50))))
    except ValueError:
        raise_(400, "offset and limit must be integers")
    return collection(items[offset:offset + limit], self_href, parent, total=len(items), offset=offset)


class Answer(Exception):
    """A route's early answer."""

    def __init__(self, status: int, body):
        super().__init__(status)
        self.status, self.body = status, body


def raise_(status: int, text: str):
    """Answer ``status`` with a plain-text body now."""
    raise Answer(status, text)


@dataclass
class Req:
    """One request: the server, method, query parameters, JSON body and the authenticated user."""

    api: object
    method: str
    query: dict
    body: object
    user: str


def route(req: Req, path: str):
    """Dispatch one request (``path`` without the base); return (status, body[, headers]).
    Raises Answer or g5kmodel.Refusal for an error answer."""
    api = req.api
    seg = [s for s in path.split("/") if s]
    b = api.base
    if not seg:
        grid = api.ref.grid()
        return 200, {**grid, "version": api.version, "links": [link("self", b + "/"), link("sites", b + "/sites", COLLECTION)]}
    if seg[0] != "sites":
        raise_(404, "Not Found")
    if len(seg) == 1:
        return 200, collection([site_item(api, s) for s in api.sites], b + "/sites", b + "/")
    site = api.sites.get(seg[1])
    if site is None:
        raise_(404, f"Couldn't find site with uid={seg[1]}")
    if len(seg) == 2:
        return 200, site_item(api, seg[1])
    kind, rest = seg[2], seg[3:]
    handler = {"clusters": clusters, "status": site_status, "jobs": jobs, "deployments": deployments,
               "vlans": vlans}.get(kind)
    if handler is None:
        raise_(404, "Not Found")
    return handler(req, site, rest)


def site_item(api, uid: str) -> dict:
    """A site as the API gives it: the reference JSON plus ``version`` and ``links``."""
    b = f"{api.base}/sites/{uid}"
    rels = [("clusters", COLLECTION), ("jobs", COLLECTION), ("deployments", COLLECTION),
            ("vlans", COLLECTION), ("status", ITEM)]
    return {**api.sites[uid].data, "version": api.version,
            "links": [link("self", b), link("parent", api.base + "/")] + [link(r, f"{b}/{r}", t) for r, t in rels]}


def clusters(req, site, rest):
    api, method, query, body = req.api, req.method, req.query, req.body
    """``/sites/{s}/clusters[/{c}[/nodes[/{n}]|/status]]`` (reference data, read only)."""
    b = f"{api.base}/sites/{site.uid}/clusters"
    if method != "GET":
        raise_(405, "Method Not Allowed")
    if not rest:
        items = [{**site.clusters[c], "version": api.version, "links": [link("self", f"{b}/{c}")]}
                 for c in site.clusters]
        return 200, collection(items, b, f"{api.base}/sites/{site.uid}")
    c = rest[0]
    if c not in site.clusters:
        raise_(404, f"Couldn't find cluster with uid={c}")
    if len(rest) == 1:
        return 200, {**site.clusters[c], "version": api.version,
                     "links": [link("self", f"{b}/{c}"), link("parent", f"{api.base}/sites/{site.uid}"),
                               link("nodes", f"{b}/{c}/nodes", COLLECTION), link("status", f"{b}/{c}/status")]}
    if rest[1] == "status" and len(rest) == 2:
        return 200, api.status(site.uid, query, cluster=c)
    if rest[1] != "nodes" or len(rest) > 3:
        raise_(404, "Not Found")
    nodes = {n.data["uid"]: n for n in site.cluster_nodes(c)}
    if len(rest) == 3:
        if rest[2] not in nodes:
            raise_(404, f"Couldn't find node with uid={rest[2]}")
        return 200, node_item(api, site.uid, c, nodes[rest[2]])
    return 200, collection([node_item(api, site.uid, c, n) for n in nodes.values()], f"{b}/{c}/nodes", f"{b}/{c}")


def node_item(api, site: str, cluster: str, node) -> dict:
    """A node: its reference JSON, ``version`` and ``links``."""
    href = f"{api.base}/sites/{site}/clusters/{cluster}/nodes/{node.data['uid']}"
    return {**node.data, "version": api.version,
            "links": [link("self", href), link("parent", f"{api.base}/sites/{site}/clusters/{cluster}")]}


def site_status(req, site, rest):
    api, method, query, body = req.api, req.method, req.query, req.body
    """``GET /sites/{s}/status``."""
    if rest or method != "GET":
        raise_(404, "Not Found")
    return 200, api.status(site.uid, query)


# --- jobs ------------------------------------------------------------------------------------

def jobs(req, site, rest):
    api, method, query, body = req.api, req.method, req.query, req.body
    """``/sites/{s}/jobs[/{id}[/walltime]]``."""
    b = f"{api.base}/sites/{site.uid}/jobs"
    if not rest:
        if method == "POST":
            status, out = api.submit(site.uid, req.user, body)
            if status == 201:
                return 201, out, {"Location": f"{api.public_url}/sites/{site.uid}/jobs/{out['uid']}"}
            return status, out
        if method != "GET":
            raise_(405, "Method Not Allowed")
        return 200, page(list_jobs(api, site.uid, query), query, b, f"{api.base}/sites/{site.uid}")
    try:
        uid = int(rest[0])
    except ValueError:
        raise_(404, f"Couldn't find OAR::Job with 'job_id'={rest[0]}")
    with api.lock:
        job = api.jobs.get(uid)
        if job is None or job.site != site.uid:
            raise_(404, f"Couldn't find OAR::Job with 'job_id'={uid}" if method == "GET"
                   else f"Job id '{uid}' cannot be found.")
        if len(rest) == 1:
            return one_job(req, site.uid, job)
        if rest[1:] == ["walltime"]:
            return walltime(req, site.uid, job)
    raise_(404, "Not Found")


def list_jobs(api, site: str, query: dict) -> List[dict]:
    """The site's jobs filtered like g5k-api (user, name, project, queue, state, job_id),
    newest first, without resources unless ``resources=yes``."""
    now = time.time()
    states = set(query["state"].split(",")) if query.get("state") else None
    details = query.get("resources") == "yes"
    out = []
    with api.lock:
        for j in sorted(api.jobs.values(), key=lambda j: -j.uid):
            if j.site != site or (states and j.state(now) not in states):
                continue
            item = j.item(now, api.base, details=details)
            if any(query.get(k) and str(item.get(k)) != query[k] for k in ("user", "name", "project", "queue")):
                continue
            if query.get("job_id") and str(j.uid) != query["job_id"]:
                continue
            out.append(item)
    return out


def one_job(req, site: str, job):
    """GET or DELETE one job (API-SHAPES.md §1.3, §1.5)."""
    api, method = req.api, req.method
    now = time.time()
    if method == "GET":
        return 200, job.item(now, api.base)
    if method != "DELETE":
        raise_(405, "Method Not Allowed")
    if job.user != req.user:
        raise_(403, "You are not authorized to access this resource")
    if not job.active(now):
        # GUESS: OAR's oardel text for a job already ended, wrapped as a backend error
        raise M.oar_refusal(site, f"Deleting the job = {job.uid} ...This job was already killed\n",
                            path=f"jobs/{job.uid}.json")
    job.stop(now, "error", f"deleted by {req.user}")
    info = f"Deleting the job = {job.uid} ...REGISTERED. The job(s) [ {job.uid} ] will be deleted in a near future."
    return 202, "", {"Location": f"{api.public_url}/sites/{site}/jobs/{job.uid}", "X-Oar-Info": info}


def walltime(req, site: str, job):
    """``/jobs/{id}/walltime``. GUESS (API-SHAPES.md §1.7 gives only the routes and the POST
    body): the answers mirror OAR's walltime-change record (walltime, granted, pending,
    possible, delay_next_jobs) and a 202 ``{status, job_id, message}``. A change is granted
    when no other job is placed on the nodes in the added time, else it stays pending."""
    api, method, body = req.api, req.method, req.body
    now = time.time()
    if method == "GET":
        return 200, {"walltime": fmt(job.walltime), "granted": fmt(job.granted, "+"),
                     "pending": fmt(job.pending, "+"), "possible": "+99:00:00", "delay_next_jobs": "no",
                     "links": [link("self", f"{api.base}/sites/{site}/jobs/{job.uid}/walltime"),
                               link("parent", f"{api.base}/sites/{site}/jobs/{job.uid}")]}
    if method != "POST":
        raise_(405, "Method Not Allowed")
    if job.user != req.user:
        raise_(403, "You are not authorized to access this resource")
    if job.state(now) != "running":
        raise M.oar_refusal(site, f"Walltime change for job {job.uid} is not possible: the job is not running\n",
                            path=f"jobs/{job.uid}/walltime.json")
    m = re.fullmatch(r"([+-]?)(\d+)(?::(\d+))?(?::(\d+))?", str((body or {}).get("walltime", "")).strip())
    if not m:
        raise_(400, f"Bad walltime change {(body or {}).get('walltime')!r}")
    secs = int(m.group(2)) * 3600 + int(m.group(3) or 0) * 60 + int(m.group(4) or 0)
    delta = (-secs if m.group(1) == "-" else secs) if m.group(1) else secs - job.walltime
    if delta > 0 and not extension_fits(api, job, delta, now):
        job.pending += delta
    else:
        job.walltime = max(60, job.walltime + delta)
        job.granted += delta
    return 202, {"status": "Accepted", "job_id": job.uid,
                 "message": f"Walltime change request accepted for job {job.uid}"}


def extension_fits(api, job, delta: int, now: float) -> bool:
    """True when no other active job holds one of ``job``'s nodes in the added time."""
    for other in api.jobs.values():
        if other is job or not other.active(now) or not set(other.nodes) & set(job.nodes):
            continue
        if other.start < job.end + delta and other.end > job.end:
            return False
    return True


def fmt(seconds: int, sign: str = "") -> str:
    """``H:MM:SS`` (with ``sign`` for a change)."""
    s = abs(int(seconds))
    return f"{sign if seconds >= 0 else '-'}{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# --- deployments -----------------------------------------------------------------------------

def deployments(req, site, rest):
    api, method, query, body = req.api, req.method, req.query, req.body
    """``/sites/{s}/deployments[/{uid}]`` (API-SHAPES.md §2)."""
    b = f"{api.base}/sites/{site.uid}/deployments"
    with api.lock:
        if not rest:
            if method == "POST":
                status, out = api.deploy(site.uid, req.user, body)
                if status == 201:
                    return 201, out, {"Location": f"{api.public_url}/sites/{site.uid}/deployments/{out['uid']}"}
                return status, out
            ds = [api._deployment(d) for d in api.deployments.values() if d["site_uid"] == site.uid]
            ds = [d for d in ds if all(not query.get(k) or d.get(f) == query[k]
                                       for k, f in (("user", "user_uid"), ("status", "status")))]
            ds.sort(key=lambda d: d["created_at"], reverse=query.get("reverse") != "no")
            return 200, page(ds, query, b, f"{api.base}/sites/{site.uid}")
        d = api.deployments.get(rest[0])
        if d is None or d["site_uid"] != site.uid or len(rest) > 1:
            raise_(404, f"Couldn't find Grid5000::Deployment with 'uid'={rest[0]}")
        if method == "DELETE":
            if d["status"] == "processing":
                d.update(status="canceled", updated_at=int(time.time()))
            return 202, ""
        return 200, api._deployment(d)


# --- vlans -----------------------------------------------------------------------------------

def vlans(req, site, rest):
    api, method, query, body = req.api, req.method, req.query, req.body
    """``/sites/{s}/vlans...`` (API-SHAPES.md §3)."""
    b = f"{api.base}/sites/{site.uid}/vlans"
    with api.lock:
        if not rest:
            items = [vlan_item(api, site.uid, v, t) for v, t in site.vlans.items()]
            out = collection(items, b, f"{api.base}/sites/{site.uid}")
            out["links"] += [link("nodes", f"{b}/nodes", COLLECTION), link("users", f"{b}/users", COLLECTION)]
            return 200, out
        if rest[0] == "nodes":
            return vlan_nodes_all(api, method, site, rest[1:], body)
        if rest[0] == "users":
            return vlan_users_all(api, site, rest[1:])
        vid = rest[0]
        if vid not in site.vlans:
            raise_(404, f"Unknown vlan '{vid}'")
        if len(rest) == 1:
            return 200, vlan_item(api, site.uid, vid, site.vlans[vid])
        if rest[1] == "dhcpd" and method == "PUT":
            if not isinstance(body, dict) or body.get("action") not in ("start", "stop"):
                raise_(422, "An action ('start' or 'stop') should be provided")
            if vid not in api._user_vlans(site.uid, req.user):
                raise_(403, "Not enough privileges on Kavlan resources")
            return 204, ""
        if rest[1] == "nodes" and len(rest) == 2:
            if method == "POST":
                return api.move_to_vlan(site.uid, req.user, vid, body)
            members = [{"uid": a, "vlan": vid, "links": [link("self", f"{b}/nodes/{a}")]}
                       for a in api.vlan_members(site.uid, vid)]
            return 200, collection(members, f"{b}/{vid}/nodes", f"{b}/{vid}")
        if rest[1] == "users":
            return vlan_users(api, site, vid, rest[2:])
    raise_(404, "Not Found")


def vlan_item(api, site: str, vid: str, kind: str) -> dict:
    """``{uid, type, links}``; ``uid`` a string as in the kavlan fixtures."""
    b = f"{api.base}/sites/{site}/vlans/{vid}"
    return {"uid": vid, "type": kind,
            "links": [link("self", b), link("parent", f"{api.base}/sites/{site}"), link("dhcpd", f"{b}/dhcpd"),
                      link("nodes", f"{b}/nodes", COLLECTION), link("users", f"{b}/users", COLLECTION)]}


def vlan_nodes_all(api, method, site, rest, body):
    """``GET|POST /vlans/nodes`` and ``GET /vlans/nodes/{addr}`` (§3.4)."""
    b = f"{api.base}/sites/{site.uid}/vlans/nodes"
    known = site.addresses()

    def item(a):
        return {"uid": a, "vlan": api._vlan(a), "links": [link("self", f"{b}/{a}")]}
    if rest:
        if rest[0] not in known:
            raise_(404, f"Unknown node '{rest[0]}'.")
        return 200, item(rest[0])
    if method == "POST":
        if not isinstance(body, list):
            raise_(422, "Missing node list")
        return 200, collection([item(a) for a in body if a in known], b, f"{api.base}/sites/{site.uid}/vlans")
    return 200, collection([item(a) for a in sorted(known)], b, f"{api.base}/sites/{site.uid}/vlans")


def vlan_users_all(api, site, rest):
    """``GET /vlans/users[/{user}]``: who holds vlans (through running jobs)."""
    b = f"{api.base}/sites/{site.uid}/vlans/users"
    holders = sorted({j.user for j in api._site_jobs(site.uid) if j.vlans and j.state(time.time()) == "running"})
    if rest:
        return 200, {"uid": rest[0], "vlans": sorted(api._user_vlans(site.uid, rest[0]), key=int),
                     "links": [link("self", f"{b}/{rest[0]}")]}
    return 200, collection([{"uid": u, "links": [link("self", f"{b}/{u}")]} for u in holders], b,
                           f"{api.base}/sites/{site.uid}/vlans")


def vlan_users(api, site, vid: str, rest):
    """``GET /vlans/{id}/users[/{user}]``."""
    b = f"{api.base}/sites/{site.uid}/vlans/{vid}/users"
    holders = sorted({j.user for j in api._site_jobs(site.uid) if vid in j.vlans and j.state(time.time()) == "running"})
    if rest:
        return 200, {"uid": rest[0], "status": "authorized" if rest[0] in holders else "unauthorized",
                     "links": [link("self", f"{b}/{rest[0]}")]}
    return 200, collection([{"uid": u, "links": [link("self", f"{b}/{u}")]} for u in holders], b,
                           f"{api.base}/sites/{site.uid}/vlans/{vid}")
