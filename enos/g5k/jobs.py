"""The OAR jobs of one env, through the API: found (by the journal's uid, or by name and
run mark after a crash between the POST and the uid being recorded), reused (the user's job
named ``job_name``, or the ones ``job_ids``/``oargrid_jobids`` give, checked against what
the reservation asks), submitted (one per site, at once), waited for, deleted (reused jobs
kept unless released), swept by run id, extended, described. Every function takes the
env's :class:`~enos.g5k.session.Session` ``g5k``."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

from enos import failpoint, signals
from enos.errors import (DestroyIncomplete, EnosError, ProviderError, ReservationUnavailable, Retryable,
                         Timeout, UsageError)
from enos.g5k import oar
from enos.g5k.api import NotFound
from enos.g5k.oar import ACTIVE_STATES, ENDED_STATES, format_extension, format_walltime, parse_extension
from enos.g5k.plan import sites_needing_lookup
from enos.g5k.reuse import ReuseError, check, pick_by_name
from enos.g5k.session import iso, pick_error
from enos.retry import retry


def resolve_sites(g5k, groups) -> None:
    """Set the site of every machine group given by cluster only (one API listing of
    every site's clusters). Raises ConfigError naming an unknown cluster."""
    wanted = sites_needing_lookup(groups)
    if not wanted:
        return
    sites = g5k.api.sites()
    found: Dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(sites)) or 1) as ex:
        for site, clusters in zip(sites, ex.map(g5k.api.clusters, sites)):
            for c in clusters:
                found.setdefault(c, site)
    for g in groups:
        if not g.site and g.cluster:
            if g.cluster not in found:
                raise g5k.ctx.config.error(g.keypath, f"no Grid'5000 cluster named '{g.cluster}' "
                                            f"(known: {', '.join(sorted(found)) or 'none'})")
            g.site = found[g.cluster]


def job_spec(g5k, terms: List[str]) -> dict:
    """Return the OAR job submission of one site for the resource ``terms``."""
    types = g5k.opt("job_type")
    types = [types] if isinstance(types, str) else list(types or [])
    if g5k.opt("env_name") and "deploy" not in types:
        types.append("deploy")
    # the run mark (a no-op ':' argument) lets 'destroy --sweep' find the job whatever its name
    spec = {"name": g5k.job_name, "resources": oar.resource_expression(terms, g5k.opt("walltime")),
            "command": f": {g5k.run_tag}; sleep 31536000", "types": types, "queue": g5k.opt("queue")}
    if g5k.opt("project"):
        spec["project"] = g5k.opt("project")
    at = reservation_date(g5k)
    if at:
        spec["reservation"] = at
    return spec


def reservation_date(g5k) -> Optional[str]:
    """The OAR reservation date of the jobs to submit: the start the task runner chose
    (``enos up --at``, Unix time, written in Europe/Paris time as OAR reads it), else the
    ``reservation`` option as given, else None (as soon as possible)."""
    at = getattr(g5k, "start_at", None) or getattr(g5k.ctx, "start_at", None)
    if at:
        return oar.paris_date(float(at))
    return g5k.opt("reservation") or None


def find_by_name(g5k, site: str, mine: bool = True) -> List[dict]:
    """Return the active jobs of this user on ``site`` named like this env's job; with
    ``mine``, only those this run submitted (its mark in the command; a job listed without
    its command counts)."""
    found = g5k.api.jobs(site, name=g5k.job_name, states=ACTIVE_STATES, user=g5k.creds.username)
    return [j for j in found if not mine or "command" not in j or g5k.run_tag in str(j.get("command"))]


def reconnect(g5k, site: str, rec: Optional[dict]) -> Optional[dict]:
    """Return the live job of ``site`` this env already booked, or None."""
    if not rec:
        return None   # nothing recorded: this run id never submitted on this site
    if rec.get("uid") is not None:
        try:
            job = g5k.api.job(site, rec["uid"])
        except NotFound:
            job = None
        if job and job.get("state") in ACTIVE_STATES:
            return job
        g5k.ctx.progress.info(f"g5k: job {rec['uid']} on {site} is gone "
                               f"({job.get('state') if job else 'not found'}); booking again")
        g5k.forget(f"job:{site}")
        g5k.forget(f"deployed:{site}")
        return None
    found = find_by_name(g5k, site)
    if len(found) > 1:
        raise ProviderError(f"two jobs named {g5k.job_name} on {site}: "
                            + ", ".join(f"{j['uid']} ({j.get('state')})" for j in found)
                            + "; delete one (enos destroy deletes both)")
    if found:
        g5k.record(f"job:{site}", {"site": site, "name": g5k.job_name, "uid": found[0]["uid"]})
        return g5k.api.job(site, found[0]["uid"])
    g5k.forget(f"job:{site}")
    return None


def adopt(g5k, site: str, given: Dict[str, int]) -> Optional[dict]:
    """Return the job to reuse on ``site`` (journalled as reused), or None: the one
    ``job_ids``/``oargrid_jobids`` give for it, else, when the reservation names the job,
    the user's only running or waiting job of that name. Raises ReuseError (given job not
    found, not the user's, ended; several jobs of that name)."""
    if site in given:
        uid = given[site]
        try:
            job = g5k.api.job(site, uid)
        except NotFound:
            raise ReuseError(f"job {uid} on {site} (job_ids) does not exist") from None
        if job.get("user") not in (None, g5k.creds.username):
            raise ReuseError(f"job {uid} on {site} belongs to {job.get('user')}, not to {g5k.creds.username}")
    elif g5k.named:
        found = pick_by_name(site, g5k.job_name, find_by_name(g5k, site, mine=False))
        if found is None:
            return None
        job = g5k.api.job(site, found["uid"])
    else:
        return None
    g5k.record(f"job:{site}", {"site": site, "name": job.get("name"), "uid": job["uid"], "reused": True})
    g5k.ctx.progress.info(f"g5k: reusing your job {job['uid']} on {site} ({job.get('state')})")
    return job


def submit(g5k, site: str, terms: List[str]) -> dict:
    """Submit the job of ``site`` (journalled before and after); after a failed POST,
    look the job up by name before posting again — after a POST whose answer was lost (no
    answer within ``api_timeout``: the server may still be creating the job), for up to
    ``api_timeout`` more (see :func:`await_lost_job`). Return the job. Raises the API's errors."""
    spec = job_spec(g5k, terms)
    g5k.record(f"job:{site}", {"site": site, "name": g5k.job_name, "submitting": True})
    failpoint.checkpoint("g5k.job_submitting")
    tries = {"n": 0, "lost": False}

    def attempt():
        tries["n"] += 1
        if tries["n"] > 1:   # the failed POST may have created the job: look before re-posting
            found = await_lost_job(g5k, site) if tries["lost"] else find_by_name(g5k, site)
            if found:
                return found[0]
        tries["lost"] = False
        try:
            return g5k.api.submit(site, spec)
        except Timeout:
            tries["lost"] = True
            raise

    job = retry(attempt, attempts=g5k.api.attempts, base_delay=g5k.api.base_delay,
                max_delay=g5k.api.max_delay)
    g5k.record(f"job:{site}", {"site": site, "name": g5k.job_name, "uid": job["uid"]})
    failpoint.checkpoint("g5k.job_submitted")
    g5k.ctx.progress.info(f"g5k: job {job['uid']} submitted on {site}")
    return job


def await_lost_job(g5k, site: str) -> List[dict]:
    """Return this run's jobs on ``site`` after a job POST got no answer: looked up by name
    every ``poll_interval`` (at most 1 s) until one is there or ``api_timeout`` has passed
    (the server had that long to answer; it may still be creating the job, and posting
    again at once booked it twice: the fake API with a POST answered after 3x the
    timeout). A job that comes later still is deleted by ``enos destroy`` (by name)."""
    wait = float(g5k.api.timeout)
    g5k.ctx.progress.info(f"g5k: the job POST on {site} got no answer; looking for the job for up to "
                          f"{wait:g}s before posting again")
    deadline = time.monotonic() + wait
    while True:
        found = find_by_name(g5k, site)
        if found or time.monotonic() >= deadline:
            return found
        signals.interruptible_sleep(min(1.0, float(g5k.opt("poll_interval")), max(0.0, deadline - time.monotonic())))


def get_or_submit(g5k, terms: Dict[str, List[str]], needs: Optional[dict] = None,
                  given: Optional[Dict[str, int]] = None) -> Dict[str, dict]:
    """Return {site: job}: the job each site of ``terms`` already has (journal), else the
    one to reuse (``given`` job ids, or the user's job named ``job_name``), else a new one,
    all sites at once. A found job must hold what ``needs`` ({site: reuse.SiteNeed}) asks,
    else ReuseError naming what it lacks. On a permanent failure of one site, deletes what
    this call submitted and raises the most telling error; UsageError if the env holds a
    job on a site the reservation no longer asks for."""
    recorded = g5k.recorded_jobs()
    given = dict(given or {})
    for site in recorded:
        if site not in terms:
            raise UsageError(f"this environment holds a job on {site}, which the reservation no "
                             f"longer asks for: run 'enos destroy' first")
    jobs: Dict[str, dict] = {}
    errors: List[Tuple[str, BaseException]] = []
    new_sites: List[str] = []

    def one(site):
        job = reconnect(g5k, site, recorded.get(site)) or adopt(g5k, site, given)
        if job is None:
            job = submit(g5k, site, terms[site])
            new_sites.append(site)
        else:
            if recorded.get(site):
                g5k.ctx.progress.info(f"g5k: job {job['uid']} on {site} ({job.get('state')}) found again")
            check_holds(g5k, site, job, (needs or {}).get(site))
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
        delete_jobs(g5k, [s for s in new_sites if s in jobs], jobs)
        cleanup_unfinished(g5k, [s for s, _ in errors])
        raise pick_error(errors)
    return jobs


def book(g5k, terms: Dict[str, List[str]], needs: Optional[dict] = None,
         given: Optional[Dict[str, int]] = None) -> Dict[str, dict]:
    """:func:`get_or_submit`; when the jobs are advance reservations for the start the task
    runner chose (``enos up --at``) and OAR answers that they could run at a later date,
    book every site again once for that date (never looped: a second refusal is raised).
    Raises what get_or_submit raises."""
    try:
        return get_or_submit(g5k, terms, needs, given)
    except ReservationUnavailable as e:
        if not getattr(g5k.ctx, "start_at", None) or not e.next_slot or getattr(g5k, "start_at", None):
            raise
        g5k.start_at = oar.parse_paris_date(e.next_slot)
        g5k.ctx.progress.info(f"g5k: OAR says the reservation could run at {e.next_slot} (Europe/Paris): "
                               f"booking every site for then")
        return get_or_submit(g5k, terms, needs, given)


def check_holds(g5k, site: str, job: dict, need) -> None:
    """Raise ReuseError when a found job does not hold what the reservation asks on
    ``site`` (its vlan types read from the API only when vlans are asked)."""
    if need is None:
        return
    check(site, job, need, g5k.api.vlan_types(site) if need.vlans else {})


def cleanup_unfinished(g5k, sites: List[str]) -> None:
    """After a failed submission, remove any job this env created on these sites (found by
    name and run mark); a job it was reusing is only forgotten."""
    for site in sites:
        rec = g5k.ctx.journal.get(f"job:{site}")
        if not rec:
            continue
        if rec.get("reused"):        # the user's own job (found, not submitted): never deleted here
            g5k.forget(f"job:{site}")
            continue
        try:
            for j in find_by_name(g5k, site) if rec.get("uid") is None else [{"uid": rec["uid"]}]:
                g5k.api.delete_job(site, j["uid"])
            g5k.forget(f"job:{site}")
        except EnosError:
            pass  # left in the journal: destroy will retry


def delete_jobs(g5k, sites: List[str], jobs: Dict[str, dict]) -> None:
    """Delete the jobs of ``sites`` and forget them (a failure is logged: destroy retries);
    a job this env reused is only forgotten (it is its owner's)."""
    for site in sites:
        if (g5k.ctx.journal.get(f"job:{site}") or {}).get("reused"):
            g5k.forget(f"job:{site}")
            continue
        try:
            g5k.api.delete_job(site, jobs[site]["uid"])
            g5k.forget(f"job:{site}")
            g5k.forget(f"deployed:{site}")
            failpoint.checkpoint("g5k.job_deleted")
        except EnosError as e:
            g5k.ctx.log.warning("could not delete job %s on %s: %s (enos destroy will retry)",
                                 jobs[site]["uid"], site, e)


def wait_running(g5k, jobs: Dict[str, dict]) -> Dict[str, dict]:
    """Poll ``jobs`` (backoff from ``poll_interval`` up to ``poll_max_interval``, with
    progress) until every one runs; return them. Raises ProviderError when one ends while
    waiting (the others are then deleted), Timeout after ``wait_timeout``."""
    delay = float(g5k.opt("poll_interval"))
    cap = float(g5k.opt("poll_max_interval"))
    limit = g5k.opt("wait_timeout")
    started = time.monotonic()
    with g5k.ctx.progress.task("waiting for Grid'5000 jobs", total=len(jobs)) as t:
        while True:
            ended = [(s, j) for s, j in jobs.items() if j.get("state") in ENDED_STATES]
            if ended:
                site, job = ended[0]
                g5k.forget(f"job:{site}")
                delete_jobs(g5k, [s for s in jobs if s != site], jobs)
                why = job.get("message") or "; ".join(e.get("description", "") for e in job.get("events") or [])
                raise ProviderError(f"job {job['uid']} on {site} ended ({job['state']}) while waiting"
                                    + (f": {why}" if why else "") + "; the jobs this env submitted on the other sites were deleted")
            running = [s for s, j in jobs.items() if j.get("state") == "running"]
            t.update("; ".join(f"{s}: {j.get('state')}" + eta(j) for s, j in sorted(jobs.items())),
                     completed=len(running))
            if len(running) == len(jobs):
                return jobs
            if limit and time.monotonic() - started > float(limit):
                raise Timeout(f"Grid'5000 jobs not running after {float(limit):.0f}s (they are kept: "
                              f"'enos up' again waits for them, 'enos destroy' deletes them)")
            signals.interruptible_sleep(delay)
            delay = min(cap, delay * 1.5)
            for site in [s for s, j in jobs.items() if j.get("state") != "running"]:
                jobs[site] = g5k.api.job(site, jobs[site]["uid"])


def delete_recorded(g5k) -> None:
    """Delete every recorded job (by uid, or by name when the uid was never recorded);
    already-gone jobs count as deleted. A job this env reused but did not submit is kept
    (forgotten here, left to its owner) unless ``release_reused``. Raises DestroyIncomplete
    listing what is left."""
    recorded = g5k.recorded_jobs()
    leftovers: List[str] = []
    for site, rec in sorted(recorded.items()):
        if rec.get("reused") and not g5k.release_reused:
            for key in ("job", "deployed", "vlans"):
                g5k.forget(f"{key}:{site}")
            g5k.ctx.progress.info(f"g5k: kept your job {rec.get('uid')} on {site} (reused; "
                                   f"'enos destroy --release-jobs' deletes it)")
            continue
        try:
            uids = [rec["uid"]] if rec.get("uid") is not None else []
            for uid in uids:
                g5k.api.delete_job(site, uid)
                failpoint.checkpoint("g5k.job_deleted")
            # then every other active job of this run's name and mark: a job POST whose
            # answer was lost can create a job after enos posted again
            for job in find_by_name(g5k, site):
                if job["uid"] not in uids:
                    g5k.api.delete_job(site, job["uid"])
                    uids.append(job["uid"])
            for key in ("job", "deployed", "vlans"):
                g5k.forget(f"{key}:{site}")
            if uids:
                g5k.ctx.progress.info(f"g5k: deleted job {', '.join(map(str, uids))} on {site}")
        except EnosError as e:
            leftovers.append(f"job {rec.get('uid') or rec.get('name')} on {site}: {e}")
    if leftovers:
        raise DestroyIncomplete(leftovers)


def sweep(g5k) -> List[str]:
    """Delete every active job of this user this run submitted (its mark ``enos-run-<id>``
    in the command, or a name ``enos-<run_id>[-...]``) on every site; return what was
    deleted. Raises DestroyIncomplete if some could not be."""
    own = f"enos-{g5k.ctx.run_id}"
    removed: List[str] = []
    leftovers: List[str] = []

    def ours(j: dict) -> bool:
        name = str(j.get("name") or "")
        return name == own or name.startswith(own + "-") or g5k.run_tag in str(j.get("command") or "")

    def one(site):
        out, bad = [], []
        for j in g5k.api.jobs(site, states=ACTIVE_STATES, user=g5k.creds.username):
            if ours(j):
                try:
                    g5k.api.delete_job(site, j["uid"])
                    out.append(f"job {j['uid']} ({j['name']}) on {site}")
                except EnosError as e:
                    bad.append(f"job {j['uid']} on {site}: {e}")
        return out, bad

    sites = g5k.api.sites()
    with ThreadPoolExecutor(max_workers=min(8, len(sites)) or 1) as ex:
        for out, bad in ex.map(one, sites):
            removed += out
            leftovers += bad
    for site in list(g5k.recorded_jobs()):
        g5k.forget(f"job:{site}")
    if leftovers:
        raise DestroyIncomplete(leftovers)
    return removed


def extend(g5k, walltime: str) -> dict:
    """Ask for ``walltime`` (``+H:MM``) more on every recorded job; return per site the
    job, the API's answer and the new walltime. Raises UsageError (bad value, no job),
    ProviderError (refused, e.g. job not running)."""
    try:
        delta = parse_extension(walltime)
    except ValueError as e:
        raise UsageError(str(e)) from None
    recorded = {s: r for s, r in g5k.recorded_jobs().items() if r.get("uid") is not None}
    if not recorded:
        raise UsageError("this environment has no Grid'5000 job to extend")
    out = {}
    for site, rec in sorted(recorded.items()):
        answer = extend_once(g5k, site, rec["uid"], format_extension(delta))
        job = g5k.api.job(site, rec["uid"])
        out[site] = {"job": rec["uid"], "status": answer.get("status"), "message": answer.get("message"),
                     "walltime": format_walltime(job.get("walltime") or 0),
                     "end": iso((job.get("started_at") or job.get("scheduled_at") or 0) + (job.get("walltime") or 0))}
    return out


def extend_once(g5k, site: str, uid: int, ext: str) -> dict:
    """POST the walltime change of job ``uid``; when the answer is lost (a retryable
    failure), read the job's walltime record and post again only if the change is in
    neither ``granted`` nor ``pending``. Return the API's answer (or a note that the
    change was found granted). Raises the API's errors once attempts are exhausted."""
    before = g5k.api.walltime(site, uid)
    mark = (before.get("granted"), before.get("pending"), before.get("walltime"))

    def attempt():
        now = g5k.api.walltime(site, uid)
        if (now.get("granted"), now.get("pending"), now.get("walltime")) != mark:
            return {"status": "Accepted", "message": "the change was granted (its answer had been lost)"}
        return g5k.api.change_walltime(site, uid, ext)

    def first():
        try:
            return g5k.api.change_walltime(site, uid, ext)
        except Retryable as e:
            g5k.ctx.log.info("g5k: walltime change of job %s on %s: %s; reading the job before "
                              "asking again", uid, site, e)
            return retry(attempt, attempts=g5k.api.attempts, base_delay=g5k.api.base_delay,
                         max_delay=g5k.api.max_delay)
    return first()


def jobs_info(g5k) -> dict:
    """Return ``{"jobs": [...]}``: per recorded job its site, uid, name, whether this env
    reused it (kept by ``enos destroy``), state, walltime, remaining walltime and
    predicted start."""
    jobs = []
    now = time.time()
    for site, rec in sorted(g5k.recorded_jobs().items()):
        entry = {"site": site, "uid": rec.get("uid"), "name": rec.get("name"), "reused": bool(rec.get("reused"))}
        if rec.get("uid") is None:
            entry["state"] = "unknown (submission interrupted)"
            jobs.append(entry)
            continue
        try:
            j = g5k.api.job(site, rec["uid"])
        except NotFound:
            entry["state"] = "gone"
            jobs.append(entry)
            continue
        wall = int(j.get("walltime") or 0)
        entry.update(state=j.get("state"), walltime=format_walltime(wall), nodes=len(j.get("assigned_nodes") or []))
        if j.get("state") == "running" and j.get("started_at"):
            entry["remaining"] = format_walltime(max(0, j["started_at"] + wall - now))
            entry["ends_at"] = iso(j["started_at"] + wall)
        elif j.get("scheduled_at"):
            entry["remaining"] = format_walltime(wall)
            entry["starts_at"] = iso(j["scheduled_at"])
        jobs.append(entry)
    return {"jobs": jobs, "api": g5k.creds.uri if jobs else None}


def eta(job: dict) -> str:
    """Return " (start <ISO date>)" for a waiting job whose start OAR predicts, else ""."""
    if job.get("state") in ("waiting", "hold") and job.get("scheduled_at"):
        return f" (start {iso(job['scheduled_at'])})"
    return ""
