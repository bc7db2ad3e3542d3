"""Shared pieces of the g5k provider tests: a Config, a provider on a real State, the
credentials file pointing at a fake API (tests/g5kserver.py)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from enos.provider.g5k import G5k
from enos.provider.provider import ProviderContext
from enos.reservation.config import Config, MachineSpec
from enos.ssh.keys import ensure_keypair
from enos.state import State

FAST = {"poll_interval": 0.05, "poll_max_interval": 0.2, "retry_base_delay": 0.02,
        "retry_max_delay": 0.1, "api_timeout": 5}


def write_creds(path: Path, url: str, password: str, user: str = "alice") -> Path:
    """Write a python-grid5000 credentials file for the fake API; return it."""
    path.write_text(f"username: {user}\npassword: {password}\nuri: {url}\n")
    path.chmod(0o600)
    return path


def cfg(options: Optional[dict] = None, machines: Optional[List[MachineSpec]] = None,
        networks: Optional[list] = None) -> Config:
    """A g5k Config: 1 control + 2 compute on paradoxe (rennes), 1 compute on gros (nancy)
    unless ``machines`` are given."""
    ms = machines if machines is not None else [
        MachineSpec(roles=["control"], count=1, label="paradoxe", keypath="resources.paradoxe.control"),
        MachineSpec(roles=["compute"], count=2, label="paradoxe", keypath="resources.paradoxe.compute"),
        MachineSpec(roles=["compute"], count=1, label="gros", keypath="resources.gros.compute")]
    return Config(file="reservation.yaml", provider_type="g5k", options={"type": "g5k", **FAST, **(options or {})},
                  machines=ms, networks=networks or [])


def provider(env_dir: Path, config: Config, state: Optional[State] = None) -> G5k:
    """A G5k provider on a real State in ``env_dir`` (created, or ``state`` resumed)."""
    env_dir.mkdir(parents=True, exist_ok=True)
    st = state or State.create(env_dir, "reservation.yaml", {}, "g5k")
    key = ensure_keypair(env_dir / "ssh", f"enos-{st.run_id}")
    return G5k(ProviderContext(config=config, journal=st.journal, env_dir=env_dir, run_id=st.run_id, ssh_key=key))
