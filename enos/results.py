"""Results of a command run on the hosts of an env: one :class:`Result` per host
(successes included) gathered in a :class:`Results` collection."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Union, overload

from enos import render
from enos.frames import pandas
from enos.model import Host


@dataclass
class Result:
    """One host's outcome of a command.

    ``rc`` is the exit status, None when the command never finished (timeout, SSH failure,
    cancelled); ``error`` then says why. ``started``/``ended`` are wall-clock times
    (seconds since the epoch); ``duration`` their difference."""

    host: Host
    command: str
    rc: Optional[int]
    stdout: str
    stderr: str
    started: float
    ended: float
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True when the command exited with 0."""
        return self.rc == 0

    @property
    def exit_code(self) -> Optional[int]:
        """An alias of :attr:`rc`, the one name (kept for scripts written against older
        versions, whose JSON said ``exit_code``)."""
        return self.rc

    @property
    def alias(self) -> str:
        """The host's alias."""
        return self.host.alias

    @property
    def duration(self) -> float:
        """Seconds from the start of the session to its end."""
        return max(0.0, self.ended - self.started)

    @property
    def status(self) -> str:
        """``ok``, ``exit N`` or the error (``timed out after 5s``, ``ssh failed: ...``)."""
        if self.ok:
            return "ok"
        if self.error:
            return self.error
        return f"exit {self.rc}" if self.rc is not None else "failed"

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict (``host`` is the alias; ``roles`` and
        ``address`` come along). The exit status is ``rc``, as in Python; ``exit_code``
        repeats it for scripts written against older versions."""
        return {"host": self.host.alias, "address": self.host.address, "roles": list(self.host.roles),
                "command": self.command, "rc": self.rc, "exit_code": self.rc, "stdout": self.stdout,
                "stderr": self.stderr, "error": self.error, "started": self.started,
                "ended": self.ended, "duration": round(self.duration, 6)}

    def __repr__(self) -> str:
        out = self.stdout.strip().replace("\n", "\\n")
        if len(out) > 40:
            out = out[:37] + "..."
        return f"<Result {self.host.alias} {self.status} {self.duration:.3f}s stdout={out!r}>"

    def _repr_html_(self) -> str:
        return render.results_table([self])


class Results(Sequence[Result]):
    """The results of one command, one per host, in host order.

    Iterable; ``res[0]`` (position) or ``res["compute-1"]`` (alias) give one
    :class:`Result`; ``res.ok`` / ``res.failed`` the subsets (as Results);
    ``res.by_role`` a dict role → Results; ``res.to_dict()`` / ``res.to_json()``."""

    def __init__(self, results: Sequence[Result], command: str = ""):
        self._items: List[Result] = list(results)
        self.command = command

    @overload
    def __getitem__(self, key: int) -> Result: ...

    @overload
    def __getitem__(self, key: str) -> Result: ...

    @overload
    def __getitem__(self, key: slice) -> "Results": ...

    def __getitem__(self, key: Union[int, str, slice]):
        """Return the result at a position or of a host alias (KeyError naming the known
        aliases if there is none), or a Results for a slice."""
        if isinstance(key, str):
            for r in self._items:
                if r.host.alias == key:
                    return r
            raise KeyError(f"no result for host '{key}' (hosts: {', '.join(self.aliases)})")
        if isinstance(key, slice):
            return Results(self._items[key], self.command)
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Result]:
        return iter(self._items)

    def __contains__(self, item) -> bool:
        if isinstance(item, str):
            return item in self.aliases
        return item in self._items

    @property
    def aliases(self) -> List[str]:
        """The hosts' aliases, in order."""
        return [r.host.alias for r in self._items]

    @property
    def ok(self) -> "Results":
        """The results of the hosts where the command exited with 0."""
        return Results([r for r in self._items if r.ok], self.command)

    @property
    def failed(self) -> "Results":
        """The results of the hosts where it did not (non-zero exit, timeout, SSH failure)."""
        return Results([r for r in self._items if not r.ok], self.command)

    @property
    def all_ok(self) -> bool:
        """True when the command exited with 0 on every host."""
        return all(r.ok for r in self._items)

    @property
    def by_role(self) -> Dict[str, "Results"]:
        """A dict role → the Results of that role's hosts (a host with two roles is in both)."""
        out: Dict[str, List[Result]] = {}
        for r in self._items:
            for role in r.host.roles:
                out.setdefault(role, []).append(r)
        return {k: Results(v, self.command) for k, v in out.items()}

    @property
    def stdout(self) -> Dict[str, str]:
        """A dict alias → stdout."""
        return {r.host.alias: r.stdout for r in self._items}

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict: ``command``, ``ok`` (bool), ``results`` (list)."""
        return {"command": self.command, "ok": self.all_ok,
                "results": [r.to_dict() for r in self._items]}

    def to_json(self, **kw) -> str:
        """Return :meth:`to_dict` as JSON text (keyword arguments go to ``json.dumps``)."""
        return json.dumps(self.to_dict(), **kw)

    def to_dataframe(self):
        """Return one row per host (host, roles, address, command, rc, status, stdout,
        stderr, started, ended, duration, error) as a pandas DataFrame. Raises
        MissingDependency without pandas (``pip install 'enos[campaign]'``)."""
        cols = ["host", "roles", "address", "command", "rc", "status", "stdout", "stderr", "started", "ended",
                "duration", "error"]
        rows = [{"host": r.host.alias, "roles": ",".join(r.host.roles), "address": r.host.address,
                 "command": r.command, "rc": r.rc, "status": r.status, "stdout": r.stdout, "stderr": r.stderr,
                 "started": r.started, "ended": r.ended, "duration": r.duration, "error": r.error}
                for r in self._items]
        return pandas("Results.to_dataframe()").DataFrame(rows, columns=cols)

    def __repr__(self) -> str:
        bad = len(self.failed)
        head = f"<Results {self.command!r}: {len(self) - bad} ok, {bad} failed"
        if not self._items:
            return head + ">"
        return head + "\n" + "\n".join("  " + repr(r) for r in self._items) + ">"

    def _repr_html_(self) -> str:
        return render.results_table(self._items, caption=self.command)
