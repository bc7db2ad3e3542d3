"""A persistent, resumable sweep over parameter combinations, on execo's ``ParamSweeper``
(``env.sweep({...}, results=DIR)`` in a script; ``enos campaign`` runs on it too).

Each element is one run: a combination plus its repetition number (``repeat``, from 1).
The state lives in ``<results>/sweep/`` (execo's pickles: ``done``, ``inprogress``,
``sweeps``) and the failures in ``<results>/failures/`` (JSON, one file per run).

What this adds to execo (measured facts of execo 2.8.2, see docs/campaigns.md):

* **deterministic order**: ``get_next`` takes the first remaining run in the order of the
  file (first parameter slowest, repetitions innermost), whatever ``PYTHONHASHSEED``;
* **a run in progress when its process died is redone**: the owner of the results dir
  (it holds the lock, so nobody else is running) calls ``reset(reset_inprogress=True)``
  and ``full_update()`` before the first ``get_next``;
* **one owner**: an exclusive lock ``<results>/.lock`` holding the owner's pid; a second
  campaign on the same dir fails with :class:`~enos.errors.CampaignLocked`;
* **failures**: a failed run is ``skip``-ped (not retried in this process, retried by the
  next one) and its error is written to ``failures/``; a success removes it.

``execo_engine`` is imported here only, lazily (it loads all of execo and starts a thread).
"""
from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import pickle
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from enos import render
from enos.errors import CampaignLocked, StateLocked, UsageError
from enos.frames import pandas
from enos.state import Lock, atomic_write

REPEAT = "repeat"
#: what :meth:`SweepRun.record` writes in a run's directory
MEASURED = "measured.json"


def combination_id(combo: Dict[str, Any]) -> str:
    """Return the directory name of a combination: ``name=value`` pairs joined by ``,``
    in parameter order, with characters unsafe in a file name replaced by ``_``."""
    parts = [f"{k}={v}" for k, v in combo.items()]
    return re.sub(r"[^A-Za-z0-9=,._+-]", "_", ",".join(parts)) or "default"


def combinations(parameters: Dict[str, Sequence[Any]],
                 exclude: Sequence[Dict[str, Any]] = ()) -> List[Dict[str, Any]]:
    """Return every combination of ``parameters`` (name → list of values; the first
    varies slowest) except those matching an ``exclude`` entry (a partial combination,
    a value or a list of values per name). Raises UsageError for a malformed sweep."""
    if not isinstance(parameters, dict) or not parameters:
        raise UsageError("sweep: expected a non-empty mapping of parameter → list of values")
    for name, values in parameters.items():
        if not isinstance(name, str) or name == REPEAT:
            raise UsageError(f"sweep: {name!r} cannot be a parameter name")
        if not isinstance(values, (list, tuple)) or not values:
            raise UsageError(f"sweep: parameter '{name}': expected a non-empty list of values")
    rules = []
    for ex in exclude or ():
        if not isinstance(ex, dict) or not set(ex) <= set(parameters):
            raise UsageError(f"sweep: exclude {ex!r} names no parameter of {', '.join(parameters)}")
        rules.append({k: v if isinstance(v, (list, tuple)) else [v] for k, v in ex.items()})
    names = list(parameters)
    out = []
    for values in itertools.product(*(parameters[n] for n in names)):
        combo = dict(zip(names, values))
        if not any(all(combo[k] in vs for k, vs in rule.items()) for rule in rules):
            out.append(combo)
    return out


def sweep(parameters: Dict[str, Sequence[Any]], results, repeat: int = 1,
          exclude: Optional[Sequence[Dict[str, Any]]] = None) -> "SweepLoop":
    """Return a :class:`SweepLoop`: iterating it yields every combination of ``parameters``
    × ``repeat`` (key ``repeat``, from 1) not done yet in ``results``, in a fixed order,
    each a :class:`SweepRun` (a dict, with its own directory ``.dir`` and ``.record()``);
    a combination is done when the loop body returns. If the script dies (or raises)
    inside the body, that combination is redone by the next run of the script; what was
    measured is kept (``loop.results()``), also when a re-run has nothing left to do.
    Raises UsageError for an empty or malformed sweep; iterating raises CampaignLocked if
    another live process owns ``results``."""
    return SweepLoop(Sweep(results, combinations(parameters, exclude or ()), repeat))


class SweepRun(dict):
    """One run of a sweep: its parameters and ``repeat`` (it is a dict), ``dir`` (its own
    directory, ``<results>/runs/<combination>/<repeat>/``, emptied when the run starts)
    and :meth:`record` to keep what it measured."""

    def __init__(self, run: Dict[str, Any], directory: Path):
        super().__init__(run)
        self.dir = directory

    def record(self, **values: Any) -> Dict[str, Any]:
        """Keep ``values`` (JSON-serialisable) as this run's measurements
        (``<dir>/measured.json``, merged with what was recorded before); return them all.
        Raises UsageError for a value JSON cannot hold."""
        path = self.dir / MEASURED
        data = json.loads(path.read_text()) if path.is_file() else {}
        data.update(values)
        try:
            text = json.dumps(data, indent=2, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise UsageError(f"sweep: record(): {e}") from None
        atomic_write(path, text, mode=0o644)
        return data


class SweepLoop:
    """What :func:`sweep` (``env.sweep``) returns: iterate it to do the runs left;
    :meth:`results` gives what every finished run recorded (earlier sessions included),
    :meth:`to_dataframe` the same as a DataFrame; ``stats()`` the counts."""

    def __init__(self, sweep_: "Sweep"):
        self.sweep = sweep_
        self.ran = 0

    def __iter__(self) -> Iterator[SweepRun]:
        s = self.sweep.open()
        try:
            for one in s:
                d = s.run_dir(one)
                if d.exists():
                    shutil.rmtree(d)
                d.mkdir(parents=True)
                self.ran += 1
                yield SweepRun(one, d)
                s.done(one)
        finally:
            s.close()
        if self.ran == 0:
            st = self.sweep.stats()
            print(f"sweep: nothing left to do in {self.sweep.results}: {st['done']} of {st['total']} run(s) "
                  f"done earlier ({st['failed']} failed); their measurements: .results()", file=sys.stderr)

    def results(self) -> List[Dict[str, Any]]:
        """Return, for every run recorded done, in the sweep's order, its parameters,
        ``repeat``, ``dir`` and what it recorded."""
        done = self.sweep.done_keys()
        out = []
        for run in self.sweep.runs:
            if run_key(run) not in done:
                continue
            d = self.sweep.run_dir(run)
            try:
                measured = json.loads((d / MEASURED).read_text())
            except (OSError, ValueError):
                measured = {}
            out.append(dict(run, dir=str(d), **measured))
        return out

    def to_dataframe(self):
        """Return :meth:`results` as a pandas DataFrame. Raises MissingDependency without pandas."""
        return pandas("sweep results").DataFrame(self.results())

    def stats(self) -> Dict[str, Any]:
        """Return the counts (see :meth:`Sweep.stats`)."""
        return self.sweep.stats()

    def __repr__(self) -> str:
        st = self.sweep.stats()
        return f"<sweep {self.sweep.results}: {st['done']}/{st['total']} done, {st['failed']} failed>"

    def _repr_html_(self) -> str:
        rows = self.results()
        cols = [c for c in dict.fromkeys(k for r in rows for k in r) if c != "dir"]
        return render.table(cols, [[r.get(c) for c in cols] for r in rows], caption=repr(self),
                            css_class="enos-sweep")


def run_dir(results, run: Dict[str, Any]) -> Path:
    """Return the directory of ``run`` in ``results``: ``<results>/runs/<combination id>/<repeat>``."""
    combo = {k: v for k, v in run.items() if k != REPEAT}
    return Path(results) / "runs" / combination_id(combo) / str(run[REPEAT])


def run_key(run: Dict[str, Any]) -> str:
    """Return the file-name key of a run: ``<combination id>__<repeat>``."""
    combo = {k: v for k, v in run.items() if k != REPEAT}
    return f"{combination_id(combo)}__{run[REPEAT]}"


class Sweep:
    """The runs of a sweep (combinations × repetitions) persisted in ``results``.

    ``Sweep(results, combinations, repeat)`` — use :meth:`open` to take the lock, then
    iterate (``for run in sweep``) and call :meth:`done` or :meth:`failed` for each run.
    Reading the counts (:meth:`stats`) needs no lock."""

    def __init__(self, results, combinations: List[Dict[str, Any]], repeat: int = 1):
        self.results = Path(results)
        self.combinations = [dict(c) for c in combinations]
        self.repeat = int(repeat)
        if not self.combinations or self.repeat < 1:
            raise UsageError("empty sweep: no combination to run")
        self.runs: List[Dict[str, Any]] = [dict(c, **{REPEAT: r}) for c in self.combinations
                                           for r in range(1, self.repeat + 1)]
        self._order = [self._hashable(r) for r in self.runs]
        self._cursor, self._remaining = 0, 0
        self._sweeper = None
        self._lock = None
        self.current: Optional[Dict[str, Any]] = None

    # --- state -------------------------------------------------------------------
    @staticmethod
    def _hashable(run):
        from execo_engine import HashableDict
        return HashableDict(run)

    def _new_sweeper(self):
        from execo_engine import ParamSweeper
        logging.getLogger("execo_engine").setLevel(logging.WARNING)
        return ParamSweeper(str(self.results / "sweep"), sweeps=self._order, save_sweeps=True,
                            name="enos-campaign")

    def run_dir(self, run: Dict[str, Any]) -> Path:
        """Return the directory of ``run`` (see :func:`run_dir`)."""
        return run_dir(self.results, run)

    @property
    def failures_dir(self) -> Path:
        """Directory of the failure records (one JSON file per failed run)."""
        return self.results / "failures"

    def open(self) -> "Sweep":
        """Take the results dir's lock and make every run that was in progress (its process
        died) runnable again; return self. Raises CampaignLocked if another live process
        owns the dir."""
        self.results.mkdir(parents=True, exist_ok=True)
        lock = Lock(self.results)
        try:
            lock.acquire()
        except StateLocked as e:
            raise CampaignLocked(str(self.results), e.pid) from None
        self._lock = lock
        try:
            self._sweeper = self._new_sweeper()
            self._sweeper.reset(reset_inprogress=True)
            self._sweeper.full_update()
            self._write_meta()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Release the lock (idempotent). A run still in progress stays in progress on disk
        (the next owner redoes it)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def _write_meta(self) -> None:
        meta_path = self.results / "sweep.json"
        meta = {}
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except ValueError:
                meta = {}
        meta.setdefault("started", time.time())
        meta["total"] = len(self.runs)
        meta["sessions"] = meta.get("sessions", 0) + 1
        meta["owner"] = os.getpid()
        atomic_write(meta_path, json.dumps(meta, indent=2), mode=0o644)

    # --- iteration ---------------------------------------------------------------
    def _first(self, remaining):
        """ParamSweeper's filter: the first run of ``remaining`` in the file's order. Runs
        leave ``remaining`` for good in this process (done, in progress, failed) unless
        the sweep's state is reloaded (``remaining`` then grows, and the cursor rewinds),
        so a cursor walks past them: O(1) per step, where sorting ``remaining`` each time
        cost O(N log N) (3-4 ms per step at 1,000 runs)."""
        if len(remaining) > self._remaining:
            self._cursor = 0
        self._remaining = len(remaining) - 1     # get_next takes the one returned
        while self._cursor < len(self._order):
            run = self._order[self._cursor]
            if run in remaining:
                return [run]
            self._cursor += 1
        return []

    def next(self) -> Optional[Dict[str, Any]]:
        """Return the next run to do (marked in progress on disk), or None when none is left."""
        if self._sweeper is None:
            raise RuntimeError("Sweep.open() first")
        run = self._sweeper.get_next(self._first)
        self.current = dict(run) if run is not None else None
        return self.current

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        while True:
            run = self.next()
            if run is None:
                return
            yield run

    def done(self, run: Dict[str, Any]) -> None:
        """Mark ``run`` done (never redone) and forget an earlier failure of it."""
        self._sweeper.done(self._hashable(run))
        (self.failures_dir / f"{run_key(run)}.json").unlink(missing_ok=True)

    def failed(self, run: Dict[str, Any], error: str) -> None:
        """Record ``run``'s error; it is not retried by this process (the next
        ``campaign run`` retries it)."""
        self.failures_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.failures_dir / f"{run_key(run)}.json",
                     json.dumps({"run": run, "error": error, "time": time.time()}, indent=2, default=str),
                     mode=0o644)
        self._sweeper.skip(self._hashable(run))

    # --- counts ------------------------------------------------------------------
    def undo(self, runs: Sequence[Dict[str, Any]]) -> None:
        """Forget that ``runs`` were done (they will be run again). Only by the owner of the
        results dir (after :meth:`open`): execo's ``done`` file is rewritten without them
        (atomically) and reloaded."""
        if self._sweeper is None:
            raise RuntimeError("Sweep.open() first")
        drop = {run_key(dict(r)) for r in runs}
        done, _ = _read_pickles(self.results / "sweep")
        keep = b"".join(pickle.dumps(r) for r in done if run_key(dict(r)) not in drop)
        atomic_write(self.results / "sweep" / "done", keep, mode=0o644)
        self._sweeper.full_update()

    def done_keys(self) -> set:
        """Return the keys (:func:`run_key`) of the runs recorded done on disk (no lock
        needed)."""
        sweep_dir = self.results / "sweep"
        if not ((sweep_dir / "done").exists() or (sweep_dir / "inprogress").exists()):
            return set()
        done, _ = _read_pickles(sweep_dir)
        return {run_key(dict(r)) for r in done}

    def stats(self) -> Dict[str, Any]:
        """Return ``{done, remaining, in_progress, failed, total, failures: [...], elapsed}``
        from the files (no lock needed). ``in_progress`` counts runs started by a process
        that has not finished them (redone if that process is gone); ``failed`` the runs
        whose last attempt failed (retried by the next ``campaign run``); ``remaining`` the
        runs never tried. The four add up to ``total``."""
        done = set()
        inprogress = set()
        sweep_dir = self.results / "sweep"
        if (sweep_dir / "done").exists() or (sweep_dir / "inprogress").exists():
            done, inprogress = _read_pickles(sweep_dir)
        keys = {run_key(r): r for r in self.runs}
        done_keys = {run_key(dict(r)) for r in done} & set(keys)
        prog_keys = {run_key(dict(r)) for r in inprogress} & set(keys)
        failures, failed_keys = [], set()
        if self.failures_dir.is_dir():
            for f in sorted(self.failures_dir.glob("*.json")):
                try:
                    rec = json.loads(f.read_text())
                except ValueError:
                    continue
                if f.stem in keys and f.stem not in done_keys and f.stem not in prog_keys:
                    failures.append(rec)
                    failed_keys.add(f.stem)
        meta = {}
        try:
            meta = json.loads((self.results / "sweep.json").read_text())
        except (OSError, ValueError):
            pass
        elapsed = _elapsed(self.results)
        total = len(self.runs)
        # each run counts once: done, in progress, failed (retried by the next run) or remaining
        return {"done": len(done_keys), "remaining": total - len(done_keys) - len(prog_keys) - len(failed_keys),
                "in_progress": len(prog_keys), "failed": len(failed_keys), "total": total,
                "elapsed": round(elapsed, 1), "started": meta.get("started"),
                "owner": _live_owner(self.results), "failures": failures}


def _read_pickles(sweep_dir: Path):
    """Return (done set, inprogress set) as execo wrote them (read under its flocks)."""
    done, inprogress = [], set()
    path = sweep_dir / "done"
    if path.exists():
        with open(path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            while True:
                try:
                    done.append(pickle.load(f))
                except Exception:  # a torn last record (kill -9 while writing) ends the file
                    break
    path = sweep_dir / "inprogress"
    if path.exists():
        with open(path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            try:
                inprogress = pickle.load(f)
            except Exception:
                inprogress = set()
    return done, inprogress


def _elapsed(results: Path) -> float:
    """Return the seconds spent running (sum of the runs' durations)."""
    total = 0.0
    runs = results / "runs"
    if runs.is_dir():
        for t in runs.glob("*/*/timing.json"):
            try:
                total += float(json.loads(t.read_text()).get("duration") or 0)
            except (OSError, ValueError):
                pass
    return total


def _live_owner(results: Path) -> Optional[int]:
    """Return the pid holding the results dir's lock, or None."""
    path = results / ".lock"
    if not path.exists():
        return None
    fd = os.open(str(path), os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                return int(os.read(fd, 32).decode().strip() or 0) or None
            except ValueError:
                return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
