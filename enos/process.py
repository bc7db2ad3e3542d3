"""Long-lived child processes of enos, recorded in the env dir before they start work.

Some children outlive the call that starts them unless someone ends them: ansible-runner
starts ``ansible-playbook`` in a session of its own with SIGHUP ignored, so a kill -9 of
``enos up`` orphans it (and its workers and their ``ssh``), and nothing else would ever
stop it. Each such child records itself (:func:`exec_recorded`: pid and the start time
the kernel gives in ``/proc/PID/stat``) in ``<env>/children/`` *before* it execs the real
program, so the record exists before the program does any work, whatever happens to enos.

:func:`end_recorded` (called by an interrupted enos, by ``enos destroy`` and by
``destroy --sweep``) ends every recorded child and everything it started: a process is
ended only if its pid *and* start time match the record, or if it started after the
recorded child and either belongs to the session that child leads or carries the child's
tag (``ENOS_CHILD_TAG=<pid>-<start>`` in its environment, set before the exec and
inherited by every descendant: Ansible's workers each call ``setsid()`` and are orphaned
when ``ansible-playbook`` dies, so neither the session nor the parent chain finds them).
Never by name or command line, so a recycled pid is never hit.

Every recorded child and its descendants also carry ``ENOS_RUN_ID=<run id>``: when the env
dir (and so the records) is gone, ``enos destroy --sweep --run-id R`` ends the processes
whose environment holds exactly that entry (:func:`end_run`).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

CHILDREN_DIR = "children"
#: environment variable naming the PID the wrapped child expects as its parent
PARENT_ENV = "ENOS_PARENT_PID"
#: environment variable tagging a recorded child and all its descendants
TAG_ENV = "ENOS_CHILD_TAG"
#: environment variable naming the run a recorded child (and its descendants) works for
RUN_ENV = "ENOS_RUN_ID"
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
    from enos.state import atomic_write
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


def _tagged(pid: int, tag: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return tag in f.read().split(b"\0")
    except OSError:
        return False


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
        elif (st.session == rec.pid and not recycled) or _tagged(st.pid, rec.tag):
            out.append(st.pid)
    return out


def end_run(run_id: str, timeout: float = 1.5) -> List[int]:
    """End (SIGKILL) every process whose environment holds exactly ``ENOS_RUN_ID=<run_id>``:
    the recorded children of that run and everything they started, found without the env
    dir (for ``destroy --sweep``). Return the pids that were ended; raises nothing."""
    tag = f"{RUN_ENV}={run_id}".encode()
    ended: List[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p, st in all_procs().items()
                if st.alive and p != os.getpid() and _tagged(p, tag)]
        if not pids or time.monotonic() >= deadline:
            return sorted(set(ended))
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
                ended.append(p)
            except (ProcessLookupError, PermissionError):
                pass
        _reap(pids)
        time.sleep(0.02)


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
    procs = all_procs()
    for r in records(env_dir):
        st = procs.get(r.pid)
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
    import ctypes
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
