"""Typed errors of enos.

Every error enos raises on purpose derives from :class:`EnosError`. The CLI maps
them to exit codes: :class:`UsageError` (and its children, configuration errors
among them) exit with 2, every other :class:`EnosError` with 1, an interruption
with 130. Library code raises these; it never calls ``sys.exit``.
"""
from __future__ import annotations

TYPE_CHECKING = False   # typing only for annotations: the short paths of the CLI skip its import
if TYPE_CHECKING:  # pragma: no cover
    from typing import Iterable, Optional, Sequence


class EnosError(Exception):
    """Base of every error enos raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


# --- usage and configuration (exit 2) -------------------------------------------------

class UsageError(EnosError):
    """The command line or the configuration is wrong; nothing was booked."""

    exit_code = 2


class ConfigError(UsageError):
    """A reservation file is wrong at a known place.

    ``str(err)`` reads ``FILE:LINE: KEY.PATH: message`` (the parts that are known).
    """

    def __init__(self, message: str, file: Optional[str] = None, line: Optional[int] = None,
                 keypath: Optional[str] = None):
        self.message = message
        self.file = file
        self.line = line
        self.keypath = keypath
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        key = f"{self.keypath}: " if self.keypath else ""
        return f"{where}{key}{self.message}"


class UnreadableFile(ConfigError):
    """A file enos was given cannot be read as one: not a regular file (a FIFO, a device,
    a directory), larger than its bound, or unreadable. ``reason`` says which (without the
    file's name); readers of other kinds of files (the state) turn it into their own error."""

    def __init__(self, reason: str, file: str):
        self.reason = reason
        super().__init__(reason, file=file)


class ProviderNotFound(UsageError):
    """``provider.type`` names no known provider. ``available`` lists the known ones."""

    def __init__(self, name: str, available: Sequence[str], suggestion: Optional[str] = None):
        self.name = name
        self.available = list(available)
        hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
        super().__init__(f"unknown provider type '{name}'{hint}; available: {', '.join(self.available)}")


class MissingDependency(UsageError):
    """A provider's library is not installed. ``extra`` is the pip extra that brings it."""

    def __init__(self, provider: str, module: str, extra: Optional[str]):
        self.provider, self.module, self.extra = provider, module, extra
        how = f"pip install 'enos[{extra}]'" if extra else f"pip install {module}"
        super().__init__(f"provider '{provider}' needs the Python module '{module}', which is not installed: {how}")


class UnsafeValue(UsageError):
    """A value (from a reservation or a provider) cannot be written safely into an
    ssh_config, an inventory or a command line (a newline, a leading '-', ...)."""


class Unsupported(EnosError):
    """The provider does not declare the capability asked for."""


class NotRoot(UsageError):
    """The operation needs root privileges and the process does not have them."""


# --- environment state ----------------------------------------------------------------

class StateError(EnosError):
    """The environment directory or its state file is missing or unreadable."""


class NoEnvironment(StateError):
    """There is no environment where one was expected (no ``current`` link, no state file)."""

    exit_code = 2


class StateDamaged(StateError):
    """The state file exists but cannot be used (unreadable, not UTF-8, not JSON, a key
    missing or of the wrong type). ``path`` is the file; the message says what to do."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(message)


class StateUnwritable(StateError):
    """The env dir cannot be written (disk full, read-only file system, permissions).
    ``path`` is the file, ``cause`` the OSError."""

    def __init__(self, path: str, cause: Optional[OSError]):
        self.path, self.cause = path, cause
        why = (cause.strerror or str(cause)) if cause is not None else "unknown error"
        super().__init__(f"cannot write {path}: {why}")


class EnvDestroyed(NoEnvironment):
    """The environment was destroyed: its hosts are gone. A run-time state, not a usage
    error: exit 1."""

    exit_code = 1


class StateLocked(StateError):
    """Another enos process holds the environment's lock. ``pid`` is the holder's PID."""

    def __init__(self, env_dir: str, pid: Optional[int]):
        self.env_dir, self.pid = env_dir, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"environment {env_dir} is locked by {who} (another 'enos up' or "
                         f"'enos destroy' is running on it); wait for it or use another --env")


class CampaignLocked(StateError):
    """Another live ``enos campaign run`` owns the results directory. ``pid`` is its PID."""

    def __init__(self, results_dir: str, pid: Optional[int]):
        self.results_dir, self.pid = results_dir, pid
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"results directory {results_dir} is in use by {who} (another 'enos campaign "
                         f"run' on it); wait for it to finish, or give another --results DIR")


class CampaignFailed(EnosError):
    """A campaign ended with failed runs (``--stop-on-error`` stops at the first)."""


class CampaignChanged(ConfigError):
    """The campaign file defines its runs differently from the finished runs of its results
    directory (a step, the setup, the network constraints, the reservation or a file they
    name changed): mixing them would lie. ``changes`` lists (key path, text), ``stale`` the
    runs made with the other definition. Exit 2."""

    def __init__(self, message: str, file: Optional[str], line: Optional[int], keypath: Optional[str],
                 changes: Sequence[tuple], stale: Sequence[dict]):
        self.changes, self.stale = list(changes), list(stale)
        super().__init__(message, file=file, line=line, keypath=keypath)


# --- testbed side ---------------------------------------------------------------------

class AuthError(EnosError):
    """Credentials are missing, unreadable or refused by the testbed."""


class ReservationUnavailable(EnosError):
    """The testbed refused the reservation; ``next_slot`` is when it could run, if known."""

    def __init__(self, message: str, next_slot: Optional[str] = None):
        self.next_slot = next_slot
        super().__init__(message + (f" (could run at {next_slot})" if next_slot else ""))


class Retryable(EnosError):
    """A transient failure: retried with backoff by :func:`enos.retry.retry`."""


class Unavailable(Retryable):
    """The service is unavailable (5xx, connection refused) for now."""


class Timeout(Retryable):
    """Something did not happen in the time allowed."""


class RateLimited(Retryable):
    """The service asked us to slow down (HTTP 429)."""


class ProviderError(EnosError):
    """The provider failed to book or prepare resources (a non-retryable testbed failure)."""


class DestroyIncomplete(EnosError):
    """``destroy`` went on past failures; ``leftovers`` lists what is still there."""

    def __init__(self, leftovers: Iterable[str]):
        self.leftovers = list(leftovers)
        super().__init__("destroy left resources behind: " + "; ".join(self.leftovers))


# --- provisioning and remote execution -----------------------------------------------

class SshUnreachable(Timeout):
    """Hosts did not answer SSH in time. ``hosts`` maps alias to the last error seen."""

    def __init__(self, hosts: dict, timeout: float):
        self.hosts = dict(hosts)
        detail = "; ".join(f"{h}: {e}" for h, e in sorted(self.hosts.items()))
        super().__init__(f"{len(self.hosts)} host(s) did not answer SSH within {timeout:.0f}s: {detail}")


class ProvisionError(EnosError):
    """An Ansible run failed. ``failures`` is a list of (host, task, message)."""

    def __init__(self, playbook: str, failures: Sequence[tuple], rc: Optional[int] = None):
        self.playbook, self.failures, self.rc = playbook, list(failures), rc
        lines = [f"{h}: task '{t}': {m}" for h, t, m in self.failures] or [f"ansible exited with {rc}"]
        super().__init__(f"provisioning failed in {playbook}:\n  " + "\n  ".join(lines))


class CommandFailed(EnosError):
    """A remote command failed on some hosts. ``results`` holds every host's result (the
    successful ones too: with the Python API, the whole
    :class:`~enos.results.Results`); ``failed`` the failed ones."""

    def __init__(self, command: str, failed: Sequence, results: Sequence):
        self.command, self.failed = command, failed if hasattr(failed, "by_role") else list(failed)
        self.results = results if hasattr(results, "by_role") else list(results)
        # the host's own error first (an ssh failure is not the command's exit 255)
        names = ", ".join(f"{r.alias} ({r.error or (f'exit {r.exit_code}' if r.exit_code is not None else 'failed')})"
                          for r in self.failed)
        super().__init__(f"'{command}' failed on {len(self.failed)} of {len(self.results)} host(s): {names}")


class FailpointHit(EnosError):
    """Raised by a failpoint set to ``raise`` (tests only)."""
