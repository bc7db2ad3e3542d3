"""TEMPORARY thin adapter over enos.task + enos.ssh.remote, until the experiment layer
(enos/experiment/: Env.run/play/tc/backup) lands on main. To be deleted then."""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from enos.provider.provider import Host


@dataclass
class _Result:
    host: Host
    rc: Optional[int]
    stdout: str
    stderr: str
    started: float
    ended: float
    error: Optional[str] = None

    @property
    def duration(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.rc == 0


class Env:
    def __init__(self, environment):
        self._e = environment
        self.env_dir = environment.env_dir

    @property
    def hosts(self) -> List[Host]:
        return list(self._e.resources.hosts)

    @property
    def roles(self) -> Dict[str, List[Host]]:
        return self._e.resources.roles()

    def _select(self, roles):
        from enos.ssh.remote import select_hosts
        if roles is None:
            return self.hosts
        return select_hosts(self.hosts, ",".join(roles) if isinstance(roles, list) else roles)

    def run(self, cmd, roles=None, timeout=None, check=False):
        from enos.ssh.remote import run_command
        hosts = self._select(roles)
        t0 = time.time()
        res = run_command(self._e.ssh_config, hosts, cmd, timeout=timeout, tolerate_failures=True)
        t1 = time.time()
        by = {h.alias: h for h in hosts}
        return [_Result(by[r.host], r.exit_code, r.stdout, r.stderr, t0, t1, r.error) for r in res]

    def play(self, playbook, extra_vars=None):
        from enos.ansible import run_playbooks
        ev = dict(self._e.config.variables)
        ev.update(extra_vars or {})
        run_playbooks(self.env_dir, self._e.inventory, self._e.ssh_config, [Path(playbook)],
                      len(self.hosts), extravars=ev)

    def backup(self, paths, roles=None, dest="."):
        out = []
        for h in self._select(roles):
            d = Path(dest) / h.alias
            d.mkdir(parents=True, exist_ok=True)
            for p in paths:
                r = subprocess.run(["scp", "-q", "-F", str(self._e.ssh_config), f"{h.alias}:{p}", str(d) + "/"],
                                   capture_output=True, text=True, timeout=120)
                out.append((h.alias, p, r.returncode, r.stderr))
        return out

    def tc(self, constraints):
        rate = constraints.get("default_rate")
        if rate:
            dev = "$(ip -o route get 1.1.1.1 2>/dev/null | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p' | head -1)"
            cmd = (f"d=$(ip -o -4 addr show scope global | awk '{{print $2}}' | head -1); "
                   f"tc qdisc del dev $d root 2>/dev/null; tc qdisc add dev $d root handle 1: htb default 10 && "
                   f"tc class add dev $d parent 1: classid 1:10 htb rate {rate}")
            del dev
            self.run(cmd)

    def tc_reset(self):
        self.run("d=$(ip -o -4 addr show scope global | awk '{print $2}' | head -1); "
                 "tc qdisc del dev $d root 2>/dev/null; true")


def up(reservation, env_dir, progress=None) -> Env:
    from enos import task
    from enos.state import STATE_FILE, State
    d = Path(env_dir)
    if (d / STATE_FILE).exists() and State.load(d).phase == "ready":
        return load(d)
    if isinstance(reservation, dict):
        import yaml
        d.mkdir(parents=True, exist_ok=True)
        f = d.parent / "reservation.inline.yaml"
        f.write_text(yaml.safe_dump(reservation))
        reservation = str(f)
    return Env(task.up(reservation, env=str(d), progress=progress))


def load(env_dir) -> Env:
    from enos.task import require_env
    return Env(require_env(str(env_dir)))
