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

import contextlib
import copy
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Union

from enos.errors import (NoEnvironment, StateDamaged, StateError, StateLocked, StateUnwritable, UnreadableFile,
                         UsageError)
from enos.reader import MAX_STATE_BYTES, read_bounded  # noqa: F401  (enos.state.read_bounded for its callers)

log = logging.getLogger("enos.state")

SCHEMA = 1
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
CURRENT = "current"
#: written once when an env is created, beside the state: the run id, the provider and
#: the reservation's path, for a recovery when state.json itself is damaged
RUN_FILE = "run.json"

# Phases, in order, of an environment's life.
PHASES = ("new", "booking", "booked", "provisioned", "ready", "destroying", "destroyed")


def utc_stamp() -> str:
    """Return the current UTC time as ``YYYYmmddTHHMMSSZ`` (used in env dir names)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def now_iso(timespec: str = "seconds") -> str:
    """Return the current UTC time in ISO 8601, to ``timespec`` (as datetime.isoformat)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec=timespec)


def new_run_id() -> str:
    """Return a fresh run id: 8 hex characters (short enough for interface names)."""
    import secrets   # lazily: it pulls in hashlib/hmac (~7 ms), which read-only commands never need
    return secrets.token_hex(4)


def usable_dir(path, what: str) -> Path:
    """Return ``path`` as a directory enos may write into: an existing directory, or one it
    can create (its nearest existing parent a writable directory). Raises UsageError (exit
    2, before anything is done) for an empty name, a file or device in its place, a parent
    that is not a directory or not writable (``/proc/x``, ``/dev/null/x``)."""
    text = os.fspath(path) if path is not None else ""
    if not str(text).strip():
        raise UsageError(f"{what}: an empty directory name")
    p = Path(text).expanduser()
    try:
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                raise UsageError(f"{what} {text}: not a directory")
            if not os.access(p, os.W_OK | os.X_OK):
                raise UsageError(f"{what} {text}: a directory this user cannot write into")
            return p
        parent = p.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK) or str(parent).startswith(("/proc", "/sys")):
            raise UsageError(f"{what} {text}: cannot be created ({parent} is not a writable directory)")
    except (OSError, RuntimeError) as e:        # a link loop, a name too long...
        raise UsageError(f"{what} {text}: {getattr(e, 'strerror', None) or e}") from None
    return p


def atomic_write(path: Path, data: Union[str, bytes], mode: int = 0o600, durable: bool = True) -> None:
    """Write ``data`` (text or bytes) to ``path`` atomically (temp file in the same dir,
    fsync, rename, fsync of the dir). A crash leaves either the old or the new content,
    never a mix. ``durable=False``: no fsync (the rename still makes it atomic for a
    killed process; after a power cut the file may be missing or old)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
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
        """Take the lock; return self. Raises :class:`StateLocked` naming the holder,
        :class:`NoEnvironment` when the env dir vanished, or :class:`StateError` when the
        lock file can be neither created nor opened.

        On a read-only or full file system the existing lock file is flock()ed read-only
        and the holder's PID is not written: the lock still keeps two enos off one env.
        A lock file unlinked while we waited (its env dir was given up) is not a lock:
        the file is opened again."""
        for _ in range(100):
            fd = self._open()
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
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - a lock file replaced 100 times in a row
            raise StateError(f"{self.path}: the lock file keeps being replaced")
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            os.fsync(fd)
        except OSError as e:   # full or read-only disk: the flock alone still excludes
            log.warning("%s: cannot write our PID into the lock file: %s", self.path, e.strerror or e)
        self.fd = fd
        return self

    def _open(self) -> int:
        try:
            return os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise NoEnvironment(f"{self.path.parent} does not exist (any more)") from None
        except OSError as e:
            try:
                return os.open(str(self.path), os.O_RDONLY)
            except OSError:
                raise StateError(f"{self.path}: cannot open the lock file: {e.strerror or e}"
                                 f" (is {self.path.parent} a writable directory?)") from None

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self.fd is not None:
            try:
                try:
                    os.ftruncate(self.fd, 0)
                except OSError:
                    pass
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
        #: several providers of one env journal from their own threads (enos.multi)
        self.lock = threading.RLock()

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
        _write_run_file(Path(env_dir), data["run_id"], provider_type, config_file,
                        (config_state or {}).get("base_dir"))
        return st

    @classmethod
    def load(cls, env_dir: Path) -> "State":
        """Return the state saved in ``env_dir``. Raises NoEnvironment (no state file) or
        :class:`StateDamaged` (unreadable, not UTF-8, not JSON, unknown schema, a key
        missing or of the wrong type), whose message names the file and what to do."""
        env_dir = Path(env_dir)
        path = env_dir / STATE_FILE
        if not os.path.lexists(path):
            raise NoEnvironment(f"no enos environment in {env_dir} (no {STATE_FILE})")
        if os.path.islink(path) and not os.path.exists(path):
            try:
                os.stat(path)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise damaged(env_dir, "is a symbolic link loop") from None
            raise damaged(env_dir, f"is a dangling symbolic link (to {os.readlink(path)})")
        if os.path.isdir(path):
            raise damaged(env_dir, "is a directory, not a state file")
        try:
            blob = read_bounded(path, MAX_STATE_BYTES, "state file")
        except UnreadableFile as e:
            raise damaged(env_dir, e.reason) from None
        try:
            text = blob.decode("utf-8")
        except UnicodeDecodeError as e:
            raise damaged(env_dir, f"is not UTF-8 text (byte 0x{blob[e.start]:02x} at offset {e.start})") from None
        try:
            data = json.loads(text, parse_constant=_no_constant)
        except RecursionError:
            raise damaged(env_dir, "is nested too deeply to be a state file") from None
        except ValueError as e:
            raise damaged(env_dir, f"is not valid JSON (unreadable state file: {e})") from None
        if not isinstance(data, dict):
            raise damaged(env_dir, f"holds a JSON {type(data).__name__}, not an object")
        if data.get("schema") != SCHEMA:
            raise damaged(env_dir, f"has an unknown state schema {data.get('schema')!r} "
                                   f"(this enos reads schema {SCHEMA})")
        problem = _shape_problem(data)
        if problem:
            raise damaged(env_dir, problem)
        return cls(env_dir, data)

    #: when True (``destroy``), a failed write is remembered in :attr:`unsaved` instead of
    #: raised: freeing resources must not depend on being able to write the state
    best_effort = False
    #: the OSError of the last failed best-effort write (None once a write succeeds)
    unsaved: Optional[OSError] = None

    def save(self) -> None:
        """Persist atomically, incrementing ``serial``. Raises :class:`StateUnwritable`
        (disk full, read-only, ...) unless :attr:`best_effort` is set."""
        with self.lock:
            self.data["serial"] = int(self.data.get("serial", 0)) + 1
            text = json.dumps(self.data, indent=2, sort_keys=True) + "\n"
        try:
            atomic_write(self.path, text)
        except OSError as e:
            if not self.best_effort:
                raise StateUnwritable(str(self.path), e) from None
            if self.unsaved is None:
                log.warning("%s: cannot record the state (%s); going on", self.path, e.strerror or e)
            self.unsaved = e
        else:
            self.unsaved = None

    def save_retrying(self, attempts: int = 5, delay: float = 0.5) -> None:
        """Persist, retrying ``attempts`` times ``delay`` s apart (disk space may come back).
        Raises :class:`StateUnwritable` with the last error if every attempt fails."""
        for i in range(attempts):
            try:
                atomic_write(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")
                self.unsaved = None
                return
            except OSError as e:
                self.unsaved = e
                if i + 1 < attempts:
                    time.sleep(delay)
        raise StateUnwritable(str(self.path), self.unsaved)

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


def _no_constant(name: str):
    raise ValueError(f"{name} is not a value enos writes")


def _write_run_file(env_dir: Path, run_id: str, provider: str, config_file, base_dir) -> None:
    """Write ``<env>/run.json`` once: what a recovery needs when state.json is damaged (the
    reservation's absolute path when the env was made from a file). Best effort: the state
    itself holds all of it."""
    reservation = None
    if isinstance(config_file, str) and config_file and not config_file.startswith("<"):
        path = Path(config_file)
        if not path.is_absolute() and base_dir:
            path = Path(base_dir) / path.name
        reservation = str(path.resolve()) if path.is_absolute() or base_dir else str(path.absolute())
    try:
        atomic_write(Path(env_dir) / RUN_FILE, json.dumps({"run_id": run_id, "provider": provider,
                                                           "reservation": reservation}) + "\n")
    except OSError as e:
        log.warning("%s: cannot write the recovery record (%s)", env_dir, e.strerror or e)


_RUN_ID = re.compile(r"[0-9a-f]{8}")
_TYPES = {"serial": int, "run_id": str, "phase": str, "history": list, "provider": str,
          "config": dict, "journal": dict}


def _shape_problem(data: dict) -> Optional[str]:
    """Return what is wrong with the keys of a loaded state (None if nothing)."""
    for key, typ in _TYPES.items():
        if key not in data:
            return f"lacks the key '{key}'"
        if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            return f"has a {type(data[key]).__name__} for '{key}', expected a {typ.__name__}"
    if data["serial"] < 0:
        return f"has a negative serial {data['serial']}"
    if not _RUN_ID.fullmatch(data["run_id"]):
        return f"has a malformed run_id {data['run_id']!r} (expected 8 hex characters)"
    if data["phase"] not in PHASES:
        return f"has an unknown phase {data['phase']!r} (expected one of {', '.join(PHASES)})"
    cfg = data["config"]
    if not isinstance(cfg.get("data"), dict) or not isinstance(cfg.get("file"), str):
        return "has a 'config' without the reservation ('file' and 'data')"
    if data.get("resources") is not None and not isinstance(data["resources"], dict):
        return f"has a {type(data['resources']).__name__} for 'resources', expected an object or null"
    return None


def run_id_traces(env_dir: Path) -> List[str]:
    """Return the run ids an env dir shows without its state file (sorted): the
    ``local-R/`` and ``libvirt-R``-like dir names, the env key's comment ``enos-R``, the
    ``run_id`` in a damaged ``state.json`` or its leftover temp files."""
    env_dir = Path(env_dir)
    found = set()
    try:
        names = os.listdir(env_dir)
    except OSError:
        return []
    for name in names:
        m = re.fullmatch(r"[a-z]+-([0-9a-f]{8})", name)
        if m:
            found.add(m.group(1))
    candidates = [env_dir / RUN_FILE, env_dir / "ssh" / "id_ed25519.pub", env_dir / STATE_FILE,
                  env_dir / "ssh_config"]
    candidates += [env_dir / n for n in names if n.startswith(f".{STATE_FILE}.")]
    for f in candidates:
        try:
            blob = read_bounded(f, 1 << 20, partial=True)
        except UnreadableFile:
            continue
        for m in re.finditer(rb'(?:enos-|"run_id":\s*")([0-9a-f]{8})\b', blob):
            found.add(m.group(1).decode())
    return sorted(found)


#: names an enos run leaves in its env dir besides state.json (traces of a run)
RUN_TRACES = ("ssh", "ssh_config", "known_hosts", "inventory.yml", "ansible", RUN_FILE)


def previous_run_traces(env_dir: Path) -> List[str]:
    """Return the names in ``env_dir`` left by an earlier enos run (its key, ssh_config,
    inventory, a provider's ``<type>-<run id>`` dir); empty for a fresh dir."""
    try:
        names = os.listdir(env_dir)
    except OSError:
        return []
    return sorted(n for n in names if n in RUN_TRACES or re.fullmatch(r"[a-z]+-[0-9a-f]{8}", n))


def recorded_reservation(env_dir: Path) -> Optional[str]:
    """Return the path of the reservation file ``env_dir`` was booked from when it is still
    there (from ``run.json``, else from what is readable of a damaged state), else None."""
    env_dir = Path(env_dir)
    for name in (RUN_FILE, STATE_FILE):
        try:
            blob = read_bounded(env_dir / name, 1 << 20, partial=True)
        except UnreadableFile:
            continue
        text = blob.decode("utf-8", "replace")
        found = re.findall(r'"reservation":\s*"((?:[^"\\]|\\.)*)"', text)
        base = re.findall(r'"base_dir":\s*"((?:[^"\\]|\\.)*)"', text)
        files = re.findall(r'"file":\s*"((?:[^"\\]|\\.)*)"', text)
        paths = found + [os.path.join(base[0], os.path.basename(f)) for f in files if base]
        for p in paths:
            try:
                p = json.loads(f'"{p}"')
            except ValueError:
                continue
            if os.path.isabs(p) and os.path.isfile(p):
                return p
    return None


def provider_traces(env_dir: Path) -> List[str]:
    """Return the provider types an env dir shows (``run.json``, ``<type>-<run id>`` dirs)."""
    env_dir = Path(env_dir)
    found = set()
    try:
        found.update(m.group(1) for n in os.listdir(env_dir) for m in [re.fullmatch(r"([a-z0-9]+)-[0-9a-f]{8}", n)] if m)
    except OSError:
        pass
    try:
        data = json.loads(read_bounded(env_dir / RUN_FILE, 1 << 16).decode("utf-8", "replace"))
        if isinstance(data, dict) and isinstance(data.get("provider"), str):
            found.add(data["provider"])
    except (UnreadableFile, ValueError):
        pass
    return sorted(found)


def recovery_hint(env_dir: Path) -> str:
    """Return what a user can do about a damaged env dir: the exact command that sweeps its
    run id(s) (read from its traces) with the reservation it was booked from when that file
    is still there (else what to give as ``-f``), then move the dir away."""
    ids = run_id_traces(env_dir)
    reservation = recorded_reservation(env_dir)
    if reservation:
        import shlex
        file, what = shlex.quote(reservation), "the reservation it was booked from"
    else:
        types = provider_traces(env_dir)
        kind = f"a '{types[0]}' reservation" if len(types) == 1 else "its reservation"
        file = "FILE"
        what = (f"FILE: the reservation file it was booked from, or {kind} with the same "
                f"provider settings ('enos new --provider {types[0] if len(types) == 1 else 'TYPE'} -o FILE' "
                f"writes one)")
    run_ids = ids or ["RUN_ID"]
    sweep = "`; `".join(f"enos destroy --sweep --run-id {r} -f {file}" for r in run_ids)
    missing = "" if ids else " (the run id was not found in the dir: 'enos info' of a copy, or its resources' names, show it)"
    return (f"its resources may still exist: free them with `{sweep}` ({what}){missing}, then move "
            f"{env_dir} away (or restore its state.json from a backup)")


def damaged(env_dir: Path, problem: str) -> StateDamaged:
    """Return (not raise) the StateDamaged error for ``<env_dir>/state.json`` with ``problem``."""
    path = Path(env_dir) / STATE_FILE
    return StateDamaged(str(path), f"{path}: {problem}; {recovery_hint(Path(env_dir))}")


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

    def _locked(self):
        return getattr(self._state, "lock", None) or _NO_LOCK

    def record(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` (JSON-serialisable) and persist atomically."""
        with self._locked():
            self.data[key] = copy.deepcopy(value)
            self._state.save()

    def update(self, key: str, **items: Any) -> None:
        """Merge ``items`` into the dict under ``key`` and persist."""
        with self._locked():
            d = self.data.setdefault(key, {})
            d.update(copy.deepcopy(items))
            self._state.save()

    def append(self, key: str, value: Any) -> None:
        """Append ``value`` to the list under ``key`` (unless already there) and persist."""
        with self._locked():
            lst = self.data.setdefault(key, [])
            if value not in lst:
                lst.append(copy.deepcopy(value))
            self._state.save()

    def forget(self, key: str) -> None:
        """Remove ``key`` (no error if absent) and persist."""
        with self._locked():
            if self.data.pop(key, None) is not None:
                self._state.save()


_NO_LOCK = contextlib.nullcontext()


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


def claim_env_dir(base: Path) -> Path:
    """Create and return a new ``<base>/enos_<UTC stamp>[-N]`` dir. ``mkdir`` is the claim:
    two enos starting in one second get two dirs (the second one a ``-2`` suffix). A
    missing ``base`` is created (``enos.up(..., base="runs/today")`` from a notebook).
    Raises StateUnwritable when ``base`` cannot be created or written."""
    base = Path(base)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StateUnwritable(str(base), e) from None
    stamp = utc_stamp()
    for n in range(1, 10000):
        d = base / (f"enos_{stamp}" if n == 1 else f"enos_{stamp}-{n}")
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise StateUnwritable(str(d), e) from None
        return d
    raise StateError(f"{base}: 10000 env dirs for {stamp}; remove some")


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
    """Return the env dir named by ``--env`` (or ``<base>/current``). Raises NoEnvironment
    (also for a symbolic link loop or a path that cannot be looked at), or StateDamaged
    (with the run id and the sweep command) for a dir that holds an earlier run's traces
    but no state file."""
    try:
        return _resolve_env(env, base)
    except (RuntimeError, OSError) as e:           # a link loop, a name too long, EACCES
        where = env if env else Path(base) / CURRENT
        raise NoEnvironment(f"no enos environment in {where}: {getattr(e, 'strerror', None) or e}") from None


def _resolve_env(env: Optional[str], base: Path) -> Path:
    if env:
        p = Path(env)
        if os.path.lexists(p / STATE_FILE):
            return p.resolve(strict=True)
        if os.path.lexists(p / CURRENT / STATE_FILE):
            return (p / CURRENT).resolve(strict=True)
        _refuse_traces(p)
        raise NoEnvironment(f"no enos environment in {p} (no {STATE_FILE}); run 'enos up' first")
    cur = Path(base) / CURRENT
    if cur.exists():
        if not os.path.lexists(cur / STATE_FILE):
            _refuse_traces(cur)
        return cur.resolve(strict=True)
    raise NoEnvironment(f"no current enos environment in {Path(base).resolve()} "
                        f"(no '{CURRENT}' link); run 'enos up' or pass --env DIR")


def _refuse_traces(env_dir: Path) -> None:
    env_dir = Path(env_dir).resolve()
    traces = previous_run_traces(env_dir)
    if traces:
        raise StateDamaged(str(Path(env_dir) / STATE_FILE),
                           f"{Path(env_dir) / STATE_FILE} is missing but {env_dir} holds traces of an "
                           f"earlier run ({', '.join(traces)}); {recovery_hint(Path(env_dir))}")
