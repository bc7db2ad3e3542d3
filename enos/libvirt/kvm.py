"""``domain_type: auto``: use KVM only where a KVM guest actually boots.

Measured on enos' CI VM: ``/dev/kvm`` exists, libvirt lists ``kvm`` in its capabilities,
a raw ``KVM_RUN`` of a few real-mode instructions and a 9-byte BIOS printing to the
serial port both work under KVM — yet a Linux kernel hangs before printing a single line
(nested virtualisation without the needed CPU features). So the probe boots a real
kernel: ``qemu -accel kvm -kernel K`` with no disk and ``panic=-1 -no-reboot``. A working
KVM boots it to the "VFS: Unable to mount root fs" panic and QEMU exits in 1-2 s; if
QEMU is still running after :data:`PROBE_TIMEOUT` seconds, or fails, KVM is unusable.
(Under TCG the same boot takes ~5 s.) The verdict is cached in
``~/.cache/enos/kvm-probe.json``: on this machine once per kernel release (``uname -r``),
``/dev/kvm`` (present or not, its device number) and emulator — whatever kernel image the
probe boots, so ``enos check`` and ``enos up`` share one probe; for a remote hypervisor
per host and emulator, for a day.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

PROBE_TIMEOUT = 15.0
CACHE_TTL = 86400.0


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "enos" / "kvm-probe.json"


def probe_argv(emulator: str, kernel: str) -> list:
    """Return the QEMU command line booting ``kernel`` under KVM with no root disk."""
    return [emulator, "-accel", "kvm", "-m", "256", "-nodefaults", "-display", "none",
            "-no-reboot", "-serial", "stdio", "-monitor", "none", "-kernel", kernel,
            "-append", "console=ttyS0 panic=-1 loglevel=4"]


def judge(rc: Optional[int], output: str) -> Tuple[bool, str]:
    """Return ``(kvm works, why)`` from the probe's exit code (None: killed on timeout)
    and its serial output."""
    if rc is None:
        lines = len([ln for ln in output.splitlines() if ln.startswith("[")])
        return False, (f"a kernel did not finish booting under KVM within {PROBE_TIMEOUT:.0f}s "
                       f"({lines} console lines): guests hang under KVM here")
    if "Kernel panic" in output or "Unable to mount root" in output:
        return True, "a test kernel booted under KVM"
    last = (output.strip().splitlines() or ["no output"])[-1]
    return False, f"QEMU could not run a KVM guest (exit {rc}: {last})"


def cache_key_of(emulator: str, host: str = "local") -> str:
    """Return the cache key of a probe verdict: for this machine its kernel release and
    ``/dev/kvm`` (device number, or absent) with the emulator; for a remote ``host``, the
    host and the emulator."""
    if host != "local":
        return f"{host}|{emulator}"
    try:
        st = os.stat("/dev/kvm")
        dev = f"kvm:{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    except OSError:
        dev = "no-kvm"
    return f"local|{os.uname().release}|{dev}|{emulator}"


def probe(emulator: str, kernel: str, ssh: Optional[Sequence[str]] = None,
          cache_key: str = "local", use_cache: bool = True) -> Tuple[bool, str]:
    """Boot ``kernel`` under KVM with ``emulator`` (on the hypervisor host: through the
    ``ssh`` argv prefix if given) and return ``(kvm works, why)``. Never raises for a
    failing probe: failure to run it means "no KVM" with the reason."""
    key = cache_key_of(emulator, cache_key)
    ttl = CACHE_TTL if cache_key != "local" else float("inf")
    cache = _cache_file()
    if use_cache:
        try:
            data = json.loads(cache.read_text())
            hit = data.get(key)
            if hit and time.time() - hit["at"] < ttl:
                return bool(hit["ok"]), hit["why"] + " (cached)"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    argv = probe_argv(emulator, kernel)
    if ssh:
        argv = list(ssh) + ["timeout", str(int(PROBE_TIMEOUT)), *map(shlex.quote, argv)]
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as e:
        return False, f"cannot run {argv[0]}: {e.strerror}"
    try:
        out, _ = p.communicate(timeout=PROBE_TIMEOUT + (10 if ssh else 0))
        rc: Optional[int] = p.returncode
        if ssh and rc == 124:
            rc = None
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        rc = None
    ok, why = judge(rc, out or "")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(cache.read_text())
        except (OSError, ValueError):
            data = {}
        data[key] = {"ok": ok, "why": why, "at": time.time()}
        cache.write_text(json.dumps(data, indent=1))
    except OSError:
        pass
    return ok, why
