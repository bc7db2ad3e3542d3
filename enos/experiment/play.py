"""``Env.play``: an Ansible playbook on the hosts of an env (through ansible-runner, with
the env's inventory and ssh_config) and its :class:`PlayResult` per host."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from enos import render
from enos.ansible import run_playbook
from enos.errors import ProvisionError, UsageError
from enos.experiment.command import RoleSelector


@dataclass
class HostPlay:
    """One host's counters of a play: tasks ``ok``, ``changed``, ``failed``, ``skipped``;
    ``unreachable`` is True when Ansible could not reach it; ``failures`` lists
    (task, message) of its failed tasks."""

    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: bool = False
    failures: List[tuple] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``unreachable``, ``failed``, ``changed`` or ``ok``."""
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"


@dataclass
class PlayResult:
    """The outcome of :meth:`Env.play`: ``playbook``, ``rc`` and ``status`` of the
    ansible-runner run, ``hosts`` (alias → :class:`HostPlay`)."""

    playbook: str
    rc: int
    status: str
    hosts: Dict[str, HostPlay]

    @property
    def ok(self) -> bool:
        """True when the play succeeded on every host."""
        return self.rc == 0 and self.status == "successful" and not self.failed

    @property
    def failed(self) -> List[str]:
        """Aliases of the hosts where a task failed or that were unreachable."""
        return [a for a, h in self.hosts.items() if h.failed or h.unreachable]

    @property
    def changed(self) -> List[str]:
        """Aliases of the hosts where some task changed something."""
        return [a for a, h in self.hosts.items() if h.changed]

    def __getitem__(self, alias: str) -> HostPlay:
        """Return one host's counters; KeyError naming the hosts of the play."""
        try:
            return self.hosts[alias]
        except KeyError:
            raise KeyError(f"host '{alias}' was not in the play (hosts: {', '.join(self.hosts)})") from None

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return {"playbook": self.playbook, "rc": self.rc, "status": self.status, "ok": self.ok,
                "hosts": {a: dict(asdict(h), status=h.status) for a, h in self.hosts.items()}}

    def to_json(self, **kw) -> str:
        """Return :meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), **kw)

    def __repr__(self) -> str:
        counts = {}
        for h in self.hosts.values():
            counts[h.status] = counts.get(h.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no host"
        lines = [f"<PlayResult {Path(self.playbook).name} {self.status}: {summary}"]
        for h in self.hosts.values():
            lines.append(f"  {h.host}: ok={h.ok} changed={h.changed} failed={h.failed} "
                         f"skipped={h.skipped} unreachable={h.unreachable}")
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        colour = {"ok": render.OK_COLOUR, "changed": render.WARN_COLOUR,
                  "failed": render.FAIL_COLOUR, "unreachable": render.FAIL_COLOUR}
        rows = [[h.host, (h.status, colour[h.status]), h.ok, h.changed, h.failed, h.skipped,
                 "; ".join(f"{t}: {m}" for t, m in h.failures)] for h in self.hosts.values()]
        return render.table(["host", "status", "ok", "changed", "failed", "skipped", "failures"], rows,
                            caption=f"{self.playbook} — {self.status} (rc {self.rc})",
                            css_class="enos-play")


def run_play(env, playbook: Union[str, os.PathLike], extra_vars: Optional[Mapping[str, Any]] = None,
             roles: RoleSelector = None, limit: Optional[str] = None, tags: Optional[str] = None,
             check: bool = True) -> PlayResult:
    """Run ``playbook`` on ``env`` (see :meth:`Env.play`); return its PlayResult.

    The reservation's variables, ``enos_env_dir``, ``enos_run_id`` and ``extra_vars`` (which
    win) are handed to the play. Raises UsageError (missing playbook, unknown role),
    ProvisionError with ``.result`` when some host failed and ``check``."""
    pb = Path(playbook)
    if not pb.is_file():
        raise UsageError(f"playbook {pb} not found (relative paths start in {os.getcwd()})")
    hosts = env.select(roles)
    pattern = None
    if roles is not None:
        pattern = ":".join(h.alias for h in hosts)
    if limit:
        pattern = f"{pattern}:&{limit}" if pattern else limit
    extravars: Dict[str, Any] = {}
    try:
        extravars.update(env.envdir.config.variables)
    except Exception:   # the saved reservation no longer validates: its variables are lost, not the play
        pass
    extravars.update(enos_env_dir=str(env.env_dir), enos_run_id=env.run_id)
    extravars.update(dict(extra_vars or {}))
    run = run_playbook(env.env_dir, env.inventory, env.ssh_config, pb, len(hosts), extravars=extravars,
                       tags=tags, limit=pattern, progress=env._progress(), run_id=env.run_id)
    st = run.stats or {}
    names = set()
    for key in ("ok", "changed", "failures", "dark", "skipped", "processed"):
        names.update((st.get(key) or {}).keys())
    per_host = {}
    for h in env.hosts:       # env order, only the hosts the play touched
        if h.alias not in names:
            continue
        per_host[h.alias] = HostPlay(
            h.alias, ok=int(st.get("ok", {}).get(h.alias, 0)), changed=int(st.get("changed", {}).get(h.alias, 0)),
            failed=int(st.get("failures", {}).get(h.alias, 0)), skipped=int(st.get("skipped", {}).get(h.alias, 0)),
            unreachable=bool(st.get("dark", {}).get(h.alias, 0)),
            failures=[(t, m) for a, t, m in run.failures if a == h.alias])
    result = PlayResult(run.playbook, run.rc, run.status, per_host)
    if check and not result.ok:
        err = ProvisionError(run.playbook, run.failures, run.rc)
        err.result = result
        raise err
    return result
