"""The task runner: ``up``, ``destroy`` and the environment they work on.

``up``: load + validate the reservation (nothing is created before it is valid) → take
the env dir (new, or the current one to resume) and its lock → ``booking`` →
``provider.init()`` → ``booked`` (resources saved) → ssh_config, known_hosts, inventory →
wait for SSH → ``before_preinstall`` → preinstall + user playbooks → ``after_preinstall``
→ ``provisioned`` → ``ready``. The state is written before and after every step, and the
provider journals its own side effects, so a crash or Ctrl-C anywhere leaves a state from
which ``destroy`` frees everything.

``destroy``: lock → ``destroying`` → end the recorded children, close SSH masters → ``provider.destroy()`` (from the
journal only) → ``destroyed``. Idempotent. Freeing never depends on being able to write:
the state is recorded best-effort while freeing, and the final record is retried.

Concurrency: a new env dir is claimed with ``mkdir`` (a suffix on collision); whether an
env is resumed is decided under its lock; enos removes only an env dir it created itself
in this process, and only before anything was booked in it.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Union

from enos import failpoint, process
from enos.errors import (DestroyIncomplete, EnosError, ProviderError, ReservationUnavailable, StateDamaged,
                         StateUnwritable, Unsupported, UsageError)
from enos.model import Resources
from enos.progress import NULL
from enos.tables import local_iso
from enos.provider.provider import Provider, ProviderContext
from enos.state import (CURRENT, LOCK_FILE, STATE_FILE, Lock, MemoryJournal, State, claim_env_dir, now_iso,
                        previous_run_traces, recovery_hint, resolve_env, set_current)

if TYPE_CHECKING:  # pragma: no cover
    from enos.reservation.config import Config

# Named lazy boundaries (docs/architecture.md): the provider registry and the reservation
# schema load when a command needs a provider (up, destroy, info); the SSH set-up, the
# inventory and Ansible when up reaches its phase. 'enos run' and the Python API's
# first calls read an env dir without them.

log = logging.getLogger("enos.task")

# Files of an env dir that belong to one run and are reset when a destroyed env is reused.
_RUN_FILES = ("ssh_config", "known_hosts", "inventory.yml")


class EnvDir:
    """An env dir and its saved state (``state.json``, a :class:`~enos.state.State`): what the
    task runner and the layers below :class:`enos.Env` work on."""

    def __init__(self, env_dir: Path, state: State):
        self.env_dir = Path(env_dir)
        self.state = state
        self._config = None

    # --- paths ---------------------------------------------------------------------
    @property
    def ssh_config(self) -> Path:
        """Path of the env's ssh_config."""
        return self.env_dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        """Path of the env's known_hosts."""
        return self.env_dir / "known_hosts"

    @property
    def inventory(self) -> Path:
        """Path of the env's Ansible inventory."""
        return self.env_dir / "inventory.yml"

    @property
    def ssh_key(self) -> Path:
        """Path of the env's private SSH key."""
        return self.env_dir / "ssh" / "id_ed25519"

    @property
    def run_id(self) -> str:
        """The env's run id."""
        return self.state.run_id

    # --- saved data ----------------------------------------------------------------
    @property
    def resources(self) -> Optional[Resources]:
        """The resources saved by the last successful ``init`` (None before). Raises
        StateDamaged (with the way out) when they are not what enos writes."""
        data = self.state.data.get("resources")
        try:
            return Resources.from_dict(data) if data else None
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            d = self.env_dir
            raise StateDamaged(str(d / STATE_FILE),
                               f"{d / STATE_FILE}: its 'resources' are not what enos writes ({e}); "
                               f"'enos up --env {d}' finds the hosts again from what the provider "
                               f"recorded, 'enos destroy --env {d}' frees them") from None

    @property
    def config(self):
        """The reservation as saved in the state, re-validated (a :class:`Config`)."""
        if self._config is None:
            from enos.provider import load_provider_class
            from enos.reservation.config import Config
            self._config = Config.from_state(self.state.data["config"], provider_loader=load_provider_class)
        return self._config

    def open_provider(self, progress=None, config=None) -> Provider:
        """Return the provider instance for this env (from the saved config unless given)."""
        from enos.multi import provider_class
        config = config or self.config
        cls = provider_class(config)
        ctx = ProviderContext(config=config, journal=self.state.journal, env_dir=self.env_dir,
                              run_id=self.run_id, progress=progress, ssh_key=self.ssh_key,
                              log=logging.getLogger(f"enos.provider.{config.provider_type}"))
        return cls(ctx)

    @classmethod
    def open(cls, env: Optional[str] = None, base: Path = Path(".")) -> "EnvDir":
        """Return the environment named by ``env`` (or ``<base>/current``).
        Raises NoEnvironment / StateError."""
        d = resolve_env(env, base)
        return cls(d, State.load(d))


#: deprecated name of :class:`EnvDir`
Environment = EnvDir


def load_reservation(path, check_files: bool = True) -> Config:
    """Read and validate the reservation file ``path`` with the provider registry; return
    its :class:`~enos.reservation.config.Config` (``check_files``: its playbooks must
    exist). Raises ConfigError (file, line, key) or MissingDependency (the provider's
    library is not installed)."""
    from enos.provider import load_provider_class
    from enos.reservation.config import load_config
    return load_config(path, provider_loader=load_provider_class, check_files=check_files)


def reservation_from_data(data: dict, file: str, **kwargs) -> Config:
    """Validate already-parsed reservation ``data`` (named ``file`` in errors) with the
    provider registry; return its Config. Keyword arguments go to
    :func:`~enos.reservation.config.config_from_data`. Raises ConfigError."""
    from enos.provider import load_provider_class
    from enos.reservation.config import config_from_data
    return config_from_data(data, file, provider_loader=load_provider_class, **kwargs)


#: errors of a write that mean "the disk cannot take it", not a bug
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
#: free space (bytes) the env dir needs before SSH files and Ansible's artifacts are written
MIN_FREE_BYTES = 4 << 20


def _claim_env_dir(env: Optional[str], base: Path) -> tuple[Path, bool]:
    """Return (env dir, created by this process?) for ``up``: ``--env DIR`` (made if
    missing), ``./current`` if it has a state, else a new ``enos_<stamp>[-N]`` claimed by
    ``mkdir``. Raises UsageError when ``--env`` is not a directory, StateUnwritable."""
    if env:
        d = Path(env)
        if d.exists() and not d.is_dir():
            raise UsageError(f"--env {env}: not a directory")
        _refuse_foreign_dir(d)
        try:
            d.mkdir(mode=0o700, parents=True)
            return d.resolve(), True
        except FileExistsError:
            if not d.is_dir():
                raise UsageError(f"--env {env}: not a directory") from None
            return d.resolve(), False
        except OSError as e:
            raise UsageError(f"cannot create the environment directory {d}: {e.strerror or e}") from None
    cur = base / CURRENT
    if cur.is_dir() and (os.path.lexists(cur / STATE_FILE) or previous_run_traces(cur)):
        # 'enos help up': resume ./current unless destroyed, else a new ./enos_<timestamp>
        try:
            destroyed = State.load(cur).phase == "destroyed"
        except EnosError:   # a damaged state (or traces without one) is refused under the lock
            destroyed = False
        if not destroyed:
            return cur.resolve(), False
    return claim_env_dir(base).resolve(), True


def _refuse_foreign_dir(d: Path) -> None:
    """Raise UsageError when ``d`` is an existing directory that is not an enos env dir and
    holds other files (``--env /``, ``--env /proc/self``, a project dir): enos would write
    its state, keys and lock among them. An empty dir, an env dir (state or traces of an
    earlier run, judged under the lock) are fine; the filesystem root never is, whatever it
    holds (enos makes its env dir the owner's only: mode 0700 on ``/`` locks every other
    user, QEMU's included, out of the whole machine)."""
    try:
        if d.is_dir() and d.resolve() == Path(d.anchor or "/").resolve():
            raise UsageError(f"--env {d}: the filesystem root cannot be an enos environment; "
                             f"give a new or empty directory")
        if not d.is_dir() or os.path.lexists(d / STATE_FILE) or previous_run_traces(d):
            return
        names = sorted(n for n in os.listdir(d) if n != LOCK_FILE and not n.startswith(f".{STATE_FILE}."))
    except OSError as e:
        raise UsageError(f"--env {d}: {e.strerror or e}") from None
    if names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise UsageError(f"--env {d}: an existing directory that is not an enos environment (it holds {shown}); "
                         f"give a new or empty directory")


def _unclaim(env_dir: Path) -> None:
    """Remove an env dir this process created and booked nothing in: only its lock file
    and state temp files go, and the dir only if that leaves it empty."""
    for name in os.listdir(env_dir):
        if name == LOCK_FILE or name.startswith(f".{STATE_FILE}."):
            try:
                os.unlink(env_dir / name)
            except OSError:
                pass
    try:
        os.rmdir(env_dir)
    except OSError:
        pass


def _check_free_space(env_dir: Path, what: str) -> None:
    """Raise StateUnwritable when ``env_dir``'s file system has less than MIN_FREE_BYTES
    free (SSH sockets, inventory and Ansible's artifacts would fail or hang)."""
    try:
        free = shutil.disk_usage(env_dir).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise StateUnwritable(str(env_dir), OSError(errno.ENOSPC, f"only {free // 1024} KiB free, "
                                                                  f"{what} needs at least {MIN_FREE_BYTES >> 20} MiB"))


def _resume_or_refuse(env_dir: Path) -> Optional[State]:
    """Under the lock: return the env's saved state (to resume), None for a fresh dir.
    Raises StateDamaged for a damaged state file, or for a dir holding an earlier run's
    traces without its state file (booking again would orphan that run's resources)."""
    if os.path.lexists(env_dir / STATE_FILE):
        return State.load(env_dir)
    traces = previous_run_traces(env_dir)
    if traces:
        raise StateDamaged(str(env_dir / STATE_FILE),
                           f"{env_dir / STATE_FILE} is missing but {env_dir} holds traces of an earlier run "
                           f"({', '.join(traces)}): booking again would orphan that run; "
                           f"{recovery_hint(env_dir)}; or use another --env")
    return None


def up(config_file: Union[str, Path, "Config"], env: Optional[str] = None, base: Path = Path("."),
       force_deploy: bool = False, tags: Optional[str] = None, progress=None,
       verbose: bool = False, provision: bool = True, ssh_timeout: float = 600.0,
       at: Union[None, str, float] = None) -> EnvDir:
    """Book, reach and provision the resources of ``config_file`` (a reservation file, or
    an already validated :class:`Config`); return the EnvDir.

    Resumes the current env (or ``env``) if it has not been destroyed: the provider re-finds
    what it booked instead of booking twice. Raises ConfigError (nothing created, the
    provider's preflight included), StateLocked, StateDamaged, StateUnwritable (disk full:
    the env stays destroyable), provider errors, SshUnreachable, ProvisionError.

    ``at``: book for a later start (providers with ``advance_reservation``): ``"earliest"``
    (the earliest slot the provider finds, see :func:`find_slot`) or a Unix time.

    The env dir is the owner's only (0700, and everything created in it by enos and its
    children 0600/0700: the umask is 077 for the call)."""
    old_umask = os.umask(0o077)
    try:
        return _up(config_file, env, base, force_deploy, tags, progress, verbose, provision, ssh_timeout, at)
    finally:
        os.umask(old_umask)


def _up(config_file, env, base, force_deploy, tags, progress, verbose, provision, ssh_timeout, at=None) -> EnvDir:
    """``up`` under the umask: the phases below, in order, the env dir locked throughout."""
    from enos.ssh.client import control_dir
    from enos.ssh.keys import ensure_keypair
    progress = progress or NULL
    base = Path(base)
    config, cls = _load_for_up(config_file, progress)     # may raise: nothing created yet
    env_dir, created = _claim_env_dir(env, base)
    if env_dir.stat().st_uid == os.geteuid():
        env_dir.chmod(0o700)     # private keys, state and logs: the owner's only
    lock = Lock(env_dir)
    state: Optional[State] = None
    done = False
    lock.acquire()     # StateLocked: another enos holds it; the dir is theirs, left alone
    try:
        state = _open_for_up(env_dir, config, cls, progress)
        if env is None or env_dir.parent == base.resolve():
            set_current(base, env_dir)
        failpoint.checkpoint("task.env_created")
        environment = Environment(env_dir, state)
        environment._config = config
        ensure_keypair(env_dir / "ssh", f"enos-{state.run_id}")
        control_dir(state.run_id)   # another user's socket dir is refused before booking
        provider = environment.open_provider(progress, config)
        _choose_start(environment, provider, at, progress)
        resources = _book(environment, provider, force_deploy)
        _reach(environment, resources, ssh_timeout, progress)
        if provision:
            _provision(environment, provider, tags, progress, verbose)
        state.set_phase("ready")
        failpoint.checkpoint("task.ready")
        done = True
        return environment
    except StateUnwritable as e:
        raise _unwritable_in_up(e, env_dir, state) from None
    except OSError as e:
        if e.errno not in _DISK_ERRNOS:
            raise
        raise _unwritable_in_up(StateUnwritable(e.filename or str(env_dir), e), env_dir, state) from None
    finally:
        if not done and state is not None:
            # interrupted or failed: no process of this run outlives the command (the hosts
            # stay booked, for 'enos destroy' or a resumed 'enos up')
            end_processes(env_dir, state.run_id)
        if created and not os.path.lexists(env_dir / STATE_FILE):
            _unclaim(env_dir)      # still under our lock: nobody else can be using it
        lock.release()


def _load_for_up(config_file, progress):
    """Return (Config, provider class) of ``config_file``, its warnings shown. Raises
    ConfigError, MissingDependency (the provider's library) — before any env dir exists."""
    from enos.multi import provider_class
    from enos.reservation.config import Config
    config = config_file if isinstance(config_file, Config) else load_reservation(config_file)
    cls = provider_class(config)
    for w in config.warnings:
        progress.info(f"warning: {w}")
    if config.variables:
        progress.info(config.variables_summary())
    return config, cls


def _open_for_up(env_dir: Path, config, cls, progress) -> State:
    """Under the lock: return the state to resume, or a new one (after the provider's
    preflight: this machine's side of the config, before anything is created). A destroyed
    env starts over. Raises UsageError (another provider's env), StateDamaged, ConfigError."""
    state = _resume_or_refuse(env_dir)
    if state is not None and state.phase == "destroyed":
        for name in _RUN_FILES:
            (env_dir / name).unlink(missing_ok=True)
        state = None
    if state is not None and state.data.get("provider") != config.provider_type:
        raise UsageError(f"{env_dir} holds a '{state.data.get('provider')}' environment, not "
                         f"'{config.provider_type}': run 'enos destroy' first or use another --env")
    if state is None:
        cls.preflight(config)
        state = State.create(env_dir, config.file, config.raw, config.provider_type,
                             config_state=config.to_state())
        progress.info(f"environment {env_dir} (run {state.run_id})")
    else:
        state.data["config"] = config.to_state()
        state.save()
        progress.info(f"resuming environment {env_dir} (run {state.run_id}, phase {state.phase})")
    return state


def _choose_start(environment: "EnvDir", provider: Provider, at, progress) -> None:
    """With ``at``, set the provider's start (``ctx.start_at``): the given Unix time, or the
    earliest slot it finds; recorded in the state. Raises Unsupported (a provider that
    cannot book ahead), ReservationUnavailable (no slot)."""
    at = at if at is not None else environment.state.data.get("start_at")    # a resumed 'up --at'
    if at is None:
        return
    if "advance_reservation" not in provider.capabilities:
        raise Unsupported(f"provider '{provider.type}' cannot book for a later start (--at)")
    if at == "earliest":
        slot = provider.earliest_slot(None, time.time())
        if slot is None:
            raise ReservationUnavailable("no slot: the resources asked are never all free (more than exist?)")
        at = slot["start"]
        progress.info(f"earliest slot: {local_iso(at)}")
    provider.ctx.start_at = float(at)
    environment.state.data["start_at"] = float(at)
    environment.state.save()


def find_slot(config_file: Union[str, Path, "Config"], walltime: Optional[str] = None,
              start: Optional[float] = None, until: Optional[float] = None, progress=None) -> Optional[dict]:
    """Return the earliest window when the reservation's resources are all free for
    ``walltime`` (the reservation's when None), from ``start`` (now) and ending by ``until``:
    ``{"start", "end", ...}`` (Unix times and the provider's details), or None. Books
    nothing, writes no env dir. Raises ConfigError, Unsupported (no advance_reservation),
    the provider's errors."""
    from enos.multi import provider_class
    config = config_file if not isinstance(config_file, (str, Path)) else load_reservation(config_file)
    cls = provider_class(config)
    if "advance_reservation" not in cls.capabilities:
        raise Unsupported(f"provider '{cls.type}' cannot look for a slot (no advance reservation)")
    with tempfile.TemporaryDirectory(prefix="enos-slot-") as tmp:
        ctx = ProviderContext(config=config, journal=MemoryJournal(), env_dir=Path(tmp),
                              run_id="00000000", progress=progress)
        return cls(ctx).earliest_slot(walltime, time.time() if start is None else start, until)


def _book(environment: "EnvDir", provider: Provider, force_deploy: bool) -> Resources:
    """``booking`` → ``provider.init()`` → ``booked`` with the resources saved."""
    state = environment.state
    state.set_phase("booking")
    failpoint.checkpoint("task.booking")
    resources = provider.init(force_deploy=force_deploy)
    state.data["resources"] = resources.to_dict()
    state.set_phase("booked")
    failpoint.checkpoint("task.booked")
    return resources


def _reach(environment: "EnvDir", resources: Resources, ssh_timeout: float, progress) -> None:
    """Write ssh_config, known_hosts and the inventory; wait until every host answers SSH."""
    from enos.inventory import write_inventory
    from enos.ssh.client import wait_for_ssh, write_ssh_files
    env_dir, run_id = environment.env_dir, environment.run_id
    _check_free_space(env_dir, "the SSH files and the inventory")
    write_ssh_files(env_dir, resources.hosts, run_id)
    write_inventory(env_dir, resources, environment.ssh_config)
    failpoint.checkpoint("task.files_written")
    if resources.hosts:
        wait_for_ssh(environment.ssh_config, [h.alias for h in resources.hosts],
                     timeout=ssh_timeout, progress=progress)
    failpoint.checkpoint("task.ssh_ready")


def _provision(environment: "EnvDir", provider: Provider, tags, progress, verbose: bool) -> None:
    """``before_preinstall`` → the preinstall and the reservation's playbooks →
    ``after_preinstall`` → ``provisioned``."""
    env_dir, state, config = environment.env_dir, environment.state, environment.config
    hosts = environment.resources.hosts
    provider.before_preinstall(environment)
    failpoint.checkpoint("task.before_preinstall")
    if hosts:
        from enos.provision import provision      # ansible-runner: only to provision
        _check_free_space(env_dir, "Ansible (its artifacts and fact cache)")
        extravars = dict(config.variables)
        extravars.update(enos_env_dir=str(env_dir), enos_run_id=state.run_id)
        provision(environment, config.provision, extravars, tags=tags, progress=progress, verbose=verbose,
                  hosts_share_this_machine=provider.hosts_share_this_machine)
    failpoint.checkpoint("task.preinstalled")
    provider.after_preinstall(environment)
    state.set_phase("provisioned")
    failpoint.checkpoint("task.provisioned")


def end_processes(env_dir: Path, run_id: str) -> List[str]:
    """End the env's recorded children (:mod:`enos.process`: a playbook and all it
    started) and close its SSH connection masters (removing their socket dir); return
    what is still alive (normally []). Raises nothing."""
    from enos.ssh.client import stop_masters
    left = process.end_recorded(env_dir)
    stop_masters(run_id)
    return left


def _unwritable_in_up(e: StateUnwritable, env_dir: Path, state: Optional[State]) -> StateUnwritable:
    """Return ``e`` with what to do: nothing booked yet, or free space then destroy/resume."""
    booked = state is not None and state.phase not in ("new",)
    if booked:
        what = (f"; free some space on the disk of {env_dir}, then 'enos destroy --env {env_dir}' "
                f"(or 'enos up' to resume): the run {state.run_id} is recorded there")
    else:
        what = "; nothing was booked"
    err = StateUnwritable(e.path, e.cause)
    err.args = (str(e) + what,)
    return err


#: journal keys whose values name a resource (shown in "may remain")
_NAMING_KEYS = ("uri", "site", "uid", "name", "uuid", "bridge", "ns", "namespace", "dir", "subnet", "pool")


def _journal_summary(state: State, limit: int = 40) -> str:
    """Return what a provider's journal names (URIs, sites, job ids, resource names and
    UUIDs), per journal key, in one line (for "may remain")."""
    parts = []
    for key, value in sorted(state.data.get("journal", {}).items()):
        names: List[str] = []

        def walk(v) -> None:
            if isinstance(v, dict):
                for k, x in v.items():
                    if k in _NAMING_KEYS and isinstance(x, (str, int)) and not isinstance(x, bool):
                        names.append(f"{k} {x}")
                    else:
                        walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
            elif isinstance(v, str):
                names.append(v)
        walk(value)
        shown = list(dict.fromkeys(names))
        more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
        parts.append(f"{key}: " + (", ".join(shown[:limit]) + more if shown else "(recorded)"))
    return "; ".join(parts) or "nothing recorded"


def destroy(env: Optional[str] = None, base: Path = Path("."), sweep: bool = False,
            progress=None, forget: bool = False, release_reused: bool = False) -> EnvDir:
    """Release everything the env booked, from its saved state only; return the EnvDir.

    Idempotent (a destroyed env is destroyed again harmlessly). With ``sweep``, also asks
    the provider to remove leftovers tagged with the run id. With ``release_reused``, also
    releases what the env reused but did not create (kept otherwise). With ``forget``, frees
    nothing and marks the env destroyed (for resources known to be gone, e.g. a libvirt
    host that no longer exists). Frees first and records best-effort: a full or
    read-only disk does not stop the freeing (StateUnwritable afterwards, retryable).
    Raises NoEnvironment, StateDamaged, StateLocked, DestroyIncomplete, the provider's
    errors (the env stays ``destroying``: run destroy again), Unsupported (sweep on a
    provider that cannot), StateUnwritable (freed but not recorded)."""
    progress = progress or NULL
    environment = EnvDir.open(env, base)
    with Lock(environment.env_dir):
        state = State.load(environment.env_dir)      # re-read under the lock
        state.best_effort = True
        environment.state = state
        if forget:
            return _forget(environment, progress)
        provider = environment.open_provider(progress)
        provider.ctx.release_reused = release_reused
        if sweep and "sweep" not in provider.capabilities:
            raise Unsupported(f"provider '{provider.type}' cannot sweep")
        before = state.phase
        state.set_phase("destroying")
        failpoint.checkpoint("task.destroying")
        strays = end_processes(environment.env_dir, state.run_id)
        with progress.task(f"destroying {state.data.get('provider')} resources of run {state.run_id}"):
            try:
                _destroy_or_sweep(provider, state, progress, booked=before not in ("destroying", "destroyed"))
                if sweep:
                    removed: List[str] = provider.sweep()
                    for r in removed:
                        progress.info(f"swept {r}")
            except EnosError as e:
                if isinstance(e, (Unsupported, UsageError)):
                    raise
                e.args = (f"{e}\n  may remain (run {state.run_id}, provider {state.data.get('provider')}): "
                          f"{_journal_summary(state)}\n  the env stays 'destroying': run 'enos destroy' "
                          f"again once the testbed answers, or 'enos destroy --forget' if these "
                          f"resources are gone",)
                _record_best_effort(state)
                raise
        if strays:                  # recorded children that would not die: retry later
            _record_best_effort(state)
            raise DestroyIncomplete(strays)
        state.data["phase"] = "destroyed"
        state.data["history"].append({"phase": "destroyed", "at": now_iso(), "pid": os.getpid()})
        _record_final(state, "the resources are freed")
        failpoint.checkpoint("task.destroyed")
    return environment


#: what a provider's destroy raises on a journal entry of the wrong type (a damaged state)
_JOURNAL_DAMAGE = (TypeError, KeyError, AttributeError, ValueError, IndexError)


def _destroy_or_sweep(provider: Provider, state: State, progress, booked: bool = False) -> None:
    """``provider.destroy()``; when the provider cannot read its own journal (an entry of
    the wrong type: a damaged state), or finds it empty while the env (``booked``: not
    already being destroyed) has hosts, free by the run id instead (providers with the
    ``sweep`` capability), saying so. Raises ProviderError naming the damage when the
    provider cannot sweep, DestroyIncomplete with what is left."""
    resources = state.data.get("resources")
    hosts = resources.get("hosts") if isinstance(resources, dict) else None
    if (booked and "reserve" in provider.capabilities and not state.data.get("journal")
            and isinstance(hosts, list) and hosts):
        # hosts were booked but the journal lists nothing: a destroy would free nothing
        why = f"its journal is empty while {len(hosts)} host(s) were booked"
        if "sweep" not in provider.capabilities:
            raise ProviderError(f"the state of run {state.run_id}: {why}; the {provider.type} provider "
                                f"cannot find them by run id: free them by hand, then 'enos destroy "
                                f"--forget'")
        log.warning("the state of run %s: %s; sweeping the run by its id", state.run_id, why)
        for what in provider.sweep():
            progress.info(f"swept {what}")
        return
    try:
        provider.destroy()
    except _JOURNAL_DAMAGE as e:
        why = f"{type(e).__name__}: {e}"
        if "sweep" not in provider.capabilities:
            raise ProviderError(f"the {provider.type} provider cannot read its journal in the state of run "
                                f"{state.run_id} ({why}): free its resources by hand") from None
        log.warning("the %s provider cannot read its journal (%s); sweeping run %s by its id instead",
                    provider.type, why, state.run_id)
        for what in provider.sweep():
            progress.info(f"swept {what}")


def _record_best_effort(state: State) -> None:
    try:
        state.save_retrying(attempts=2)
    except StateUnwritable:
        pass


def _record_final(state: State, done: str) -> None:
    """Record the state, retrying; raise StateUnwritable saying ``done`` and what to do."""
    try:
        state.save_retrying()
    except StateUnwritable as e:
        err = StateUnwritable(e.path, e.cause)
        err.args = (f"{e}: {done}, but this could not be recorded; run 'enos destroy' again once "
                    f"{state.env_dir} is writable (it is idempotent)",)
        raise err from None


def _forget(environment: EnvDir, progress) -> EnvDir:
    """Mark the env destroyed without freeing anything; say what the journal still lists."""
    state = environment.state
    left = _journal_summary(state)
    progress.info(f"forgetting run {state.run_id} without freeing anything; its journal listed: {left}")
    state.data["forgotten"] = {"at": now_iso(), "journal": state.data.get("journal", {})}
    state.data["journal"] = {}
    state.data["phase"] = "destroyed"
    state.data["history"].append({"phase": "destroyed", "at": now_iso(), "pid": os.getpid(),
                                  "forgotten": True})
    _record_final(state, "the env is forgotten")
    return environment


def sweep_run(config_file: str, run_id: str, progress=None) -> List[str]:
    """Remove every resource tagged with ``run_id`` (state file gone); return what was removed.

    Uses the provider of ``config_file``. Raises UsageError unless ``run_id`` is a full run
    id (8 hex characters: matched exactly, never as a prefix), Unsupported if the
    provider cannot sweep."""
    if not re.fullmatch(r"[0-9a-f]{8}", run_id or ""):
        raise UsageError(f"--run-id {run_id!r}: give a full run id (8 hex characters, as 'enos info' "
                         f"shows); a sweep matches it exactly, never as a prefix")
    from enos.multi import provider_class
    from enos.ssh.client import stop_masters
    config = load_reservation(config_file, check_files=False)   # its playbooks are not needed
    cls = provider_class(config)
    if "sweep" not in cls.capabilities:
        raise Unsupported(f"provider '{cls.type}' cannot sweep")
    ended = [f"process {p}" for p in process.end_run(run_id)]  # orphaned playbooks of the run
    stop_masters(run_id)            # the run's SSH connection masters and their socket dir
    with tempfile.TemporaryDirectory(prefix="enos-sweep-") as tmp:
        ctx = ProviderContext(config=config, journal=MemoryJournal(), env_dir=Path(tmp),
                              run_id=run_id, progress=progress)
        return ended + cls(ctx).sweep()
