"""Test helpers for the ``local`` provider: bring namespace hosts up through the Python API,
probe what of a run id is left on this machine (independently of enos' own code)."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator, List, Optional

from enos.reservation.config import Config, MachineSpec
from enos.provider.provider import ProviderContext
from enos.ssh.keys import ensure_keypair
from enos.state import State

#: every run id a test of this session created, checked for leftovers at the end
RUN_IDS: List[str] = []


@contextlib.contextmanager
def api_env(reservation: dict, base: Path) -> Iterator:
    """Yield the Env ``enos.up(reservation)`` brings up under ``base`` (kept, not
    provisioned, quiet), its run id recorded in :data:`RUN_IDS`; on leaving, whatever the
    test did, destroy it and assert nothing of its run is left on this machine."""
    import enos
    e = enos.up(reservation, keep=True, base=base, provision=False, quiet=True)
    RUN_IDS.append(e.run_id)
    try:
        yield e
    finally:
        e.destroy()
        assert leftovers(e.run_id) == []


def local_config(counts: dict, subnet: Optional[str] = None, extra_hosts: Optional[dict] = None) -> Config:
    """Return a Config for the local provider with ``counts`` = {role: count} (one spec each)."""
    options = {"type": "local"}
    if subnet:
        options["subnet"] = subnet
    machines = [MachineSpec(roles=[r], count=c, label="local", keypath=f"resources.local.{r}",
                            options={"extra_hosts": extra_hosts} if extra_hosts else {})
                for r, c in counts.items()]
    return Config(file="reservation.yaml", provider_type="local", options=options, machines=machines)


def make_provider(env_dir: Path, config: Config, run_id: Optional[str] = None):
    """Return a LocalProvider on a real State in ``env_dir`` (created if needed), with the env
    key generated; the run id is registered for the end-of-session leftover check."""
    from enos.provider.local import LocalProvider
    env_dir = Path(env_dir)
    env_dir.mkdir(parents=True, exist_ok=True)
    if (env_dir / "state.json").exists():
        st = State.load(env_dir)
    else:
        st = State.create(env_dir, config.file, {}, "local", run_id=run_id)
    key = ensure_keypair(env_dir / "ssh", f"enos-{st.run_id}")
    RUN_IDS.append(st.run_id)
    ctx = ProviderContext(config=config, journal=st.journal, env_dir=env_dir, run_id=st.run_id, ssh_key=key)
    return LocalProvider(ctx)


def leftovers(run_id: str) -> List[str]:
    """Return what of ``run_id`` exists on this machine: namespaces ``enos-R-*`` (by
    ``ip netns``), links ``ebR``/``evR*`` (by ``ip -o link``), live or zombie processes
    started from ``local-R/`` (by ``ps``)."""
    out: List[str] = []
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    out += [f"netns {line.split()[0]}" for line in ns.splitlines() if line.startswith(f"enos-{run_id}-")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name == f"eb{run_id}" or name.startswith(f"ev{run_id}"):
            out.append(f"link {name}")
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    for line in ps.splitlines():
        if f"local-{run_id}/" in line:
            out.append(f"process {line.strip()}")
    return out


def ssh(key: Path, address: str, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run ``command`` as root on ``address`` with the env key (host key not checked)."""
    return subprocess.run(["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                           "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                           f"root@{address}", command],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def exists(pid: int) -> bool:
    """True if ``pid`` has a /proc entry (alive or zombie)."""
    return os.path.exists(f"/proc/{pid}")


def wait_running(cmdline: str, count: int, timeout: float = 60, run_id: Optional[str] = None) -> List[int]:
    """Wait until exactly ``count`` processes run the command line ``cmdline`` (the hosts of
    the local provider share this machine's PID space, so a remote command is seen here);
    return their PIDs. Raises AssertionError naming what was seen when it does not happen:
    a test that interrupts "a running remote command" must know it runs. With ``run_id``,
    only the processes on that env's hosts count (another test run on this machine may run
    the same command at the same time)."""
    import time
    deadline = time.monotonic() + timeout
    found: List[int] = []
    while time.monotonic() < deadline:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            if args == cmdline and (run_id is None or in_run(pid, run_id)):
                found.append(int(pid))
        if len(found) == count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{count} processes '{cmdline}' expected running, found {len(found)}: {found}")


def in_run(pid, run_id: str) -> bool:
    """True when process ``pid`` runs in the network namespace of a host of the local env
    ``run_id`` (``/run/netns/enos-<run_id>-N``)."""
    try:
        mine = os.stat(f"/proc/{pid}/ns/net")
        names = [n for n in os.listdir("/run/netns") if n.startswith(f"enos-{run_id}-")]
    except OSError:
        return False
    for n in names:
        try:
            st = os.stat(f"/run/netns/{n}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            return True
    return False


def wait_gone(pids, timeout: float = 10) -> List[int]:
    """Wait until none of ``pids`` has a /proc entry (a killed process is a zombie until its
    parent reaps it: in-process tests are that parent); return those still there."""
    import time
    deadline = time.monotonic() + timeout
    left = [p for p in pids if exists(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if exists(p)]
    return left


def free_run(run_id: str) -> List[str]:
    """Free whatever of ``run_id`` is left on this machine (a test's finaliser, whatever
    the test did or failed): enos' own sweep by run id first, then by hand (processes by
    PID, links, namespaces: every name carries the run id). Return what was left before."""
    from enos.provider.local import LocalProvider
    from enos.provider.provider import ProviderContext
    from enos.state import MemoryJournal
    left = leftovers(run_id)
    if not left:
        return []
    try:
        ctx = ProviderContext(config=local_config({"a": 1}), journal=MemoryJournal(),
                              env_dir=Path("/nonexistent"), run_id=run_id)
        LocalProvider(ctx).sweep()
    except Exception:                       # the by-hand pass below still runs
        pass
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in [line.split()[0] for line in ns.splitlines() if line.startswith(f"enos-{run_id}-")]:
        for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ValueError, ProcessLookupError):
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    for line in leftovers(run_id):
        kind, _, rest = line.partition(" ")
        if kind == "link":
            subprocess.run(["ip", "link", "del", rest], capture_output=True)
        elif kind == "process":
            try:
                os.kill(int(rest.split()[0]), 9)
            except (ValueError, ProcessLookupError):
                pass
    return left
