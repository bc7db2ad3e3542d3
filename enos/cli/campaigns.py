"""``enos campaign``: run, status, report, validate a benchmark campaign. Its usage text
(docopt) beside functions that parse, call the Python API, print."""
from __future__ import annotations

import sys

from enos.cli.options import data, duration, out, output, progress
from enos.errors import UsageError

CAMPAIGN = """Benchmark campaigns: the same steps over every combination of parameters, on the hosts
of an environment, repeated, resumable, ending in a table, figures and a report.

  run     bring the reservation up (or use --env), run 'setup' once, then every
          combination x repetition; killed at any moment (kill -9 included), the same
          command resumes: finished runs are never redone, the one in progress is redone.
          A failed run is recorded with its error and the campaign goes on. Exit 1 if
          some runs failed, 0 when all are done.
  status  done / remaining / in progress / failed counts, elapsed time, the failures
  report  DIR/results.csv, DIR/figures/*.png (the file's 'figures:' or a default set),
          DIR/report.html (dated, with enos' version, the scripts, the archive's manifest)
  validate  every check 'run' makes before booking anything, and nothing else

Each run records what it ran with; if the steps, setup, network constraints, reservation
or a file they name changed since runs were made in DIR, 'run' refuses (exit 2) and names
the change: give another --results DIR, or --rerun-changed to redo those runs.

The results go to DIR (default: <campaign file stem>.results/ beside the file):
DIR/runs/<combination>/<repeat>/ holds params.json, timing.json, each host's stdout,
stderr and collected files, and monitor.csv. The file format is in docs/campaigns.md.

Usage:
  enos campaign run FILE [--results DIR] [--env DIR] [--stop-on-error] [--destroy] [--rerun-changed]
  enos campaign status FILE [--results DIR] [-o FORMAT]
  enos campaign report FILE [--results DIR]
  enos campaign validate FILE

Options:
  --results DIR        results directory (default: <file stem>.results beside FILE)
  --env DIR            run on this environment (already up) instead of the campaign's reservation
  --stop-on-error      stop at the first failed run (default: record it and go on)
  --destroy            give the reservation back at the end (not with --env)
  --rerun-changed      redo the finished runs made with another definition of the campaign
                       (a step, the setup, the network constraints, the reservation or a
                       file they name changed); without it such a campaign is refused
  -o, --output FORMAT  text or json [default: text]
"""


def campaign(args, g) -> int:
    from enos.campaign.file import load_campaign
    camp = load_campaign(args["FILE"])           # ConfigError (exit 2) before anything else
    for sub in ("validate", "status", "report"):
        if args[sub]:
            return SUBCOMMANDS[sub](camp, args)
    return _run(camp, args, g)


def _validate(camp, args) -> int:
    from enos.campaign.runner import validate
    v = validate(camp)
    figs = "default figures" if v["figures"] is None else f"{v['figures']} figure(s)"
    out(f"{v['file']}: valid — {v['combinations']} combination(s) × {v['repeat']} repetition(s) = "
        f"{v['runs']} run(s), {v['steps']} step(s), {v['metrics']} metric(s), {figs}")
    return 0


def _status(camp, args) -> int:
    from enos.campaign.reporting import status
    fmt = output(args, ("text", "json"))
    st = status(camp, args["--results"])
    if fmt == "json":
        data(st, "json")
        return 0
    owner = f"running (pid {st['owner']})" if st["owner"] else "not running"
    lines = [f"results      {st['results']}", f"state        {owner}",
             f"total        {st['total']}", f"done         {st['done']}",
             f"remaining    {st['remaining']}", f"in progress  {st['in_progress']}",
             f"failed       {st['failed']}", f"elapsed      {duration(st['elapsed'])}"]
    for f in st["failures"]:
        lines.append(f"FAILED {', '.join(f'{k}={v}' for k, v in f['run'].items())}: {f['error']}")
    out("\n".join(lines))
    return 0


def _report(camp, args) -> int:
    from enos.campaign.reporting import report
    result = report(camp, args["--results"])
    out(f"{result['rows']} row(s) in {result['csv']}")
    for f in result["figures"]:
        out(f)
    out(result["html"])
    for p in result["problems"]:
        print(f"enos campaign report: warning: {p}", file=sys.stderr)
    return 0


def _run(camp, args, g) -> int:
    from enos.campaign.runner import run
    from enos.errors import CampaignFailed
    if args["--env"] is not None and not args["--env"].strip():     # an unset shell variable
        raise UsageError("--env: an empty directory name; give the environment directory (or no --env "
                         "to bring the campaign's reservation up)")
    if args["--destroy"] and args["--env"]:
        raise UsageError("--destroy gives back the campaign's own reservation; it cannot be used with --env")
    p = progress(g["quiet"])
    st = run(camp, results=args["--results"], env=args["--env"], stop_on_error=args["--stop-on-error"],
             destroy=args["--destroy"], progress=p, rerun_changed=args["--rerun-changed"])
    p.info(f"campaign: {st['done']}/{st['total']} run(s) done, {st['failed']} failed; "
           f"'enos campaign report {args['FILE']}' writes the table, figures and report")
    if st["failed"]:
        raise CampaignFailed(f"{st['failed']} run(s) failed (see 'enos campaign status {args['FILE']}'); "
                             f"run the same command again to retry them")
    return 0


SUBCOMMANDS = {"validate": _validate, "status": _status, "report": _report}

#: name -> (usage text, function)
COMMANDS = {"campaign": (CAMPAIGN, campaign)}
