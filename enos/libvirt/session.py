"""One env's view of its libvirt daemon: the options (with defaults, and the URI the
journal recorded), the connection, the storage pool, the base image and the domain type —
what every part of the libvirt provider is handed (``session`` in
:mod:`enos.libvirt.plan` and :mod:`enos.libvirt.machines`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import urlparse

from enos.errors import EnosError, ProviderError
from enos.libvirt import image, kvm
from enos.libvirt.connection import connect, quiet_libvirt
from enos.libvirt.plan import DEFAULT_URI, jump_default
from enos.libvirt.storage import find_pool
from enos.libvirt.xml import domain_types, emulator_of

JOURNAL_KEY = "libvirt"


class Session:
    """The provider context of one env plus its libvirt connection (opened once)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._conn = None

    @property
    def opts(self) -> dict:
        """The provider options with defaults applied."""
        o = dict(self.ctx.options or {})
        o.setdefault("uri", DEFAULT_URI)
        # once something is booked, the env lives at the journal's URI (destroy, info and a
        # resume go there even if the reservation's uri was edited since; init refuses that)
        o["uri"] = self.journal().get("uri") or o["uri"]
        o.setdefault("domain_type", "auto")
        o.setdefault("user", "root")
        o.setdefault("flavour", "tiny")
        o.setdefault("boot_timeout", 600)
        o.setdefault("wait_ssh", True)
        return o

    def conn(self):
        """Return the (cached) libvirt connection to ``uri``. Raises AuthError or
        Unavailable (daemon unreachable) naming the URI."""
        if self._conn is None:
            self._conn = connect(self.opts["uri"])
        return self._conn

    def close(self) -> None:
        """Close the libvirt connection if open (a new one is opened when needed)."""
        if self._conn is not None:
            try:
                self._conn.close()
            except quiet_libvirt().libvirtError:   # closing a dead connection is fine
                pass
            self._conn = None

    def is_test(self) -> bool:
        """True when the daemon is libvirt's test driver (``test:///default``)."""
        return self.conn().getType().upper() == "TEST"

    def pool(self):
        """Return the storage pool of ``provider.pool`` (default: ``default``, else
        ``default-pool``), started. Raises ProviderError with the commands creating it."""
        name = self.opts.get("pool")
        return find_pool(self.conn(), [name] if name else ["default", "default-pool"], self.opts["uri"])

    def image_files(self) -> dict:
        """Return the local files of the base image (``disk``, ``kernel``, ``initrd``,
        ``manifest``). Raises ProviderError if there is none (with the command to build it)."""
        img = self.opts.get("image")
        if img:
            p = Path(img).expanduser()
            if not p.is_absolute() and self.ctx.config.base_dir:
                p = Path(self.ctx.config.base_dir) / p   # relative to the reservation file
            if not p.exists():
                raise ProviderError(f"image {p} not found (provider.image); build one with 'enos build libvirt'")
            return image.image_files(p)
        try:
            cached = image.find_cached_image()
        except EnosError:
            cached = None
        if cached is None:
            raise ProviderError("no base image: run 'enos build libvirt' (needs root, ~40 s, cached in "
                                "~/.cache/enos/images) or set provider.image")
        return image.image_files(cached)

    def image_arch(self, files: Optional[dict] = None) -> Tuple[str, Optional[str]]:
        """Return ``(guest arch, machine type)`` of the base image: from its manifest,
        else this machine's (a self-booting image of another arch needs a manifest)."""
        files = files if files is not None else self.image_files()
        if files.get("manifest"):
            m = json.loads(Path(files["manifest"]).read_text())
            if m.get("arch"):
                return m["arch"], m.get("machine")
        a = image.ARCHES.get(os.uname().machine)
        return (a["libvirt_arch"], a["machine"]) if a else (os.uname().machine, None)

    def resolve_domain_type(self, kernel_path: Optional[str] = None) -> Tuple[str, str]:
        """Return ``(domain type, why)``: the configured one, or for ``auto`` KVM only if
        the hypervisor offers it and a kernel really boots under it (:mod:`enos.libvirt.kvm`),
        else QEMU emulation (TCG). Raises ProviderError if the asked type is not offered."""
        caps = self.conn().getCapabilities()
        try:
            arch = self.image_arch()[0]
        except EnosError:
            arch = "x86_64"
        offered = domain_types(caps, arch)
        want = self.opts["domain_type"]
        if want != "auto":
            if want not in offered:
                raise ProviderError(f"domain_type {want} is not offered by {self.opts['uri']} "
                                    f"(offered: {', '.join(offered) or 'none'})")
            return want, "asked for in the configuration"
        if "kvm" in offered and kernel_path:
            emulator = emulator_of(caps, arch) or f"qemu-system-{arch}"
            jump = self.opts.get("jump") or jump_default(self.opts["uri"])
            remote = urlparse(self.opts["uri"]).hostname
            ssh = ["ssh", "-o", "BatchMode=yes", jump] if remote and jump else None
            if remote and not ssh:
                ok, why = False, "cannot probe KVM on a remote host without SSH access"
            else:
                ok, why = kvm.probe(emulator, kernel_path, ssh=ssh, cache_key=remote or "local")
            if ok:
                return "kvm", why
            return ("qemu" if "qemu" in offered else offered[0]), why + "; using QEMU emulation (TCG)"
        if "qemu" in offered:
            if "kvm" in offered:
                return "qemu", ("the image has no kernel file to probe KVM with; using QEMU emulation "
                                "(TCG) — set domain_type: kvm if KVM works here")
            return "qemu", "the hypervisor does not offer KVM; using QEMU emulation (TCG)"
        if not offered:
            raise ProviderError(f"{self.opts['uri']} offers no {arch} domain type")
        return offered[0], f"the hypervisor only offers '{offered[0]}'"

    def journal(self) -> dict:
        """Return the provider's journal record (``{}`` before anything was planned)."""
        return self.ctx.journal.get(JOURNAL_KEY) or {}

    def save(self, rec: dict) -> None:
        """Write the journal record ``rec`` into the env state at once."""
        self.ctx.journal.record(JOURNAL_KEY, rec)
