"""What a Grid'5000 env booked, for someone to book it again (``enos archive``): per job
its site, uid, name, state, walltime and nodes, each node's description from the Reference
API (hardware, network adapters, ...), and the environment kadeploy deployed."""
from __future__ import annotations

from typing import Any, Dict

from enos.errors import EnosError


def record(g5k) -> Dict[str, Any]:
    """Return the record of the env behind the session ``g5k`` (journal entries for what
    the API no longer knows; the API's answers otherwise). Never raises for an API
    error: it is written down instead."""
    jobs, nodes = [], {}
    journal = g5k.ctx.journal
    for site, rec in sorted(g5k.recorded_jobs().items()):
        entry: Dict[str, Any] = {"site": site, "uid": rec.get("uid"), "name": rec.get("name")}
        deployed = journal.get(f"deployed:{site}")
        if deployed:
            version = deployed.get("version")
            entry["deployment"] = {"environment": deployed.get("env"),
                                   "version": version if version is not None else
                                   "not pinned: kadeploy's latest at the time of the deployment (env_version pins one)",
                                   "nodes": deployed.get("nodes"),
                                   "deployments": deployed.get("deployments") or []}
        if rec.get("uid") is not None:
            try:
                j = g5k.api.job(site, rec["uid"])
                entry.update(state=j.get("state"), walltime=j.get("walltime"), started_at=j.get("started_at"),
                             assigned_nodes=j.get("assigned_nodes") or [], types=j.get("types"))
            except EnosError as e:
                entry["api_error"] = str(e)
        jobs.append(entry)
        for fqdn in entry.get("assigned_nodes") or []:
            uid = fqdn.split(".", 1)[0]
            try:
                nodes[fqdn] = g5k.api.node(site, uid.rsplit("-", 1)[0], uid)
            except EnosError as e:
                nodes[fqdn] = {"api_error": str(e)}
    return {"api": g5k.creds.uri if jobs else None, "jobs": jobs, "nodes": nodes}
