"""TEMPORARY: what the experiment layer's Env does not have yet on main (play, backup, tc),
over enos.ansible / scp / a tc command. Deleted as soon as Env.play/backup/tc land."""
from __future__ import annotations

import subprocess
from pathlib import Path

from enos.experiment.env import Env


class CampaignEnv(Env):
    """Env plus the methods still missing on main."""

    if not hasattr(Env, "play"):
        def play(self, playbook, extra_vars=None):
            from enos.ansible import run_playbooks
            ev = dict(self.environment.config.variables)
            ev.update(extra_vars or {})
            run_playbooks(self.env_dir, self.inventory, self.ssh_config, [Path(playbook)],
                          len(self.hosts), extravars=ev)

    if not hasattr(Env, "backup"):
        def backup(self, paths, roles=None, dest="."):
            for h in self.select(roles):
                d = Path(dest) / h.alias
                d.mkdir(parents=True, exist_ok=True)
                for p in paths:
                    subprocess.run(["scp", "-q", "-F", str(self.ssh_config), f"{h.alias}:{p}", str(d) + "/"],
                                   capture_output=True, text=True, timeout=120)

    if not hasattr(Env, "tc"):
        def tc(self, constraints):
            rate = constraints.get("default_rate")
            if rate:
                self.run("d=$(ip -o -4 addr show scope global | awk '{print $2}' | head -1); "
                         "tc qdisc del dev $d root 2>/dev/null; tc qdisc add dev $d root handle 1: htb default 10 && "
                         f"tc class add dev $d parent 1: classid 1:10 htb rate {rate}")

        def tc_reset(self):
            self.run("d=$(ip -o -4 addr show scope global | awk '{print $2}' | head -1); "
                     "tc qdisc del dev $d root 2>/dev/null; true")


def wrap(env: Env) -> Env:
    """Return ``env`` with the missing methods."""
    return CampaignEnv(env.environment, keep=True, quiet=env.quiet)
