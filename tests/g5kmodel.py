"""The testbed behind the fake Grid'5000 API (tests/g5kserver.py): the real reference
nodes of each site, OAR jobs placed in time (a gantt), kavlan membership, and the answers'
shapes as ../shared/g5k-reference/API-SHAPES.md documents them.

Pure model, no HTTP: every function takes the time ``now`` (Unix seconds) explicitly.

Where API-SHAPES.md says a shape or text is not known, the guess made is written next to
the code as ``GUESS:``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple
from zoneinfo import ZoneInfo

from g5kref import Reference, fqdn, kavlan_adapters, reservable_disks

#: OAR runs on Grid'5000 servers in Europe/Paris time: dates in reservations and in
#: "could run at" refusals are that local time (API-SHAPES.md §1.6, enoslib reads them so).
PARIS = ZoneInfo("Europe/Paris")
DATE_FMT = "%Y-%m-%d %H:%M:%S"
ACTIVE = ("waiting", "launching", "running", "hold")
#: OAR's (and the API's) node states that take no job (enoslib skips dead and suspected)
UNUSABLE = ("dead", "suspected", "absent")


class Refusal(Exception):
    """An answer other than success: ``status`` and the plain-text ``text`` the API sends."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


def paris_date(ts: float) -> str:
    """Return ``YYYY-MM-DD HH:MM:SS`` of Unix time ``ts`` in Europe/Paris."""
    return _dt.datetime.fromtimestamp(ts, PARIS).strftime(DATE_FMT)


def parse_paris_date(text: str) -> float:
    """Return the Unix time of a reservation date read in Europe/Paris. Raises ValueError."""
    return _dt.datetime.strptime(text.strip(), DATE_FMT).replace(tzinfo=PARIS).timestamp()


def oar_refusal(site: str, oarsub_output: str, path: str = "jobs.json") -> Refusal:
    """Return the 400 g5k-api sends when OAR refuses: its backend error text wrapping the
    OAR REST API's JSON (API-SHAPES.md §1.2, §1.6).
    GUESS: the backend URL (not public); the JSON keys are OAR's (code, title, message)."""
    body = json.dumps({"code": 400, "title": "Bad query", "message": oarsub_output})
    return Refusal(400, f"Request to https://oar-api.{site}.grid5000.fr/oarapi/{path} failed "
                        f"with status 400: {body}")


# --- sites and their resources -------------------------------------------------------------

@dataclass
class Node:
    """A node of the reference data as OAR sees it."""

    fqdn: str
    site: str
    cluster: str
    data: dict
    hard: str = "alive"

    @property
    def cores(self) -> int:
        """The node's core count (``architecture.nb_cores`` is the total)."""
        return int((self.data.get("architecture") or {}).get("nb_cores") or 1)

    @property
    def max_walltime(self) -> int:
        """The node's walltime limit in seconds (0: none)."""
        return int((self.data.get("supported_job_types") or {}).get("max_walltime") or 0)

    @property
    def queues(self) -> List[str]:
        """The OAR queues the node belongs to."""
        return list((self.data.get("supported_job_types") or {}).get("queues") or [])


class Site:
    """One site: its reference JSON, its clusters' nodes (possibly a subset), its kavlans
    and /22 subnets."""

    def __init__(self, ref: Reference, uid: str, clusters: Optional[Dict[str, Optional[int]]] = None):
        self.uid = uid
        self.data = ref.site(uid)
        wanted = clusters if clusters is not None else {c: None for c in ref.cluster_uids(uid)}
        self.clusters: Dict[str, dict] = {}
        self.nodes: Dict[str, Node] = {}
        for c, count in wanted.items():
            self.clusters[c] = ref.cluster(uid, c)
            nodes = ref.nodes(uid, c)
            if count is not None and count > len(nodes):
                raise ValueError(f"{uid}/{c} has {len(nodes)} nodes in the reference data, {count} asked")
            for n in nodes[:count]:
                self.nodes[fqdn(n, uid)] = Node(fqdn(n, uid), uid, c, n)
        self.vlans = _site_vlans(self.data)
        g = self.data.get("g5ksubnet") or {}
        self.subnets = ([str(s) for s in ipaddress.ip_network(g["network"]).subnets(new_prefix=22)][:-1]
                        if g.get("network") else [])

    def cluster_nodes(self, cluster: str) -> List[Node]:
        """Return the nodes of ``cluster`` served by this fake, in node-number order."""
        return [n for n in self.nodes.values() if n.cluster == cluster]

    def addresses(self) -> Dict[str, Node]:
        """Return every kavlan-capable interface address (``gros-1-eth1.nancy...``) → node."""
        out = {}
        for n in self.nodes.values():
            for a in kavlan_adapters(n.data):
                out[a["network_address"]] = n
        return out


def _site_vlans(site: dict) -> Dict[str, str]:
    """Return vlan id → type for the site's kavlans: 1-3 kavlan-local, 4-9 kavlan, the
    site's own global id kavlan-global (API-SHAPES.md §3.1). GUESS: the other sites' global
    vlans ("kavlan-global-remote") are not listed; "DEFAULT" is listed with type "NULL" as in
    the kavlan fixture."""
    out = {"DEFAULT": "NULL"}
    for vid in sorted((k for k in site.get("kavlans") or {} if k.isdigit()), key=int):
        n = int(vid)
        out[vid] = "kavlan-local" if n <= 3 else ("kavlan" if n <= 9 else "kavlan-global")
    return out


# --- resource requests ---------------------------------------------------------------------

@dataclass
class Term:
    """One ``+``-separated part of an OAR resource request."""

    kind: str                    # cluster | server | nodes | vlan | subnet
    count: int = 1
    value: str = ""              # cluster name, node FQDN, vlan type, subnet size


_Q = r"""['"]([^'"]+)['"]"""
_TERMS = [
    (re.compile(r"\{\s*cluster\s*=\s*" + _Q + r"\s*\}/nodes=(\d+)$"), "cluster"),
    (re.compile(r"\{\s*network_address\s*=\s*" + _Q + r"\s*\}/nodes=1$"), "server"),
    (re.compile(r"\{\s*type\s*=\s*" + _Q + r"\s*\}/vlan=(\d+)$"), "vlan"),
    (re.compile(r"slash_(22|18|16)=(\d+)$"), "subnet"),
    (re.compile(r"nodes=(\d+)$"), "nodes"),
]


def parse_resources(text: str) -> Tuple[List[Term], int]:
    """Return the terms of an OAR resource string and its walltime in seconds (3600 when
    absent, OAR's default on Grid'5000). Raises ValueError naming the part not understood."""
    walltime = 3600
    m = re.search(r",\s*walltime=(\d+)(?::(\d+))?(?::(\d+))?\s*$", text)
    if m:
        walltime = int(m.group(1)) * 3600 + int(m.group(2) or 0) * 60 + int(m.group(3) or 0)
        text = text[:m.start()]
    terms = []
    for part in filter(None, (p.strip() for p in text.split("+"))):
        for rx, kind in _TERMS:
            mm = rx.match(part)
            if not mm:
                continue
            if kind in ("cluster", "server", "vlan"):
                terms.append(Term(kind, int(mm.group(2)) if kind != "server" else 1, mm.group(1)))
            elif kind == "subnet":
                terms.append(Term(kind, int(mm.group(2)), mm.group(1)))
            else:
                terms.append(Term(kind, int(mm.group(1))))
            break
        else:
            raise ValueError(part)
    if not terms:
        raise ValueError(text or "(empty)")
    return terms, walltime


# --- jobs ----------------------------------------------------------------------------------

@dataclass
class Job:
    """An OAR job. ``start`` is when OAR starts it (Unix s); it occupies its resources over
    [start, start + launching + walltime)."""

    uid: int
    site: str
    user: str
    spec: dict
    walltime: int
    submitted: float
    start: float
    launching: float = 0.0
    nodes: List[str] = field(default_factory=list)
    vlans: List[str] = field(default_factory=list)
    subnets: List[str] = field(default_factory=list)
    ended: Optional[str] = None          # "error" / "terminated" when ended early
    stopped: Optional[float] = None
    message: str = ""
    events: List[dict] = field(default_factory=list)
    die_at: Optional[float] = None       # a test asked this job to die while waiting
    granted: int = 0
    pending: int = 0
    cores: Dict[str, int] = field(default_factory=dict)
    vlan_ints: bool = False              # resources_by_type.vlans as integers (swagger) or strings

    @property
    def end(self) -> float:
        """When the job's resources are free again."""
        if self.stopped is not None:
            return self.stopped
        return self.start + self.launching + self.walltime

    def state(self, now: float) -> str:
        """Return the OAR state (lower-cased, as the API gives it) at ``now``."""
        if self.ended:
            return self.ended
        if self.die_at is not None and now >= self.die_at and now < self.start:
            self.ended, self.stopped, self.message = "error", self.die_at, "job killed while waiting"
            self.events.append({"uid": self.uid * 10, "created_at": int(self.die_at),
                                "type": "FRAG_JOB_REQUEST", "description": "job died while waiting"})
            return "error"
        if now < self.start:
            return "waiting"
        if now < self.start + self.launching:
            return "launching"
        if now < self.end:
            return "running"
        return "terminated"

    def active(self, now: float) -> bool:
        """True while the job holds (or will hold) its resources."""
        return self.state(now) in ACTIVE

    def stop(self, now: float, state: str, event: str) -> None:
        """End the job now (deleted, killed)."""
        self.ended, self.stopped = state, now
        self.events.append({"uid": self.uid * 10 + len(self.events), "created_at": int(now),
                            "type": "FRAG_JOB_REQUEST", "description": event})

    def item(self, now: float, base: str, details: bool = True) -> dict:
        """Return the job as the API shows it (API-SHAPES.md §1.3): null fields left out.
        ``details`` adds ``events``, ``assigned_nodes`` and ``resources_by_type``."""
        st = self.state(now)
        started = self.start + self.launching
        spec = self.spec
        out = {"uid": self.uid, "user": self.user, "user_uid": self.user, "name": spec.get("name"),
               "queue": spec.get("queue") or "default", "state": st, "walltime": self.walltime,
               "types": list(spec.get("types") or []), "mode": "PASSIVE",
               "command": spec.get("command") or "", "project": spec.get("project"),
               "submitted_at": int(self.submitted),
               # a job OAR placed has a predicted start: scheduled_at is absent only for a job
               # OAR has no prediction for (never the case here)
               "scheduled_at": int(self.start),
               # GUESS (API-SHAPES §5): started_at is 0 until the job starts (OAR's value)
               "started_at": int(started) if st in ("running", "terminated") or (
                   st == "error" and self.stopped and self.stopped > started) else 0,
               "stopped_at": int(self.end) if st in ("terminated", "error") else None,
               "message": self.message or ("FIFO scheduling OK" if not spec.get("reservation")
                                           else "Reservation valid"),
               "properties": spec.get("properties") or "maintenance = 'NO'",
               "directory": f"/home/{self.user}",
               "links": [{"rel": "self", "href": f"{base}/sites/{self.site}/jobs/{self.uid}",
                          "type": "application/vnd.grid5000.item+json"},
                         {"rel": "parent", "href": f"{base}/sites/{self.site}",
                          "type": "application/vnd.grid5000.item+json"}]}
        if details:
            out["events"] = list(self.events)
            out["assigned_nodes"] = list(self.nodes)
            out["resources_by_type"] = self.resources_by_type()
        return {k: v for k, v in out.items() if v is not None}

    def resources_by_type(self) -> dict:
        """Return ``resources_by_type``: only the keys that exist (cores, vlans, subnets)."""
        out: Dict[str, list] = {}
        if self.nodes:
            out["cores"] = [f"{n}/{i}" for n in self.nodes for i in range(self.cores.get(n, 1))]
        if self.vlans:
            out["vlans"] = [int(v) if self.vlan_ints else v for v in self.vlans]
        if self.subnets:
            out["subnets"] = list(self.subnets)
        return out


def status_reservation(job: Job, now: float, base: str) -> dict:
    """A job as listed in a status answer's ``reservations``: the job item without events,
    assigned_nodes and resources_by_type (API-SHAPES.md §4)."""
    return job.item(now, base, details=False)


# --- placement -----------------------------------------------------------------------------

def busy_intervals(jobs: Iterable[Job], now: float) -> Dict[str, List[Tuple[float, float]]]:
    """Return resource → [(start, end)] of the active jobs but best-effort ones (nodes by
    FQDN, vlans as ``vlan:<id>``, subnets as ``subnet:<cidr>``)."""
    out: Dict[str, List[Tuple[float, float]]] = {}
    for j in jobs:
        if not j.active(now) or j.spec.get("queue") == "besteffort":   # OAR kills those for others
            continue
        for r in j.nodes + [f"vlan:{v}" for v in j.vlans] + [f"subnet:{s}" for s in j.subnets]:
            out.setdefault(r, []).append((j.start, j.end))
    return out


def _free(busy, res: str, t: float, end: float) -> bool:
    return all(e <= t or s >= end for s, e in busy.get(res, ()))


def eligible(site: Site, node: Node, spec: dict, walltime: int) -> bool:
    """True when ``node`` may run this job at all: usable hard state, in the job's queue,
    walltime within its limit, and, for an exotic cluster, the job has type ``exotic``
    (Grid'5000's admission rules exclude exotic nodes otherwise)."""
    queue = spec.get("queue") or "default"
    if node.hard in UNUSABLE or queue not in node.queues:
        return False
    if node.max_walltime and walltime > node.max_walltime:
        return False
    if site.clusters[node.cluster].get("exotic") and "exotic" not in (spec.get("types") or []):
        return False
    return True


def place(site: Site, terms: List[Term], spec: dict, walltime: int, t: float,
          busy) -> Optional[Tuple[List[str], List[str], List[str]]]:
    """Return (nodes, vlans, subnets) for the terms if all are free over
    [t, t + walltime), else None."""
    end = t + walltime
    nodes: List[str] = []
    vlans: List[str] = []
    subnets: List[str] = []

    def ok(n: Node) -> bool:
        return n.fqdn not in nodes and eligible(site, n, spec, walltime) and _free(busy, n.fqdn, t, end)
    for term in terms:
        if term.kind in ("cluster", "nodes", "server"):
            pool = (site.cluster_nodes(term.value) if term.kind == "cluster"
                    else [site.nodes[term.value]] if term.kind == "server" else list(site.nodes.values()))
            got = [n.fqdn for n in pool if ok(n)][:term.count]
            if len(got) < term.count:
                return None
            nodes += got
        elif term.kind == "vlan":
            got = [v for v, ty in site.vlans.items() if ty == term.value and v not in vlans
                   and _free(busy, f"vlan:{v}", t, end)][:term.count]
            if len(got) < term.count:
                return None
            vlans += got
        else:
            got = _free_subnets(site, term, subnets, busy, t, end)
            if got is None:
                return None
            subnets += got
    return nodes, vlans, subnets


def _free_subnets(site: Site, term: Term, taken: List[str], busy, t, end) -> Optional[List[str]]:
    per = {"22": 1, "18": 16, "16": 64}[term.value]
    free = [s for s in site.subnets if s not in taken and _free(busy, f"subnet:{s}", t, end)]
    out: List[str] = []
    if per == 1:
        return free[:term.count] if len(free) >= term.count else None
    groups: Dict[str, List[str]] = {}
    for s in free:
        key = str(ipaddress.ip_network(s).supernet(new_prefix=int(term.value)))
        groups.setdefault(key, []).append(s)
    for subs in groups.values():
        if len(subs) == per and len(out) < per * term.count:
            out += subs
    return out if len(out) == per * term.count else None


def earliest(site: Site, terms: List[Term], spec: dict, walltime: int, t0: float,
             jobs: List[Job], now: float) -> Optional[Tuple[float, tuple]]:
    """Return (start, placement) of the earliest start ≥ ``t0`` where the terms fit, or
    None when they never fit (more than the site has)."""
    busy = busy_intervals(jobs, now)
    candidates = sorted({t0} | {e for spans in busy.values() for _, e in spans if e > t0})
    for t in candidates:
        got = place(site, terms, spec, walltime, t, busy)
        if got is not None:
            return t, got
    return None


def check_terms(site: Site, terms: List[Term], spec: dict, walltime: int) -> Optional[str]:
    """Return OAR's admission error for a request that can never be satisfied, or None.
    GUESS: the wording of these admission-rule messages (not in API-SHAPES.md)."""
    queue = spec.get("queue") or "default"
    for t in terms:
        if t.kind == "cluster" and t.value not in site.clusters:
            return f"[ADMISSION RULE] Error: there is no cluster '{t.value}' on {site.uid}"
        if t.kind == "server" and t.value not in site.nodes:
            return f"[ADMISSION RULE] Error: there is no node '{t.value}' on {site.uid}"
        if t.kind == "vlan" and t.value not in site.vlans.values():
            return f"[ADMISSION RULE] Error: unknown vlan type '{t.value}'"
        if t.kind == "cluster":
            queues = (site.clusters[t.value].get("queues") or [])
            if queue not in queues:
                return (f"[ADMISSION RULE] Error: cluster '{t.value}' is not in queue '{queue}' "
                        f"(its queues: {', '.join(queues)})")
    return None


def not_enough(site: str) -> Refusal:
    """OAR's refusal of a request bigger than what exists (or than what the job's queue,
    types and walltime allow). GUESS: the oarsub output around OAR's own sentence."""
    return oar_refusal(site, "[ADMISSION RULE] Modify resource description with type constraints\n"
                             "There are not enough resources for your request\nOAR_JOB_ID=-5\n"
                             "Oarsub failed: please verify your request syntax or ask for support "
                             "to your admin.\n")


def could_run(site: str, uid: int, when: Optional[float]) -> Refusal:
    """The refusal of an advance reservation (API-SHAPES.md §1.6): ``# Reservation not
    valid --> KO (This reservation could run at <Paris time>)``, or ``cannot run``.
    GUESS: the oarsub lines before it."""
    why = (f"This reservation could run at {paris_date(when)}" if when is not None
           else "This reservation cannot run")
    return oar_refusal(site, "[ADMISSION RULE] Modify resource description with type constraints\n"
                             f"OAR_JOB_ID={uid}\n# Reservation mode: waiting validation...\n"
                             f"# Reservation not valid --> KO ({why})\n")


def key_url(base_url: str, site: str, user: str, key: str) -> str:
    """The URL the API stores a deployment's key content under (API-SHAPES.md §2.1)."""
    return f"{base_url}/sites/{site}/files/{user}-key-{hashlib.sha1(key.encode()).hexdigest()}"
