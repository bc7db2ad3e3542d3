"""Environments the harness needs: a ready ``static`` env whose one host refuses
connections (127.0.0.1 port 1: nothing leaves the machine, every command fails fast), and
real ``local`` envs (namespace hosts) brought up with ``enos up``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hostile.core import base_env

STATIC = "provider: static\nresources:\n  db:\n    - address: 127.0.0.1\n      port: 1\n"
LOCAL = "provider:\n  type: local\nresources:\n  local:\n    db: 1\n    web: 1\n"


def static_env(d: Path) -> Path:
    """Write a ready env of the static provider in ``d/env`` (through enos' State class);
    return it."""
    from enos.model import Host, Resources
    from enos.state import State
    d.mkdir(parents=True, exist_ok=True)
    res = d / "static.yaml"
    res.write_text(STATIC)
    env = d / "env"
    env.mkdir()
    st = State.create(env, str(res), {"provider": "static", "resources": {"db": [
        {"address": "127.0.0.1", "port": 1}]}}, "static")
    hosts = [Host(alias="db-1", address="127.0.0.1", port=1, roles=["db"])]
    st.data["resources"] = Resources(hosts=hosts).to_dict()
    from enos.inventory import write_inventory        # the files 'enos up' writes
    from enos.ssh.client import write_ssh_files
    cfg = write_ssh_files(env, hosts, st.run_id)
    write_inventory(env, Resources(hosts=hosts), cfg)
    (d / "camp.yaml").write_text("reservation: static.yaml\nparameters:\n  a: [1]\nsteps:\n  - run: \"true\"\n")
    (d / "nc.yaml").write_text(STATIC + "network_constraints:\n  default_rate: 10mbit\n")
    st.set_phase("ready")
    return env


def local_env(d: Path, timeout: float = 180) -> tuple:
    """``enos up --no-provision`` of a two-host local reservation in ``d`` (as a user does);
    return (env dir, run id). Raises RuntimeError if it does not come up."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "reservation.yaml").write_text(LOCAL)
    p = subprocess.run([sys.executable, "-m", "enos", "-q", "up", "--no-provision"], cwd=str(d),
                       env=base_env(), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError(f"enos up failed in {d}: {p.stderr[-2000:]}")
    env = (d / "current").resolve()
    return env, json.loads((env / "state.json").read_text())["run_id"]


def destroy(d: Path, env: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``enos destroy --env ENV`` from ``d``."""
    return subprocess.run([sys.executable, "-m", "enos", "-q", "destroy", "--env", str(env)], cwd=str(d),
                          env=base_env(), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
