"""Rendering of an env's Vagrantfile from ``Vagrantfile.j2`` (Jinja2, imported lazily).

Every value enters the Ruby file through the ``rb`` filter (a double-quoted Ruby string
with ``\\``, ``"``, ``#`` and control characters escaped), so nothing from the reservation
can inject Ruby code.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Dict, Optional

TEMPLATE = "Vagrantfile.j2"


def ruby_string(value: Any) -> str:
    """Return ``value`` as a double-quoted Ruby string literal (escaped; ``#{`` cannot
    interpolate)."""
    s = json.dumps(str(value), ensure_ascii=True)          # escapes \ " and controls
    return s.replace("#", "\\#")


def render_vagrantfile(plan: Dict[str, Any], *, run_id: str, backend: str, box: str, user: str,
                       key: str, pubkey: str, enos_box: bool, uri: Optional[str] = None,
                       driver: str = "qemu", pool: Optional[str] = None, kernel: Optional[str] = None,
                       initrd: Optional[str] = None, cmdline: Optional[str] = None) -> str:
    """Return the Vagrantfile text of ``plan`` (see :func:`enos.vagrant.plan.make_plan`).

    ``enos_box``: the box is one of ``enos build vagrant`` (root logs in with ``key``
    directly, the seed disk ``vdb`` carries it); otherwise Vagrant logs in with its
    insecure key and a shell provisioner authorises ``pubkey`` for root. ``kernel``,
    ``initrd``, ``cmdline``: direct kernel boot (libvirt). Raises jinja2 errors only on a
    broken template."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    env.filters["rb"] = ruby_string
    nets = {}
    for n in plan["networks"]:
        nets[n["key"]] = dict(n, netmask=str(ipaddress.ip_network(n["cidr"], strict=False).netmask))
    return env.get_template(TEMPLATE).render(
        run_id=run_id, backend=backend, box=box, user=user, key=key, pubkey=pubkey,
        enos_box=enos_box, uri=uri, driver=driver, pool=pool, kernel=kernel, initrd=initrd,
        cmdline=cmdline, prefix=plan["prefix"], mgmt=plan["mgmt"], machines=plan["machines"],
        networks_by_key=nets)
