"""Ansible inventory of an environment (YAML): a group per role, host vars from
``Host.extra``, SSH through the env's ssh_config — so a plain
``ansible -i <env>/inventory.yml all -m ping`` works."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

from enos.errors import UnsafeValue
from enos.model import Resources
from enos.names import unsafe_host_fields
from enos.state import atomic_write


def build_inventory(resources: Resources, ssh_config: Path, python: Optional[str] = None) -> dict:
    """Return the inventory as a dict in Ansible's YAML inventory shape. Raises
    UnsafeValue for a host whose alias, address, user, ... is not a safe value."""
    hosts = {}
    for h in resources.hosts:
        bad = unsafe_host_fields(h)
        if bad:
            raise UnsafeValue(f"host {h.alias!r}: refusing to write {', '.join(bad)} into the inventory")
        hv = {"ansible_host": h.alias, "enos_address": h.address, "enos_roles": list(h.roles)}
        hv.update(h.extra)
        hosts[h.alias] = hv
    children = {role: {"hosts": {h.alias: None for h in hs}}
                for role, hs in sorted(resources.roles().items())}
    vars_ = {"ansible_ssh_common_args": f"-F {shlex.quote(str(ssh_config))}",   # split with shlex
             "ansible_python_interpreter": python or "auto_silent"}
    if resources.networks:
        vars_["enos_networks"] = [n.to_dict() for n in resources.networks]
    return {"all": {"hosts": hosts, "children": children, "vars": vars_}}


def write_inventory(env_dir: Path, resources: Resources, ssh_config: Path) -> Path:
    """Write ``<env>/inventory.yml``; return its path."""
    import yaml
    path = Path(env_dir) / "inventory.yml"
    text = "# written by enos; use: ansible -i " + str(path) + " all -m ping\n"
    text += yaml.safe_dump(build_inventory(resources, ssh_config), sort_keys=False, default_flow_style=False)
    atomic_write(path, text, mode=0o600)
    return path
