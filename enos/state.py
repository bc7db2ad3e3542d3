"""Environment state: one directory per experiment, a JSON state file written atomically,
a lock, and the provider's journal.

Layout of an env dir::

    enos_20261122T034900Z/
        state.json      # schema, serial, run_id, phase, config, journal, resources
        .lock           # flock()ed by the enos process working on this env; holds its PID
        ssh_config, known_hosts, id_ed25519[.pub], inventory.ini, ansible/ ...

``current`` (beside the env dirs) is a symlink to the last env, swapped atomically.
"""
from __future__ import annotations

import copy
import datetime as _dt
import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from enos.errors import NoEnvironment, StateError, StateLocked

SCHEMA = 1
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
CURRENT = "current"

# Phases, in order, of an environment's life.
PHASES = ("new", "booking", "booked", "provisioned", "ready", "destroying", "destroyed")


def utc_stamp() -> str:
    """Return the current UTC time as ``YYYYmmddTHHMMSSZ`` (used in env dir names)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def now_iso() -> str:
    """Return the current UTC time in ISO 8601."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    """Return a fresh run id: 8 hex characters (short enough for interface names)."""
    import secrets   # lazily: it pulls in hashlib/hmac (~7 ms), which read-only commands never need
    return secrets.token_hex(4)


def atomic_write(path: Path, data: str, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, rename,
    fsync of the dir). A crash leaves either the old or the new content, never a mix."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(str(path.parent), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Lock:
    """An exclusive, non-blocking flock on ``<env>/.lock``; released when the process dies."""

    def __init__(self, env_dir: Path):
        self.path = Path(env_dir) / LOCK_FILE
        self.fd: Optional[int] = None

    def acquire(self) -> "Lock":
        """Take the lock; return self. Raises :class:`StateLocked` naming the holder."""
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            try:
                pid = int(os.read(fd, 32).decode().strip() or 0) or None
            except ValueError:
                pid = None
            os.close(fd)
            raise StateLocked(str(self.path.parent), pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class State:
    """The state of one environment, persisted in ``<env_dir>/state.json``.

    ``data`` keys: ``schema``, ``serial`` (incremented on every write), ``run_id``,
    ``phase``, ``history`` (phase changes with time), ``config`` (the reservation as
    loaded: ``file``, ``data``), ``journal`` (the provider's records), ``resources``.
    """

    def __init__(self, env_dir: Path, data: dict):
        self.env_dir = Path(env_dir)
        self.path = self.env_dir / STATE_FILE
        self.data = data

    @classmethod
    def create(cls, env_dir: Path, config_file: str, config_data: dict,
               provider_type: str, run_id: Optional[str] = None,
               config_state: Optional[dict] = None) -> "State":
        """Return a new state (written at once) for a fresh environment in ``env_dir``.
        ``config_state`` (``Config.to_state()``) replaces ``{"file", "data"}`` when given."""
        data = {
            "schema": SCHEMA, "serial": 0, "run_id": run_id or new_run_id(),
            "created": now_iso(), "phase": "new", "history": [],
            "provider": provider_type,
            "config": config_state or {"file": config_file, "data": config_data},
            "journal": {}, "resources": None,
        }
        st = cls(env_dir, data)
        st.save()
        return st

    @classmethod
    def load(cls, env_dir: Path) -> "State":
        """Return the state saved in ``env_dir``. Raises NoEnvironment / StateError."""
        path = Path(env_dir) / STATE_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise NoEnvironment(f"no enos environment in {env_dir} (no {STATE_FILE})") from None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise StateError(f"{path}: unreadable state file: {e}") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise StateError(f"{path}: unknown state schema {data.get('schema') if isinstance(data, dict) else '?'}"
                             f" (this enos reads schema {SCHEMA})")
        return cls(env_dir, data)

    def save(self) -> None:
        """Persist atomically, incrementing ``serial``."""
        self.data["serial"] = int(self.data.get("serial", 0)) + 1
        atomic_write(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")

    @property
    def run_id(self) -> str:
        """The run id tagging every resource of this environment."""
        return self.data["run_id"]

    @property
    def phase(self) -> str:
        """The last recorded phase (one of :data:`PHASES`)."""
        return self.data["phase"]

    def set_phase(self, phase: str) -> None:
        """Record ``phase`` (with a timestamp) and persist."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase}")
        self.data["phase"] = phase
        self.data["history"].append({"phase": phase, "at": now_iso(), "pid": os.getpid()})
        self.save()

    @property
    def journal(self) -> "Journal":
        """The provider's journal, persisted in this state."""
        return Journal(self)


class Journal:
    """The provider's records inside the state: a JSON-able dict, saved at every change.

    Use :meth:`record` before a side effect (what you are about to create) and right
    after it (the handle), :meth:`forget` once something is released."""

    def __init__(self, state: State):
        self._state = state

    @property
    def data(self) -> dict:
        """The journal's dict (read it; change it through :meth:`record`/:meth:`update`)."""
        return self._state.data.setdefault("journal", {})

    def get(self, key: str, default: Any = None) -> Any:
        """Return a deep copy of the value recorded under ``key`` (or ``default``)."""
        return copy.deepcopy(self.data.get(key, default))

    def record(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` (JSON-serialisable) and persist atomically."""
        self.data[key] = copy.deepcopy(value)
        self._state.save()

    def update(self, key: str, **items: Any) -> None:
        """Merge ``items`` into the dict under ``key`` and persist."""
        d = self.data.setdefault(key, {})
        d.update(copy.deepcopy(items))
        self._state.save()

    def append(self, key: str, value: Any) -> None:
        """Append ``value`` to the list under ``key`` (unless already there) and persist."""
        lst = self.data.setdefault(key, [])
        if value not in lst:
            lst.append(copy.deepcopy(value))
        self._state.save()

    def forget(self, key: str) -> None:
        """Remove ``key`` (no error if absent) and persist."""
        if self.data.pop(key, None) is not None:
            self._state.save()


class MemoryJournal(Journal):
    """A journal kept in memory, for tests and dry runs."""

    class _S:
        def __init__(self):
            self.data = {"journal": {}}
            self.saves = 0

        def save(self):
            self.saves += 1

    def __init__(self):
        super().__init__(self._S())  # type: ignore[arg-type]


def set_current(base: Path, env_dir: Path) -> None:
    """Point ``<base>/current`` at ``env_dir`` atomically (symlink + rename)."""
    base, env_dir = Path(base), Path(env_dir)
    link = base / CURRENT
    target = os.path.relpath(env_dir, base) if env_dir.parent.resolve() == base.resolve() else str(env_dir.resolve())
    tmp = base / f".{CURRENT}.{os.getpid()}"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(target, tmp)
    os.replace(tmp, link)


def resolve_env(env: Optional[str], base: Path = Path(".")) -> Path:
    """Return the env dir named by ``--env`` (or ``<base>/current``). Raises NoEnvironment."""
    if env:
        p = Path(env)
        if (p / STATE_FILE).exists():
            return p.resolve()
        if (p / CURRENT / STATE_FILE).exists():
            return (p / CURRENT).resolve()
        raise NoEnvironment(f"no enos environment in {p} (no {STATE_FILE}); run 'enos up' first")
    cur = Path(base) / CURRENT
    if cur.exists():
        return cur.resolve()
    raise NoEnvironment(f"no current enos environment in {Path(base).resolve()} "
                        f"(no '{CURRENT}' link); run 'enos up' or pass --env DIR")
