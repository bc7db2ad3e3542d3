"""A tiny initramfs: busybox + the modules needed to mount an ext4 root on virtio-blk.

Debian's stock initramfs is ~31 MB and takes a TCG guest many seconds to unpack and run;
this one is ~2 MB: busybox (static), the kernel modules of :data:`ROOT_MODULES` with their
dependencies (loaded with ``insmod`` in dependency order), and a ``/init`` that mounts
``/dev/vda`` and ``switch_root``\\ s into the image's systemd. The archive is written in
the ``newc`` cpio format directly (no ``cpio`` binary needed), gzip-compressed.
"""
from __future__ import annotations

import gzip
import io
import lzma
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

from enos.errors import EnosError

#: modules needed to find and mount the root filesystem (others load from the rootfs)
ROOT_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "crc32c-intel", "ext4")
#: of those, the ones only some architectures have (crc32c-intel: x86 only)
OPTIONAL_MODULES = ("crc32c-intel",)

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod /modules/$m 2>/dev/null; done
root=/dev/vda
for arg in $(cat /proc/cmdline); do
  case "$arg" in root=/dev/*) root="${arg#root=}";; esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p /newroot
if ! mount -t ext4 -o ro "$root" /newroot; then
  echo "enos initramfs: cannot mount $root"; exec sh
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""


class InitramfsError(EnosError):
    """The initramfs could not be built (missing busybox, module not found)."""


def module_closure(moddir: Path, names: Iterable[str]) -> List[str]:
    """Return the paths (relative to ``moddir``) of the modules ``names`` and everything
    they depend on, dependencies first, read from ``modules.dep``. Modules built into
    the kernel (listed in ``modules.builtin``) are skipped. Raises InitramfsError if a
    module is neither a loadable module nor built in."""
    deps: Dict[str, List[str]] = {}
    byname: Dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        byname[_modname(path)] = path
    builtin = set()
    bfile = moddir / "modules.builtin"
    if bfile.exists():
        builtin = {_modname(p) for p in bfile.read_text().split()}
    order: List[str] = []

    def visit(path: str) -> None:
        for d in deps.get(path, []):
            visit(d)
        if path not in order:
            order.append(path)

    for name in names:
        key = name.replace("-", "_")
        if key in byname:
            visit(byname[key])
        elif key not in builtin and name not in OPTIONAL_MODULES:
            raise InitramfsError(f"kernel module {name} not found in {moddir}")
    return order


def _modname(path: str) -> str:
    base = os.path.basename(path)
    for suf in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suf):
            base = base[: -len(suf)]
    return base.replace("-", "_")


def _read_module(path: Path) -> bytes:
    """Return the module's ELF bytes, decompressed (``.ko.xz``, ``.ko.gz``, ``.ko.zst``:
    busybox's insmod loads only plain modules). Raises InitramfsError if ``zstd`` is
    needed and missing."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        zstd = shutil.which("zstd")
        if not zstd:
            raise InitramfsError(f"{path} is zstd-compressed and the zstd tool is missing: apt-get install zstd")
        p = subprocess.run([zstd, "-q", "-d", "-c", str(path)], capture_output=True, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise InitramfsError(f"zstd -d {path} failed: {p.stderr.decode(errors='replace').strip()}")
        return p.stdout
    return data


def _is_dynamic(elf: bytes) -> bool:
    """True if the ELF64 binary has a PT_INTERP program header (needs a dynamic loader)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return True
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    phentsize = int.from_bytes(elf[0x36:0x38], "little")
    phnum = int.from_bytes(elf[0x38:0x3A], "little")
    return any(int.from_bytes(elf[phoff + i * phentsize:phoff + i * phentsize + 4], "little") == 3
               for i in range(phnum))


class _Cpio:
    """A minimal writer of the cpio ``newc`` format (what the kernel unpacks)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"") -> None:
        nameb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08X}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nameb), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + nameb)
        self.buf.write(b"\0" * (-(110 + len(nameb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def close(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(kernel_version: str, output: Path, busybox: Path = Path("/bin/busybox"),
                    modules_root: Path = Path("/lib/modules")) -> Tuple[Path, List[str]]:
    """Write a gzip'd newc initramfs for ``kernel_version`` to ``output``.

    Returns ``(output, modules)`` where ``modules`` lists the module files included, in
    load order. Raises InitramfsError if busybox is not a static binary or a module is
    missing."""
    if not busybox.exists():
        raise InitramfsError(f"{busybox} not found: apt-get install busybox-static")
    bb = busybox.read_bytes()
    if _is_dynamic(bb):
        raise InitramfsError(f"{busybox} is dynamically linked: apt-get install busybox-static")
    moddir = modules_root / kernel_version
    mods = module_closure(moddir, ROOT_MODULES)
    c = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        c.add(d, stat.S_IFDIR | 0o755)
    c.add("bin/busybox", stat.S_IFREG | 0o755, bb)
    c.add("init", stat.S_IFREG | 0o755, INIT.encode())
    names = []
    for m in mods:
        name = _modname(m) + ".ko"
        c.add(f"modules/{name}", stat.S_IFREG | 0o644, _read_module(moddir / m))
        names.append(name)
    c.add("modules.order", stat.S_IFREG | 0o644, ("\n".join(names) + "\n").encode())
    data = gzip.compress(c.close(), compresslevel=6)
    output.write_bytes(data)
    return output, mods
