"""The task runner: ``up``, ``destroy`` and the environment they work on.

``up``: load + validate the reservation (nothing is created before it is valid) → take
the env dir (new, or the current one to resume) and its lock → ``booking`` →
``provider.init()`` → ``booked`` (resources saved) → ssh_config, known_hosts, inventory →
wait for SSH → ``before_preinstall`` → preinstall + user playbooks → ``after_preinstall``
→ ``provisioned`` → ``ready``. The state is written before and after every step, and the
provider journals its own side effects, so a crash or Ctrl-C anywhere leaves a state from
which ``destroy`` frees everything.

``destroy``: lock → ``destroying`` → close SSH masters → ``provider.destroy()`` (from the
journal only) → ``destroyed``. Idempotent.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Union

from enos import failpoint
from enos.errors import EnosError, NoEnvironment, Unsupported, UsageError
from enos.provider.provider import Provider, ProviderContext, Resources
from enos.state import CURRENT, STATE_FILE, Lock, State, set_current, utc_stamp

if TYPE_CHECKING:
    from enos.reservation.config import Config

log = logging.getLogger("enos.task")

# Files of an env dir that belong to one run and are reset when a destroyed env is reused.
_RUN_FILES = ("ssh_config", "known_hosts", "inventory.yml")


class Environment:
    """An environment directory and its saved state."""

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
        """The resources saved by the last successful ``init`` (None before)."""
        data = self.state.data.get("resources")
        return Resources.from_dict(data) if data else None

    @property
    def config(self):
        """The reservation as saved in the state, re-validated (a :class:`Config`)."""
        if self._config is None:
            from enos.provider import load_provider_class
            from enos.reservation.config import Config
            self._config = Config.from_state(self.state.data["config"], provider_loader=load_provider_class)
        return self._config

    def provider(self, progress=None, config=None) -> Provider:
        """Return the provider instance for this env (from the saved config unless given)."""
        from enos.provider import load_provider_class
        config = config or self.config
        cls = load_provider_class(config.provider_type)
        ctx = ProviderContext(config=config, journal=self.state.journal, env_dir=self.env_dir,
                              run_id=self.run_id, progress=progress, ssh_key=self.ssh_key,
                              log=logging.getLogger(f"enos.provider.{config.provider_type}"))
        return cls(ctx)

    @classmethod
    def open(cls, env: Optional[str] = None, base: Path = Path(".")) -> "Environment":
        """Return the environment named by ``env`` (or ``<base>/current``).
        Raises NoEnvironment / StateError."""
        from enos.state import resolve_env
        d = resolve_env(env, base)
        return cls(d, State.load(d))


def load_reservation(path) -> "Config":
    """Read and validate the reservation file ``path`` with the provider registry; return
    its :class:`~enos.reservation.config.Config`. Raises ConfigError (file, line, key) or
    MissingDependency (the provider's library is not installed)."""
    from enos.provider import load_provider_class
    from enos.reservation.config import load_config
    return load_config(path, provider_loader=load_provider_class)


def reservation_from_data(data: dict, file: str, **kwargs) -> "Config":
    """Validate already-parsed reservation ``data`` (named ``file`` in errors) with the
    provider registry; return its Config. Keyword arguments go to
    :func:`~enos.reservation.config.config_from_data`. Raises ConfigError."""
    from enos.provider import load_provider_class
    from enos.reservation.config import config_from_data
    return config_from_data(data, file, provider_loader=load_provider_class, **kwargs)


def _new_env_dir(base: Path) -> Path:
    stamp = utc_stamp()
    d = base / f"enos_{stamp}"
    n = 1
    while d.exists():
        n += 1
        d = base / f"enos_{stamp}-{n}"
    return d


def _pick_env_dir(env: Optional[str], base: Path) -> tuple[Path, bool]:
    """Return (env dir, resume?) for ``up``."""
    if env:
        d = Path(env)
        if (d / STATE_FILE).exists():
            return d.resolve(), True
        if d.exists() and not d.is_dir():
            raise UsageError(f"--env {env}: not a directory")
        return d.resolve(), False
    cur = base / CURRENT
    if cur.exists() and (cur / STATE_FILE).exists():
        # 'enos help up': resume ./current unless destroyed, else a new ./enos_<timestamp>
        try:
            destroyed = State.load(cur).phase == "destroyed"
        except EnosError:   # an unreadable state is reported by the resume itself
            destroyed = False
        if not destroyed:
            return cur.resolve(), True
    return _new_env_dir(base).resolve(), False


def up(config_file: Union[str, Path, "Config"], env: Optional[str] = None, base: Path = Path("."),
       force_deploy: bool = False, tags: Optional[str] = None, progress=None,
       verbose: bool = False, provision: bool = True, ssh_timeout: float = 600.0) -> Environment:
    """Book, reach and provision the resources of ``config_file`` (a reservation file, or
    an already validated :class:`Config`); return the Environment.

    Resumes the current env (or ``env``) if it has not been destroyed: the provider re-finds
    what it booked instead of booking twice. Raises ConfigError (nothing created),
    StateLocked, provider errors, SshUnreachable, ProvisionError.

    The env dir is the owner's only (0700, and everything created in it by enos and its
    children 0600/0700: the umask is 077 for the call)."""
    old_umask = os.umask(0o077)
    try:
        return _up(config_file, env, base, force_deploy, tags, progress, verbose, provision, ssh_timeout)
    finally:
        os.umask(old_umask)


def _up(config_file, env, base, force_deploy, tags, progress, verbose, provision, ssh_timeout) -> Environment:
    from enos.progress import NULL
    from enos.ssh.keys import ensure_keypair
    progress = progress or NULL
    base = Path(base)
    from enos.reservation.config import Config
    # may raise: nothing created yet
    config = config_file if isinstance(config_file, Config) else load_reservation(config_file)
    from enos.provider import load_provider_class
    # missing library, missing image... → error before any env dir
    load_provider_class(config.provider_type).preflight(config)

    for w in config.warnings:
        progress.info(f"warning: {w}")
    if config.variables:
        progress.info(config.variables_summary())

    env_dir, resume = _pick_env_dir(env, base)
    created = not env_dir.exists()
    try:
        env_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the environment directory {env_dir}: {e.strerror or e}") from None
    if not env_dir.is_dir():
        raise UsageError(f"{env_dir} is not a directory")
    if env_dir.stat().st_uid == os.geteuid():
        env_dir.chmod(0o700)     # private keys, state and logs: the owner's only
    lock = Lock(env_dir)
    try:
        lock.acquire()
    except BaseException:
        if created:
            shutil.rmtree(env_dir, ignore_errors=True)
        raise
    try:
        state = State.load(env_dir) if resume else None
        if state is not None and state.phase == "destroyed":
            for name in _RUN_FILES:
                (env_dir / name).unlink(missing_ok=True)
            state = None
        if state is not None and state.data.get("provider") != config.provider_type:
            raise UsageError(f"{env_dir} holds a '{state.data.get('provider')}' environment, not "
                             f"'{config.provider_type}': run 'enos destroy' first or use another --env")
        if state is None:
            state = State.create(env_dir, config.file, config.raw, config.provider_type,
                                 config_state=config.to_state())
            progress.info(f"environment {env_dir} (run {state.run_id})")
        else:
            state.data["config"] = config.to_state()
            state.save()
            progress.info(f"resuming environment {env_dir} (run {state.run_id}, phase {state.phase})")
        if env is None or env_dir.parent == base.resolve():
            set_current(base, env_dir)
        failpoint.checkpoint("task.env_created")
        environment = Environment(env_dir, state)
        environment._config = config
        ensure_keypair(env_dir / "ssh", f"enos-{state.run_id}")
        from enos.ssh.client import control_dir
        control_dir(state.run_id)   # another user's socket dir is refused before booking

        provider = environment.provider(progress, config)
        state.set_phase("booking")
        failpoint.checkpoint("task.booking")
        resources = provider.init(force_deploy=force_deploy)
        state.data["resources"] = resources.to_dict()
        state.set_phase("booked")
        failpoint.checkpoint("task.booked")

        from enos.inventory import write_inventory
        from enos.ssh.client import wait_for_ssh, write_ssh_files
        write_ssh_files(env_dir, resources.hosts, state.run_id)
        write_inventory(env_dir, resources, environment.ssh_config)
        failpoint.checkpoint("task.files_written")
        if resources.hosts:
            wait_for_ssh(environment.ssh_config, [h.alias for h in resources.hosts],
                         timeout=ssh_timeout, progress=progress)
        failpoint.checkpoint("task.ssh_ready")
        if provision:
            provider.before_preinstall(environment)
            failpoint.checkpoint("task.before_preinstall")
            if resources.hosts:
                from enos.ansible import PREINSTALL, run_playbooks
                extravars = dict(config.variables)
                extravars.update(enos_env_dir=str(env_dir), enos_run_id=state.run_id)
                run_playbooks(env_dir, environment.inventory, environment.ssh_config,
                              [PREINSTALL, *config.provision], len(resources.hosts),
                              extravars=extravars, tags=tags, progress=progress, verbose=verbose)
            failpoint.checkpoint("task.preinstalled")
            provider.after_preinstall(environment)
            state.set_phase("provisioned")
            failpoint.checkpoint("task.provisioned")
        state.set_phase("ready")
        failpoint.checkpoint("task.ready")
        return environment
    finally:
        lock.release()


def destroy(env: Optional[str] = None, base: Path = Path("."), sweep: bool = False,
            progress=None) -> Environment:
    """Release everything the env booked, from its saved state only; return the Environment.

    Idempotent (a destroyed env is destroyed again harmlessly). With ``sweep``, also asks
    the provider to remove leftovers tagged with the run id. Raises NoEnvironment,
    StateLocked, DestroyIncomplete, Unsupported (sweep on a provider that cannot)."""
    from enos.progress import NULL
    from enos.ssh.client import stop_masters
    progress = progress or NULL
    environment = Environment.open(env, base)
    with Lock(environment.env_dir):
        state = State.load(environment.env_dir)      # re-read under the lock
        environment.state = state
        provider = environment.provider(progress)
        if sweep and "sweep" not in provider.capabilities:
            raise Unsupported(f"provider '{provider.type}' cannot sweep")
        state.set_phase("destroying")
        failpoint.checkpoint("task.destroying")
        stop_masters(state.run_id)
        with progress.task(f"destroying {state.data.get('provider')} resources of run {state.run_id}"):
            provider.destroy()
            if sweep:
                removed: List[str] = provider.sweep()
                for r in removed:
                    progress.info(f"swept {r}")
        state.set_phase("destroyed")
        failpoint.checkpoint("task.destroyed")
    return environment


def sweep_run(config_file: str, run_id: str, progress=None) -> List[str]:
    """Remove every resource tagged with ``run_id`` (state file gone); return what was removed.

    Uses the provider of ``config_file``. Raises UsageError unless ``run_id`` is a full run
    id (8 hex characters: matched exactly, never as a prefix), Unsupported if the
    provider cannot sweep."""
    import tempfile
    from enos.provider import load_provider_class
    from enos.state import MemoryJournal
    import re
    if not re.fullmatch(r"[0-9a-f]{8}", run_id or ""):
        raise UsageError(f"--run-id {run_id!r}: give a full run id (8 hex characters, as 'enos info' "
                         f"shows); a sweep matches it exactly, never as a prefix")
    config = load_reservation(config_file)
    cls = load_provider_class(config.provider_type)
    if "sweep" not in cls.capabilities:
        raise Unsupported(f"provider '{cls.type}' cannot sweep")
    with tempfile.TemporaryDirectory(prefix="enos-sweep-") as tmp:
        ctx = ProviderContext(config=config, journal=MemoryJournal(), env_dir=Path(tmp),
                              run_id=run_id, progress=progress)
        return cls(ctx).sweep()


def require_env(env: Optional[str], base: Path = Path(".")) -> Environment:
    """Return the env for read-only commands (info, inventory, ssh, run), or raise
    NoEnvironment with a hint when it has no resources yet."""
    e = Environment.open(env, base)
    if e.resources is None:
        raise NoEnvironment(f"environment {e.env_dir} has no resources yet (phase {e.state.phase}); "
                            f"run 'enos up'")
    return e
