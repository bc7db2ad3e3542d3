"""Run a campaign: environment up (or given), ``setup`` once, then every run
(combination × repetition) of the sweep, each into ``<results>/runs/<combination>/<repeat>/``.

A run's directory::

    params.json          the parameter values and the repetition number
    timing.json          start, end, duration of the run and of each step (per host too)
    result.json          status (ok | failed) and the error
    <alias>/stdout       what the collecting step printed on that host (metrics read it)
    <alias>/<n>.stdout   each step's stdout / stderr on that host (n = step number)
    <alias>/files/...    the collected files of that host
    monitor.csv          CPU, memory, network bytes per host at 1 Hz (``monitor: true``)

A run that fails (non-zero exit, timeout, unreachable host, template error) is recorded
with its error and the campaign goes on (``stop_on_error`` stops it).

``result.json``, written last with fsync, is the run's record; the files before it are
renamed into place without fsync (a killed enos leaves them whole; one fsync per file cost
~10 ms each on a busy disk, most of a campaign step).
"""
from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from enos import task
from enos.campaign import provenance
from enos.campaign.file import Campaign, Step, _strings, load_campaign, render, render_data
from enos.campaign.runmonitor import CampaignMonitor
from enos.errors import CampaignChanged, CampaignFailed, EnosError, UsageError
from enos.experiment.env import Env, destroy as destroy_env, load
from enos.experiment.monitor import COLUMNS
from enos.experiment.sweep import Sweep, run_dir, run_key
from enos.failpoint import checkpoint
from enos.progress import NULL
from enos.reservation.config import constraints_from_data
from enos.state import STATE_FILE, State, atomic_write

log = logging.getLogger("enos.campaign")


def _json(path: Path, data, durable: bool = True) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=str) + "\n", mode=0o644, durable=durable)


def hosts_scope(env) -> Dict[str, List[dict]]:
    """Return the ``hosts`` template variable: role → [{alias, address, roles}], and ``all``."""
    def one(h):
        return {"alias": h.alias, "address": h.address, "roles": list(h.roles)}
    scope = {role: [one(h) for h in hosts] for role, hosts in env.roles.items()}
    seen, every = set(), []
    for hosts in env.roles.values():
        for h in hosts:
            if h.alias not in seen:
                seen.add(h.alias)
                every.append(one(h))
    scope.setdefault("all", every)
    return scope


def check_reservation(camp: Campaign):
    """Return the campaign's reservation checked (a Config), or None when it has none.
    Raises ConfigError (nothing booked)."""
    if camp.reservation is None:
        return None
    if isinstance(camp.reservation, dict):
        sub = {k[1:]: v for k, v in camp.positions.items() if k[:1] == ("reservation",)}
        config = task.reservation_from_data(camp.reservation, camp.file, positions=sub,
                                            base_dir=camp.base_dir, check_files=True)
    else:
        config = task.load_reservation(camp.reservation)
    camp.check_against(config)          # roles, and the templates with the reservation's hosts
    check_network_constraints(camp, config)
    return config


def check_network_constraints(camp: Campaign, config) -> None:
    """Render the campaign's ``network_constraints`` for every combination (those that do
    not use ``hosts``) and check them against the reservation's groups. Raises ConfigError
    naming the campaign file and line."""
    if not camp.network_constraints or config is None:
        return
    import jinja2
    from jinja2 import meta
    env = jinja2.Environment()
    for _path, text in _strings(camp.network_constraints, ()):
        if "hosts" in meta.find_undeclared_variables(env.parse(text)):
            return
    line = camp.positions.get(("network_constraints",))
    source = f"{camp.file}:{line}" if line else camp.file
    for combo in camp.combinations():
        rendered = render_data(camp.network_constraints, dict(combo, repeat=1))
        try:
            constraints_from_data(rendered, config.constraint_groups(), source=source)
        except UsageError as e:
            raise UsageError(f"{e} (with {', '.join(f'{k}={v}' for k, v in combo.items())})") from None


def open_env(camp: Campaign, results: Path, env_dir: Optional[str], progress=None, config=None):
    """Return the campaign's environment (an :class:`enos.experiment.env.Env`): ``env_dir``
    if given (it must be up), else the reservation brought up in ``<results>/env`` (an env
    already ready there is used as it is; one interrupted while coming up is resumed).
    Raises UsageError when the campaign has no reservation and no env is given, and the
    errors of ``enos up``."""
    if env_dir:
        env = load(env_dir)
        env.select()            # NoEnvironment if it has no hosts (or is destroyed)
        return env
    if camp.reservation is None:
        raise UsageError(f"{camp.file}: the campaign has no 'reservation': give one, or an "
                         f"environment with --env DIR")
    d = results / "env"
    if (d / STATE_FILE).exists() and State.load(d).phase == "ready":
        return load(d)
    config = config or check_reservation(camp)
    return Env(task.up(config, env=str(d), progress=progress), keep=True)


def _failure_text(step: Step, cmd: str, results) -> Optional[str]:
    bad = [r for r in results if r.rc != 0]
    if not results:
        return f"{step.name}: no host has the roles {step.roles}"
    if not bad:
        return None
    parts = []
    for r in bad:
        why = r.error or (f"exit {r.rc}" if r.rc is not None else "failed")     # ssh's 255 is not the command's
        tail = (r.stderr or "").strip().splitlines()[-1:] or [""]
        parts.append(f"{r.host.alias}: {why}" + (f" ({tail[0][:200]})" if tail[0] else ""))
    return f"{step.name} '{cmd[:120]}' failed on " + "; ".join(parts)


def _collect(env, step: Step, scope: dict, rdir: Path, results) -> None:
    """Fetch the step's files into ``<alias>/files/`` of each host it ran on."""
    files = [render(f, scope) for f in step.collect_files]
    aliases = [r.host.alias for r in results]
    staging = rdir / ".collect"
    env.backup(files, roles=aliases, dest=str(staging))
    for alias in aliases:
        dst = rdir / alias / "files"
        dst.mkdir(parents=True, exist_ok=True)
        src = staging / alias
        if src.is_dir():
            for p in src.rglob("*"):
                if p.is_file():
                    shutil.copy2(p, dst / p.name)
    shutil.rmtree(staging, ignore_errors=True)


def run_one(camp: Campaign, env, run: Dict[str, Any], rdir: Path, hosts: dict,
            definition: Optional[str] = None, monitor: Optional[CampaignMonitor] = None) -> Optional[str]:
    """Do one run into ``rdir`` (emptied first); return None on success, else the error.
    ``definition``: the fingerprint of the campaign's definition, recorded in result.json;
    ``monitor``: the campaign's monitor (``monitor: true``), whose samples the run's steps
    take at their start and end (see :mod:`enos.campaign.runmonitor`)."""
    if rdir.exists():
        shutil.rmtree(rdir)
    rdir.mkdir(parents=True)
    _json(rdir / "params.json", run, durable=False)
    scope = dict(run, hosts=hosts)
    t0 = time.time()
    timing: Dict[str, Any] = {"start": t0, "steps": []}
    error = None
    book = monitor.run() if monitor is not None else None
    try:
        if camp.network_constraints:
            ts = time.time()
            env.tc(render_data(camp.network_constraints, scope))
            timing["steps"].append({"name": "network_constraints", "start": ts, "end": time.time(),
                                    "duration": time.time() - ts})
        last = len(camp.steps)
        for i, step in enumerate(camp.steps, 1):
            cmd = render(step.run, scope)
            sent = cmd
            if book is not None:
                if i == 1:
                    book.begin([h.alias for h in env.select(step.roles)])
                sent = book.command(cmd, i == 1, i == last)
            ts = time.time()
            results = env.run(sent, roles=step.roles, timeout=step.timeout, check=False)
            te = time.time()
            if book is not None:
                book.take(results, i == 1, i == last)
            timing["steps"].append({"name": step.name, "command": cmd, "start": ts, "end": te,
                                    "duration": te - ts,
                                    "hosts": {r.host.alias: {"rc": r.rc, "duration": r.duration,
                                                             "error": r.error} for r in results}})
            _write_outputs(rdir, i, step, results)
            error = _failure_text(step, cmd, results)
            if error:
                break
            if step.collect_files:
                _collect(env, step, scope, rdir, results)
    except EnosError as e:
        error = str(e)
    finally:
        # interrupted (Ctrl-C, SIGTERM): no end sample, the run is redone next time
        if book is not None and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
            _write_monitor(book, rdir)
    t1 = time.time()
    timing.update(end=t1, duration=t1 - t0)
    _json(rdir / "timing.json", timing, durable=False)
    _json(rdir / "result.json", {"status": "failed" if error else "ok", "error": error,
                                 "fingerprint": definition})
    return error


def _write_outputs(rdir: Path, i: int, step: Step, results) -> None:
    """Write each host's stdout/stderr of step ``i`` into ``<alias>/``."""
    for r in results:
        hdir = rdir / r.host.alias
        hdir.mkdir(exist_ok=True)
        (hdir / f"{i}.stdout").write_text(r.stdout or "")
        (hdir / f"{i}.stderr").write_text(r.stderr or "")
        if step.collect_stdout:
            (hdir / "stdout").write_text(r.stdout or "")
            (hdir / "stderr").write_text(r.stderr or "")


def _write_monitor(book, rdir: Path) -> None:
    """Take the end samples the steps did not give and write the run's samples
    (``monitor.csv``) and exact totals (``monitor.json``)."""
    try:
        got = book.finish()
    except EnosError as e:
        log.warning("monitor: %s", e)
        return
    with open(rdir / "monitor.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(got["rows"])
    _json(rdir / "monitor.json", {"totals": got["totals"], "errors": got["errors"],
                                  "roles": {h.alias: list(h.roles) for h in book.cm.hosts}}, durable=False)


def _stop_monitor(monitor: CampaignMonitor, interrupted: bool) -> None:
    try:
        monitor.stop(interrupted)
    except EnosError as e:
        log.warning("monitor: %s", e)


def finished_before(sweep: Sweep, results: Path) -> List[Dict[str, Any]]:
    """Mark done every run whose ``result.json`` says ok but that the sweep does not count
    as done (its process was killed after writing the result, before recording it: the run
    finished and must never be redone). Return those runs."""
    stats_done = sweep.done_keys()
    recovered = []
    for one in sweep.runs:
        if run_key(one) in stats_done:
            continue
        try:
            result = json.loads((run_dir(results, one) / "result.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(result, dict) and result.get("status") == "ok":
            sweep.done(one)
            recovered.append(one)
    if recovered:
        log.info("%d run(s) had finished before the last process died: not redone", len(recovered))
    return recovered


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _setup(camp: Campaign, env, results: Path, hosts: dict, progress) -> None:
    """Run the campaign's setup once per environment (recorded in setup.json)."""
    progress = progress or NULL
    marker = results / "setup.json"
    env_id = str(getattr(env, "env_dir", ""))
    try:
        if json.loads(marker.read_text()).get("env") == env_id:
            return
    except (OSError, ValueError):
        pass
    for step in camp.setup:
        if step.play:
            with progress.task(f"setup: playbook {Path(step.play).name}"):
                env.play(step.play, extra_vars=step.extra_vars or None)
            continue
        cmd = render(step.run, {"hosts": hosts})
        with progress.task(f"setup: {cmd[:60]}"):
            res = env.run(cmd, roles=step.roles, timeout=step.timeout, check=False)
        err = _failure_text(step, cmd, res)
        if err:
            raise CampaignFailed(f"setup failed: {err}")
    _json(marker, {"env": env_id, "time": time.time()})


def _describe_env(env, results: Path) -> None:
    """Save what the report needs about the environment: hosts, roles, OS and kernel
    (from the experiment layer's facts; a host whose facts cannot be read is listed
    without them)."""
    try:
        facts = env.facts()
    except EnosError as e:
        log.warning("facts: %s", e)
        facts = {}
    info = {"env_dir": str(env.env_dir), "run_id": env.run_id, "provider": env.provider,
            "hosts": [{"alias": h.alias, "address": h.address, "roles": list(h.roles),
                       "os": (facts.get(h.alias) or {}).get("os") or "",
                       "kernel": (facts.get(h.alias) or {}).get("kernel") or ""}
                      for h in env.hosts]}
    _json(results / "environment.json", info)


def check_provenance(camp: Campaign, sweep: Sweep, results: Path, rerun_changed: bool = False) -> str:
    """Compare the campaign's definition with the one each finished run recorded; return
    its fingerprint (kept in ``<results>/provenance/``). Runs made with another definition
    are refused (CampaignChanged: the changes, the choices), or with ``rerun_changed``
    forgotten by the sweep (done again, from scratch)."""
    defn = provenance.definition(camp)
    current = provenance.fingerprint(defn)
    done = sweep.done_keys()
    finished = [(r, run_dir(results, r)) for r in sweep.runs if run_key(r) in done]
    stale = provenance.stale_runs(results, current, finished)
    if stale and not rerun_changed:
        old_fp, runs = max(stale.items(), key=lambda kv: len(kv[1]))
        changes = provenance.describe(provenance.load(results, old_fp), defn)
        n = sum(len(v) for v in stale.values())
        path = next((p for p, _ in changes if p), ())
        text = "\n  ".join(t.replace("\n", "\n  ") for _, t in changes)
        raise CampaignChanged(
            f"{n} finished run(s) in {results} were made with another definition of the campaign "
            f"(fingerprint {old_fp}, now {current}):\n  {text}\n"
            f"Mixing their results with new ones would be wrong. Either\n"
            f"  - keep them apart: enos campaign run {camp.file} --results NEW_DIR\n"
            f"  - redo those runs with the campaign as it is now: enos campaign run {camp.file} --rerun-changed",
            file=camp.file, line=camp._err(path, "").line if path else None,
            keypath=".".join(map(str, path)) or None, changes=changes,
            stale=[r for v in stale.values() for r in v])
    if stale:
        sweep.undo([r for v in stale.values() for r in v])
        log.info("%d run(s) made with another definition will be done again", sum(map(len, stale.values())))
    return provenance.save(results, defn)


def validate(source) -> Dict[str, Any]:
    """Check the campaign ``source`` (file, dict or Campaign) exactly as ``run`` does before
    booking anything: the file, the reservation, the campaign against the reservation, the
    network constraints rendered for every combination, the figures. Return a summary
    (file, combinations, repeat, runs, steps, metrics, figures). Raises ConfigError."""
    camp = source if isinstance(source, Campaign) else load_campaign(source)
    config = check_reservation(camp)
    check_network_constraints(camp, config)
    n = len(camp.combinations())
    return {"file": camp.file, "combinations": n, "repeat": camp.repeat, "runs": n * camp.repeat,
            "steps": len(camp.steps), "metrics": len(camp.metrics),
            "figures": len(camp.figures) if camp.figures is not None else None}


def run(source, results=None, env: Optional[str] = None, stop_on_error: bool = False,
        destroy: bool = False, progress=None, rerun_changed: bool = False) -> Dict[str, Any]:
    """Run the campaign ``source`` (a file path, a dict or a :class:`Campaign`) to its end;
    return its :meth:`Sweep.stats` (done, remaining, in_progress, failed, total, ...).

    Resumable: the same call after a crash or a kill redoes only the run that was in
    progress and those not done. Finished runs made with another definition of the
    campaign (see :func:`check_provenance`) are refused — CampaignChanged, nothing done —
    unless ``rerun_changed``. Raises ConfigError (nothing booked), CampaignLocked,
    CampaignFailed (``stop_on_error`` and a run failed, or ``setup`` failed), the
    environment's errors."""
    progress = progress or NULL
    camp = source if isinstance(source, Campaign) else load_campaign(source)
    config = None if env else check_reservation(camp)     # ConfigError before anything is taken
    check_network_constraints(camp, config)
    given = None
    if env:      # the environment given is checked before the results dir is made
        given = open_env(camp, Path("."), env, progress, config)
        check_network_constraints(camp, given.envdir.config)
        for step in camp.setup + camp.steps:
            if step.roles:
                given.select(step.roles)           # UsageError naming the known roles
    results = Path(results or camp.default_results()).absolute()
    sweep = Sweep(results, camp.combinations(), camp.repeat)
    with sweep:
        finished_before(sweep, results)      # a kill -9 between result.json and the sweep's record
        definition = check_provenance(camp, sweep, results, rerun_changed)
        _json(results / "campaign.json", {"file": camp.file, "fingerprint": camp.fingerprint(),
                                          "definition": definition, "campaign": camp.raw})
        environment = given or open_env(camp, results, None, progress, config)
        for step in camp.setup + camp.steps:
            if step.roles:
                environment.select(step.roles)     # UsageError naming the known roles
        hosts = hosts_scope(environment)
        _describe_env(environment, results)
        _setup(camp, environment, results, hosts, progress)
        stats = sweep.stats()
        todo = stats["total"] - stats["done"]
        started, durations = time.monotonic(), []
        monitor = None
        try:
            if camp.monitor and todo > 0:
                monitor = CampaignMonitor(environment).start()
            with progress.task("campaign", total=stats["total"]) as bar:
                bar.update(f"{stats['done']} done before", completed=stats["done"])
                for one in sweep:
                    label = ", ".join(f"{k}={v}" for k, v in one.items())
                    t = time.monotonic()
                    error = run_one(camp, environment, one, run_dir(results, one), hosts, definition, monitor)
                    durations.append(time.monotonic() - t)
                    checkpoint("campaign.result_written")
                    if error:
                        sweep.failed(one, error)
                        progress.info(f"run {label} failed: {error}")
                    else:
                        sweep.done(one)
                    todo -= 1
                    left = todo * sum(durations) / len(durations)
                    bar.advance()
                    bar.update(f"elapsed {_fmt(time.monotonic() - started)}, ~{_fmt(left)} left")
                    if error and stop_on_error:
                        raise CampaignFailed(f"run {label} failed (--stop-on-error): {error}")
        finally:
            interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)
            if monitor is not None:
                _stop_monitor(monitor, interrupted)
            if camp.network_constraints and not interrupted:
                try:
                    environment.tc_reset()
                except EnosError as e:
                    log.warning("could not remove the network constraints: %s", e)
        stats = sweep.stats()
    if destroy and not env:
        destroy_env(str(results / "env"), progress=progress)
    return stats
