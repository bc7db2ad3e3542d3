"""The Python API: :func:`up`, :func:`load`, :func:`current` and the :class:`Env` they
return. ``enos up``/``run``/``destroy``/``info`` are thin wrappers over these functions.

::

    import enos
    with enos.up("reservation.yaml") as env:          # destroyed on exit unless keep=True
        res = env.run("hostname", roles="compute")     # Results: one Result per host
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, Dict, List, Literal, Mapping, Optional, Sequence,
                    Union, overload)

from enos import render, task
from enos.errors import CommandFailed, EnosError, EnvDestroyed, NoEnvironment, UsageError
from enos.experiment.command import (PID_MARK, STATUS_MARK, OutputCallback, RoleSelector, kill_group,
                                     take_pid, take_status, with_pid, with_status, wrap_command)
from enos.model import Host, IpPool
from enos.progress import QUIET, Progress
from enos.results import Results
from enos.ssh.remote import ensure_control_dirs, run_sessions
from enos.state import State

# The modules of what Env's methods do (tc, netprobe, facts, backup, play, background,
# sweep) are loaded by the method that needs them: 'enos run' and 'enos info' start faster
# (a named lazy boundary, docs/architecture.md).
if TYPE_CHECKING:  # pragma: no cover
    from enos.experiment.background import Background
    from enos.experiment.netprobe import TestReport
    from enos.reservation.netconstraints import NetworkConstraints
    from enos.experiment.backup import BackupReport
    from enos.experiment.play import PlayResult
    from enos.experiment.actions import Actions
    from enos.experiment.monitor import Monitor
    from enos.experiment.sweep import SweepLoop
    from enos.experiment.facts import Facts



def _progress(quiet: bool, progress=None):
    if progress is not None:
        return progress
    return Progress(mode=QUIET) if quiet else Progress()


def _config(reservation: Union[str, os.PathLike, Mapping]):
    """Return the validated Config of a reservation path or dict (the CLI's checks)."""
    if isinstance(reservation, Mapping):
        return task.reservation_from_data(dict(reservation), "(reservation dict)", check_files=True)
    if isinstance(reservation, (str, os.PathLike)):
        return task.load_reservation(os.fspath(reservation))
    raise UsageError(f"enos.up: expected a reservation file path or a dict, not {type(reservation).__name__}")


def up(reservation: Union[str, os.PathLike, Mapping], *, keep: bool = False, env: Optional[str] = None,
       base: Union[str, os.PathLike] = ".", force_deploy: bool = False, tags: Optional[str] = None,
       provision: bool = True, ssh_timeout: float = 600.0, quiet: bool = False, verbose: bool = False,
       progress=None, at: Union[None, str, float] = None) -> "Env":
    """Book, reach and provision the resources of ``reservation`` (a reservation.yaml path
    or the parsed dict) exactly as ``enos up`` does; return the :class:`Env`.

    Same env dir and resume semantics as ``enos up``: resumes ``<base>/current`` (or ``env``)
    unless it was destroyed, else creates ``<base>/enos_<UTC stamp>/``. Used as a context
    manager (``with enos.up(...) as env:``) the env is destroyed when the block ends (even
    on an exception or Ctrl-C) unless ``keep=True``. If ``up`` itself fails, what was
    booked stays recorded in the env dir: ``enos.load(dir).destroy()`` (or ``enos destroy``)
    frees it, ``enos.up`` again resumes.

    When the reservation's ``network_constraints`` has ``enable: true``, they are applied
    last (:meth:`Env.tc`). ``at``: book for a later start (``"earliest"``: the earliest slot,
    see :func:`enos.slot`; or a Unix time), providers with advance reservations only.

    Raises ConfigError / UsageError (nothing booked), MissingDependency, StateLocked,
    provider errors (ReservationUnavailable, ProviderError, ...), SshUnreachable,
    ProvisionError; for the constraints NetemMissing, PlanError, TcError (the env is up:
    fix and call ``env.tc()`` / ``enos tc``)."""
    config = _config(reservation)
    environment = task.up(config, env=env, base=Path(base), force_deploy=force_deploy, tags=tags,
                          progress=_progress(quiet, progress), verbose=verbose, provision=provision,
                          ssh_timeout=ssh_timeout, at=at)
    result = Env(environment, keep=keep, quiet=quiet, progress=progress)
    nc = config.network_constraints
    if nc is not None and nc.enable and result.hosts:
        result.tc()
        result._progress().info("network constraints applied ('enos tc --test' measures them)")
    return result


def load(env_dir: Union[str, os.PathLike], *, keep: bool = True, quiet: bool = False) -> "Env":
    """Attach to an existing env dir (made by ``enos up`` or :func:`up`); return its
    :class:`Env`. ``env_dir`` may also be a directory holding a ``current`` link. By default
    a loaded env is not destroyed at the end of a ``with`` block (``keep=False`` to do so).

    Raises NoEnvironment (no state there), StateError (unreadable state)."""
    return Env(task.EnvDir.open(os.fspath(env_dir)), keep=keep, quiet=quiet)


def current(base: Union[str, os.PathLike] = ".", *, keep: bool = True, quiet: bool = False) -> "Env":
    """Attach to the env ``<base>/current`` points at (the last ``enos up`` run in
    ``base``); return its :class:`Env`. Raises NoEnvironment when there is none."""
    return Env(task.EnvDir.open(None, Path(base)), keep=keep, quiet=quiet)


def load_or_current(env_dir: Optional[str] = None, base: Union[str, os.PathLike] = ".",
                    quiet: bool = False) -> "Env":
    """Return :func:`load` of ``env_dir``, or :func:`current` of ``base`` when it is None
    (what the CLI's ``--env DIR`` means). Raises NoEnvironment."""
    return load(env_dir, quiet=quiet) if env_dir else current(base, quiet=quiet)


#: the longest extension a walltime may be asked for (a year)
MAX_EXTENSION_HOURS = 8760


def check_extension(walltime: str) -> str:
    """Return the walltime extension ``[+]H:MM[:SS]`` without its ``+``. Raises UsageError."""
    m = re.fullmatch(r"\+?(\d{1,6}):([0-5]\d)(?::([0-5]\d))?", walltime or "")
    if not m:
        raise UsageError(f"--walltime: expected +H:MM[:SS] (e.g. +1:30), got '{walltime}'")
    seconds = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0)
    if not 0 < seconds <= MAX_EXTENSION_HOURS * 3600:
        raise UsageError(f"--walltime: expected more than 0 and at most {MAX_EXTENSION_HOURS} hours, got '{walltime}'")
    return walltime.lstrip("+")


def destroy(env: Optional[str] = None, base: Union[str, os.PathLike] = ".", sweep: bool = False,
            quiet: bool = False, progress=None, forget: bool = False, release_reused: bool = False) -> "Env":
    """Release everything the env ``env`` (default ``<base>/current``) booked, from its saved
    state only, as ``enos destroy`` does; return the (destroyed) :class:`Env`. Idempotent.
    With ``forget``, free nothing and mark it destroyed (resources known to be gone). With
    ``release_reused`` (``--release-jobs``), also release what the env reused but did not
    book (e.g. a Grid'5000 job found by its name), which is kept otherwise.

    Raises NoEnvironment, StateDamaged, StateLocked, DestroyIncomplete, Unsupported
    (sweep), StateUnwritable (freed, but the record could not be written: run it again)."""
    p = _progress(quiet, progress)
    if not forget:
        _remove_tc_of(env, Path(base), p)
    environment = task.destroy(env, base=Path(base), sweep=sweep, progress=p, forget=forget,
                               release_reused=release_reused)
    return Env(environment, keep=True, quiet=quiet)


def sweep_run(reservation: Union[str, os.PathLike], run_id: str, quiet: bool = False,
              progress=None) -> List[str]:
    """Remove every resource tagged with ``run_id`` whose env dir is gone or damaged (as
    ``enos destroy --sweep --run-id``), the provider taken from ``reservation``; return
    what was removed. Raises UsageError (not a full run id), Unsupported (the provider
    cannot sweep), ConfigError, DestroyIncomplete."""
    return task.sweep_run(os.fspath(reservation), run_id, progress=_progress(quiet, progress))


def _remove_tc_of(env: Optional[str], base: Path, progress) -> None:
    """:func:`_before_destroy` for the env dir ``env`` (or ``base/current``); nothing when
    its state cannot be read (destroy then says why)."""
    try:
        environment = task.EnvDir.open(env, base)
    except EnosError:
        return
    _before_destroy(environment, progress)


def _before_destroy(environment: "task.EnvDir", progress) -> None:
    """What destroy does on the hosts while they are still there: remove enos' tc trees,
    end the monitors' sampling loops (a killed enos may have left some)."""
    _remove_tc(environment, progress)
    _end_monitors(environment, progress)


def _end_monitors(environment: "task.EnvDir", progress) -> None:
    """End every monitor recorded in the env (best effort: a host that does not answer
    only gets a warning; its loops end with their sessions)."""
    if not (environment.env_dir / "monitors").is_dir() or environment.resources is None \
            or environment.state.phase == "destroyed":
        return
    from enos.experiment import monitor
    try:
        ended = monitor.end_stale(Env(environment, keep=True, quiet=True), everyone=True)
    except EnosError as e:
        progress.info(f"warning: the monitors could not all be ended before destroy: {e}")
        return
    if ended:
        progress.info(f"ended {len(ended)} monitor(s) left running: {', '.join(ended)}")


def _remove_tc(environment: "task.EnvDir", progress) -> None:
    """Before a destroy: remove the tc trees enos applied (machines a provider does not
    wipe — static hosts, Grid'5000 nodes without redeploy — would keep them). Best effort,
    short: an unreachable host only gets a warning, the destroy goes on."""
    rec = environment.state.data.get("tc") or {}
    if not rec.get("hosts") or environment.resources is None or environment.state.phase == "destroyed":
        return
    from enos.experiment import tc
    try:
        tc.reset(environment, timeout=15.0)
    except EnosError as e:
        progress.info(f"warning: the network constraints could not all be removed before destroy: {e}")


class Env:
    """An experiment environment: its hosts by role, and what to do with them.

    Obtained from :func:`up`, :func:`load` or :func:`current`. ``roles`` (role → hosts),
    ``hosts``, ``networks``, ``env_dir``, ``run_id``, ``phase``; :meth:`run` commands,
    :meth:`play` playbooks, :meth:`backup` files home, :meth:`destroy`. A context manager:
    destroyed on exit unless created with ``keep=True``."""

    def __init__(self, environment: "task.EnvDir", keep: bool = True, quiet: bool = False,
                 progress=None):
        self._envdir = environment
        self.keep = keep
        self.quiet = quiet
        self._progress_obj = progress

    # --- what the env is -----------------------------------------------------------------
    @property
    def envdir(self) -> "task.EnvDir":
        """The env dir and its saved state, as the task runner sees it (for the layers
        below the Python API; scripts use the attributes of this object)."""
        return self._envdir

    @property
    def environment(self) -> "task.EnvDir":
        """Deprecated name of :attr:`envdir`."""
        return self._envdir

    @property
    def env_dir(self) -> Path:
        """The env directory (absolute)."""
        return self._envdir.env_dir

    @property
    def run_id(self) -> str:
        """The run id tagging every resource of the env."""
        return self._envdir.run_id

    @property
    def phase(self) -> str:
        """The env's phase (``booking``, ``ready``, ``destroyed``, ...)."""
        return self._envdir.state.phase

    @property
    def provider(self) -> Optional[str]:
        """The provider type (``local``, ``g5k``, ...)."""
        return self._envdir.state.data.get("provider")

    @property
    def ssh_config(self) -> Path:
        """The env's ssh_config (``ssh -F`` it to reach a host by alias)."""
        return self._envdir.ssh_config

    @property
    def inventory(self) -> Path:
        """The env's Ansible inventory."""
        return self._envdir.inventory

    @property
    def hosts(self) -> List[Host]:
        """Every host of the env, in the order the provider gave them (empty before booking)."""
        res = self._envdir.resources
        return list(res.hosts) if res else []

    @property
    def roles(self) -> "Roles":
        """A dict role → list of :class:`Host` (alias, address, user, port, extra, ...)."""
        res = self._envdir.resources
        return Roles(res.roles() if res else {})

    @property
    def networks(self) -> List[IpPool]:
        """The networks the provider gave, with their free addresses."""
        res = self._envdir.resources
        return list(res.networks) if res else []

    def reload(self) -> "Env":
        """Re-read the env's state from disk (another process may have changed it); return self."""
        self._envdir.state = State.load(self.env_dir)
        return self

    def _progress(self):
        return _progress(self.quiet, self._progress_obj)

    # --- choosing hosts ------------------------------------------------------------------
    def select(self, roles: RoleSelector = None) -> List[Host]:
        """Return the hosts named by ``roles``: None (all hosts), a role or alias, a
        comma-separated string of them, a Host, or a list of any of these; in env order.

        Raises NoEnvironment (nothing booked yet, or being destroyed), EnvDestroyed (destroyed: exit 1), UsageError (unknown role
        or alias, naming the known roles)."""
        self.require_hosts()
        hosts = self.hosts
        if roles is None:
            return hosts
        if isinstance(roles, (str, Host)):
            roles = [roles]
        names: List[str] = []
        for r in roles:
            if isinstance(r, Host):
                names.append(r.alias)
            elif isinstance(r, str):
                names += [x.strip() for x in r.split(",") if x.strip()]
            else:
                raise UsageError(f"roles: expected role names, aliases or Hosts, not {type(r).__name__}")
        if not names:
            raise UsageError("roles: no role or host named")
        known_roles = {r for h in hosts for r in h.roles}
        unknown = [n for n in names if n not in known_roles and n not in {h.alias for h in hosts}]
        if unknown:
            raise UsageError(f"unknown role(s) or host(s): {', '.join(unknown)}; known roles: "
                             f"{', '.join(sorted(known_roles))}")
        wanted = set(names)
        return [h for h in hosts if h.alias in wanted or wanted & set(h.roles)]

    def require_hosts(self) -> List[Host]:
        """Return the env's hosts. Raises EnvDestroyed (destroyed), NoEnvironment (being
        destroyed, or nothing booked yet) — what every command on the hosts checks first."""
        if self.phase == "destroyed":
            raise EnvDestroyed(f"environment {self.env_dir} (run {self.run_id}) is destroyed: its "
                               f"hosts are gone; run enos.up / 'enos up' to book new ones")
        if self.phase == "destroying":
            raise NoEnvironment(f"environment {self.env_dir} is destroying (run {self.run_id}): its hosts "
                                f"are being freed; run enos.up / 'enos up' to book new ones")
        if self._envdir.resources is None:
            raise NoEnvironment(f"environment {self.env_dir} has no resources yet (phase {self.phase}); "
                                f"run enos.up / 'enos up'")
        return self.hosts

    # --- commands ------------------------------------------------------------------------
    @overload
    def run(self, command: str, roles: RoleSelector = None, *, timeout: Optional[float] = None,
            check: bool = True, env: Optional[Mapping[str, Any]] = None, sudo: bool = False,
            background: Literal[False] = False, on_output: Optional[OutputCallback] = None) -> Results: ...

    @overload
    def run(self, command: str, roles: RoleSelector = None, *, timeout: Optional[float] = None,
            check: bool = True, env: Optional[Mapping[str, Any]] = None, sudo: bool = False,
            background: Literal[True], on_output: Optional[OutputCallback] = None) -> "Background": ...

    def run(self, command: str, roles: RoleSelector = None, *, timeout: Optional[float] = None,
            check: bool = True, env: Optional[Mapping[str, Any]] = None, sudo: bool = False,
            background: bool = False, on_output: Optional[OutputCallback] = None
            ) -> Union[Results, "Background"]:
        """Run the shell ``command`` on the hosts of ``roles`` (all by default) at once,
        through the env's SSH connection masters; return a :class:`Results` with one
        :class:`Result` per host (successes included), in env order.

        ``timeout``: seconds before a host's session is given up (its result then has
        ``rc`` None, ``error`` "timed out after Ns (killed)": the command's process group
        on that host is killed). ``env``: environment variables set for the
        command. ``sudo``: run as root through ``sudo -n`` on hosts whose user is not root.
        ``on_output(host, stream, line)`` is called for each line as it arrives.
        ``background=True`` returns at once a :class:`~enos.experiment.background.Background`
        handle (``wait()``, ``kill()``) instead.

        Raises CommandFailed (its ``results`` holds every host's Result) when the command
        fails on some host and ``check`` is true; UsageError (unknown role, bad variable
        name); NoEnvironment."""
        hosts = self.select(roles)
        commands = {h.alias: wrap_command(command, env=env, sudo=sudo, user=h.user) for h in hosts}
        if background:
            from enos.experiment.background import Background
            return Background(self, hosts, command, commands, sudo=sudo, on_output=on_output)
        # the command's own exit status is marked last on stderr: a 255 with the mark is the
        # command's, without it ssh's (see with_status)
        commands = {a: with_status(c) for a, c in commands.items()}
        if timeout is None:
            results = self._run_sessions(hosts, command, commands, on_output=on_output)
        else:
            # a session given up at the timeout would leave its command running on the host:
            # each host reports its PID first, and the timed-out ones get their group killed
            pids: dict = {}
            results = self._run_sessions(hosts, command, {a: with_pid(c) for a, c in commands.items()},
                                         timeout=timeout, on_output=on_output, on_pid=pids.__setitem__)
            late = {r.host.alias: pids[r.host.alias] for r in results
                    if r.rc is None and r.host.alias in pids and r.error and r.error.startswith("timed out")}
            for alias in self._kill_groups(late, "KILL", sudo=sudo):
                results[alias].error += " (killed)"
        for r in results:
            status, r.stderr = take_status(r.stderr or "")
            if status is not None and r.rc == 255 and status == 255:
                r.error = None          # the command's own exit 255, not an ssh failure
            elif status is not None and r.error and r.error.startswith("ssh failed: "):
                # ssh failed after the command ended: its message, not the mark
                r.error = "ssh failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
        if check and results.failed:
            raise CommandFailed(command, results.failed, results)
        return results

    def _run_sessions(self, hosts: List[Host], command: str, commands, timeout: Optional[float] = None,
                      on_output: Optional[OutputCallback] = None, stdout_to=None, cancel_fd=None,
                      on_pid: Optional[Callable[[str, int], None]] = None) -> Results:
        """Run per-host ``commands`` (alias → shell text, or one string) on ``hosts``; return
        their Results (never raises for a host's failure). With ``on_pid``, the commands
        were wrapped by :func:`~enos.experiment.command.with_pid`: ``on_pid(alias, pid)`` is
        called when a host reports its PID, and the mark is taken out of the output."""
        by_alias = {h.alias: h for h in hosts}
        cb = None
        if on_output is not None or on_pid is not None:
            marked = set()

            def cb(alias: str, stream: str, line: str) -> None:
                if on_pid is not None and stream == "stderr" and alias not in marked:
                    marked.add(alias)
                    if line.startswith(PID_MARK + " "):
                        on_pid(alias, int(line.split()[1]))
                        return
                if on_output is not None:
                    if stream == "stderr" and STATUS_MARK in line:     # the mark ends the last line
                        line = take_status(line + "\n")[1]
                        if not line:
                            return
                    on_output(by_alias[alias], stream, line)
        results = run_sessions(self.ssh_config, hosts, commands, timeout=timeout, on_output=cb,
                               stdout_to=stdout_to, cancel_fd=cancel_fd, label=command)
        if on_pid is not None:
            for r in results:
                r.stderr = take_pid(r.stderr)[1]
        return results

    def _kill_groups(self, pids: Mapping[str, int], signal: str = "KILL", sudo: bool = False) -> List[str]:
        """Send ``signal`` to the process group ``pids[alias]`` on each of those hosts; return
        the aliases it was sent to (best effort: a host that does not answer is skipped)."""
        hosts = [h for h in self.hosts if h.alias in pids]
        if not hosts:
            return []
        cmds = {h.alias: wrap_command(kill_group(pids[h.alias], signal), sudo=sudo, user=h.user) for h in hosts}
        self._run_sessions(hosts, f"kill -{signal}", cmds, timeout=30)
        return [h.alias for h in hosts]

    # --- facts and network constraints -----------------------------------------------------
    def facts(self, refresh: bool = False) -> "Facts":
        """Return {alias: facts} of every host (a :class:`~enos.experiment.facts.Facts`
        dict, a table in Jupyter): interfaces (addresses, the env network each belongs to,
        which one SSH uses), cpus, memory_mb, os, kernel, netem, tools. Gathered once over
        SSH on all hosts at once and cached in the env state; ``refresh`` gathers them
        again. Raises FactsError (hosts that did not answer), NoEnvironment."""
        from enos.experiment.facts import Facts, gather_facts
        self.require_hosts()
        return Facts(gather_facts(self._envdir, refresh=refresh))

    def _constraints(self, constraints):
        """Return (NetworkConstraints, groups) from ``constraints`` (None: the reservation's;
        a dict in the reservation's format; or a NetworkConstraints)."""
        from enos.reservation.config import constraints_from_data
        from enos.reservation.netconstraints import NetworkConstraints
        config = self._envdir.config
        groups = config.constraint_groups()
        if constraints is None:
            if config.network_constraints is None:
                raise UsageError(f"the reservation of {self.env_dir} ({config.file}) has no "
                                 f"'network_constraints' section; pass the constraints to env.tc(...)")
            return config.network_constraints, groups
        if isinstance(constraints, NetworkConstraints):
            return constraints, groups
        if isinstance(constraints, Mapping):
            known = list(dict.fromkeys([r for h in self.hosts for r in h.roles] + groups))
            return constraints_from_data(dict(constraints), known, source="env.tc(constraints)"), groups
        raise UsageError(f"constraints: expected a network_constraints mapping, not {type(constraints).__name__}")

    def tc(self, constraints: Union[None, Mapping, "NetworkConstraints"] = None, *,
           dry_run: bool = False) -> Dict[str, Any]:
        """Shape the network between groups: apply ``constraints`` (default: the
        reservation's ``network_constraints``; or a mapping in the same format) with tc on
        every host at once; return {alias: 'applied' | 'unchanged' | 'removed'}.
        Idempotent; recorded in the env state for :meth:`tc_reset`.

        ``dry_run=True`` changes nothing and returns {alias: [tc command lines]}: the
        commands a host would get (those of a kernel with sch_netem even where it is
        missing, with a warning on the progress output).

        Raises ConfigError (a bad constraints mapping), NetemMissing (delay/loss on a kernel
        without sch_netem; nothing changed), PlanError, TcError (naming each failed host's
        tc command), FactsError, NoEnvironment."""
        from enos.experiment import tc
        self.require_hosts()
        nc, groups = self._constraints(constraints)
        if dry_run:
            facts = self.facts()
            plans = tc.plan(nc, groups, self.hosts, facts, check_netem=False)
            try:
                tc.plan(nc, groups, self.hosts, facts)
            except tc.NetemMissing as e:
                self._progress().info(f"warning: {e}")
            return {a: [" ".join(c) for c in p.commands()] for a, p in sorted(plans.items())}
        return tc.apply(self._envdir, nc, groups, progress=self._progress())

    def tc_applied(self) -> str:
        """Return a readable summary of the constraints enos applied in this env ("" when
        none)."""
        from enos.experiment import tc
        return tc.describe_plan(tc.applied(self._envdir))

    def tc_reset(self) -> Dict[str, str]:
        """Remove exactly the tc trees enos applied; return {alias: 'removed' | 'already
        gone'}. Raises TcError (hosts where removing failed), NoEnvironment."""
        from enos.experiment import tc
        self.require_hosts()
        return tc.reset(self._envdir)

    def tc_test(self, constraints: Union[None, Mapping, "NetworkConstraints"] = None,
                check: bool = False) -> "TestReport":
        """Measure RTT, throughput and loss between every two groups and compare them with
        ``constraints`` (default: the reservation's); return the
        :class:`~enos.experiment.netprobe.TestReport` (``.ok``, ``.measures``, ``.table()``).
        Applies nothing. With ``check``, raises TcTestFailed when a measure is outside the
        tolerance (docs/network-constraints.md). Raises NoEnvironment, FactsError."""
        from enos.experiment import netprobe
        self.require_hosts()
        nc, groups = self._constraints(constraints)
        report = netprobe.test(self._envdir, nc, groups, progress=self._progress())
        if check and not report.ok:
            raise netprobe.TcTestFailed(report)
        return report

    # --- playbooks and files -------------------------------------------------------------
    def play(self, playbook: Union[str, os.PathLike], extra_vars: Optional[Mapping[str, Any]] = None,
             roles: RoleSelector = None, *, limit: Optional[str] = None, tags: Optional[str] = None,
             check: bool = True) -> "PlayResult":
        """Run an Ansible playbook on the env's inventory (every host, or those of
        ``roles``/the Ansible ``limit`` pattern) with ``extra_vars``, through ansible-runner;
        return a :class:`~enos.experiment.play.PlayResult` (per host: ok, changed, failed,
        unreachable, skipped; the failed tasks).

        Raises ProvisionError (with ``.result``, the PlayResult) when a host failed or was
        unreachable and ``check`` is true; UsageError (playbook not found, unknown role)."""
        from enos.experiment.play import run_play
        return run_play(self, playbook, extra_vars=extra_vars, roles=roles, limit=limit, tags=tags,
                        check=check)

    def backup(self, paths: Union[str, Sequence[str]], roles: RoleSelector = None, *,
               dest: Union[None, str, os.PathLike] = None, timeout: Optional[float] = None,
               sudo: bool = False) -> "BackupReport":
        """Fetch the files and directories ``paths`` from the hosts of ``roles`` (all by
        default), in parallel, one ``tar`` stream per host over the env's SSH masters, into
        ``<dest>/<alias>/<path>`` (``dest`` defaults to ``<env>/backup``); return a
        :class:`~enos.experiment.backup.BackupReport` (per host: bytes and files fetched,
        missing paths, error).

        Names with spaces, quotes or newlines are safe. ``sudo``: read as root (hosts whose
        user is not root). Raises UsageError (no path, '/', a path with '..'); NoEnvironment.
        A host where the transfer failed is reported in the report (``error``), not raised."""
        from enos.experiment.backup import backup
        return backup(self, paths, roles=roles, dest=dest, timeout=timeout, sudo=sudo)

    # --- Ansible modules and monitoring -----------------------------------------------------
    def actions(self, roles: RoleSelector = None, *, become: bool = False, gather_facts: bool = False,
                extra_vars: Optional[Mapping[str, Any]] = None, check: bool = True) -> "Actions":
        """Return an :class:`~enos.experiment.actions.Actions` block: any Ansible module as
        a method, run as one playbook on the hosts of ``roles`` when the ``with`` block
        ends (or at ``.run()``)::

            with env.actions(roles="client") as a:
                a.apt(name="iperf3", task_name="install iperf3")
                a.shell("iperf3 --version", task_changed_when=False)
            a.results["client-1"]        # that host's per-task results

        ``become``: run the tasks as root; ``gather_facts``: let Ansible gather facts
        first; ``extra_vars`` go to the play (with the reservation's variables). Raises
        UsageError (no host, a mistaken task keyword); at the run, ActionsFailed (every
        host's results in ``.results``) when a task failed or a host was unreachable and
        ``check``."""
        from enos.experiment.actions import Actions
        return Actions(self, roles, become=become, gather_facts=gather_facts,
                       extra_vars=dict(extra_vars or {}), check=check)

    def monitor(self, roles: RoleSelector = None, *, interval: float = 1.0,
                interfaces: Optional[Sequence[str]] = None) -> "Monitor":
        """Return a :class:`~enos.experiment.monitor.Monitor` of the hosts of ``roles``: use
        it as a context manager (or ``start()``/``stop()``); CPU, memory, disk I/O and
        network counters sampled on the hosts from /proc, one sample at the start and at
        the end whatever the length, one every ``interval`` seconds between::

            with env.monitor(roles="server") as mon:
                env.run("bench")
            mon.totals()                 # exact: end counters minus start counters
            mon.to_dataframe(); mon.plot()

        ``interfaces``: the network interfaces counted (default all but ``lo``). Raises
        UsageError (no host, interval out of 0.05-3600 s); at the start MonitorError when
        a host gives no start sample (nothing is left running)."""
        from enos.experiment.monitor import Monitor
        return Monitor(self, roles, interval=interval, interfaces=interfaces)

    # --- sweeps --------------------------------------------------------------------------
    def sweep(self, parameters: Mapping[str, Sequence[Any]], results: Union[str, os.PathLike],
              repeat: int = 1, exclude: Optional[Sequence[Mapping[str, Any]]] = None) -> "SweepLoop":
        """Return a :class:`~enos.experiment.sweep.SweepLoop` over the combinations of
        ``parameters`` × ``repeat`` not done yet in the directory ``results``, in a fixed
        order, persisted with execo's ParamSweeper: a combination is done when the loop
        body returns; killed inside it (kill -9 included), the next run of the script redoes
        that one and skips the finished ones. Each run is a dict (with ``repeat`` from 1)
        that has its own directory (``p.dir``) and keeps what it measured (``p.record()``);
        ``loop.results()`` gives every finished run's measurements, also on a re-run that
        has nothing left to do::

            loop = env.sweep({"size": [1, 2], "mode": ["a", "b"]}, results="out", repeat=3)
            for p in loop:
                r = env.run(f"bench {p['size']} {p['mode']}", roles="client")
                (p.dir / "bench.out").write_text(r[0].stdout)         # p.dir is on this machine
                env.backup(["/var/log/bench"], roles="client", dest=p.dir)
                p.record(score=float(r[0].stdout.split()[-1]))
            loop.results()          # or loop.to_dataframe()

        Raises UsageError (empty or malformed sweep); iterating raises CampaignLocked
        (another live process iterates on ``results``)."""
        from enos.experiment.sweep import sweep
        return sweep(dict(parameters), results, repeat=repeat, exclude=[dict(e) for e in exclude or ()])

    # --- the end -------------------------------------------------------------------------
    def ssh_command(self, host: str, command: Sequence[str] = ()) -> List[str]:
        """Return the argv of an SSH session on ``host`` (an alias) through the env's
        ssh_config, running ``command`` if given (as ``enos ssh``). Raises UsageError naming
        the closest alias, NoEnvironment/EnvDestroyed."""
        aliases = [h.alias for h in self.require_hosts()]
        if host not in aliases:
            import difflib
            close = difflib.get_close_matches(host, aliases, n=1)
            raise UsageError(f"no host '{host}' in {self.env_dir}" + (f"; did you mean '{close[0]}'?" if close else "")
                             + f" (hosts: {', '.join(aliases)})")
        ensure_control_dirs(self.ssh_config)   # gone after a reboot or a destroy: ssh cannot bind its master
        return ["ssh", "-F", str(self.ssh_config), host, *command]

    def extend(self, walltime: str) -> dict:
        """Ask the provider for ``walltime`` (``[+]H:MM[:SS]``) more on the env's reservation;
        return what the provider says per reservation (e.g. per Grid'5000 site: job, answer,
        new walltime). Raises UsageError (malformed walltime), Unsupported (the provider
        cannot extend), NoEnvironment/EnvDestroyed, provider errors (refused)."""
        walltime = check_extension(walltime)
        self.require_hosts()
        provider = self._envdir.open_provider(self._progress())
        provider.require("extend_walltime")
        return provider.extend(walltime)

    def destroy(self, sweep: bool = False, release_reused: bool = False) -> "Env":
        """Release everything the env booked (as ``enos destroy``; ``release_reused``: also
        what it reused, see :func:`destroy`); return self. Idempotent. Raises StateLocked,
        DestroyIncomplete, Unsupported (sweep)."""
        _before_destroy(self._envdir, self._progress())
        self._envdir = task.destroy(str(self.env_dir), sweep=sweep, progress=self._progress(),
                                    release_reused=release_reused)
        return self

    def __enter__(self) -> "Env":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.keep:
            self.destroy()

    # --- display and serialisation -------------------------------------------------------
    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict: env_dir, run_id, provider, phase, created,
        reservation file, ssh_config, inventory, hosts, roles (role → aliases), networks."""
        st = self._envdir.state.data
        return {"env_dir": str(self.env_dir), "run_id": self.run_id, "provider": self.provider,
                "phase": self.phase, "created": st.get("created"),
                "config_file": (st.get("config") or {}).get("file"),
                "ssh_config": str(self.ssh_config), "inventory": str(self.inventory),
                "hosts": [h.to_dict() for h in self.hosts],
                "roles": {r: [h.alias for h in hs] for r, hs in self.roles.items()},
                "networks": [n.to_dict() for n in self.networks]}

    def to_json(self, **kw) -> str:
        """Return :meth:`to_dict` as JSON text (keyword arguments go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), **kw)

    def info(self, provider_info: bool = True) -> dict:
        """Return :meth:`to_dict` plus ``provider_info`` (what the provider says of its
        reservation, e.g. the remaining walltime; ``{"error": ...}`` when the testbed does
        not answer) — also while booking or after an interrupted ``up``, when it is all
        that says what exists. A destroyed env shows no hosts, networks nor roles (they
        are gone). What ``enos info`` shows. Never raises for the testbed's failure."""
        d = self.to_dict()
        if self.phase == "destroyed":
            d.update(hosts=[], roles={}, networks=[])
        if provider_info and self.phase not in ("new", "destroyed"):
            try:
                d["provider_info"] = self._envdir.open_provider().info()
            except Exception as e:  # info must show the env even if the testbed does not answer
                d["provider_info"] = {"error": str(e)}
        return d

    def __repr__(self) -> str:
        roles = ", ".join(f"{r}: {len(hs)}" for r, hs in self.roles.items()) or "no hosts"
        return (f"<Env {self.env_dir.name} run {self.run_id} {self.provider} {self.phase}: "
                f"{len(self.hosts)} host(s) ({roles})>")

    def _repr_html_(self) -> str:
        caption = (f"enos env {self.env_dir} — run {self.run_id}, provider {self.provider}, "
                   f"phase {self.phase}, {len(self.hosts)} host(s)")
        return render.hosts_table(self.roles, caption=caption)


class Roles(dict):
    """A dict role → list of :class:`Host`, shown as a table in Jupyter."""

    def _repr_html_(self) -> str:
        return render.hosts_table(self)
