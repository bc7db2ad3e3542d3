"""The harness' core: one :class:`Run` is one real ``enos`` process (``python -m enos``)
started in its own directory and session, with a time limit and a memory limit; its
:class:`Outcome` says what went wrong (traceback, hang, exit code, message, leftovers)."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent.parent
NETGUARD = ROOT / "tests" / "netguard"
#: an enos process may use this much address space (a hostile template must not eat the
#: shared machine's memory: past it, Python raises MemoryError instead)
MEMORY_LIMIT = 3 << 30
#: files the hostile inputs try to create through an injection; any of them existing is a breach
PWNED = Path("/tmp/enos-hostile-pwned")

#: directories of the machine whose mode and entries no run may change (checked around
#: every run: a change is a leftover)
WATCHED = (Path("/"), Path("/sys/kernel"), Path("/tmp"))

#: how the process' standard streams are set up
STREAMS = ("pipe", "full", "closed", "stderr-closed", "both-closed", "sigpipe", "stderr-full")


@dataclass
class Run:
    """One ``enos`` command: ``kind`` (reservation, campaign, option, output, state), the
    ``input`` it feeds (several runs may share one), ``argv`` after ``enos``, the exit codes
    it may give (``expect``), words its stderr must contain (``words``), stream set-up."""

    kind: str
    input: str
    command: str
    argv: List[str]
    cwd: Path
    expect: Tuple[int, ...] = (2,)
    words: Sequence[str] = ()
    streams: str = "pipe"
    env: Dict[str, str] = field(default_factory=dict)
    timeout: float = 45.0
    creates_nothing: bool = True
    #: with ``creates_nothing``: only new names starting with this count (runs of other
    #: files share the directory and run at the same time); None: every new name
    own: Optional[str] = None
    #: extra checks after the run: return a list of problems (leftovers, a failed recovery)
    after: Optional[Callable[["Run", "Outcome"], List[str]]] = None


@dataclass
class Outcome:
    """What one run did: exit code (None if it hung), output, time, problems found."""

    run: Run
    rc: Optional[int]
    stdout: str
    stderr: str
    seconds: float
    traceback: bool = False
    hang: bool = False
    wrong_exit: bool = False
    missing_words: List[str] = field(default_factory=list)
    leftovers: List[str] = field(default_factory=list)
    other: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.traceback or self.hang or self.wrong_exit or self.missing_words
                    or self.leftovers or self.other)

    def summary(self) -> str:
        what = []
        if self.hang:
            what.append(f"hang (> {self.run.timeout:.0f} s)")
        if self.traceback:
            what.append("traceback")
        if self.wrong_exit:
            what.append(f"exit {self.rc}, expected {'/'.join(map(str, self.run.expect))}")
        if self.missing_words:
            what.append(f"message lacks {self.missing_words[0]!r}")
        what += [f"leftover {x}" for x in self.leftovers] + self.other
        return "; ".join(what)


def base_env() -> Dict[str, str]:
    """The environment of every run: this interpreter's, no failpoints, the network guard
    (tests/netguard) on, a UTF-8 locale unless a run says otherwise."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("ENOS_FAILPOINT", "PYTHONIOENCODING"))}
    e["PYTHONPATH"] = os.pathsep.join([str(NETGUARD), os.environ.get("ENOS_HOSTILE_SRC") or str(ROOT)])
    e["ENOS_NETGUARD"] = "1"
    e.setdefault("ENOS_NETGUARD_LOG", os.environ.get("ENOS_NETGUARD_LOG", ""))
    e.setdefault("LC_ALL", "C.UTF-8")
    e.pop("CI", None)
    return e


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


_SHELL = {
    "closed": 'exec "$@" >&-',
    "stderr-closed": 'exec "$@" 2>&-',
    "both-closed": 'exec "$@" >&- 2>&-',
    "full": 'exec "$@" >/dev/full',
    "stderr-full": 'exec "$@" 2>/dev/full',
    "sigpipe": '"$@" | head -c 1 >/dev/null; exit "${PIPESTATUS[0]}"',
}


def command_line(run: Run) -> List[str]:
    """Return the argv that starts ``run`` with its streams set up."""
    argv = [sys.executable, "-m", "enos", *run.argv]
    if run.streams == "pipe":
        return argv
    return ["/bin/bash", "-c", _SHELL[run.streams], "bash", *argv]


def execute(run: Run) -> Outcome:
    """Start ``run``, wait at most its timeout (then kill its whole session: a hang), and
    return its :class:`Outcome` (checks of exit code, traceback and words; not leftovers)."""
    env = base_env()
    env.update(run.env)
    before = _listing(run.cwd) if run.creates_nothing else None
    machine = _machine()
    t0 = time.monotonic()
    p = subprocess.Popen(command_line(run), cwd=str(run.cwd), env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                         preexec_fn=_limits)
    hang = False
    try:
        out, err = p.communicate(timeout=run.timeout)
    except subprocess.TimeoutExpired:
        hang = True
        _kill_session(p)
        out, err = p.communicate()
    seconds = time.monotonic() - t0
    o = Outcome(run=run, rc=None if hang else p.returncode, seconds=seconds,
                stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"), hang=hang)
    text = o.stdout + o.stderr
    o.traceback = "Traceback (most recent call last)" in text or "Exception ignored" in text
    o.wrong_exit = not hang and o.rc not in run.expect
    if not hang and run.streams not in ("stderr-closed", "both-closed", "stderr-full"):
        o.missing_words = [w for w in run.words if w not in o.stderr]
    if before is not None and not hang:
        _kill_session(p)
    if before is not None:
        o.leftovers += [f"file {x}" for x in sorted(_listing(run.cwd) - before)
                        if run.own is None or x.startswith(run.own)]
    o.leftovers += _machine_changes(machine, _machine())
    if PWNED.exists():
        o.leftovers.append(f"file {PWNED} (an injection ran)")
        PWNED.unlink()
    if run.after is not None:
        o.other += run.after(run, o)
    return o


def _kill_session(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _listing(d: Path) -> set:
    """Names under ``d`` (two levels), the way a user would see new files appear."""
    out = set()
    try:
        for a in os.scandir(d):
            out.add(a.name)
            if a.is_dir(follow_symlinks=False):
                try:
                    out.update(f"{a.name}/{b.name}" for b in os.scandir(a.path))
                except OSError:
                    pass
    except OSError:
        pass
    return out


def _machine() -> dict:
    """The modes of :data:`WATCHED`, and the entries of ``/`` (a run must not write there)."""
    modes = {}
    for d in WATCHED:
        try:
            modes[str(d)] = os.stat(d).st_mode
        except OSError:
            modes[str(d)] = None
    return {"modes": modes, "root": set(os.listdir("/"))}


def _machine_changes(before: dict, after: dict) -> List[str]:
    """Return what a run changed of the machine: a watched dir's mode, a new entry in /."""
    out = [f"mode of {d} changed from {before['modes'][d]:o} to {m:o}"
           for d, m in after["modes"].items() if m != before["modes"][d] and None not in (m, before["modes"][d])]
    out += [f"file /{n} (written into the filesystem root)" for n in sorted(after["root"] - before["root"])]
    return out
