"""Hostile input and damaged state through the REAL ``enos`` command (issues 11 and 23).

    sudo .venv/bin/python bench/hostile_inputs.py [--only KIND,...] [--jobs 2] [--json FILE]

Every run is one ``python -m enos`` process in its own session, with the network guard of
the test suite (tests/netguard), a time limit (a hang is killed with its whole session and
counted) and a 3 GiB address-space limit (a template bomb gets MemoryError, not the shared
machine's memory). Kinds (``--only``):

  reservation  hostile files (FIFO, /dev/zero, 60 MB, bombs, tags, encodings...) and every
               key of every provider x 22 hostile values: ``validate``; ``up`` for what
               validate refuses (must refuse it too, creating nothing); files also ``check``
  campaign     hostile files, template bombs and sandbox escapes, sweeps too large to
               enumerate, every field: ``campaign validate|status|report|run --env``
  option       every numeric option, --env DIR, -f FILE, -o FORMAT given hostile values
  output       stdout /dev/full, closed, SIGPIPE; stderr closed or full; ASCII locale
  state        48 kinds of damaged state, each on a fresh REAL local env (namespace hosts):
               info, inventory, run, backup, up, destroy; the printed recovery run AS
               PRINTED; what is left of the run id counted (namespaces, links, processes,
               SSH socket dir); decoy resources named in the journal must survive

A run fails when it prints a traceback, hangs, exits with a code it should not, lacks the
words its message must carry, or leaves something (a file where it should create nothing,
an injected file, the run id's resources after the recovery). Prints the counts per kind
and every failure; exit 0 only when there is none. ``--json FILE`` keeps every outcome.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from hostile import campaigns, damaged, envs, options, output, probe, reservations  # noqa: E402
from hostile.core import Outcome, execute  # noqa: E402

KINDS = ("reservation", "campaign", "option", "output", "state")


def _guard_log() -> str:
    fd, path = tempfile.mkstemp(prefix="enos-hostile-netguard-", suffix=".log")
    os.close(fd)
    os.environ["ENOS_NETGUARD_LOG"] = path
    return path


def _batch(runs, jobs: int, label: str):
    outcomes = []
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for i, o in enumerate(pool.map(execute, runs), 1):
            outcomes.append(o)
            if i % 100 == 0 or i == len(runs):
                bad = sum(not x.ok for x in outcomes)
                print(f"  {label}: {i}/{len(runs)} runs, {bad} failing, {time.monotonic() - t0:.0f} s",
                      file=sys.stderr, flush=True)
    return outcomes


def run_all(kinds, jobs: int, work: Path, only_state=None, sample: int = 1):
    """Run the selected kinds; return every Outcome."""
    outcomes = []
    static_dir = work / "static"
    static_env = envs.static_env(static_dir)
    live = None
    try:
        if "reservation" in kinds:
            res = _batch(reservations.runs(work, sample), jobs, "reservation (validate, check)")
            res += _batch(reservations.up_runs(res), jobs, "reservation (up)")
            outcomes += res
        if "campaign" in kinds:
            outcomes += _batch(campaigns.runs(work, static_env), jobs, "campaign")
        if "option" in kinds:
            outcomes += _batch(options.runs(work / "options", static_env), jobs, "option")
        if "output" in kinds:
            live, live_id = envs.local_env(work / "live")
            outcomes += _batch(output.runs(static_dir, static_env, live), jobs, "output")
        if "state" in kinds:
            def note(res):
                bad = [o for o in res if not o.ok]
                print(f"  state: {res[0].run.input}: {len(res)} runs, {len(bad)} failing",
                      file=sys.stderr, flush=True)
            outcomes += damaged.runs_all(work / "state", only_state, note)
    finally:
        if live is not None:
            envs.destroy(work / "live", live)
        for run_id in _run_ids(work):
            probe.force_clean(run_id)
    return outcomes


def _run_ids(work: Path):
    """The run ids of every env the runs created under ``work`` (their socket dirs and
    anything else named after them are removed at the end)."""
    import re
    ids = set()
    for root, dirs, names in os.walk(work):
        for n in names:
            p = os.path.join(root, n)
            if n == "state.json" and os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) < 1 << 20:
                ids.update(re.findall(r'"run_id": "([0-9a-f]{8})"', open(p, errors="replace").read()))
            elif n == "id_ed25519.pub" and os.path.isfile(p) and not os.path.islink(p):
                ids.update(re.findall(r"enos-([0-9a-f]{8})", open(p, errors="replace").read()))
    return ids


def report(outcomes, guard_log: str) -> int:
    """Print the counts per kind and every failure; return the number of failing runs."""
    by_kind = collections.defaultdict(list)
    for o in outcomes:
        by_kind[o.run.kind].append(o)
    cols = ("kind", "inputs", "runs", "tracebacks", "hangs", "wrong exit", "message", "leftovers", "other", "failing")
    print(" | ".join(cols))
    total = collections.Counter()
    for kind in KINDS:
        os_ = by_kind.get(kind, [])
        if not os_:
            continue
        row = collections.Counter(
            inputs=len({o.run.input for o in os_}), runs=len(os_),
            tracebacks=sum(o.traceback for o in os_), hangs=sum(o.hang for o in os_),
            wrong=sum(o.wrong_exit for o in os_), message=sum(bool(o.missing_words) for o in os_),
            leftovers=sum(len(o.leftovers) for o in os_), other=sum(bool(o.other) for o in os_),
            failing=sum(not o.ok for o in os_))
        total.update(row)
        print(" | ".join([kind] + [str(row[k]) for k in ("inputs", "runs", "tracebacks", "hangs", "wrong",
                                                          "message", "leftovers", "other", "failing")]))
    print(" | ".join(["total"] + [str(total[k]) for k in ("inputs", "runs", "tracebacks", "hangs", "wrong",
                                                            "message", "leftovers", "other", "failing")]))
    guard = Path(guard_log).read_text() if os.path.exists(guard_log) else ""
    print(f"network guard refusals: {len(guard.splitlines())}")
    print()
    for o in outcomes:
        if not o.ok:
            last = (o.stderr.strip().splitlines() or [""])[-1][:160]
            print(f"FAIL [{o.run.kind}] {o.run.input} :: {o.run.command}: {o.summary()} :: {last}")
    return total["failing"] + len(guard.splitlines())


def _record(o: Outcome) -> dict:
    return {"kind": o.run.kind, "input": o.run.input, "command": o.run.command, "argv": o.run.argv[:12],
            "streams": o.run.streams, "rc": o.rc, "expect": list(o.run.expect), "seconds": round(o.seconds, 3),
            "ok": o.ok, "problems": o.summary(), "stderr_tail": o.stderr[-600:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(KINDS), help="kinds to run, comma-separated")
    ap.add_argument("--state-only", default=None, help="only the damaged-state kinds whose name contains this")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--sample", type=int, default=1, help="keep one reservation matrix input in N")
    ap.add_argument("--json", default=None, help="write every outcome to this file")
    ap.add_argument("--enos-src", default=None,
                    help="run the enos of this source tree (e.g. an unpacked 'git archive' of another commit)")
    args = ap.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        ap.error(f"unknown kind(s) {', '.join(sorted(unknown))}; kinds: {', '.join(KINDS)}")
    if os.geteuid() != 0 and ("state" in kinds or "output" in kinds):
        ap.error("the state and output kinds need root (local namespace hosts)")
    if args.enos_src:
        os.environ["ENOS_HOSTILE_SRC"] = str(Path(args.enos_src).resolve())
    guard_log = _guard_log()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="enos-hostile-") as tmp:
        outcomes = run_all(kinds, args.jobs, Path(tmp), args.state_only, args.sample)
    print(f"{len(outcomes)} runs in {time.monotonic() - t0:.0f} s")
    failing = report(outcomes, guard_log)
    if args.json:
        Path(args.json).write_text(json.dumps([_record(o) for o in outcomes], indent=1) + "\n")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
