"""The results of :meth:`Env.actions` blocks: :class:`TaskResult` (one task on one host),
:class:`ActionsResult` (all of them), :class:`ActionsFailed`, and :class:`EventCollector`,
which turns ansible-runner's events into TaskResults."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

from enos.errors import ProvisionError
from enos import render
from enos.ansible import failure_message
from enos.frames import pandas

#: Ansible task keywords accepted as ``task_<keyword>``
TASK_KEYWORDS = frozenset((
    "name", "when", "become", "become_user", "become_method", "loop", "loop_control", "register",
    "ignore_errors", "ignore_unreachable", "environment", "changed_when", "failed_when", "retries",
    "delay", "until", "tags", "timeout", "no_log", "run_once", "delegate_to", "vars", "check_mode",
    "diff", "any_errors_fatal", "throttle", "async", "poll", "notify", "collections"))
#: statuses of a task on a host, and their order of gravity
STATUSES = ("ok", "changed", "skipped", "failed", "unreachable", "not run")


@dataclass
class Task:
    """One task of the block: the module, its arguments, its keywords."""
    module: str
    args: Dict[str, Any]
    free_form: Optional[str] = None
    keywords: Dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The task's name (``task_name``, else the module and its first argument)."""
        if "name" in self.keywords:
            return str(self.keywords["name"])
        first = self.free_form if self.free_form is not None else \
            (", ".join(f"{k}={v}" for k, v in list(self.args.items())[:2]))
        text = f"{self.module}: {first}" if first else self.module
        return text if len(text) <= 80 else text[:77] + "..."

    def to_yaml_dict(self, index: int) -> dict:
        """Return the task as a playbook entry (its name prefixed with its position, which
        maps Ansible's events back to it; a default name is kept from templating: it shows
        the arguments as written)."""
        name = self.name
        if "name" not in self.keywords and ("{" in name or "%" in name):
            name = "{% raw %}" + name.replace("{% endraw %}", "") + "{% endraw %}"
        out: Dict[str, Any] = {"name": f"[{index}] {name}"}
        out[self.module] = self.free_form if self.free_form is not None else dict(self.args)
        if self.free_form is not None and self.args:
            out["args"] = dict(self.args)
        out.update({k: v for k, v in self.keywords.items() if k != "name"})
        return out


@dataclass
class TaskResult:
    """What one task did on one host: ``status`` (ok, changed, skipped, failed,
    unreachable, or ``not run`` when an earlier task failed there), ``rc``, ``stdout``,
    ``stderr``, ``msg``, ``duration`` (seconds), ``res`` (Ansible's whole result)."""
    host: str
    task: str
    index: int
    module: str
    status: str = "not run"
    rc: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    msg: str = ""
    duration: float = 0.0
    res: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True for ok, changed and skipped."""
        return self.status in ("ok", "changed", "skipped")

    @property
    def changed(self) -> bool:
        """True when the task changed something on the host."""
        return self.status == "changed"

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict (``res`` included)."""
        return {"host": self.host, "task": self.task, "index": self.index, "module": self.module,
                "status": self.status, "rc": self.rc, "stdout": self.stdout, "stderr": self.stderr,
                "msg": self.msg, "duration": self.duration, "res": self.res}


class ActionsResult:
    """Every host's :class:`TaskResult` of every task of a block, in env and task order.

    ``res["client-1"]`` (that host's results), ``res.tasks`` (the task names),
    ``res.by_task`` (task name → results), ``res.hosts`` (aliases), ``res.ok`` (bool),
    ``res.failed`` / ``res.changed`` (aliases), ``rc``/``status`` of the ansible run,
    ``to_dict()``, ``to_json()``, ``to_dataframe()``, an HTML table in Jupyter."""

    def __init__(self, hosts: Sequence[str], tasks: Sequence[Task], results: Dict[tuple, TaskResult],
                 rc: int, status: str, playbook: str):
        self.hosts = list(hosts)
        self._tasks = list(tasks)
        self._results = results
        self.rc, self.status, self.playbook = rc, status, playbook

    @property
    def tasks(self) -> List[str]:
        """The tasks' names, in order."""
        return [t.name for t in self._tasks]

    def __getitem__(self, alias: str) -> List[TaskResult]:
        """Return the results of host ``alias`` in task order; KeyError naming the hosts."""
        if alias not in self.hosts:
            raise KeyError(f"host '{alias}' was not in the actions (hosts: {', '.join(self.hosts)})")
        return [self._results[(alias, i)] for i in range(len(self._tasks))]

    def __iter__(self) -> Iterator[TaskResult]:
        for alias in self.hosts:
            yield from self[alias]

    def __len__(self) -> int:
        return len(self.hosts) * len(self._tasks)

    @property
    def by_task(self) -> Dict[str, List[TaskResult]]:
        """Task name → the hosts' results of that task (same-named tasks are numbered)."""
        out: Dict[str, List[TaskResult]] = {}
        for i, t in enumerate(self._tasks):
            key = t.name if t.name not in out else f"[{i}] {t.name}"
            out[key] = [self._results[(a, i)] for a in self.hosts]
        return out

    def host_status(self, alias: str) -> str:
        """The worst status of the host's tasks (``changed`` beats ``ok``)."""
        seen = {r.status for r in self[alias]}
        for s in ("unreachable", "failed", "not run", "changed", "ok", "skipped"):
            if s in seen:
                return s
        return "ok"

    @property
    def failed(self) -> List[str]:
        """Aliases of the hosts where a task failed or that were unreachable."""
        return [a for a in self.hosts if self.host_status(a) in ("failed", "unreachable")]

    @property
    def changed(self) -> List[str]:
        """Aliases of the hosts where some task changed something."""
        return [a for a in self.hosts if any(r.changed for r in self[a])]

    @property
    def ok(self) -> bool:
        """True when no task failed and every host was reached."""
        return not self.failed and self.rc == 0

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict: ``ok``, ``rc``, ``status``, ``tasks``,
        ``hosts`` (alias → list of task results)."""
        return {"ok": self.ok, "rc": self.rc, "status": self.status, "tasks": self.tasks,
                "hosts": {a: [r.to_dict() for r in self[a]] for a in self.hosts}}

    def to_json(self, **kw) -> str:
        """Return :meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), **kw)

    def to_dataframe(self):
        """Return one row per host and task (host, index, task, module, status, rc, stdout,
        stderr, msg, duration) as a pandas DataFrame. Raises MissingDependency without pandas."""
        cols = ["host", "index", "task", "module", "status", "rc", "stdout", "stderr", "msg", "duration"]
        return pandas("actions results .to_dataframe()").DataFrame(
            [{c: getattr(r, c) for c in cols} for r in self], columns=cols)

    def __repr__(self) -> str:
        lines = [f"<ActionsResult {len(self._tasks)} task(s) on {len(self.hosts)} host(s): {self.status}"]
        for a in self.hosts:
            lines.append(f"  {a}: " + ", ".join(r.status for r in self[a]))
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        colour = {"ok": render.OK_COLOUR, "changed": render.WARN_COLOUR, "skipped": None,
                  "failed": render.FAIL_COLOUR, "unreachable": render.FAIL_COLOUR, "not run": render.FAIL_COLOUR}
        rows = []
        for r in self:
            detail = r.msg if not r.ok else (r.stdout or r.msg)
            rows.append([r.host, r.index, r.task, (r.status, colour[r.status]), r.rc,
                         f"{r.duration:.2f}s", render._short(detail, 300)])
        return render.table(["host", "#", "task", "status", "rc", "duration", "output / message"], rows,
                            caption=f"actions — {self.status} (rc {self.rc})", css_class="enos-actions")


class ActionsFailed(ProvisionError):
    """A task failed (or a host was unreachable): ``.results`` is the whole
    :class:`ActionsResult`, every host's results included; ``.failed`` the aliases."""

    def __init__(self, results: ActionsResult, failures: List[tuple]):
        super().__init__(results.playbook, failures, results.rc)
        self.results = results
        self.result = results
        self.failed = results.failed
        lines = [f"{h}: task '{t}': {m}" for h, t, m in failures] or [f"ansible exited with {results.rc}"]
        self.args = (f"actions failed on {len(self.failed)} of {len(results.hosts)} host(s):\n  "
                     + "\n  ".join(lines),)

    def __str__(self) -> str:
        return self.args[0]


class EventCollector:
    """Turns ansible-runner events into TaskResults: the ``[N]`` prefix of a task's name
    maps it back to task N (facts gathering and other tasks are ignored)."""

    KINDS = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_skipped": "skipped",
             "runner_on_unreachable": "unreachable"}

    def __init__(self, hosts: Sequence[str], tasks: Sequence[Task]):
        self.results = {(a, i): TaskResult(a, t.name, i, t.module) for a in hosts for i, t in enumerate(tasks)}

    def __call__(self, event: dict) -> None:
        status = self.KINDS.get(event.get("event", ""))
        data = event.get("event_data") or {}
        if status is None or not str(data.get("task", "")).startswith("["):
            return
        try:
            index = int(str(data["task"])[1:].split("]", 1)[0])
        except ValueError:
            return
        r = self.results.get((data.get("host"), index))
        if r is None:
            return
        res = data.get("res") or {}
        if status == "ok" and res.get("changed"):
            status = "changed"
        if status == "failed" and data.get("ignore_errors"):
            status = "ok"        # Ansible counts it as ok too
        r.status, r.res = status, res
        r.rc = res.get("rc")
        r.stdout, r.stderr = str(res.get("stdout") or ""), str(res.get("stderr") or "")
        r.msg = str(res.get("msg") or "")
        if status in ("failed", "unreachable"):
            r.msg = failure_message(res)
        try:
            r.duration = float(data.get("duration") or 0.0)
        except (TypeError, ValueError):
            pass
