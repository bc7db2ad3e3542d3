"""The processes of enos: one /proc reader, one run tag, one way to end them.

Every process enos looks for is found here, by what the kernel says about it — never by
name: :func:`proc_stat` / :func:`all_procs` (state, parent, group, session, start time),
:func:`start_time`, :func:`pids_tagged` (an exact ``NAME=VALUE`` entry of the environment),
:func:`pids_in_netns` (the network namespace), :func:`pids_with_arg` (one whole argument).
A pid plus its start time names one process for good, even after the pid is reused.

**One tag.** Every child enos starts that may outlive the call (ansible-playbook, vagrant)
gets ``ENOS_RUN_ID=<run id>`` in its environment (:func:`run_environ`), inherited by every
descendant: when the env dir is gone, ``enos destroy --sweep --run-id R`` ends the processes
carrying it (:func:`end_run`). Envs made before this module also tagged vagrant with
``ENOS_VAGRANT_RUN``: that tag is still recognised when reading.

**Recorded children.** Some children outlive the call that starts them unless someone ends
them: ansible-runner starts ``ansible-playbook`` in a session of its own with SIGHUP
ignored, so a kill -9 of ``enos up`` orphans it (and its workers and their ``ssh``), and
nothing else would ever stop it. Each such child records itself (:func:`exec_recorded`: pid
and start time) in ``<env>/children/`` *before* it execs the real program, so the record
exists before the program does any work, whatever happens to enos.

:func:`end_recorded` (called by an interrupted enos, by ``enos destroy`` and by
``destroy --sweep``) ends every recorded child and everything it started: a process is
ended only if its pid *and* start time match the record, or if it started after the
recorded child and either belongs to the session that child leads or carries the child's
tag (``ENOS_CHILD_TAG=<pid>-<start>`` in its environment, set before the exec and
inherited by every descendant: Ansible's workers each call ``setsid()`` and are orphaned
when ``ansible-playbook`` dies, so neither the session nor the parent chain finds them).

**Ending.** :func:`end_pids` (SIGTERM, a grace period, SIGKILL, reaping our own children),
:func:`end_run` and :func:`end_recorded` (SIGKILL: nothing of theirs needs saving).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence
from enos.state import atomic_write

CHILDREN_DIR = "children"
#: environment variable naming the PID the wrapped child expects as its parent
PARENT_ENV = "ENOS_PARENT_PID"
#: environment variable tagging a recorded child and all its descendants
TAG_ENV = "ENOS_CHILD_TAG"
#: environment variable naming the run a child enos starts (and its descendants) works for
RUN_ENV = "ENOS_RUN_ID"
#: tags of older enos versions, still recognised when looking for a run's processes
LEGACY_RUN_ENVS = ("ENOS_VAGRANT_RUN",)
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/PID/stat`` says about a process: state letter, parent, process group,
    session and start time (clock ticks after boot)."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    start: int

    @property
    def alive(self) -> bool:
        """True unless the process is a zombie (or dead)."""
        return self.state not in ("Z", "X")


def proc_stat(pid: int) -> Optional[ProcStat]:
    """Return the :class:`ProcStat` of ``pid``, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    try:
        rest = raw.rsplit(b")", 1)[1].split()
        return ProcStat(pid=pid, state=rest[0].decode(), ppid=int(rest[1]), pgrp=int(rest[2]),
                        session=int(rest[3]), start=int(rest[19]))
    except (IndexError, ValueError):
        return None


def all_procs() -> Dict[int, ProcStat]:
    """Return ``{pid: ProcStat}`` for every process of the machine (one /proc scan)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None:
                out[st.pid] = st
    return out


def pids() -> Iterator[int]:
    """Yield the pid of every process of the machine but this one."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            yield int(entry)


def start_time(pid: int) -> Optional[int]:
    """Return the start time of ``pid`` (clock ticks after boot, /proc/PID/stat field 22),
    or None if it does not exist."""
    st = proc_stat(pid)
    return st.start if st is not None else None


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (reaping it first if it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    st = proc_stat(pid)
    return st is not None and st.alive


def has_environ_entry(pid: int, entry: bytes) -> bool:
    """True if the environment of ``pid`` holds exactly ``entry`` (``b"NAME=VALUE"``)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:
        return False


def pids_tagged(entries: Sequence[bytes]) -> List[int]:
    """Return the live pids (this one excepted) whose environment holds one of ``entries``."""
    out = []
    for pid in pids():
        st = proc_stat(pid)
        if st is not None and st.alive and any(has_environ_entry(pid, e) for e in entries):
            out.append(pid)
    return out


def run_environ(run_id: str, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Return ``base`` (default: this process's environment) plus the run tag
    ``ENOS_RUN_ID=<run_id>``, for a child enos starts."""
    env = dict(os.environ if base is None else base)
    env[RUN_ENV] = run_id
    return env


def run_tags(run_id: str) -> List[bytes]:
    """The environment entries that mark a process of run ``run_id`` (today's and older)."""
    return [f"{name}={run_id}".encode() for name in (RUN_ENV,) + LEGACY_RUN_ENVS]


def pids_of_run(run_id: str) -> List[int]:
    """Return the live processes carrying the tag of ``run_id`` ([] for an empty run id)."""
    return pids_tagged(run_tags(run_id)) if run_id else []


def _netns_id(path: str) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def same_netns(pid: int, netns_path: str) -> bool:
    """True if process ``pid`` lives in the network namespace bound at ``netns_path``."""
    a = _netns_id(f"/proc/{pid}/ns/net")
    return a is not None and a == _netns_id(netns_path)


def pids_in_netns(paths: Mapping[str, str]) -> Dict[str, List[int]]:
    """Return ``{name: [pids]}``: the processes living in each network namespace of
    ``paths`` (name → its bind-mount path; one scan; a namespace that is gone maps to [])."""
    by_id = {}
    for name, path in paths.items():
        ident = _netns_id(path)
        if ident is not None:
            by_id[ident] = name
    out: Dict[str, List[int]] = {n: [] for n in paths}
    if by_id:
        for pid in pids():
            ident = _netns_id(f"/proc/{pid}/ns/net")
            if ident in by_id:
                out[by_id[ident]].append(pid)
    return out


def pids_with_arg(match: Callable[[str], bool]) -> List[int]:
    """Return the pids (this one excepted) one of whose command-line arguments, taken
    whole, satisfies ``match`` — an exact test on an argument, never a substring of the
    whole command line."""
    out = []
    for pid in pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if any(match(a.decode(errors="replace")) for a in args if a):
            out.append(pid)
    return out


def end_pids(targets: Iterable[int], grace: float = 2.0) -> List[int]:
    """Send SIGTERM to ``targets``, wait up to ``grace`` seconds, SIGKILL the survivors and wait
    again; reap those that are our children. Return the pids still alive at the end
    (normally [])."""
    left = [p for p in set(targets) if p != os.getpid()]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for p in left:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while True:
            left = [p for p in left if alive(p)]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if not left:
            break
    return left


@dataclass(frozen=True)
class ChildRecord:
    """A recorded child: its pid, its start time, and what it is (for messages)."""

    pid: int
    start: int
    what: str

    @property
    def name(self) -> str:
        """File name of the record in ``<env>/children/``."""
        return f"{self.pid}-{self.start}.json"

    @property
    def tag(self) -> bytes:
        """The ``NAME=VALUE`` environment entry its descendants carry."""
        return f"{TAG_ENV}={self.pid}-{self.start}".encode()

    def describe(self) -> str:
        """Return e.g. ``ansible-playbook (pid 123)``."""
        return f"{self.what} (pid {self.pid})"


def children_dir(env_dir: Path) -> Path:
    """Return ``<env>/children`` (not created)."""
    return Path(env_dir) / CHILDREN_DIR


def record_process(env_dir: Path, pid: int, what: str) -> ChildRecord:
    """Record process ``pid`` (with its current start time) in ``<env>/children/``; return
    the record. Raises ProcessLookupError if it does not exist, OSError if the record cannot
    be written."""
    st = proc_stat(pid)
    if st is None:
        raise ProcessLookupError(pid)
    rec = ChildRecord(pid=pid, start=st.start, what=what)
    d = children_dir(env_dir)
    d.mkdir(mode=0o700, exist_ok=True)
    atomic_write(d / rec.name, json.dumps({"pid": rec.pid, "start": rec.start, "what": rec.what}) + "\n")
    return rec


def records(env_dir: Path) -> List[ChildRecord]:
    """Return the children recorded in ``env_dir`` (unreadable records are skipped)."""
    out = []
    d = children_dir(env_dir)
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    for n in names:
        if not n.endswith(".json"):
            continue
        try:
            data = json.loads((d / n).read_text())
            out.append(ChildRecord(pid=int(data["pid"]), start=int(data["start"]), what=str(data.get("what", "?"))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _members(rec: ChildRecord, procs: Dict[int, ProcStat]) -> List[int]:
    """The live processes that belong to ``rec``: itself when pid and start time match, and
    every process started no earlier than it that carries its tag or belongs to the session
    it leads (the kernel never gives a new process a pid still used as a session id)."""
    out = []
    leader = procs.get(rec.pid)
    recycled = leader is not None and leader.start != rec.start
    for st in procs.values():
        if not st.alive or st.pid == os.getpid() or st.start < rec.start:
            continue
        if st.pid == rec.pid:
            if not recycled:
                out.append(st.pid)
        elif (st.session == rec.pid and not recycled) or has_environ_entry(st.pid, rec.tag):
            out.append(st.pid)
    return out


def end_run(run_id: str, timeout: float = 1.5) -> List[int]:
    """End (SIGKILL) every process carrying the tag of ``run_id`` (``ENOS_RUN_ID=<run_id>``,
    or an older enos' ``ENOS_VAGRANT_RUN=<run_id>``): the children of that run and everything
    they started, found without the env dir (``destroy --sweep``, vagrant's destroy). Waits
    up to ``timeout`` seconds for them to go; returns the pids that were ended ([] for an
    empty run id); raises nothing."""
    ended: List[int] = []
    deadline = time.monotonic() + timeout
    while run_id:
        found = pids_of_run(run_id)
        if not found or time.monotonic() >= deadline:
            break
        for p in found:
            try:
                os.kill(p, signal.SIGKILL)
                ended.append(p)
            except (ProcessLookupError, PermissionError):
                pass
        _reap(found)
        time.sleep(0.02)
    return sorted(set(ended))


def _reap(pids: Sequence[int]) -> None:
    for p in pids:
        try:
            os.waitpid(p, os.WNOHANG)
        except ChildProcessError:
            pass


def forget_finished(env_dir: Path) -> None:
    """Delete the records of children that exited (their pid is gone or recycled); the
    processes they started and left running (e.g. SSH connection masters) are kept.
    Returns None; raises nothing."""
    for r in records(env_dir):
        st = proc_stat(r.pid)       # the recorded pids only: no scan of the whole /proc
        if st is None or st.start != r.start or not st.alive:
            try:
                (children_dir(env_dir) / r.name).unlink()
            except OSError:
                pass


def end_recorded(env_dir: Path, timeout: float = 1.5, only: Optional[Sequence[ChildRecord]] = None) -> List[str]:
    """End every recorded child of ``env_dir`` (or the records ``only``) with everything it
    started (SIGKILL: a playbook has nothing to save), and delete the records of those
    that are gone. Return descriptions of what is still alive after ``timeout`` seconds
    (normally []); raises nothing."""
    recs = list(only) if only is not None else records(env_dir)
    if not recs:
        return []
    deadline = time.monotonic() + timeout
    left: Dict[ChildRecord, List[int]] = {}
    while True:
        procs = all_procs()
        left = {r: _members(r, procs) for r in recs}
        left = {r: m for r, m in left.items() if m}
        for r in recs:
            if r not in left:
                try:
                    (children_dir(env_dir) / r.name).unlink()
                except OSError:
                    pass
        recs = list(left)
        if not recs or time.monotonic() >= deadline:
            break
        for pids in left.values():
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            _reap(pids)
        time.sleep(0.02)
    return [f"{r.describe()} and {len(m) - 1} other process(es) of its session" if len(m) > 1
            else r.describe() for r, m in left.items()]


def _set_parent_death_signal(sig: int) -> None:
    import ctypes            # lazily: ~10 ms, only the wrapped child needs it
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def exec_recorded(env_dir: Path, what: str, argv: Sequence[str]) -> None:
    """Become ``argv`` after recording this process in ``env_dir`` (never returns).

    The process asks the kernel for SIGTERM when its parent dies, and exits at once (code
    1) if the parent named by ``$ENOS_PARENT_PID`` is already gone. Raises OSError if the
    program cannot be executed."""
    parent = os.environ.pop(PARENT_ENV, None)
    _set_parent_death_signal(signal.SIGTERM)
    if parent and os.getppid() != int(parent):
        sys.exit(1)             # enos died before we could record ourselves: do nothing
    rec = record_process(env_dir, os.getpid(), what)
    os.environ[TAG_ENV] = rec.tag.decode().split("=", 1)[1]
    os.execvp(argv[0], list(argv))


def write_wrapper(path: Path, env_dir: Path, program: str, what: str) -> Path:
    """Write an executable script at ``path`` that runs ``program`` (with the script's own
    arguments) through :func:`exec_recorded`; return ``path``. For tools that take the path
    of a program but no argv prefix (ansible-runner's ``binary``)."""
    text = (f"#!{sys.executable}\n"
            "# written by enos: records this process in the env dir, then becomes the program\n"
            "import sys\n"
            f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
            "from enos.process import exec_recorded\n"
            f"exec_recorded({str(env_dir)!r}, {what!r}, [{program!r}] + sys.argv[1:])\n")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o700)
    os.replace(tmp, path)
    return path
