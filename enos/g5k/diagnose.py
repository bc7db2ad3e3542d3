"""``enos check`` for Grid'5000: credentials readable and accepted, SSH key present,
gateway reachable. Books nothing."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import List

from enos.errors import AuthError, EnosError
from enos.g5k.resources import jump_host
from enos.model import Check


def checks(g5k) -> List[Check]:
    """Return checks: credentials readable, accepted by the API, SSH key present,
    gateway reachable. Books nothing."""
    checks: List[Check] = []
    try:
        creds = g5k.creds
        checks.append(Check("Grid'5000 credentials", True, str(creds)))
    except AuthError as e:
        checks.append(Check("Grid'5000 credentials", False, str(e),
                            "write ~/.python-grid5000.yaml (username, password; chmod 600) "
                            "or set G5K_USERNAME/G5K_PASSWORD"))
        creds = None
    if creds is not None:
        try:
            g5k.api.call("check credentials", lambda gk: gk.root.get(), retries=False)
            g5k.api.call("check credentials", lambda gk: gk.sites.list(), retries=False)
            checks.append(Check("Grid'5000 API accepts the credentials", True, creds.uri))
        except EnosError as e:
            checks.append(Check("Grid'5000 API accepts the credentials", False, str(e),
                                "check the password (the API answers 401 to a wrong one) and G5K_API_URL"))
    pub = Path(os.path.expanduser(str(g5k.opt("key"))))
    priv = Path(str(pub)[:-4]) if str(pub).endswith(".pub") else pub
    checks.append(Check("SSH key", pub.is_file() and priv.is_file(), f"{priv} (+ .pub)",
                        f"ssh-keygen -t ed25519 -f {priv}, and register {pub} in your Grid'5000 account"))
    jump = jump_host(g5k) if creds is not None else None
    if jump:
        hostport = jump.split("@", 1)[-1]
        host, _, port = hostport.partition(":")
        try:
            with socket.create_connection((host, int(port or 22)), timeout=5):
                pass
            checks.append(Check("SSH gateway reachable", True, hostport))
        except OSError as e:
            checks.append(Check("SSH gateway reachable", False, f"{hostport}: {e}",
                                "check the network, or set 'gateway: false' inside Grid'5000"))
    return checks
