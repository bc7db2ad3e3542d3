"""The one place where command-line values become Python values, and where results are
printed: every number, duration and choice of the ``enos`` command goes through here, so
``abc``, ``nan``, ``inf`` and negatives are refused the same way everywhere (UsageError,
exit 2, before anything is read or booked)."""
from __future__ import annotations

import math
import sys
TYPE_CHECKING = False   # annotations only ('enos run' on one host loads this module)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional, Sequence

from enos.cli.streams import OutputLost, out  # noqa: F401  (the commands print through out)
from enos.errors import UsageError

#: the longest wait a command line may ask for (30 days)
MAX_SECONDS = 30 * 86400.0


def seconds(option: str, value) -> Optional[float]:
    """Return ``value`` (text from the command line) as a number of seconds, or None when
    not given. Raises UsageError unless it is a finite number > 0 and at most
    :data:`MAX_SECONDS`."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{option}: expected a number of seconds, got '{value}'") from None
    if not math.isfinite(number) or number <= 0 or number > MAX_SECONDS:
        raise UsageError(f"{option}: expected a number of seconds between 0 and {MAX_SECONDS:.0f} "
                         f"(30 days), got '{value}'")
    return number


def when(option: str, value, earliest: bool = False):
    """Return a date of the command line as Unix time (or ``"earliest"`` when allowed),
    or None when not given: ISO 8601 with an offset (``2026-12-04T19:00:00+01:00``, ``Z``)
    or ``YYYY-MM-DD HH:MM[:SS]`` in this machine's local time. Raises UsageError."""
    import datetime as _dt
    if value is None:
        return None
    text = str(value).strip()
    if earliest and text == "earliest":
        return "earliest"
    try:
        d = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option}: expected {'earliest or ' if earliest else ''}a date like "
                         f"'2026-12-04 19:00' (local time) or '2026-12-04T19:00:00+01:00', got '{value}'") from None
    return (d if d.tzinfo else d.astimezone()).timestamp()


def output(args, allowed: Sequence[str]) -> str:
    """Return the ``-o/--output`` format. Raises UsageError unless it is one of ``allowed``."""
    fmt = args["--output"]
    if fmt not in allowed:
        raise UsageError(f"--output must be {', '.join(allowed[:-1])} or {allowed[-1]}, not '{fmt}'")
    return fmt


def env_dir(args) -> Optional[str]:
    """Return ``--env`` (None for the default, ``./current``). Raises UsageError for an
    empty value (a shell variable that was not set: it must not mean ./current)."""
    env = args.get("--env")
    if env is not None and not env.strip():
        raise UsageError("--env: an empty directory name; give the environment directory")
    return None if env in (None, "current") else env


def tags(option: str, value) -> Optional[str]:
    """Return comma-separated Ansible tags as given, or None when not given. Raises
    UsageError for an empty list or an empty or blank tag (``--tags ''`` would otherwise
    run every task: the opposite of what was asked)."""
    if value is None:
        return None
    names = value.split(",")
    if not value.strip() or any(not n.strip() or n != n.strip() or any(c.isspace() for c in n) for n in names):
        raise UsageError(f"{option}: expected tag names separated by commas (no empty or blank one, "
                         f"no spaces), got '{value}'")
    return value


def roles(args) -> Optional[str]:
    """Return ``--roles`` (None for every host). Raises UsageError for a list naming nothing
    (``--roles ''`` or ``','``: an unset shell variable must not mean every host)."""
    value = args.get("--roles")
    if value is not None and not any(x.strip() for x in value.split(",")):
        raise UsageError(f"--roles {value!r}: names no role or host; give role or host names "
                         f"separated by commas (or 'all')")
    return None if value in (None, "all") else value


def progress(quiet: bool):
    """Return the progress display of a command (silent under ``-q``)."""
    from enos.progress import QUIET, Progress
    return Progress(mode=QUIET) if quiet else Progress()


def warn(command: str, text: str) -> None:
    """Print ``enos COMMAND: warning: TEXT`` on stderr."""
    print(f"enos {command}: warning: {text}", file=sys.stderr)


def data(value, fmt: str) -> None:
    """Print ``value`` as JSON or YAML (``fmt``)."""
    import json
    if fmt == "yaml":
        import yaml
        out(yaml.safe_dump(value, sort_keys=False))
    else:
        out(json.dumps(value, indent=2, default=str))


def duration(total: float) -> str:
    """Return seconds as ``1h02m03s`` / ``2m03s``."""
    total = int(total)
    h, rest = divmod(total, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"
