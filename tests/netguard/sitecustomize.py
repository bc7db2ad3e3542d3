"""Network guard of the test suite and the benchmark (loaded by every Python process they
start: tests/conftest.py and bench/run.py put this directory first on PYTHONPATH).

The project's network rule: tests and benchmarks talk only to loopback or to hosts inside
network namespaces (or VMs on bridges inside them) that they created. This guard refuses,
loudly, what would break it from Python or from an ``ssh`` started by Python (enos, Ansible):

- a ``socket.connect`` to an IP address that is neither loopback nor routed through a
  local interface other than the default route's (i.e. a bridge of a test's hosts);
- a name lookup of a real Grid'5000 name (``*.grid5000.fr``, the g5k provider's default
  gateway ``access.grid5000.fr``);
- an ``ssh`` whose first hop (its ProxyJump, else its HostName, as ``ssh -G`` resolves
  them without connecting; for a ``ProxyCommand ssh ...``, that ssh's own first hop) is
  such a name or address.

Each refusal raises PermissionError in the offending process and is appended to the file
``$ENOS_NETGUARD_LOG``, which the test session / the benchmark checks at its end (a
refusal swallowed by a retry loop still fails the run).
"""
from __future__ import annotations

import os
import sys

_LOG = os.environ.get("ENOS_NETGUARD_LOG")


def _install() -> None:
    import ipaddress
    import socket
    import subprocess as _sp

    cache: dict = {}
    busy = [False]
    real_popen = _sp.Popen        # the guard's own commands do not count as the program's

    def output(argv) -> tuple:
        p = real_popen(argv, stdout=_sp.PIPE, stderr=_sp.DEVNULL, stdin=_sp.DEVNULL, text=True)
        out, _ = p.communicate(timeout=20)
        return p.returncode, out

    def default_dev() -> str:
        if "dev" not in cache:
            dev = ""
            try:
                with open("/proc/net/route") as f:
                    for line in f.read().splitlines()[1:]:
                        parts = line.split()
                        if len(parts) > 2 and parts[1] == "00000000":
                            dev = parts[0]
                            break
            except OSError:
                pass
            cache["dev"] = dev
        return cache["dev"]

    def local_ip(text: str) -> bool:
        try:
            ip = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            return False
        if ip.is_loopback or ip.is_unspecified:
            return True
        if ip.version != 4:
            return False
        key = f"ip:{ip}"
        if key not in cache:
            out = output(["ip", "-o", "route", "get", str(ip)])[1]
            words = out.split()
            dev = words[words.index("dev") + 1] if "dev" in words else ""
            cache[key] = bool(dev) and dev != default_dev()
        return cache[key]

    def real_g5k(name: str) -> bool:
        n = name.lower().rstrip(".")
        return n == "grid5000.fr" or n.endswith(".grid5000.fr")

    def refuse(what: str) -> None:
        msg = f"enos network guard: refused {what} (pid {os.getpid()}: {' '.join(sys.argv)[:200]})"
        if _LOG:
            try:
                with open(_LOG, "a") as f:
                    f.write(msg + "\n")
            except OSError:
                pass
        raise PermissionError(msg)

    def check_ssh(args) -> None:
        argv = [str(a) for a in args]
        # ssh OPTIONS DESTINATION [COMMAND]: ask ssh itself where it would go
        rc, out = output(["ssh", "-G", *argv[1:]])
        if rc != 0:
            return
        conf = {}
        for line in out.splitlines():
            k, _, v = line.partition(" ")
            conf.setdefault(k, v)
        if not conf.get("hostname"):
            return          # not a connection (ssh -V, ssh -Q ...)
        proxy = conf.get("proxycommand", "none")
        if proxy not in ("none", ""):
            import shlex
            try:
                words = shlex.split(proxy.replace("%h", "proxied-host").replace("%p", "22"))
            except ValueError:
                words = []
            if words and os.path.basename(words[0]) == "ssh":
                return check_ssh(words)        # the first hop is the proxy ssh's own
        hop = conf.get("proxyjump", "none")
        target = conf.get("hostname", "") if hop in ("none", "") else hop.split(",")[0]
        host = target.rsplit("@", 1)[-1]
        if host.startswith("["):
            host = host[1:].split("]")[0]
        elif host.count(":") == 1:
            host = host.split(":")[0]
        if real_g5k(host) or not (local_ip(host) or host == "localhost"):
            refuse(f"ssh to {host} (first hop of: {' '.join(argv)[:200]})")

    def hook(event: str, args) -> None:
        if busy[0]:
            return
        if event == "socket.connect":
            sock, addr = args
            if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6) and isinstance(addr, tuple):
                busy[0] = True
                try:
                    if not local_ip(str(addr[0])):
                        refuse(f"a connection to {addr[0]}:{addr[1]}")
                finally:
                    busy[0] = False
        elif event == "socket.getaddrinfo":
            host = args[0]
            if isinstance(host, bytes):
                host = host.decode(errors="replace")
            if isinstance(host, str) and real_g5k(host):
                refuse(f"a name lookup of {host}")
        elif event == "subprocess.Popen":
            executable, argv = args[0], args[1]
            prog = os.path.basename(str(executable or (argv[0] if isinstance(argv, (list, tuple)) and argv else "")))
            if prog == "ssh" and isinstance(argv, (list, tuple)) and "-G" not in argv and "-O" not in argv:
                busy[0] = True
                try:
                    check_ssh(argv)
                finally:
                    busy[0] = False

    sys.addaudithook(hook)


if os.environ.get("ENOS_NETGUARD") == "1":
    _install()
