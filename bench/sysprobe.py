"""What a benchmark run costs the machine: processes, threads, file handles and memory,
sampled while an enos command runs, and the memory an environment's hosts hold.

:class:`Probe` samples every ``period`` seconds in a thread (cheap reads only: the process
count from ``/proc``, threads from ``/proc/loadavg``, allocated file handles from
``/proc/sys/fs/file-nr``, and the file descriptors of one process tree) and keeps the
peaks; :func:`limits` gives the machine's ceilings for them; :func:`env_pss_mb` sums the
proportional memory (PSS) of every process of an environment: its hosts' processes (all
PIDs of its network namespaces) and its SSH connection masters.
"""
from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def process_count() -> int:
    """Return the number of processes on the machine."""
    return sum(1 for p in os.listdir("/proc") if p.isdigit())


def thread_count() -> int:
    """Return the number of threads (kernel scheduling entities) on the machine."""
    fields = _read("/proc/loadavg").split()
    return int(fields[3].split("/")[1]) if len(fields) > 3 else 0


def file_handles() -> int:
    """Return the number of file handles allocated on the machine."""
    fields = _read("/proc/sys/fs/file-nr").split()
    return int(fields[0]) - int(fields[1]) if len(fields) > 1 else 0


def _children(pid: int) -> List[int]:
    out: List[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in _read(f"/proc/{pid}/task/{tid}/children").split()]
    except OSError:
        pass
    return out


def tree_fds(root: int) -> Dict[str, int]:
    """Return {"fds": open descriptors, "max_fds": the most held by one process,
    "procs": processes} of the process tree under ``root`` (``root`` included)."""
    todo, total, most, procs = [root], 0, 0, 0
    while todo:
        pid = todo.pop()
        try:
            n = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        procs += 1
        total += n
        most = max(most, n)
        todo += _children(pid)
    return {"fds": total, "max_fds": most, "procs": procs}


def limits(pid: Optional[int] = None) -> Dict[str, int]:
    """Return the machine's ceilings: ``pid_max``, ``threads_max``, ``file_max`` and the
    per-process descriptor limit ``nofile`` (of ``pid``, else of this process)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if pid:
        for line in _read(f"/proc/{pid}/limits").splitlines():
            if line.startswith("Max open files"):
                nofile = int(line.split()[3])
    return {"pid_max": int(_read("/proc/sys/kernel/pid_max") or 0),
            "threads_max": int(_read("/proc/sys/kernel/threads-max") or 0),
            "file_max": int(_read("/proc/sys/fs/file-max") or 0), "nofile": nofile}


class Probe:
    """Samples the machine (and the process tree of ``root``, once set) every ``period``
    seconds between ``start()`` and ``stop()``; ``peak`` and ``base`` (the first sample)
    hold ``procs``, ``threads``, ``handles``, ``tree_fds``, ``tree_max_fds``, ``tree_procs``."""

    def __init__(self, period: float = 0.25):
        self.period = period
        self.root: Optional[int] = None
        self.base: Dict[str, int] = {}
        self.peak: Dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> Dict[str, int]:
        """Return one sample."""
        s = {"procs": process_count(), "threads": thread_count(), "handles": file_handles()}
        if self.root:
            t = tree_fds(self.root)
            s.update(tree_fds=t["fds"], tree_max_fds=t["max_fds"], tree_procs=t["procs"])
        return s

    def _loop(self) -> None:
        while not self._stop.is_set():
            s = self.sample()
            if not self.base:
                self.base = dict(s)
            for k, v in s.items():
                self.peak[k] = max(self.peak.get(k, 0), v)
            self.samples += 1
            self._stop.wait(self.period)

    def start(self) -> "Probe":
        """Start sampling; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (waits for the last sample)."""
        self._stop.set()
        self._thread.join()


def run_probed(argv: List[str], probe: Probe, **popen) -> tuple:
    """Run ``argv`` (stdin closed, output captured) while ``probe`` samples it and its
    children; return (seconds, returncode, stdout, stderr)."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, **popen)
    probe.root = p.pid
    probe.start()
    try:
        out, err = p.communicate()
    finally:
        probe.stop()
    return time.perf_counter() - t, p.returncode, out, err


def mem_available_mb() -> float:
    """Return MemAvailable of the machine, in MB."""
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def _pss_kb(pid: int) -> int:
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def env_pids(namespaces: List[str], run_id: str) -> List[int]:
    """Return the PIDs of an environment: every process inside its network namespaces and
    its SSH connection masters (``ssh: <ControlPath holding the run id> [mux]``)."""
    pids: List[int] = []
    for ns in namespaces:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        pids += [int(x) for x in out.split()]
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ssh:") and run_id in cmd:
                pids.append(int(p))
    return sorted(set(pids))


def env_namespaces(run_id: str) -> List[str]:
    """Return the network namespaces of the local environment of ``run_id``
    (``enos-<run id>-<n>``)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(f"enos-{run_id}-")]


def env_pss_mb(namespaces: List[str], run_id: str) -> float:
    """Return the summed PSS (MB) of an environment's processes (:func:`env_pids`)."""
    return sum(_pss_kb(p) for p in env_pids(namespaces, run_id)) / 1024.0
