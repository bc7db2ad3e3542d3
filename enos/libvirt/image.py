"""``enos build libvirt``: a small Debian base image for the libvirt provider.

What it builds (from Debian packages only, so it works with nothing but the package
mirror): a bookworm ``minbase`` root filesystem (mmdebstrap) with systemd, udev, dbus,
openssh-server, python3, iproute2; ``mkfs.ext4 -d`` turns it into a filesystem image
without mounting anything and ``qemu-img convert`` into a qcow2. The guest boots by
direct kernel boot: the kernel of this machine's ``linux-image-<arch>`` package (its
modules copied into the image) and a ~2 MB busybox initramfs (:mod:`enos.libvirt.initramfs`).
The image is for this machine's architecture (:data:`ARCHES`: x86_64, aarch64); on any
other, the build refuses with the reason.

Outputs, in one directory per recipe hash under ``~/.cache/enos/images/``::

    enos-debian12-<hash>.qcow2     the root filesystem (ext4 on the whole disk, /dev/vda)
    enos-debian12-<hash>.vmlinuz   the kernel
    enos-debian12-<hash>.initrd    the initramfs
    enos-debian12-<hash>.json      the manifest (recipe, kernel version, cmdline, sizes)

The image contract (what any image used by the libvirt provider must provide) is in
``docs/providers/libvirt.md``; in short: sshd started at boot, DHCP on the first NIC,
python3, and the enos seed unit (or cloud-init NoCloud) installing the env's public key,
per-VM host keys and the hostname from the seed disk labelled ``ENOSSEED``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, List, Optional

from enos.errors import EnosError, NotRoot
from enos.libvirt.initramfs import build_initramfs
from enos.progress import NULL

RECIPE_VERSION = 2
SUITE = "bookworm"
PACKAGES = ("systemd-sysv", "udev", "dbus", "openssh-server", "python3", "netbase",
            "iproute2", "iputils-ping", "kmod", "sudo")
#: what differs per machine architecture (``uname -m``): the Debian architecture, the
#: kernel package, the QEMU binary, libvirt's guest arch/machine and the serial console
ARCHES = {
    "x86_64": {"debian": "amd64", "kernel_package": "linux-image-amd64",
               "qemu": "qemu-system-x86_64", "qemu_package": "qemu-system-x86",
               "libvirt_arch": "x86_64", "machine": None, "console": "ttyS0"},
    "aarch64": {"debian": "arm64", "kernel_package": "linux-image-arm64",
                "qemu": "qemu-system-aarch64", "qemu_package": "qemu-system-arm",
                "libvirt_arch": "aarch64", "machine": "virt", "console": "ttyAMA0"},
}
#: kernel command line for direct kernel boot (``{console}``: the arch's serial console)
CMDLINE_TEMPLATE = "root=/dev/vda rw console={console} net.ifnames=0 quiet"
#: /etc/resolv.conf of the image (not the build host's): the seed replaces it at boot
RESOLV_CONF = "# written at boot by enos-seed (the nameserver of the VM's libvirt network)\n"
#: systemd units a test guest does not need (masked: faster boot under TCG)
MASKED = ("systemd-networkd-wait-online.service", "apt-daily.timer",
          "apt-daily-upgrade.timer", "fstrim.timer", "e2scrub_all.timer",
          "e2scrub_reap.service", "systemd-timesyncd.service", "getty@tty1.service",
          "systemd-journal-flush.service", "dpkg-db-backup.timer")
#: kernel module directories copied into the guest (the rest — GPU, sound, wireless,
#: physical NICs — is useless in a VM and would double the image)
MODULE_DIRS = ("arch", "block", "crypto", "fs", "lib", "mm", "net", "virt",
               "drivers/virtio", "drivers/block", "drivers/char", "drivers/md",
               "drivers/net/team", "drivers/net/bonding", "drivers/vhost")
MODULE_FILES = ("drivers/net/virtio_net.ko", "drivers/net/net_failover.ko",
                "drivers/net/veth.ko", "drivers/net/dummy.ko", "drivers/net/vxlan",
                "drivers/net/macvlan.ko", "drivers/net/tun.ko", "drivers/net/geneve.ko",
                "drivers/net/ipvlan", "drivers/net/wireguard")
IMAGE_SIZE_MB = 3072

SEED_SCRIPT = r"""#!/bin/sh
# enos seed: install what the provider put on the disk labelled ENOSSEED
# (authorized_keys, hostname, ssh host keys), then make sure sshd has host keys.
S=/run/enos-seed
mkdir -p $S
dev=$(blkid -L ENOSSEED 2>/dev/null || true)
[ -n "$dev" ] || dev=/dev/vdb
if [ -b "$dev" ] && mount -o ro "$dev" $S 2>/dev/null; then
  if [ -s $S/hostname ]; then
    cp $S/hostname /etc/hostname
    hostname "$(cat $S/hostname)"
    sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$(cat $S/hostname)/" /etc/hosts
  fi
  if [ -s $S/resolv.conf ]; then
    rm -f /etc/resolv.conf
    cp $S/resolv.conf /etc/resolv.conf
  fi
  if [ -s $S/authorized_keys ]; then
    install -d -m 700 /root/.ssh
    install -m 600 $S/authorized_keys /root/.ssh/authorized_keys
  fi
  for k in $S/ssh_host_*_key; do
    [ -f "$k" ] || continue
    install -m 600 "$k" /etc/ssh/
    install -m 644 "$k.pub" /etc/ssh/
  done
  umount $S
fi
ssh-keygen -A
"""

SEED_UNIT = """[Unit]
Description=enos seed (authorized key, host keys, hostname)
DefaultDependencies=no
After=local-fs.target systemd-remount-fs.service
Before=ssh.service systemd-networkd.service network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/enos-seed
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""

NETWORK_UNIT = """[Match]
Name=eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
ClientIdentifier=mac
"""

SSHD_CONF = """UseDNS no
PasswordAuthentication no
PermitRootLogin prohibit-password
"""


class ImageBuildError(EnosError):
    """The image could not be built (a tool missing or failing)."""


def default_cache_dir() -> Path:
    """Return the image cache dir: ``$ENOS_IMAGE_CACHE`` or ``$XDG_CACHE_HOME/enos/images``
    (default ``~/.cache/enos/images``)."""
    env = os.environ.get("ENOS_IMAGE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "enos" / "images"


def machine_arch(machine: Optional[str] = None) -> dict:
    """Return the :data:`ARCHES` entry of ``machine`` (default: this machine's ``uname -m``)
    with its name under ``"name"``. Raises ImageBuildError for an architecture enos has no
    recipe for."""
    m = machine or os.uname().machine
    if m not in ARCHES:
        raise ImageBuildError(f"enos build libvirt has no recipe for {m} machines (known: "
                              f"{', '.join(ARCHES)}); bring your own image (provider.image, "
                              f"see the image contract in docs/providers/libvirt.md)")
    return dict(ARCHES[m], name=m)


def cmdline(arch: Optional[dict] = None) -> str:
    """Return the kernel command line of the image for ``arch`` (default: this machine)."""
    return CMDLINE_TEMPLATE.format(console=(arch or machine_arch())["console"])


def host_kernel() -> str:
    """Return the newest kernel version installed by a Debian ``linux-image`` package
    (``/boot/vmlinuz-V`` with ``/lib/modules/V``). Raises ImageBuildError if none."""
    found = []
    for p in Path("/boot").glob("vmlinuz-*"):
        ver = p.name[len("vmlinuz-"):]
        if (Path("/lib/modules") / ver / "modules.dep").exists():
            found.append(ver)
    if not found:
        pkg = ARCHES.get(os.uname().machine, {}).get("kernel_package", "linux-image-<arch>")
        raise ImageBuildError(f"no kernel with modules in /boot and /lib/modules: apt-get install {pkg}")

    def key(v: str):
        return [int(x) if x.isdigit() else x for x in re.split(r"[.-]", v)]
    return sorted(found, key=key)[-1]


def recipe(kernel_version: Optional[str] = None, mirror: Optional[str] = None) -> dict:
    """Return the build recipe (everything that determines the image's content)."""
    arch = machine_arch()
    return {"version": RECIPE_VERSION, "suite": SUITE, "packages": list(PACKAGES),
            "arch": arch["name"], "kernel": kernel_version or host_kernel(), "cmdline": cmdline(arch),
            "resolv_conf": RESOLV_CONF,
            "masked": list(MASKED), "mirror": mirror or "",
            "seed": SEED_SCRIPT, "seed_unit": SEED_UNIT, "network": NETWORK_UNIT,
            "sshd": SSHD_CONF, "modules": [list(MODULE_DIRS), list(MODULE_FILES)],
            "size_mb": IMAGE_SIZE_MB}


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of the file ``path`` (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def recipe_hash(rec: dict) -> str:
    """Return the 12-hex-digit hash naming the image built from ``rec``."""
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12]


def image_name(rec: dict) -> str:
    """Return the file stem of the image built from ``rec``."""
    return f"enos-debian12-{recipe_hash(rec)}"


def find_cached_image(cache_dir: Optional[Path] = None) -> Optional[Path]:
    """Return the cached qcow2 of the current recipe if it was built, else None.
    Raises ImageBuildError only if no kernel is installed (the recipe needs it)."""
    rec = recipe()
    d = Path(cache_dir or default_cache_dir()) / recipe_hash(rec)
    q = d / (image_name(rec) + ".qcow2")
    return q if (d / (image_name(rec) + ".json")).exists() and q.exists() else None


def image_files(qcow2: Path) -> dict:
    """Return the files of an image given its qcow2 path: ``{"disk", "kernel", "initrd",
    "manifest"}`` (kernel/initrd/manifest are None if absent: a self-booting image)."""
    qcow2 = Path(qcow2)
    stem = qcow2.with_suffix("")
    out: dict = {"disk": qcow2}
    for key, suf in (("kernel", ".vmlinuz"), ("initrd", ".initrd"), ("manifest", ".json")):
        p = Path(str(stem) + suf)
        out[key] = p if p.exists() else None
    return out


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}")
                                      if os.path.exists(p)), None)
    if not path:
        raise ImageBuildError(f"{tool} not found: apt-get install {package}")
    return path


def _run(cmd: List[str], what: str, **kw: Any) -> subprocess.CompletedProcess:
    """Run a build tool in a process group of its own; return its CompletedProcess. Raises
    ImageBuildError (exit status and the end of its output). Interrupted (SIGINT/SIGTERM),
    the whole group (mmdebstrap's apt, dpkg, ...) is ended before KeyboardInterrupt goes on."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    try:
        out, err = p.communicate()
    except BaseException:
        _end_group(p)
        raise
    if p.returncode != 0:
        tail = "\n".join((err or out or "").strip().splitlines()[-15:])
        raise ImageBuildError(f"{what} failed (exit {p.returncode}):\n{tail}")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def _end_group(p: subprocess.Popen, grace: float = 1.0) -> None:
    """SIGTERM the process group led by ``p`` (cleanly unmounting tools get ``grace``
    seconds), then SIGKILL it; reap ``p``. Returns None."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:                       # the leader is gone; the rest of its group too?
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    try:
        p.wait(timeout=1)
    except subprocess.TimeoutExpired:
        pass


def _customize(root: Path, kernel: str) -> None:
    """Write the enos customisations into the unpacked root filesystem ``root``."""
    (root / "etc/hostname").write_text("enos\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tenos\n"
                                    "::1\tlocalhost ip6-localhost ip6-loopback\n")
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,noatime,errors=remount-ro 0 1\n")
    resolv = root / "etc/resolv.conf"     # mmdebstrap leaves the build host's copy here
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text(RESOLV_CONF)
    netdir = root / "etc/systemd/network"
    netdir.mkdir(parents=True, exist_ok=True)
    (netdir / "10-eth0.network").write_text(NETWORK_UNIT)
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/enos.conf").write_text(SSHD_CONF)
    for k in (root / "etc/ssh").glob("ssh_host_*"):
        k.unlink()   # every VM gets its own host keys from its seed (see SEED_SCRIPT)
    sbin = root / "usr/local/sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    (sbin / "enos-seed").write_text(SEED_SCRIPT)
    (sbin / "enos-seed").chmod(0o755)
    (root / "etc/systemd/system/enos-seed.service").write_text(SEED_UNIT)
    (root / "root/.ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
    (root / "etc/machine-id").write_text("")   # systemd makes a fresh one per boot
    # kernel modules of the host's linux-image package (virtio_net, netfilter, ...)
    src = Path("/lib/modules") / kernel
    dst = root / "lib/modules" / kernel
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("modules.*"):
        shutil.copy2(f, dst / f.name)
    for d in MODULE_DIRS + MODULE_FILES:
        s = src / "kernel" / d
        if s.is_dir():
            shutil.copytree(s, dst / "kernel" / d, dirs_exist_ok=True)
        elif s.exists():
            (dst / "kernel" / d).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, dst / "kernel" / d)
    _run(["depmod", "-b", str(root), kernel], "depmod")
    chroot = ["chroot", str(root), "systemctl"]
    _run(chroot + ["enable", "systemd-networkd.service", "enos-seed.service",
                   "ssh.service"], "systemctl enable")
    _run(chroot + ["mask"] + list(MASKED), "systemctl mask")


def build_image(output_dir: Optional[Path] = None, cache_dir: Optional[Path] = None,
                force: bool = False, progress: Any = None,
                mirror: Optional[str] = None) -> Path:
    """Build (or find in the cache) the enos Debian base image; return its qcow2 path.

    ``cache_dir`` defaults to :func:`default_cache_dir`; the image lives in
    ``<cache_dir>/<recipe hash>/`` and is reused unless ``force``. With ``output_dir``
    the image files are also copied there (and that copy's qcow2 is returned).
    ``progress`` is an :class:`enos.progress.Progress` (default: silent); ``mirror`` a
    Debian mirror URL (default: mmdebstrap's, i.e. deb.debian.org, or
    ``$ENOS_DEBIAN_MIRROR``). Needs root (mmdebstrap ``--mode=root``, chroot).

    Raises NotRoot, ImageBuildError (a tool missing: the message names the apt package;
    mmdebstrap/mkfs/qemu-img failing: the message has the tail of its output)."""
    progress = progress or NULL
    mirror = mirror or os.environ.get("ENOS_DEBIAN_MIRROR") or None
    machine_arch()        # an architecture without a recipe: refuse before anything
    kernel = host_kernel()
    rec = recipe(kernel, mirror)
    name = image_name(rec)
    cache = Path(cache_dir or default_cache_dir())
    final = cache / recipe_hash(rec)
    qcow2 = final / f"{name}.qcow2"
    if force and final.exists():
        _make_writable(final)
        shutil.rmtree(final)
    if not (final / f"{name}.json").exists():
        if os.geteuid() != 0:
            raise NotRoot("enos build libvirt needs root (mmdebstrap --mode=root, chroot)")
        tools = {t: _need(t, p) for t, p in (("mmdebstrap", "mmdebstrap"),
                                             ("mkfs.ext4", "e2fsprogs"),
                                             ("qemu-img", "qemu-utils"),
                                             ("depmod", "kmod"))}
        cache.mkdir(parents=True, exist_ok=True)
        work = cache / f".build-{recipe_hash(rec)}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            _build(work, name, rec, kernel, tools, progress, mirror)
            shutil.rmtree(final, ignore_errors=True)
            os.rename(work / "out", final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        progress.info(f"image built: {qcow2}")
    else:
        progress.info(f"image found in cache: {qcow2}")
    if output_dir is None:
        return qcow2
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in final.iterdir():
        shutil.copy2(f, out / f.name)
    return out / qcow2.name


def _make_writable(d: Path) -> None:
    for f in d.iterdir():
        f.chmod(0o644)


def _build(work: Path, name: str, rec: dict, kernel: str, tools: dict, progress: Any,
           mirror: Optional[str]) -> None:
    root = work / "rootfs"
    out = work / "out"
    out.mkdir()
    t0 = time.monotonic()
    with progress.task("building the enos Debian image", total=5) as task:
        task.update("mmdebstrap (Debian packages)")
        cmd = [tools["mmdebstrap"], "--mode=root", "--variant=minbase", "--quiet",
               "--architectures=" + ARCHES[rec["arch"]]["debian"],
               "--include=" + ",".join(PACKAGES),
               SUITE, str(root)]
        if mirror:
            cmd.append(mirror)
        _run(cmd, "mmdebstrap")
        task.advance()
        task.update("customising the root filesystem")
        _customize(root, kernel)
        task.advance()
        task.update("kernel and initramfs")
        shutil.copy2(f"/boot/vmlinuz-{kernel}", out / f"{name}.vmlinuz")
        _, mods = build_initramfs(kernel, out / f"{name}.initrd")
        task.advance()
        task.update("ext4 filesystem (mkfs.ext4 -d)")
        raw = work / "root.img"
        _run([tools["mkfs.ext4"], "-q", "-F", "-L", "enos-root", "-d", str(root),
              "-E", "lazy_itable_init=1,lazy_journal_init=1", str(raw),
              f"{IMAGE_SIZE_MB}M"], "mkfs.ext4")
        shutil.rmtree(root)
        task.advance()
        task.update("qcow2 (qemu-img convert)")
        _run([tools["qemu-img"], "convert", "-O", "qcow2", str(raw),
              str(out / f"{name}.qcow2")], "qemu-img convert")
        raw.unlink()
        task.advance()
    manifest = {"name": name, "recipe_hash": recipe_hash(rec), "recipe": rec,
                "arch": rec["arch"], "machine": ARCHES[rec["arch"]]["machine"],
                "kernel_version": kernel, "cmdline": rec["cmdline"], "root_device": "/dev/vda",
                "initramfs_modules": mods, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.monotonic() - t0, 1),
                "files": {p.name: p.stat().st_size for p in out.iterdir()}}
    (out / f"{name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for f in out.iterdir():
        f.chmod(0o444)   # the base image stays read-only: VMs write only their overlays
