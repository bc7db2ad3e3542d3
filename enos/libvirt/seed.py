"""The per-VM seed disk: a 1 MiB ext2 image labelled ``ENOSSEED`` (built with
``mkfs.ext2 -d``, no mounting) holding ``authorized_keys`` (the env's public key),
``hostname``, ``resolv.conf`` (the nameserver of the VM's network) and the VM's own
``ssh_host_ed25519_key[.pub]``. The image's
``enos-seed.service`` installs them before sshd starts (see :mod:`enos.libvirt.image`).
Every VM gets its own host key, returned as ``Host.host_key`` and pinned in the env's
known_hosts (clones of one image would otherwise share the image's host keys).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Optional

from enos.errors import EnosError

LABEL = "ENOSSEED"


def _mkfs() -> str:
    for p in (shutil.which("mkfs.ext2"), "/usr/sbin/mkfs.ext2", "/sbin/mkfs.ext2"):
        if p and Path(p).exists():
            return p
    raise EnosError("mkfs.ext2 not found: apt-get install e2fsprogs")


def host_key(directory: Path, comment: str) -> str:
    """Create (once) ``<directory>/ssh_host_ed25519_key`` and return its public key as
    ``"ssh-ed25519 AAAA..."``. Raises EnosError if ssh-keygen fails."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "ssh_host_ed25519_key"
    if not (key.exists() and Path(str(key) + ".pub").exists()):
        key.unlink(missing_ok=True)
        p = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                            "-f", str(key)], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise EnosError(f"ssh-keygen failed: {p.stderr.strip()}")
    return " ".join(Path(str(key) + ".pub").read_text().split()[:2])


def build_seed(directory: Path, hostname: str, authorized_key: str, comment: str,
               resolv_conf: Optional[str] = None) -> Path:
    """Write the seed files into ``<directory>/seed/`` and the seed image
    ``<directory>/seed.img``; return the image path. Raises EnosError if a tool fails."""
    files = directory / "seed"
    host_key(files, comment)
    for d in (directory, files):
        d.chmod(0o700)
    (files / "hostname").write_text(hostname + "\n")
    if resolv_conf:
        (files / "resolv.conf").write_text(resolv_conf)
    (files / "authorized_keys").write_text(authorized_key.strip() + "\n")
    img = directory / "seed.img"
    img.unlink(missing_ok=True)
    p = subprocess.run([_mkfs(), "-q", "-L", LABEL, "-d", str(files), str(img), "1024"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise EnosError(f"mkfs.ext2 of the seed failed: {p.stderr.strip()}")
    img.chmod(0o600)       # it holds the VM's SSH host private key
    return img
