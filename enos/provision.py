"""Provisioning of an env once every host answers SSH (what ``enos up`` runs between the
provider's ``before_preinstall`` and ``after_preinstall``), tuned for speed (issue 22).

* **Preinstall by enos** (:func:`preinstall`): one shell command per host, on every host
  at once over the env's SSH connection masters — python3 is there (installed with the
  host's package manager otherwise) and where. One round trip per host instead of an
  Ansible play; no facts gathered (a play that needs facts gathers them itself, once per
  host for all the run's playbooks: smart gathering with a fact cache).
* **The interpreter of each host goes into the inventory** (``ansible_python_interpreter``):
  no interpreter discovery on the first task of every host, and Mitogen opens one remote
  interpreter per host instead of two (measured: half its CPU and memory).
* **Mitogen's strategy** (:func:`choose_strategy`) when the optional ``mitogen`` package
  is installed: one persistent Python per host instead of a new Python compiling Ansible's
  module_utils for every module run (~0.25 s of CPU per module run on the host). Bounded
  when the hosts are this machine (``Provider.hosts_share_this_machine``: ~30 MB of memory
  per host for the whole playbook); falls back to ``linear`` when a run fails in Mitogen
  itself (:func:`enos.ansible.run_playbooks`). ``ENOS_ANSIBLE_STRATEGY=linear`` (or
  ``mitogen``) overrides the choice.
* Forks = hosts (capped), pipelining, the env's masters (:func:`enos.ansible.ansible_env`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from enos.ansible import LINEAR, MITOGEN, failure_message, mitogen_strategies, run_playbooks
from enos.errors import ProvisionError, UsageError
from enos.inventory import write_inventory
from enos.model import Host
from enos.progress import NULL
from enos.ssh.remote import run_sessions

#: the task name failures of the preinstall are reported under (as the old playbook's)
PREINSTALL_TASK = "make sure python3 is installed"
#: seconds a host may take to install python3
PREINSTALL_TIMEOUT = 900.0
#: memory one host's Mitogen interpreters hold during a playbook (PSS, measured with the
#: interpreter pinned: 30 MB; rounded up)
MITOGEN_MB_PER_HOST = 32
#: share of this machine's available memory Mitogen may take when the hosts are this machine
MITOGEN_MEMORY_SHARE = 0.5
STRATEGY_ENV = "ENOS_ANSIBLE_STRATEGY"

# POSIX sh, one round trip: python3's path on stdout ("ENOS_PYTHON=/usr/bin/python3"),
# installing it first with whatever package manager the host has
PREINSTALL_SCRIPT = r"""
p=$(command -v python3 2>/dev/null)
if [ -z "$p" ]; then
  { command -v apt-get >/dev/null 2>&1 && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3; } ||
  { command -v dnf >/dev/null 2>&1 && dnf install -y python3; } ||
  { command -v yum >/dev/null 2>&1 && yum install -y python3; } ||
  { command -v apk >/dev/null 2>&1 && apk add python3; }
  p=$(command -v python3 2>/dev/null)
fi
if [ -z "$p" ]; then echo "python3 is missing and no package manager could install it" >&2; exit 127; fi
echo "ENOS_PYTHON=$p"
"""


def _python_of(stdout: str) -> Optional[str]:
    for line in (stdout or "").splitlines():
        if line.startswith("ENOS_PYTHON="):
            return line.split("=", 1)[1].strip() or None
    return None


def preinstall(ssh_config: Path, hosts: Sequence[Host], progress=None,
               timeout: float = PREINSTALL_TIMEOUT) -> Dict[str, str]:
    """Make sure every host has python3, all hosts at once over the env's connection
    masters; return {alias: python3's path}.

    Raises :class:`ProvisionError` ("preinstall") listing each host that could not be
    reached or could not get python3 (host, :data:`PREINSTALL_TASK`, why), as the
    preinstall playbook did; KeyboardInterrupt on SIGINT/SIGTERM."""
    progress = progress or NULL
    with progress.task(f"preinstall: python3 on {len(hosts)} host(s)"):
        results = run_sessions(ssh_config, hosts, PREINSTALL_SCRIPT, timeout=timeout, label="preinstall")
        found, failures = {}, []
        for r in results:
            path = _python_of(r.stdout) if r.rc == 0 else None
            if path:
                found[r.alias] = path
            elif r.rc is None or r.rc == 255:
                why = r.error or (r.stderr or "").strip() or "ssh failed"
                failures.append((r.alias, PREINSTALL_TASK, f"unreachable: {why}"))
            else:
                failures.append((r.alias, PREINSTALL_TASK,
                                 failure_message({"rc": r.rc, "stderr": r.stderr, "stdout": r.stdout})))
        if failures:
            raise ProvisionError("preinstall", failures, None)
    return found


def choose_strategy(host_count: int, hosts_share_this_machine: bool, progress=None) -> str:
    """Return the Ansible strategy for a provisioning of ``host_count`` hosts:
    :data:`~enos.ansible.MITOGEN` when Mitogen is installed (and, for hosts that are this
    machine, when their ~30 MB each fit in half of its available memory), else
    :data:`~enos.ansible.LINEAR`. ``ENOS_ANSIBLE_STRATEGY`` (``linear``, ``mitogen``,
    ``auto``) overrides the choice; raises UsageError for another value."""
    progress = progress or NULL
    asked = os.environ.get(STRATEGY_ENV, "auto").strip().lower() or "auto"
    if asked not in ("auto", "linear", "mitogen"):
        raise UsageError(f"{STRATEGY_ENV}={asked!r}: use linear, mitogen or auto")
    if asked == "linear":
        return LINEAR
    if mitogen_strategies() is None:
        if asked == "mitogen":
            progress.info(f"warning: {STRATEGY_ENV}=mitogen but the mitogen package is not installed "
                          "(pip install 'enos[fast]'); using Ansible's linear strategy")
        return LINEAR
    if asked == "auto" and hosts_share_this_machine:
        need, have = host_count * MITOGEN_MB_PER_HOST, _available_mb()
        if have is not None and need > have * MITOGEN_MEMORY_SHARE:
            progress.info(f"{host_count} hosts on this machine: Mitogen would hold ~{need} MB of its "
                          f"{have:.0f} MB available; using Ansible's linear strategy")
            return LINEAR
    return MITOGEN


def _available_mb() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def provision(environment, playbooks: Sequence[Path], extravars: dict, tags: Optional[str] = None,
              progress=None, verbose: bool = False, hosts_share_this_machine: bool = False) -> List:
    """Provision ``environment`` (an :class:`enos.task.EnvDir` whose hosts answer SSH):
    :func:`preinstall`, the interpreters into the inventory, then ``playbooks`` with the
    strategy of :func:`choose_strategy`; return their :class:`~enos.ansible.PlaybookRun`.
    Raises ProvisionError (the first failed step), EnosError, KeyboardInterrupt."""
    progress = progress or NULL
    hosts = environment.resources.hosts
    interpreters = preinstall(environment.ssh_config, hosts, progress)
    write_inventory(environment.env_dir, environment.resources, environment.ssh_config, interpreters)
    if not playbooks:
        return []
    strategy = choose_strategy(len(hosts), hosts_share_this_machine, progress)
    return run_playbooks(environment.env_dir, environment.inventory, environment.ssh_config, list(playbooks),
                         len(hosts), extravars=extravars, tags=tags, progress=progress, verbose=verbose,
                         run_id=environment.run_id, strategy=strategy)
