"""The image builder's machine-dependent parts, on this machine's real kernel modules.

* the initramfs takes modules compressed as a distribution ships them — ``.ko.zst``
  (Ubuntu, Fedora, Debian ≥ trixie), ``.ko.xz``, ``.ko.gz``, plain ``.ko`` — compressed
  here with the real tools, and puts the exact original module bytes in the archive;
* the architecture (kernel package, QEMU binary, console) comes from the machine, and an
  architecture without a recipe is refused with the reason;
* the recipe hash covers the kernel version (a kernel upgrade builds a new image).
"""
import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from enos.libvirt import image as libvirt_image, initramfs
from enos.libvirt.image import ImageBuildError


def _unpack(data: bytes) -> dict:
    """Return {name: bytes} of a gzip'd newc cpio archive."""
    raw, out, i = gzip.decompress(data), {}, 0
    while True:
        hdr = raw[i:i + 110]
        size, namesize = int(hdr[54:62], 16), int(hdr[94:102], 16)
        name = raw[i + 110:i + 110 + namesize - 1].decode()
        i += 110 + namesize
        i += -i % 4
        if name == "TRAILER!!!":
            return out
        out[name] = raw[i:i + size]
        i += size
        i += -i % 4


@pytest.mark.parametrize("suffix", [".ko.zst", ".ko.xz", ".ko.gz", ".ko"])
def test_initramfs_takes_compressed_modules(tmp_path, suffix):
    kernel = libvirt_image.host_kernel()
    real = Path("/lib/modules") / kernel
    if shutil.which("zstd") is None:
        pytest.fail("zstd missing (apt-get install zstd; scripts/setup.sh --test installs it)")
    mods = initramfs.module_closure(real, initramfs.ROOT_MODULES)
    assert mods, "no module to test with"
    fake = tmp_path / kernel
    fake.mkdir()
    plain = {}
    dep_lines = []
    for line in (real / "modules.dep").read_text().splitlines():
        path, _, deps = line.partition(":")
        def ren(p):
            return p[: p.index(".ko")] + suffix
        dep_lines.append(f"{ren(path)}:" + "".join(" " + ren(d) for d in deps.split()))
    for m in mods:
        data = initramfs._read_module(real / m)
        plain[initramfs._modname(m) + ".ko"] = data
        dst = fake / (m[: m.index(".ko")] + suffix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".ko.zst":
            subprocess.run(["zstd", "-q", "-o", str(dst), "-"], input=data, check=True)
        elif suffix == ".ko.xz":
            dst.write_bytes(lzma.compress(data, check=lzma.CHECK_CRC32))
        elif suffix == ".ko.gz":
            dst.write_bytes(gzip.compress(data))
        else:
            dst.write_bytes(data)
    (fake / "modules.dep").write_text("\n".join(dep_lines) + "\n")
    if (real / "modules.builtin").exists():
        shutil.copy(real / "modules.builtin", fake / "modules.builtin")
    out, used = initramfs.build_initramfs(kernel, tmp_path / "initrd", modules_root=tmp_path)
    assert all(u.endswith(suffix) for u in used)
    files = _unpack(out.read_bytes())
    for name, data in plain.items():
        assert files[f"modules/{name}"] == data, name            # decompressed, byte for byte
        assert data[:4] == b"\x7fELF"
    assert files["modules.order"].decode().split() == [initramfs._modname(m) + ".ko" for m in used]


def test_architecture_comes_from_the_machine():
    import os
    me = libvirt_image.machine_arch()
    assert me["name"] == os.uname().machine
    assert libvirt_image.recipe()["arch"] == me["name"]
    arm = libvirt_image.machine_arch("aarch64")
    assert (arm["kernel_package"], arm["qemu"], arm["console"]) == \
        ("linux-image-arm64", "qemu-system-aarch64", "ttyAMA0")
    assert "console=ttyAMA0" in libvirt_image.cmdline(arm)
    with pytest.raises(ImageBuildError, match="no recipe for riscv64 machines.*provider.image"):
        libvirt_image.machine_arch("riscv64")


def test_recipe_hash_follows_the_kernel_and_the_image_has_ping_not_the_hosts_resolv_conf():
    a = libvirt_image.recipe("6.1.0-57-amd64")
    b = libvirt_image.recipe("6.1.0-58-amd64")
    assert libvirt_image.recipe_hash(a) != libvirt_image.recipe_hash(b)
    assert libvirt_image.recipe()["kernel"] == libvirt_image.host_kernel()
    assert "iputils-ping" in a["packages"]
    assert not [ln for ln in a["resolv_conf"].splitlines() if ln.startswith("nameserver")]
    assert "resolv.conf" in libvirt_image.SEED_SCRIPT


def test_domain_xml_takes_the_image_arch():
    from enos.libvirt.xml import domain_xml
    x = domain_xml(name="n", uuid="u", run_id="r", alias="a", domain_type="qemu", cpus=1,
                   memory_mib=512, pool="p", overlay="o", seed=None, nics=[], arch="aarch64",
                   machine="virt")
    assert '<type arch="aarch64" machine="virt">hvm</type>' in x
