"""enos — book testbed machines, provision them with Ansible, give them back.

Usage:
  enos [-v | -vv | -q] <command> [<args>...]
  enos help [<command>]
  enos --version
  enos -h | --help

Commands:
  up          book the resources of a reservation.yaml, wait for SSH, provision them
  destroy     release everything an environment booked
  info        show an environment: hosts, roles, networks, reservation state
  validate    check a reservation.yaml without booking anything
  new         write a commented reservation.yaml for a provider
  check       say what a provider needs on this machine and whether it is there
  inventory   print the Ansible inventory of an environment
  ssh         open a shell (or run a command) on one host of an environment
  run         run a command on the hosts of an environment, in parallel
  backup      bring files and directories home from the hosts, in parallel
  extend      ask the testbed for more time on a reservation
  slot        find the earliest start when everything a reservation asks for is free
  tc          apply the reservation's network_constraints (delay, rate, loss between
              groups), remove them (--reset) or measure them (--test)
  build       build a base image for a provider (e.g. enos build libvirt)
  campaign    run a benchmark campaign (a resumable parameter sweep), see its status, report it
  archive     one tar.gz to check and redo an experiment (files, versions, results, manifest)

Options:
  -v, --verbose  more logs, and a traceback on errors; -vv for debug logs
  -q, --quiet    no progress display, only errors
  --version      print the version and exit
  -h, --help     show this help

Exit codes:
  0    success
  1    a run-time failure (testbed refusal, hosts unreachable, provisioning failed, ...)
  2    a usage or configuration error (nothing was booked)
  130  interrupted (Ctrl-C or SIGTERM): 'enos destroy' frees what was booked,
       'enos up' resumes

Environments:
  'enos up' creates ./enos_<UTC timestamp>/ (state, ssh_config, known_hosts, inventory,
  keys) and points ./current at it; the other commands use ./current unless --env DIR
  names another. -v/-q may be given anywhere on the command line.

Run 'enos help <command>' for a command's options.
"""
from __future__ import annotations

import sys
TYPE_CHECKING = False   # annotations only: nothing but the interpreter's own modules at load time
if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

from enos import __version__
from enos.cli.streams import OutputLost, out, quiet_stdout, setup_streams

# Nothing else at load time: 'enos --help' and '--version' print with the interpreter's own
# modules only (and enos.cli.streams, which uses nothing else; the command table, docopt,
# logging and each command's layer load when a command runs; see _table()).

#: the order of 'enos --help'
ORDER = ("up", "destroy", "info", "validate", "new", "check", "inventory", "ssh", "run", "backup", "extend",
         "slot", "build", "tc", "campaign", "archive")
_TABLE: tuple[dict[str, str], dict[str, Callable]] | None = None


def _table() -> tuple[dict[str, str], dict[str, Callable]]:
    """Return (name -> usage text (docopt), name -> the function running it) of every
    command; each command module keeps its usage text beside its function."""
    global _TABLE
    if _TABLE is None:
        from enos.cli import archives, campaigns, envs, hosts
        docs: dict[str, str] = {}
        fns: dict[str, Callable] = {}
        for module in (envs, hosts, campaigns, archives):
            for name, (doc, fn) in module.COMMANDS.items():
                docs[name], fns[name] = doc, fn
        _TABLE = ({k: docs[k] for k in ORDER}, {k: fns[k] for k in ORDER})
    return _TABLE


def __getattr__(name: str):
    """``COMMANDS`` (name -> usage text) and ``HANDLERS`` (name -> function), built on
    first use."""
    if name == "COMMANDS":
        return _table()[0]
    if name == "HANDLERS":
        return _table()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _split_globals(argv: list[str]) -> tuple[list[str], dict]:
    """Take -v/-vv/-q/--verbose/--quiet out of argv wherever they are (before a '--')."""
    g = {"verbose": 0, "quiet": False}
    rest: list[str] = []
    passthrough = False
    for a in argv:
        if passthrough:
            rest.append(a)
            continue
        if a == "--":
            passthrough = True
            rest.append(a)
        elif a in ("-v", "--verbose"):
            g["verbose"] += 1
        elif a == "-vv":
            g["verbose"] += 2
        elif a in ("-q", "--quiet"):
            g["quiet"] = True
        else:
            rest.append(a)
    return rest, g


def _setup_logging(verbose: int, quiet: bool) -> None:
    import logging
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the enos CLI; return the exit code (0, 1, 2 or 130, see ``enos --help``; 1 also
    when the output could not be written: stdout closed, a full disk)."""
    setup_streams()
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (e.g. 'enos info | head'): not a failure of enos
        quiet_stdout()
        return 0
    except OutputLost as e:
        quiet_stdout()
        print(f"enos: {e}", file=sys.stderr)
        return 1


def _main(argv: list[str] | None) -> int:
    argv, g = _split_globals(list(sys.argv[1:] if argv is None else argv))
    if argv[:1] == ["run"] and not g["verbose"]:
        # one host through its master, without the task runner (None: not the plain case)
        from enos.cli.hosts import run_quick
        code = _guarded("run", g, lambda: run_quick(argv[1:]))
        if code is not None:
            return code
    parsed = _parse(argv)
    if isinstance(parsed, int):
        return parsed
    cmd, args = parsed
    _setup_logging(g["verbose"], g["quiet"])
    return _guarded(cmd, g, lambda: _table()[1][cmd](args, g))


def _guarded(cmd: str, g: dict, fn: Callable[[], int | None]) -> int | None:
    """Return ``fn()`` run under enos' signal handlers, with enos' errors mapped to their
    exit code (:func:`_run`) and an interrupt to 130."""
    from enos import signals
    old = signals.install()       # SIGINT and SIGTERM: KeyboardInterrupt, exit 130
    try:
        return _run(cmd, fn, g)
    except KeyboardInterrupt:
        if g["verbose"]:
            import logging
            logging.getLogger("enos").exception("interrupted")
        print(f"enos {cmd}: interrupted{INTERRUPTED_HINTS.get(cmd, '')}", file=sys.stderr)
        return 130
    finally:
        signals.restore(old)


#: what to say after a Ctrl-C, per command
INTERRUPTED_HINTS = {"up": "; 'enos destroy' frees what was booked, 'enos up' resumes",
                     "campaign": "; the same 'enos campaign run' resumes (the interrupted run is redone)"}


def _parse(argv: list[str]):
    """Return (command, its docopt arguments), or an exit code when there is nothing to run
    (help, version, an unknown command or bad arguments: exit 2 with the usage)."""
    if not argv or argv[0] in ("-h", "--help"):
        out(__doc__.strip())
        return 0 if argv else 2
    if argv[0] == "--version":
        if len(argv) > 1:
            print(f"enos --version: unexpected argument(s) {' '.join(argv[1:])} (usage: enos --version)",
                  file=sys.stderr)
            return 2
        out(f"enos {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "help":
        if not rest:
            out(__doc__.strip())
            return 0
        if len(rest) > 1:
            print(f"enos help: one command at most, got {' '.join(rest)} (usage: enos help [<command>])",
                  file=sys.stderr)
            return 2
        cmd, rest = rest[0], ["--help"]
    from docopt import DocoptExit, docopt
    commands = _table()[0]
    if cmd not in commands:
        import difflib
        close = difflib.get_close_matches(cmd, list(commands) + ["help"], n=1, cutoff=0.5)
        hint = f"; did you mean 'enos {close[0]}'?" if close else ""
        print(f"enos: unknown command '{cmd}'{hint} (commands: {', '.join(commands)}; see 'enos --help')",
              file=sys.stderr)
        return 2
    doc = commands[cmd]
    if "-h" in rest or "--help" in rest:
        out(doc.strip())
        return 0
    try:
        return cmd, docopt(doc, argv=[cmd] + rest, default_help=False)
    except DocoptExit:
        usage = doc[doc.index("Usage:"):].split("\n\n")[0]
        print(f"enos {cmd}: invalid arguments {' '.join(rest) or '(none)'}\n{usage}", file=sys.stderr)
        return 2


def _run(cmd: str, fn: Callable[[], int | None], g) -> int | None:
    """Return ``fn()`` (the command); map enos' errors (and a full or read-only disk) to
    their exit code and one line on stderr (a traceback only with -v)."""
    import errno
    from enos.errors import ConfigError, EnosError
    try:
        return fn()
    except EnosError as e:
        if g["verbose"]:
            import logging
            logging.getLogger("enos").exception("enos %s failed", cmd)
        print(f"enos {cmd}: error: {e}" if not isinstance(e, ConfigError) else f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        if g["verbose"]:
            import logging
            logging.getLogger("enos").exception("enos %s failed", cmd)
        print(f"enos {cmd}: error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
