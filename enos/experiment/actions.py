"""``env.actions(roles=...)``: any Ansible module as a Python method, one playbook run per
block through ansible-runner, and what every task did on every host::

    with env.actions(roles="client") as a:
        a.apt(name="iperf3", state="present", task_name="install iperf3")
        a.copy(dest="/etc/motd", content="an enos host\\n")
        a.shell("iperf3 --version", task_changed_when=False)
        a.ansible.builtin.file(path="/tmp/x", state="directory")   # a module by its full name
        a.add("community.general.timezone", name="UTC")          # or by a string
    a.results["client-1"]          # that host's TaskResults, in task order
    a.results.failed               # aliases of the hosts where a task failed (or unreachable)

The tasks are written as one playbook into ``<env>/actions/`` (kept: it is what ran) and
run through ansible-runner with the env's inventory and ssh_config, like :meth:`Env.play`.

Module arguments are the method's keyword arguments; one positional string is the
module's free-form argument (``shell``, ``command``, ``raw``, ``script``...). Task keywords
take a ``task_`` prefix (``task_name``, ``task_when``, ``task_become``, ``task_loop``,
``task_register``, ``task_changed_when``, ...), so they never clash with a module's own
arguments (``name``, ``timeout``...); an unknown ``task_`` keyword is refused.

The play runs when the ``with`` block ends without an exception (an exception inside the
block runs nothing). A failed or unreachable host raises :class:`ActionsFailed` whose
``.results`` holds **every** host's results, the successful ones included.
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from enos.errors import UsageError
from enos.ansible import run_playbook
from enos.state import atomic_write
from enos.experiment.actions_result import ActionsFailed, ActionsResult, EventCollector, Task, TASK_KEYWORDS


class Actions:
    """The builder of :meth:`Env.actions`: every module call adds a task; the block's end
    runs them (see the module's description). After the run, :attr:`results` is the
    :class:`ActionsResult`."""

    def __init__(self, env, roles=None, *, become: bool = False, gather_facts: bool = False,
                 extra_vars: Optional[Dict[str, Any]] = None, check: bool = True):
        self._env = env
        self._hosts = env.select(roles)
        if not self._hosts:
            raise UsageError("actions: no host selected")
        self._become, self._gather = bool(become), bool(gather_facts)
        self._extra_vars = dict(extra_vars or {})
        self._check = check
        self._tasks: List[Task] = []
        self.results: Optional[ActionsResult] = None

    def add(self, module: str, *free_form: str, **kwargs: Any) -> "Actions":
        """Add a task calling ``module`` (short or full name) with the module arguments
        ``kwargs``; ``task_<keyword>`` arguments are the task's keywords; return self.
        Raises UsageError for more than one positional argument, a non-string one, or an
        unknown ``task_`` keyword."""
        if len(free_form) > 1 or (free_form and not isinstance(free_form[0], str)):
            raise UsageError(f"actions: {module}() takes at most one positional argument, a string "
                             "(the module's free-form argument); pass the others by name")
        keywords, args = {}, {}
        for k, v in kwargs.items():
            if k.startswith("task_"):
                if k[5:] not in TASK_KEYWORDS:
                    raise UsageError(f"actions: {module}(): unknown task keyword '{k}' "
                                     f"(known: {', '.join('task_' + x for x in sorted(TASK_KEYWORDS))})")
                keywords[k[5:]] = v
            else:
                args[k] = v
        self._tasks.append(Task(module, args, free_form[0] if free_form else None, keywords))
        return self

    def __getattr__(self, name: str) -> "_Module":
        if name.startswith("_"):
            raise AttributeError(name)
        return _Module(self, name)

    def __enter__(self) -> "Actions":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.run()

    def playbook(self) -> List[dict]:
        """Return the play the tasks make (what :meth:`run` writes and runs)."""
        return [{"name": "enos actions", "hosts": ":".join(h.alias for h in self._hosts),
                 "gather_facts": self._gather, "become": self._become,
                 "tasks": [t.to_yaml_dict(i) for i, t in enumerate(self._tasks)]}]

    def run(self) -> ActionsResult:
        """Run the tasks in one playbook; return (and keep in :attr:`results`) the
        :class:`ActionsResult`. Raises UsageError when there is no task, ActionsFailed
        when some host failed and ``check``."""
        if not self._tasks:
            raise UsageError("actions: no task was added (call a module, e.g. a.shell('hostname'))")
        self.results = run_actions(self._env, self._hosts, self._tasks, self.playbook(), self._extra_vars)
        if self._check and not self.results.ok:
            failures = [(r.host, r.task, r.msg) for r in self.results if r.status in ("failed", "unreachable")]
            raise ActionsFailed(self.results, failures)
        return self.results

    def __repr__(self) -> str:
        return f"<Actions {len(self._tasks)} task(s) on {len(self._hosts)} host(s)>"

    def _repr_html_(self) -> str:
        if self.results is not None:
            return self.results._repr_html_()
        from html import escape
        return f"<p>{escape(repr(self))}</p>"


class _Module:
    """``a.copy`` or ``a.ansible.builtin.copy``: calling it adds the task."""

    def __init__(self, actions: Actions, name: str):
        self._actions, self._name = actions, name

    def __getattr__(self, part: str) -> "_Module":
        if part.startswith("_"):
            raise AttributeError(part)
        return _Module(self._actions, f"{self._name}.{part}")

    def __call__(self, *free_form: str, **kwargs: Any) -> Actions:
        return self._actions.add(self._name, *free_form, **kwargs)


def write_playbook(env_dir: Path, play: List[dict]) -> Path:
    """Write ``play`` as YAML into ``<env_dir>/actions/`` (owner-only); return its path."""
    import yaml
    d = Path(env_dir) / "actions"
    d.mkdir(mode=0o700, exist_ok=True)
    path = d / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}.yml"
    atomic_write(path, "# written by enos env.actions(): the tasks of one block\n"
                 + yaml.safe_dump(play, sort_keys=False, default_flow_style=False), mode=0o600)
    return path


def run_actions(env, hosts: Sequence, tasks: Sequence[Task], play: List[dict],
                extra_vars: Dict[str, Any]) -> ActionsResult:
    """Run ``play`` (the tasks of ``tasks`` on ``hosts``) on ``env``; return the
    ActionsResult, every host and task in it (never raises for a failed host). Raises
    EnosError when ansible-playbook cannot be found, KeyboardInterrupt on a signal."""
    aliases = [h.alias for h in hosts]
    pb = write_playbook(env.env_dir, play)
    collector = EventCollector(aliases, tasks)
    variables: Dict[str, Any] = {}
    try:
        variables.update(env.envdir.config.variables)
    except Exception:   # the saved reservation no longer validates: its variables are lost, not the play
        pass
    variables.update(enos_env_dir=str(env.env_dir), enos_run_id=env.run_id)
    variables.update(extra_vars)
    run = run_playbook(env.env_dir, env.inventory, env.ssh_config, pb, len(hosts), extravars=variables,
                       limit=":".join(aliases), progress=env._progress(), run_id=env.run_id,
                       on_event=collector)
    results = collector.results
    # a host that failed outside the block's tasks (facts gathering): its first task says why
    for host, task, msg in run.failures:
        mine = [results[(host, i)] for i in range(len(tasks)) if (host, i) in results]
        if mine and all(r.status == "not run" for r in mine):
            mine[0].status = "unreachable" if msg.startswith("unreachable") else "failed"
            mine[0].msg = f"{task}: {msg}"
    return ActionsResult(aliases, tasks, results, run.rc, run.status, str(pb))
