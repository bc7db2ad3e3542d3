"""``enos build vagrant``: a local libvirt Vagrant box made from the image of ``enos build libvirt``.

There is no Vagrant Cloud on a testbed frontend or an offline laptop, so the vagrant
provider's default box is built here, from the enos Debian image (built first if needed):

* ``box.img``: the image's qcow2 with one change, made without mounting (``debugfs -w`` on
  a raw copy): the DHCP unit ``10-eth0.network`` matches ``eth0`` only, so that the
  ``50-vagrant-ethN.network`` files Vagrant writes for private networks apply to the other
  NICs (with the image's ``eth*`` match they would be shadowed);
* ``vmlinuz`` / ``initrd``: the image boots by direct kernel boot (no bootloader); the
  provider uploads both into the libvirt storage pool and sets ``lv.kernel``/``lv.initrd``;
* ``metadata.json`` ``{"provider": "libvirt", "format": "qcow2", "virtual_size": GB}``
  and ``enos-box.json`` (image name, recipe hash, kernel command line).

The tarball is added with ``vagrant box add --force --name enos/debian12`` (``BOX_NAME``).
The root account authorises the env's key from the enos seed disk (see
:mod:`enos.libvirt.seed`), which the provider attaches as ``vdb``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Optional

from enos.libvirt.image import ImageBuildError, _need, _run, build_image, image_files
from enos.progress import NULL

BOX_NAME = "enos/debian12"
BOX_FILE = "enos-box.json"
ETH0_UNIT = """[Match]
Name=eth0

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
ClientIdentifier=mac
"""


def vagrant_home() -> Path:
    """Return Vagrant's home (``$VAGRANT_HOME`` or ``~/.vagrant.d``)."""
    return Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")


def box_dir(name: str, provider: str = "libvirt") -> Optional[Path]:
    """Return the directory of the newest installed version of box ``name`` for
    ``provider`` (``<vagrant home>/boxes/<name, '/' → -VAGRANTSLASH->/<version>/<provider>``),
    or None if it is not installed."""
    root = vagrant_home() / "boxes" / name.replace("/", "-VAGRANTSLASH-")
    if not root.is_dir():
        return None

    def key(p: Path):
        return [int(x) if x.isdigit() else 0 for x in p.name.split(".")]
    for version in sorted((p for p in root.iterdir() if p.is_dir()), key=key, reverse=True):
        if (version / provider / "metadata.json").exists():
            return version / provider
    return None


def box_manifest(name: str = BOX_NAME) -> Optional[dict]:
    """Return the ``enos-box.json`` of installed box ``name`` (with ``dir`` added), or None
    if the box is not installed or was not built by enos."""
    d = box_dir(name)
    if d is None or not (d / BOX_FILE).exists():
        return None
    out = json.loads((d / BOX_FILE).read_text())
    out["dir"] = str(d)
    return out


def _edit_network_unit(debugfs: str, raw: Path, work: Path) -> None:
    unit = work / "10-eth0.network"
    unit.write_text(ETH0_UNIT)
    target = "/etc/systemd/network/10-eth0.network"
    script = work / "debugfs.cmd"
    script.write_text(f"rm {target}\nwrite {unit} {target}\nsif {target} mode 0100644\n")
    _run([debugfs, "-w", "-f", str(script), str(raw)], "debugfs")
    p = subprocess.run([debugfs, "-R", f"cat {target}", str(raw)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    if "Name=eth0" not in p.stdout:
        raise ImageBuildError(f"debugfs did not rewrite {target}: {p.stderr.strip()[-300:]}")


def build_box(name: str = BOX_NAME, cache_dir: Optional[Path] = None, force: bool = False,
              progress: Any = None, add: bool = True, vagrant: str = "vagrant") -> dict:
    """Build the libvirt box from the enos image (building the image if needed) and, with
    ``add``, install it as ``name`` (``vagrant box add --force``). A box already installed
    from the same image is kept unless ``force``. Returns ``{"name", "dir", "image",
    "tarball"}``.

    Raises NotRoot (the image needs root to build), ImageBuildError (a tool missing or
    failing: qemu-img, debugfs, vagrant; the message says which)."""
    progress = progress or NULL
    qcow2 = build_image(cache_dir=cache_dir, progress=progress)
    files = image_files(qcow2)
    manifest = json.loads(Path(files["manifest"]).read_text())
    have = box_manifest(name)
    if have and not force and have.get("recipe_hash") == manifest["recipe_hash"]:
        progress.info(f"box {name} already built from {qcow2.name}: {have['dir']}")
        return {"name": name, "dir": have["dir"], "image": str(qcow2), "tarball": None}
    qemu_img = _need("qemu-img", "qemu-utils")
    debugfs = _need("debugfs", "e2fsprogs")
    vagrant_bin = shutil.which(vagrant)
    if add and not vagrant_bin:
        raise ImageBuildError("vagrant not found: apt-get install vagrant vagrant-libvirt "
                              "(see docs/providers/vagrant.md)")
    out_dir = Path(qcow2).parent.parent.parent / "vagrant"
    work = out_dir / f".build-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with progress.task(f"building the Vagrant box {name}", total=4) as task:
            task.update("raw copy of the image")
            raw = work / "root.raw"
            _run([qemu_img, "convert", "-O", "raw", str(qcow2), str(raw)], "qemu-img convert")
            task.advance()
            task.update("network unit (debugfs)")
            _edit_network_unit(debugfs, raw, work)
            task.advance()
            task.update("box.img (qemu-img convert)")
            box_img = work / "box.img"
            _run([qemu_img, "convert", "-O", "qcow2", str(raw), str(box_img)], "qemu-img convert")
            raw.unlink()
            size_gb = max(1, math.ceil(_virtual_size(box_img) / 2**30))
            (work / "metadata.json").write_text(json.dumps(
                {"provider": "libvirt", "format": "qcow2", "virtual_size": size_gb}) + "\n")
            (work / BOX_FILE).write_text(json.dumps(
                {"image": manifest["name"], "recipe_hash": manifest["recipe_hash"],
                 "cmdline": manifest["cmdline"], "kernel_version": manifest["kernel_version"],
                 "user": "root"}, indent=2) + "\n")
            shutil.copy2(files["kernel"], work / "vmlinuz")
            shutil.copy2(files["initrd"], work / "initrd")
            tarball = out_dir / f"{manifest['name']}.box"
            tmp_tar = Path(f"{tarball}.{os.getpid()}.tmp")     # concurrent builds: one file each
            with tarfile.open(tmp_tar, "w") as tar:
                for f in ("metadata.json", BOX_FILE, "vmlinuz", "initrd", "box.img"):
                    tar.add(work / f, arcname=f)
            os.replace(tmp_tar, tarball)
            task.advance()
            if add:
                task.update(f"vagrant box add {name}")
                env = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1")
                _run([vagrant_bin, "box", "add", "--force", "--name", name, str(tarball)],
                     "vagrant box add", env=env)
                tarball.unlink()     # the box is unpacked in Vagrant's home: no second copy
            task.advance()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    d = box_dir(name) if add else None
    progress.info(f"box {name} built from {qcow2.name}" + (f" and added: {d}" if d else f": {tarball}"))
    return {"name": name, "dir": str(d) if d else None, "image": str(qcow2),
            "tarball": None if add else str(tarball)}


def _virtual_size(qcow2: Path) -> int:
    with open(qcow2, "rb") as f:
        head = f.read(32)
    if head[:4] != b"QFI\xfb":
        raise ImageBuildError(f"{qcow2} is not a qcow2 image")
    return int.from_bytes(head[24:32], "big")
