"""Playbooks through ansible-runner.

:func:`run_playbooks` runs playbooks against the env's inventory with settings sized for
the environment: pipelining, connection reuse through the env's ssh_config, forks = the
number of hosts (capped), no retry files, and the strategy it is given — Ansible's
``linear`` or Mitogen's ``mitogen_linear`` (:func:`mitogen_strategies`: when the optional
``mitogen`` package is installed), with a fallback to ``linear`` when a run fails in Mitogen
itself. Failures are reported as :class:`~enos.errors.ProvisionError` listing host, task
and message.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from enos import process, signals
from enos.environ import scrubbed_environ
from enos.errors import EnosError, ProvisionError
from enos.progress import NULL
from enos.ssh.jump import Masters
from enos.ssh.remote import ensure_control_dirs
from enos.state import atomic_write

MAX_FORKS = 100
LINEAR = "linear"
MITOGEN = "mitogen_linear"


def mitogen_strategies() -> Optional[Path]:
    """Return the directory of Mitogen's Ansible strategy plugins when the ``mitogen``
    package is installed (found, not imported), else None."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("ansible_mitogen")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "plugins" / "strategy"
    return path if (path / f"{MITOGEN}.py").is_file() else None


def ansible_env(ssh_config: Path, forks: int, fact_cache: Optional[Path] = None,
                strategy: str = LINEAR) -> Dict[str, str]:
    """Return the environment variables configuring Ansible for an env.

    With ``fact_cache`` (a directory), facts are kept there (jsonfile cache) and gathering is
    ``smart``: a play that gathers facts does it once per host for all the run's playbooks.
    ``strategy``: :data:`LINEAR`, or :data:`MITOGEN` (Mitogen's strategy plugins must be
    installed: :func:`mitogen_strategies`); a play's own ``strategy:`` still wins."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": f"-F {shlex.quote(str(ssh_config))}",   # Ansible splits it with shlex
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_FORKS": str(forks),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "ANSIBLE_TIMEOUT": "30",
        "ANSIBLE_SSH_RETRIES": "2",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_SYSTEM_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_STRATEGY": LINEAR,
    }
    plugins = mitogen_strategies() if strategy != LINEAR else None
    if plugins is not None:
        env.update(ANSIBLE_STRATEGY=strategy, ANSIBLE_STRATEGY_PLUGINS=str(plugins))
    if fact_cache is not None:
        env.update({
            "ANSIBLE_GATHERING": "smart",
            "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(fact_cache),
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "86400",
        })
    return env


def _owner_only(directory: Path) -> None:
    """Make every file under ``directory`` 0600 and every directory 0700 (best effort)."""
    for dirpath, _dirs, files in os.walk(directory):
        try:
            os.chmod(dirpath, 0o700)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o600)
        except OSError:
            pass


def _tail(text, lines: int = 5, chars: int = 600) -> str:
    out = "\n".join(str(text).strip().splitlines()[-lines:])
    return out if len(out) <= chars else "…" + out[-chars:]


def failure_message(res: dict) -> str:
    """Return what a failed task's result says, in one readable string: its ``msg`` with
    the return code, then the tail of its stderr (or stdout/module output when stderr is
    empty) — "non-zero return code (rc 3): broken" rather than the bare "non-zero return
    code" — and, for a loop, the same for each failed item."""
    parts = []
    msg = str(res.get("msg") or res.get("reason") or "").strip()
    if res.get("rc") not in (None, 0):
        msg = f"{msg} (rc {res['rc']})" if msg else f"exit code {res['rc']}"
    if msg:
        parts.append(msg)
    detail = next((res[k] for k in ("stderr", "module_stderr", "stdout", "module_stdout")
                   if str(res.get(k) or "").strip()), "")
    if detail and _tail(detail) not in msg:
        parts.append(_tail(detail))
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("failed"):
            label = item.get("item", item.get("_ansible_item_label", "?"))
            parts.append(f"item {label}: {failure_message(item)}")
    return ": ".join(parts[:2]) + ("".join("; " + p for p in parts[2:])) if parts else "failed"


class _Events:
    """Collects failures and drives the progress display from ansible-runner events."""

    def __init__(self, task, verbose: bool, on_event: Optional[Callable[[dict], None]] = None):
        self.task = task
        self.verbose = verbose
        self.on_event = on_event
        self.failures: List[tuple] = []
        self.current = ""
        self.stats: dict = {}

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {}) or {}
        if self.on_event is not None:
            self.on_event(event)
        if kind == "playbook_on_task_start":
            self.current = data.get("task", "")
            if self.task:
                self.task.update(self.current)
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                return True
            msg = failure_message(data.get("res", {}) or {})
            if kind == "runner_on_unreachable":
                msg = "unreachable: " + msg
            self.failures.append((data.get("host", "?"), data.get("task", self.current), msg))
        elif kind == "playbook_on_stats":
            self.stats = data
            if self.task:
                self.task.update("done")
        if self.verbose and event.get("stdout"):
            print(event["stdout"], file=sys.stderr)
        return True


def run_playbooks(env_dir: Path, inventory: Path, ssh_config: Path, playbooks: Sequence[Path],
                  host_count: int, extravars: Optional[dict] = None, tags: Optional[str] = None,
                  progress=None, verbose: bool = False, limit: Optional[str] = None,
                  run_id: Optional[str] = None, strategy: str = LINEAR) -> List["PlaybookRun"]:
    """Run ``playbooks`` in order with ``strategy`` (see :func:`ansible_env`); return their
    :class:`PlaybookRun` when every one succeeded. ``run_id`` tags ansible-playbook and
    everything it starts (``ENOS_RUN_ID``) for ``destroy --sweep``. A playbook that fails in
    Mitogen itself (no host failed, or a failure naming Mitogen) is run again with the
    ``linear`` strategy, with a warning.

    Raises :class:`ProvisionError` (host, task, message of each failure) on the first
    failed playbook, :class:`EnosError` when ansible-playbook cannot be found,
    KeyboardInterrupt within ~1 s of SIGINT/SIGTERM (the playbook and all it started ended).

    No secret leaves the process: ``extravars`` are written to ``<env>/ansible/
    extravars.json`` (0600) and given as ``-e @FILE``; the playbook (and ansible-runner's
    ``command`` artifact) gets only the environment :mod:`enos.environ` keeps.

    ``ansible-playbook`` runs through a wrapper that records it in ``<env>/children/``
    before it starts (:mod:`enos.process`), so a killed enos leaves nothing that
    ``enos destroy`` cannot end; enos keeps its own signal handlers during the run
    (ansible-runner would install its own and never restore ours)."""
    progress = progress or NULL
    forks = max(1, min(MAX_FORKS, host_count))
    pdd = Path(env_dir) / "ansible"
    pdd.mkdir(exist_ok=True)
    # facts live for one provisioning run only: never reuse those of an earlier 'enos up'
    facts = pdd / "facts"
    shutil.rmtree(facts, ignore_errors=True)
    envvars = ansible_env(ssh_config, forks, fact_cache=facts, strategy=strategy)
    fallback = ansible_env(ssh_config, forks, fact_cache=facts) if "ANSIBLE_STRATEGY_PLUGINS" in envvars else None
    _require_ansible_playbook(envvars)
    ensure_control_dirs(ssh_config)   # gone after a reboot or stop_masters: ssh could not bind its master
    masters = Masters(ssh_config)
    down = masters.ready_all(masters.behind)
    if down:        # ansible would open one jump connection per host: name the jump host instead
        raise ProvisionError(str(playbooks[0]), [(h, "reach the host", e) for h, e in sorted(down.items())])
    # extra vars go through an owner-only file ('-e @FILE'), never on the command line
    # (visible to every user in 'ps'); ansible-runner's own env/ files are not written
    # (suppress_env_files): they would keep the first run's values and the environment
    pdd.chmod(0o700)
    vars_file = pdd / "extravars.json"
    atomic_write(vars_file, json.dumps(dict(extravars or {})), mode=0o600)
    return [_run_one(pdd, Path(pb), inventory, vars_file, envvars, forks, tags, limit, progress, verbose,
                     facts, check=True, run_id=run_id, fallback=fallback) for pb in playbooks]


def _require_ansible_playbook(envvars: Dict[str, str]) -> None:
    if not shutil.which("ansible-playbook", path=envvars["PATH"]):
        raise EnosError("ansible-playbook not found in PATH: install enos with pip in a virtualenv "
                        "(ansible-core is a dependency)")


class PlaybookRun:
    """What one ansible-runner run of a playbook gave: ``rc``, ``status``
    (``successful``, ``failed``, ...), ``stats`` (Ansible's per-host counters: ``ok``,
    ``changed``, ``failures``, ``dark`` (unreachable), ``skipped``, ``processed``, ...)
    and ``failures`` [(host, task, message)]."""

    def __init__(self, playbook: str, rc: int, status: str, stats: dict, failures: List[tuple]):
        self.playbook, self.rc, self.status, self.stats, self.failures = playbook, rc, status, stats, failures


def _run_one(pdd: Path, pb: Path, inventory: Path, vars_file: Path, envvars: dict, forks: int,
             tags: Optional[str], limit: Optional[str], progress, verbose: bool,
             facts: Optional[Path], check: bool = False, run_id: Optional[str] = None,
             fallback: Optional[dict] = None, on_event: Optional[Callable[[dict], None]] = None) -> PlaybookRun:
    """Run one playbook (extra vars from the 0600 ``vars_file``); return its PlaybookRun.
    With ``fallback`` (the environment of the ``linear`` strategy), a run that failed in
    Mitogen itself (:func:`_mitogen_failed`) is run again with it. With ``check``, raise
    ProvisionError when it failed (inside the progress task, which then shows the
    failure). KeyboardInterrupt on SIGINT/SIGTERM: the playbook is cancelled
    (ansible-runner polls :data:`enos.signals.STOP` every 0.2 s) and everything it started
    ended (:func:`enos.process.end_recorded`). ``on_event(event)`` sees every
    ansible-runner event (per-task results; those of a run abandoned for the fallback too)."""
    pb = pb.resolve()
    # ansible-runner reads its settings from env/settings only (with suppress_env_files, a
    # settings= argument is dropped): poll the cancel callback every 0.2 s, not every 5 s
    (pdd / "env").mkdir(mode=0o700, exist_ok=True)
    atomic_write(pdd / "env" / "settings", json.dumps({"pexpect_timeout": 0.2}), mode=0o600)
    args = dict(private_data_dir=str(pdd), playbook=str(pb), inventory=str(inventory), extravars=str(vars_file),
                forks=forks, tags=tags, limit=limit, quiet=True, rotate_artifacts=5, project_dir=str(pb.parent),
                suppress_env_files=True, cmdline=shlex.quote(str(pb)), cancel_callback=signals.STOP.is_set)
    if facts is not None:
        args["fact_cache"] = str(facts)           # absolute: shared by a run's playbooks
    with progress.task(f"ansible {pb.name}") as task:
        events = _Events(task, verbose, on_event)
        r = _runner(pdd, args, envvars, events, run_id)
        why = _mitogen_failed(r, events) if fallback is not None else None
        if why:
            progress.info(f"warning: {pb.name} failed in Mitogen ({why}); running it again with "
                          "Ansible's linear strategy")
            events = _Events(task, verbose, on_event)
            r = _runner(pdd, args, fallback, events, run_id)
        if facts is not None:
            _owner_only(facts)          # Ansible's fact cache ignores the umask
        if check and (r.rc != 0 or r.status != "successful"):
            raise ProvisionError(str(pb), events.failures, r.rc)
    return PlaybookRun(str(pb), r.rc, r.status, events.stats, events.failures)


def _runner(pdd: Path, args: dict, envvars: dict, events: "_Events", run_id: Optional[str]):
    """One ``ansible_runner.run`` of ``args`` with ``envvars`` through the recording wrapper;
    return its runner. KeyboardInterrupt when a signal cancelled it."""
    import ansible_runner

    env_dir = pdd.parent
    envvars = dict(envvars, **{process.PARENT_ENV: str(os.getpid())})
    if run_id:
        envvars[process.RUN_ENV] = run_id
    # the wrapper runs ansible-playbook "raw": the playbook goes first
    binary = process.write_wrapper(pdd / "enos-ansible-playbook", env_dir, "ansible-playbook",
                                   "ansible-playbook")
    # a signal cancels the run; ansible-runner copies os.environ into its artifacts
    with signals.flag_only(), scrubbed_environ():
        ended = False
        try:
            r = ansible_runner.run(envvars=envvars, event_handler=events, binary=str(binary), **args)
            ended = r.status in ("successful", "failed")
        finally:
            if ended:             # ran to its end: the record only is left
                process.forget_finished(env_dir)
            else:                 # canceled, timed out, enos failed: nothing outlives it
                process.end_recorded(env_dir)
    if r.status == "canceled":      # a signal stopped the playbook (outside the main thread)
        raise KeyboardInterrupt(f"{Path(args['playbook']).name} interrupted")
    return r


def _mitogen_failed(r, events: "_Events") -> Optional[str]:
    """Return why a run under Mitogen's strategy failed in Mitogen itself (None: it did
    not fail, or its hosts failed as they would with Ansible's own strategy): the run
    failed with no host failure (ansible-playbook itself stopped, e.g. the strategy could
    not load), or a failure names Mitogen."""
    if r.rc == 0 and r.status == "successful":
        return None
    if not events.failures and not events.stats:
        return f"ansible-playbook exited with {r.rc} before any host result"
    for host, task, msg in events.failures:
        if "mitogen" in str(msg).lower():
            return f"{host}: task '{task}': {_tail(msg, 1, 200)}"
    return None


def run_playbook(env_dir: Path, inventory: Path, ssh_config: Path, playbook: Path, host_count: int,
                 extravars: Optional[dict] = None, tags: Optional[str] = None, limit: Optional[str] = None,
                 progress=None, verbose: bool = False, run_id: Optional[str] = None,
                 on_event: Optional[Callable[[dict], None]] = None, strategy: str = LINEAR) -> PlaybookRun:
    """Run one playbook on an env with ``strategy`` (as :func:`run_playbooks`, the same
    fallback included; Ansible gathers facts itself, nothing of an earlier run is reused);
    return its :class:`PlaybookRun` whatever the outcome (failed hosts are in it, not
    raised). Extra vars go through an owner-only file, as for :func:`run_playbooks`;
    ``on_event`` is called with each ansible-runner event.
    Raises :class:`EnosError` when ansible-playbook cannot be found."""
    progress = progress or NULL
    forks = max(1, min(MAX_FORKS, host_count))
    pdd = Path(env_dir) / "ansible"
    pdd.mkdir(exist_ok=True)
    pdd.chmod(0o700)
    envvars = ansible_env(ssh_config, forks, strategy=strategy)
    fallback = ansible_env(ssh_config, forks) if "ANSIBLE_STRATEGY_PLUGINS" in envvars else None
    _require_ansible_playbook(envvars)
    ensure_control_dirs(ssh_config)   # gone after a reboot or stop_masters: ssh could not bind its master
    vars_file = pdd / "play-extravars.json"
    atomic_write(vars_file, json.dumps(dict(extravars or {})), mode=0o600)
    return _run_one(pdd, Path(playbook), inventory, vars_file, envvars, forks, tags, limit,
                    progress, verbose, None, run_id=run_id, fallback=fallback, on_event=on_event)
