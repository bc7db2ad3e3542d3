"""Network guard of the test suite and the benchmark (loaded by every Python process they
start: tests/conftest.py and bench/run.py put this directory first on PYTHONPATH).

The project's network rule: tests and benchmarks talk only to loopback or to hosts inside
network namespaces (or VMs on bridges inside them) that they created. This guard refuses,
loudly, what would break it from Python or from an ``ssh`` started by Python (enos, Ansible).
It fails CLOSED: what it cannot show to be local is refused.

- a ``socket.connect`` to an IP address that is not local: local is loopback, an address
  of this machine, or an address directly on a bridge, veth or dummy link (no gateway)
  that is not the default route's device (the test hosts' bridges); an address routed
  through a gateway, on a physical or tunnel device, or with no route at all is refused;
- a name lookup of a real Grid'5000 name (``*.grid5000.fr``, the g5k provider's default
  gateway ``access.grid5000.fr``);
- an ``ssh`` started by Python (``subprocess``, ``os.exec*``, ``os.posix_spawn``) whose first
  hop (its ProxyJump, else its HostName, as ``ssh -G`` resolves them without connecting)
  is such a name or address (for a ``ProxyCommand ssh ...``, that ssh's own first hop); an ssh
  whose destination ``ssh -G`` cannot resolve, or
  which names no host, is refused too (``ssh -V``/``-Q``/``-O`` make no connection).

What it does NOT see (tests/netguard/README.md): connections made by programs that are
not Python (Vagrant, libvirtd, QEMU, Chromium, an ssh started by them); those run inside
network namespaces the tests create, or under ``unshare --net``.

Each refusal raises PermissionError in the offending process and is appended to the file
named by ``$ENOS_NETGUARD_LOG`` when it happens (a test of the guard itself points it at
its own file), which the test session / the benchmark checks at its end (a refusal
swallowed by a retry loop still fails the run).
"""
from __future__ import annotations

import os
import sys



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

    def virtual_link(dev: str) -> bool:
        """True for a bridge, veth or dummy link (what tests create for their hosts)."""
        key = f"dev:{dev}"
        if key not in cache:
            words = output(["ip", "-d", "-o", "link", "show", "dev", dev])[1].split()
            cache[key] = any(kind in words for kind in ("bridge", "veth", "dummy"))
        return cache[key]

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
            rc, out = output(["ip", "-o", "route", "get", str(ip)])
            words = out.split()
            dev = words[words.index("dev") + 1] if "dev" in words else ""
            if rc != 0 or not words:
                cache[key] = False                  # no route (or unreachable): not local
            elif words[0] == "local":
                cache[key] = True                   # an address of this machine
            else:
                cache[key] = bool(dev) and "via" not in words and dev != default_dev() and virtual_link(dev)
        return cache[key]

    def real_g5k(name: str) -> bool:
        n = name.lower().rstrip(".")
        return n == "grid5000.fr" or n.endswith(".grid5000.fr")

    def refuse(what: str) -> None:
        msg = f"enos network guard: refused {what} (pid {os.getpid()}: {' '.join(sys.argv)[:200]})"
        log = os.environ.get("ENOS_NETGUARD_LOG")
        if log:
            try:
                with open(log, "a") as f:
                    f.write(msg + "\n")
            except OSError:
                pass
        raise PermissionError(msg)

    def check_ssh(args) -> None:
        argv = [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args]
        if any(a in ("-V", "-Q", "-O", "-G") or a.startswith(("-Q", "-O")) for a in argv[1:]):
            return          # not a connection: version, query, control-master command, -G itself
        # ssh OPTIONS DESTINATION [COMMAND]: ask ssh itself where it would go
        rc, out = output(["ssh", "-G", *argv[1:]])
        conf = {}
        for line in out.splitlines():
            k, _, v = line.partition(" ")
            conf.setdefault(k, v)
        if rc != 0 or not conf.get("hostname"):
            refuse(f"an ssh whose destination 'ssh -G' cannot resolve ({' '.join(argv)[:200]})")
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
        elif event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn"):
            if event == "os.spawn":
                executable, argv = args[1], args[2]
            else:
                executable, argv = args[0], args[1]
            if isinstance(argv, (str, bytes)):
                argv = [argv]
            prog = os.path.basename(os.fsdecode(executable or (argv[0] if argv else "")))
            if prog == "ssh" and isinstance(argv, (list, tuple)):
                busy[0] = True
                try:
                    check_ssh(argv)
                finally:
                    busy[0] = False

    sys.addaudithook(hook)


if os.environ.get("ENOS_NETGUARD") == "1":
    _install()
