"""Ansible inventory of an environment (YAML): a group per role, host vars from
``Host.extra``, SSH through the env's ssh_config — so a plain
``ansible -i <env>/inventory.yml all -m ping`` works."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, Optional

from enos.errors import UnsafeValue
from enos.model import Resources
from enos.names import unsafe_host_fields
from enos.state import atomic_write


def build_inventory(resources: Resources, ssh_config: Path, python: Optional[str] = None,
                    interpreters: Optional[Dict[str, str]] = None) -> dict:
    """Return the inventory as a dict in Ansible's YAML inventory shape. ``interpreters``
    ({alias: path}, what enos' preinstall found) become each host's
    ``ansible_python_interpreter`` (unless the host's own variables set one); the others
    get ``python`` or Ansible's discovery (``auto_silent``). Raises UnsafeValue for a host
    whose alias, address, user, interpreter, ... is not a safe value."""
    hosts = {}
    interpreters = interpreters or {}
    for h in resources.hosts:
        bad = unsafe_host_fields(h)
        found = interpreters.get(h.alias)
        if found is not None and not _safe_path(found):
            bad.append("python interpreter")
        if bad:
            raise UnsafeValue(f"host {h.alias!r}: refusing to write {', '.join(bad)} into the inventory")
        hv = {"ansible_host": h.alias, "enos_address": h.address, "enos_roles": list(h.roles)}
        if found is not None:
            hv["ansible_python_interpreter"] = found
        hv.update(h.extra)
        hosts[h.alias] = hv
    children = {role: {"hosts": {h.alias: None for h in hs}}
                for role, hs in sorted(resources.roles().items())}
    vars_ = {"ansible_ssh_common_args": f"-F {shlex.quote(str(ssh_config))}",   # split with shlex
             "ansible_python_interpreter": python or "auto_silent"}
    if resources.networks:
        vars_["enos_networks"] = [n.to_dict() for n in resources.networks]
    return {"all": {"hosts": hosts, "children": children, "vars": vars_}}


def _safe_path(path: str) -> bool:
    """True for an absolute path of printable characters without spaces or quotes."""
    return path.startswith("/") and path.isprintable() and not any(c in path for c in " '\"\\$`")


def write_inventory(env_dir: Path, resources: Resources, ssh_config: Path,
                    interpreters: Optional[Dict[str, str]] = None) -> Path:
    """Write ``<env>/inventory.yml`` (``interpreters`` as for :func:`build_inventory`);
    return its path."""
    path = Path(env_dir) / "inventory.yml"
    text = "# written by enos; use: ansible -i " + str(path) + " all -m ping\n"
    text += inventory_yaml(build_inventory(resources, ssh_config, interpreters=interpreters))
    atomic_write(path, text, mode=0o600)
    return path


def inventory_yaml(inv: dict) -> str:
    """Return the YAML text of the inventory ``inv`` (:func:`build_inventory`'s shape): block
    style down to each host, group and variable, whose value is one line of JSON (a YAML
    flow collection: JSON strings are YAML double-quoted scalars). PyYAML builds the same
    document ~20x slower (its representer is Python even with libyaml's emitter: 8.6 ms
    at 100 hosts against 0.45 ms, ~43 ms at 500); it still writes values JSON cannot say
    the same way in YAML 1.1 (floats, non-string keys)."""
    import json
    if not _plain_json(inv):
        import yaml
        return yaml.dump(inv, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                         default_flow_style=False)
    a = inv["all"]
    lines = ["all:", "  hosts:"]
    lines += [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in a["hosts"].items()]
    lines.append("  children:")
    lines += [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in a["children"].items()]
    lines.append("  vars:")
    lines += [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in a["vars"].items()]
    return "\n".join(lines) + "\n"


def _plain_json(value) -> bool:
    """True when ``value`` holds only strings, ints, booleans, None, lists and dicts with
    string keys (what JSON and YAML 1.1 read alike), in the top-level shape expected."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                return False
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, float) or not (v is None or isinstance(v, (str, int))):
            return False
    a = value.get("all") if isinstance(value, dict) else None
    return isinstance(a, dict) and set(a) == {"hosts", "children", "vars"} and \
        all(isinstance(a[k], dict) for k in a)
