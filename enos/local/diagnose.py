"""``enos check`` for the local provider: root, sshd, ip, unshare, ssh-keygen, network
namespaces, and the policy rules keeping the address range on this machine."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import List

from enos.local import guard
from enos.local.sshd import find_sshd
from enos.model import Check


def checks() -> List[Check]:
    """Return whether root, sshd, ip, unshare and ssh-keygen are available."""
    out = [Check("root privileges", os.geteuid() == 0,
                 "running as root" if os.geteuid() == 0 else f"running as uid {os.geteuid()}",
                 "run enos as root (namespaces, bridges and veths need CAP_NET_ADMIN)")]
    sshd = find_sshd()
    out.append(Check("sshd", sshd is not None, sshd or "no sshd binary in /usr/sbin or PATH",
                     "apt-get install openssh-server"))
    for binary, pkg in (("ip", "iproute2"), ("unshare", "util-linux"),
                        ("ssh-keygen", "openssh-client"), ("mount", "mount")):
        p = shutil.which(binary)
        out.append(Check(binary, p is not None, p or f"'{binary}' not found in PATH",
                         f"apt-get install {pkg}"))
    ns_ok = os.path.exists("/proc/self/ns/net")
    out.append(Check("network namespaces", ns_ok,
                     "kernel supports them" if ns_ok else "/proc/self/ns/net is missing",
                     "use a kernel with CONFIG_NET_NS"))
    out.append(guard_check())
    return out

def guard_check() -> Check:
    """Whether the policy rules keeping the range's packets on this machine are there
    (``enos up`` installs them; information only, never a reason to refuse)."""
    try:
        missing = guard.missing_rules()
    except (OSError, subprocess.SubprocessError) as e:
        return Check("address range kept local", True, f"cannot read the policy rules ({e}); "
                     f"'enos up' installs them", "")
    if not missing:
        return Check("address range kept local", True,
                     f"policy rules installed: {guard.RANGE_TEXT} unreachable except through live "
                     f"environments' bridges (priorities {guard.PRIO_MAIN}, {guard.PRIO_UNREACHABLE})")
    return Check("address range kept local", True,
                 f"{len(missing)} policy rule(s) not installed yet ('enos up' adds them): "
                 + "; ".join(missing))