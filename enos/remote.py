"""Run a command on the hosts of an environment, in parallel, through execo.

Connections go through the env's ssh_config, so they reuse the connection masters opened
by ``enos up`` (ControlMaster): a command on an already-connected host costs ~10 ms.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from enos.errors import CommandFailed
from enos.provider.provider import Host


@dataclass
class CommandResult:
    """One host's outcome: ``exit_code`` is None when the command could not run (timeout,
    SSH failure)."""

    host: str
    exit_code: Optional[int]
    stdout: str
    stderr: str
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True when the command exited with 0."""
        return self.exit_code == 0

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)


def select_hosts(hosts: Sequence[Host], roles: Optional[str]) -> List[Host]:
    """Return the hosts having one of the comma-separated ``roles`` (all hosts if None),
    also matching host aliases. Raises ValueError naming unknown roles."""
    if not roles:
        return list(hosts)
    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    known = {r for h in hosts for r in h.roles} | {h.alias for h in hosts}
    unknown = [r for r in wanted if r not in known]
    if unknown:
        raise ValueError(f"unknown role(s) or host(s): {', '.join(unknown)}; known roles: "
                         f"{', '.join(sorted({r for h in hosts for r in h.roles}))}")
    return [h for h in hosts if h.alias in wanted or set(h.roles) & set(wanted)]


def run_command(ssh_config: Path, hosts: Sequence[Host], command: str, timeout: Optional[float] = None,
                tolerate_failures: bool = False) -> List[CommandResult]:
    """Run ``command`` on every host at once; return one CommandResult per host, in order.

    Raises :class:`CommandFailed` (naming the hosts) if any host exits non-zero or cannot
    be reached, unless ``tolerate_failures``."""
    import execo
    params = {"ssh": "ssh", "ssh_options": ("-F", str(ssh_config), "-o", "BatchMode=yes"),
              "user": None, "keyfile": None, "port": None}
    ehosts = [execo.Host(h.alias) for h in hosts]
    remote = execo.Remote(command, ehosts, connection_params=params, process_args={
        "timeout": timeout, "nolog_exit_code": True, "nolog_error": True, "nolog_timeout": True,
        "ignore_exit_code": True, "ignore_error": True, "ignore_timeout": True,
    })
    remote.run()
    by_host = {p.host.address: p for p in remote.processes}
    results = []
    for h in hosts:
        p = by_host[h.alias]
        err = None
        if p.timeouted:
            err = f"timed out after {timeout}s"
        elif p.error:
            err = str(p.error_reason)
        elif p.exit_code == 255:
            err = "ssh failed: " + (p.stderr.strip().splitlines() or ["?"])[-1]
        results.append(CommandResult(h.alias, None if (p.timeouted or p.error) else p.exit_code,
                                     p.stdout, p.stderr, err))
    failed = [r for r in results if not r.ok]
    if failed and not tolerate_failures:
        raise CommandFailed(command, failed, results)
    return results
