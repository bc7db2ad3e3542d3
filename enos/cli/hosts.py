"""The commands on the hosts of an environment: run, backup, tc. Each is its usage text
(docopt) beside a function that parses, calls the Python API, prints."""
from __future__ import annotations

TYPE_CHECKING = False   # annotations only ('enos run' on one host loads this module)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional

from enos.cli.options import data, env_dir, out, output, roles, seconds
from enos.errors import UsageError

RUN = """Run a shell command on the hosts of an environment, in parallel.

Exits 1 with a summary naming the hosts if the command fails anywhere (unless
--tolerate-failures).

Usage:
  enos run [--env DIR] [--roles ROLES] [--timeout S] [--tolerate-failures] [-o FORMAT] CMD

Options:
  --env DIR            environment directory [default: current]
  --roles ROLES        comma-separated roles (or host aliases) to run on [default: all]
  --timeout S          seconds before the command is killed on a host
  --tolerate-failures  exit 0 even if the command fails on some hosts
  -o, --output FORMAT  text or json [default: text]
"""


def run(args, g) -> int:
    from enos.errors import CommandFailed
    from enos.experiment.env import load_or_current
    fmt = output(args, ("text", "json"))
    timeout = seconds("--timeout", args["--timeout"])
    if not args["CMD"].strip():
        raise UsageError("CMD: the command is empty; give the shell command to run on the hosts")
    results = load_or_current(env_dir(args)).run(args["CMD"], roles=roles(args), timeout=timeout, check=False)
    if fmt == "json":
        data([r.to_dict() for r in results], "json")
    else:
        _print_results(results)
    if results.failed and not args["--tolerate-failures"]:
        raise CommandFailed(args["CMD"], results.failed, results)
    return 0


def _quick_args(argv: list) -> Optional[dict]:
    """Return {--env, --roles, --tolerate-failures, CMD} of the plain forms of 'enos run'
    (``--env``, ``--roles``, ``--tolerate-failures``, ``-o text``, one CMD), else None."""
    args: dict = {"--env": None, "--roles": None, "--tolerate-failures": False, "CMD": None}
    it = iter(argv)
    for a in it:
        name, eq, value = a.partition("=")
        if name in ("--env", "--roles", "-o", "--output") and args.get(name) is None:
            value = value if eq else next(it, None)
            if value is None or (name in ("-o", "--output") and value != "text"):
                return None
            args[name] = value
        elif a == "--tolerate-failures" and not args["--tolerate-failures"]:
            args[a] = True
        elif a.startswith("-") or args["CMD"] is not None:
            return None
        else:
            args["CMD"] = a
    return args if args["CMD"] is not None else None


def run_quick(argv: list) -> Optional[int]:
    """'enos run' on one host through its connection master without loading the task
    runner (:mod:`enos.experiment.quick`); return the exit code, or None when the command
    line or the env is not the plain case (nothing ran: the caller runs :func:`run`).
    Prints exactly what :func:`run` prints. Raises CommandFailed as :func:`run` does."""
    args = _quick_args(argv)
    if args is None:
        return None
    from enos.experiment.quick import run_one
    r = run_one(env_dir(args), roles(args), args["CMD"])
    if r is None:
        return None
    _print_results([r])
    if not r.ok and not args["--tolerate-failures"]:
        from enos.errors import CommandFailed
        raise CommandFailed(args["CMD"], [r], [r])
    return 0


def _print_results(results) -> None:
    for r in results:
        out(f"── {r.alias} ({r.status})")
        if r.stdout:
            out(r.stdout.rstrip("\n"))
        if r.stderr and not r.ok:
            out(r.stderr.rstrip("\n"))


BACKUP = """Bring files and directories home from the hosts of an environment, in parallel.

One tar stream per host through its SSH connection master; PATHs land in
DEST/<alias>/<path> (absolute paths keep their full path, relative ones start in the
remote user's home). Prints per host the size fetched and the paths that were missing
there. Names with spaces or newlines are safe. Exits 1 if a host's transfer failed (a
missing path alone is reported, not a failure).

Usage:
  enos backup [--env DIR] [--roles ROLES] [--dest DIR] [--timeout S] [--sudo] [-o FORMAT] PATH...

Options:
  --env DIR            environment directory [default: current]
  --roles ROLES        comma-separated roles (or host aliases) to fetch from [default: all]
  --dest DIR           where to put the files (default: <env>/backup)
  --timeout S          seconds before a host's transfer is given up
  --sudo               read the files as root (sudo -n) on hosts whose user is not root
  -o, --output FORMAT  text or json [default: text]
"""


def backup(args, g) -> int:
    from enos.errors import EnosError
    from enos.experiment.env import load_or_current
    fmt = output(args, ("text", "json"))
    timeout = seconds("--timeout", args["--timeout"])
    env = load_or_current(env_dir(args), quiet=g["quiet"])
    report = env.backup(args["PATH"], roles=roles(args), dest=args["--dest"], timeout=timeout, sudo=args["--sudo"])
    out(report.to_json(indent=2) if fmt == "json" else "\n".join(report.lines()))
    bad = [h for h in report.hosts.values() if not h.ok]
    if bad:
        raise EnosError(f"backup failed on {len(bad)} of {len(report.hosts)} host(s): "
                        + ", ".join(f"{h.host} ({h.error})" for h in bad))
    return 0


TC = """Shape the network between groups of hosts as the reservation's network_constraints
ask (delay, rate, loss; Enos' format, see docs/network-constraints.md), with Linux tc on
every host in parallel: an htb class per destination group, a netem qdisc for delay and
loss, a u32 filter per destination address, on the interface of the network named by the
constraint (default: the one SSH uses). Idempotent; what was applied is recorded in the
env state. 'enos up' does it too when network_constraints.enable is true.

  enos tc             apply (again) the constraints
  enos tc --test      measure RTT, throughput and loss between every two groups and print
                      requested vs measured; exit 1 when outside the tolerance
  enos tc --reset     remove exactly what enos applied
  enos tc --dry-run   print the tc commands per host, change nothing

Delay and loss need the kernel module sch_netem on the hosts (refused otherwise, before
anything is changed); rate limits need only htb.

Usage:
  enos tc [--env DIR] [-f FILE] [--reset | --dry-run] [--test] [-o FORMAT]

Options:
  --env DIR            environment directory [default: current]
  -f FILE              take network_constraints from this reservation file instead of the
                       one the environment was created with
  --reset              remove the tc trees enos applied (only those)
  --test               measure and compare with the constraints (applies nothing)
  --dry-run            print the commands without running them
  -o, --output FORMAT  text or json [default: text]
"""


def tc(args, g) -> int:
    from enos.experiment import netprobe
    from enos.experiment.env import load_or_current
    from enos.experiment.reservation import network_constraints
    fmt = output(args, ("text", "json"))
    env = load_or_current(env_dir(args), quiet=g["quiet"])
    constraints = network_constraints(args["-f"]) if args["-f"] else None
    result: dict = {}
    if args["--reset"]:
        result["reset"] = env.tc_reset()
    if args["--dry-run"]:
        result["commands"] = env.tc(constraints, dry_run=True)
    if not (args["--reset"] or args["--dry-run"] or args["--test"]):
        result["applied"] = env.tc(constraints)
    if args["--test"]:
        result["test"] = env.tc_test(constraints)
    if fmt == "json":
        data({k: v.to_dict() if k == "test" else v for k, v in result.items()}, "json")
    else:
        _tc_text(result, env)
    if "test" in result and not result["test"].ok:
        raise netprobe.TcTestFailed(result["test"])
    return 0


def _tc_text(result: dict, env) -> None:
    if "reset" in result:
        for alias, st in sorted(result["reset"].items()):
            out(f"{alias}: {st}")
        if not result["reset"]:
            out("nothing to remove: enos applied no network constraints in this environment")
    for alias, cmds in result.get("commands", {}).items():
        out(f"── {alias}")
        for c in cmds:
            out(c)
    if "applied" in result:
        out(env.tc_applied() or "no constraint applies to these hosts")
        for alias, st in sorted(result["applied"].items()):
            out(f"{alias}: {st}")
    if "test" in result:
        out(result["test"].table())


#: name -> (usage text, function), in the order of 'enos --help'
COMMANDS = {"run": (RUN, run), "backup": (BACKUP, backup), "tc": (TC, tc)}
