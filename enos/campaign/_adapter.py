"""TEMPORARY: what the experiment layer's Env does not have yet on main (play, backup),
over enos.ansible / scp. Deleted as soon as Env.play/backup land."""
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


def wrap(env: Env) -> Env:
    """Return ``env`` with the missing methods."""
    return CampaignEnv(env.environment, keep=True, quiet=env.quiet)
