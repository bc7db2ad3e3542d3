"""``enos check`` for Vagrant: vagrant, the backend (vagrant-libvirt or VirtualBox), the
box, and for libvirt the daemon's own checks (:mod:`enos.libvirt.diagnose`)."""
from __future__ import annotations

import shutil
import subprocess
from typing import List

from enos.model import Check
from enos.vagrant.box import box_dir
from enos.vagrant.command import libvirt_plugin, vagrant_env


def checks(o: dict, default_box: str) -> List[Check]:
    """Return the checks of ``enos check``: vagrant, the backend (vagrant-libvirt or
    VirtualBox), the box, and for libvirt libvirtd and virtlogd (``o``: the provider
    options, defaults applied). Books nothing."""
    out: List[Check] = []
    vagrant = shutil.which("vagrant")
    version = ""
    if vagrant:
        p = subprocess.run([vagrant, "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           env=vagrant_env("check"), timeout=60)
        version = p.stdout.strip()
    out.append(Check("vagrant", bool(vagrant), version or "not installed",
                     "apt-get install vagrant (macOS: brew install --cask vagrant)"))
    if o["backend"] == "libvirt":
        plugin = libvirt_plugin()
        out.append(Check("vagrant-libvirt plugin (backend libvirt)", bool(plugin), plugin or "not installed",
                         "apt-get install vagrant-libvirt (or: vagrant plugin install vagrant-libvirt)"))
    else:
        vbox = shutil.which("VBoxManage")
        out.append(Check("VirtualBox (backend virtualbox)", bool(vbox), vbox or "VBoxManage not found",
                         "install VirtualBox (https://www.virtualbox.org/wiki/Downloads), "
                         "or set 'backend: libvirt' in provider"))
    d = box_dir(o["box"], o["backend"])
    fix = ("enos build vagrant" if o["box"] == default_box and o["backend"] == "libvirt"
           else f"vagrant box add {o['box']} --provider {o['backend']}")
    out.append(Check(f"box {o['box']} ({o['backend']})", d is not None, str(d) if d else "not installed", fix))
    if o["backend"] == "libvirt":
        try:
            from enos.libvirt.diagnose import diagnose
        except ImportError:       # libvirt-python missing
            out.append(Check("libvirt-python", False, "not installed", "pip install 'enos[libvirt]'"))
            return out
        conn, checks = diagnose(o["uri"], o["pool"])     # libvirtd, virtlogd, pool, network
        out += checks
        if conn is not None:
            conn.close()
    return out