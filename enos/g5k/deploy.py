"""kadeploy deployments of one env (``env_name``): per site and vlan, at once; nodes already
running the environment (journal, or the API's deployment history) are skipped; failed
nodes are retried ``deploy_retries`` times. Every function takes the env's
:class:`~enos.g5k.session.Session` ``s``."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from enos import failpoint, signals
from enos.errors import ProviderError
from enos.g5k.session import pick_error
from enos.retry import retry


def deploy_keys(g5k) -> str:
    """Return the public keys a deployment installs for root: the env's and the user's."""
    keys = []
    if g5k.ctx.ssh_key is not None:
        keys.append(g5k.ctx.ssh_pubkey)
    user_key = Path(os.path.expanduser(str(g5k.opt("key"))))
    if user_key.is_file():
        keys.append(user_key.read_text().strip())
    return "\n".join(keys)


def deploy_all(g5k, pairs, nets, vlan_of, jobs, force: bool) -> None:
    """Deploy ``env_name`` on every assigned node, one deployment per (site, vlan), all
    at once. Raises the most telling error of the sites that failed."""
    by_target: Dict[Tuple[str, Optional[str]], List[str]] = {}
    for g, fq in pairs:
        vlan = vlan_of.get(g.primary_network) if g.primary_network else None
        by_target.setdefault((g.site, vlan), []).append(fq)
    errors: List[Tuple[str, BaseException]] = []
    with ThreadPoolExecutor(max_workers=min(8, len(by_target)) or 1) as ex:
        futs = {k: ex.submit(deploy_site, g5k, k[0], k[1], nodes, jobs[k[0]], force)
                for k, nodes in by_target.items()}
        for (site, _), f in futs.items():
            try:
                f.result()
            except KeyboardInterrupt:
                raise               # a signal: the workers stop at their next poll
            except BaseException as e:  # noqa: B902
                errors.append((site, e))
    if errors:
        raise pick_error(errors)


def already_deployed(g5k, site: str, job: dict, env: str, version: Optional[int] = None) -> set:
    """Return the nodes of ``job`` already running ``env`` at ``version`` (None: the
    deployments that pinned no version, i.e. kadeploy's latest) — from the journal, else the
    API's deployment history since the job started."""
    rec = g5k.ctx.journal.get(f"deployed:{site}") or {}
    if rec.get("job") == job["uid"] and rec.get("env") == env and rec.get("version") == version:
        return set(rec.get("nodes") or [])
    started = job.get("started_at") or 0
    done = set()
    try:
        for d in g5k.api.deployments(site, user=g5k.creds.username):
            if d.get("environment") == env and d.get("version") == version and d.get("status") == "terminated" \
                    and (d.get("created_at") or 0) >= started:
                done |= {n for n, r in (d.get("result") or {}).items() if r.get("state") == "OK"}
    except ProviderError:
        return set()
    return done & set(job.get("assigned_nodes") or [])


def deploy_site(g5k, site: str, vlan: Optional[str], nodes: List[str], job: dict, force: bool) -> None:
    """Deploy ``env_name`` on ``nodes`` of one site (skipping those already done),
    retrying failed nodes ``deploy_retries`` times; journal the nodes done. Raises
    ProviderError naming the nodes that never deployed."""
    env, version = g5k.opt("env_name"), g5k.opt("env_version")
    done = set() if force else already_deployed(g5k, site, job, env, version)
    todo = sorted(set(nodes) - done)
    if not todo:
        g5k.ctx.progress.info(f"g5k: {len(nodes)} node(s) on {site} already run {env}")
        return
    keys = deploy_keys(g5k)
    retries = int(g5k.opt("deploy_retries"))
    history = list((g5k.ctx.journal.get(f"deployed:{site}") or {}).get("deployments") or [])
    for attempt in range(retries + 1):
        spec = {"nodes": todo, "environment": env, "key": keys}
        if version is not None:
            spec["version"] = version
        if vlan:
            spec["vlan"] = vlan
        dep = post_deployment(g5k, site, spec)
        failpoint.checkpoint("g5k.deployment_submitted")
        dep = wait_deployment(g5k, site, dep, len(todo))
        ok = [n for n, r in (dep.get("result") or {}).items() if r.get("state") == "OK"]
        done |= set(ok)
        history.append(_deployment_record(dep))
        with g5k.lock:
            g5k.record(f"deployed:{site}", {"job": job["uid"], "env": env, "version": version,
                                             "nodes": sorted(done), "deployments": history})
        failpoint.checkpoint("g5k.deployed")
        todo = sorted(set(todo) - set(ok))
        if not todo:
            return
        if attempt < retries:
            g5k.ctx.progress.info(f"g5k: deployment failed on {', '.join(todo)}; retrying "
                                   f"({attempt + 1}/{retries})")
    raise ProviderError(f"deployment of {env} on {site} failed on {', '.join(todo)} after "
                        f"{retries + 1} attempt(s); the job is kept ('enos up' retries, 'enos destroy' frees it)")


def _deployment_record(dep: dict) -> dict:
    """What ``enos archive`` keeps of one deployment, as the API answered: kadeploy's
    workflow uid, the environment (and version/arch when the API gives them), when, and the
    nodes it deployed (OK) or not (KO)."""
    out = {k: dep[k] for k in ("uid", "environment", "version", "arch", "status", "created_at") if k in dep}
    result = dep.get("result") or {}
    out["ok"] = sorted(n for n, r in result.items() if r.get("state") == "OK")
    out["ko"] = sorted(n for n, r in result.items() if r.get("state") != "OK")
    return out


def post_deployment(g5k, site: str, spec: dict) -> dict:
    """POST a deployment; after a failed POST, look for it in the API's list before
    posting again. Return the deployment."""
    tries = {"n": 0}
    since = int(time.time()) - 5

    def attempt():
        tries["n"] += 1
        if tries["n"] > 1:
            for d in g5k.api.deployments(site, user=g5k.creds.username):
                if sorted(d.get("nodes") or []) == sorted(spec["nodes"]) and \
                        d.get("environment") == spec["environment"] and (d.get("created_at") or 0) >= since:
                    return d
        return g5k.api.deploy(site, spec)
    return retry(attempt, attempts=g5k.api.attempts, base_delay=g5k.api.base_delay,
                 max_delay=g5k.api.max_delay)


def wait_deployment(g5k, site: str, dep: dict, n: int) -> dict:
    """Poll deployment ``dep`` until it ends (interruptible); return it, every node of a
    deployment that did not terminate marked KO."""
    delay = float(g5k.opt("poll_interval"))
    cap = float(g5k.opt("poll_max_interval"))
    with g5k.ctx.progress.task(f"deploying {g5k.opt('env_name')} on {n} node(s) of {site}") as t:
        while dep.get("status") == "processing" or dep.get("status") == "waiting":
            t.update(f"deployment {dep['uid']}: {dep.get('status')}")
            signals.interruptible_sleep(delay)   # in a worker thread: wakes on a signal
            delay = min(cap, delay * 1.5)
            dep = g5k.api.deployment(site, dep["uid"])
    if dep.get("status") not in ("terminated",):
        dep.setdefault("result", {})
        for node in dep.get("nodes") or []:
            dep["result"].setdefault(node, {"state": "KO"})
    return dep
