"""``enos check`` of the libvirt provider against real private libvirtds (no mocks).

A new user's machine lacks, one after the other, the daemon, virtlogd and the ``default``
pool: each test starts a private libvirtd (tests/libvirtd_fixture.py: own network and
mount namespaces, killed by PID) missing one of them, runs the real ``enos check`` CLI,
checks the line says MISSING with the exact fix, *runs that fix* and checks again.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from prereq import missing, need_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from libvirtd_fixture import FixtureUnavailable, start_libvirtd  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.libvirtd]


def _image():
    from enos.libvirt.image import find_cached_image
    img = find_cached_image()
    if img is None:
        from enos.libvirt.image import build_image
        img = build_image()
    return img


def _daemon(**kw):
    if os.geteuid() != 0:
        missing("needs root")
    need_module("libvirt")
    try:
        return start_libvirtd(**kw)
    except FixtureUnavailable as e:
        missing(str(e))


def _check(tmp_path, uri, image, cache):
    res = tmp_path / "reservation.yaml"
    res.write_text(f'provider:\n  type: libvirt\n  uri: "{uri}"\n  image: {image}\n'
                   f'resources:\n  tiny:\n    control: 1\n')
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    return subprocess.run([sys.executable, "-m", "enos", "check", "-f", str(res)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def _line(out, what):
    lines = out.splitlines()
    for i, ln in enumerate(lines):
        if what in ln:
            fix = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].strip().startswith("fix:") else ""
            return ln, fix.removeprefix("fix: ")
    raise AssertionError(f"no line about {what!r} in:\n{out}")


def test_check_without_virtlogd_and_pool_then_with_the_printed_fixes(tmp_path):
    d = _daemon(log_daemon=False, pool=False)
    try:
        cache = tmp_path / "cache"
        p = _check(tmp_path, d.uri, _image(), cache)
        assert p.returncode == 1, p.stdout + p.stderr
        out = p.stdout
        daemon, _ = _line(out, "libvirt daemon at")
        assert daemon.startswith("[  ok   ]"), out
        assert re.search(r"libvirt \d+\.\d+\.\d+, QEMU \d+\.\d+\.\d+ ", daemon), daemon
        assert not re.search(r"\d{7}", daemon), daemon          # not "QEMU 9000000"
        logd, logd_fix = _line(out, "virtlogd")
        assert logd.startswith("[MISSING]") and logd_fix == "virtlogd -d", out
        pool, pool_fix = _line(out, "storage pool 'default'")
        assert pool.startswith("[MISSING]") and "pool-define-as default dir" in pool_fix, out
        kvm, _ = _line(out, "KVM")
        assert kvm.startswith("[  ok   ]") or kvm.startswith("[ warn  ]"), out   # never MISSING
        assert "(cached)" not in kvm
        # the user runs the printed fixes: the pool command as printed, virtlogd -d in the
        # daemon's namespaces (where a user's shell on that machine would run it)
        subprocess.run(["sh", "-c", pool_fix], check=True, capture_output=True, timeout=120)
        d.start_log_daemon()
        p = _check(tmp_path, d.uri, _image(), cache)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "MISSING" not in p.stdout
        assert _line(p.stdout, "virtlogd")[0].startswith("[  ok   ]")
        assert _line(p.stdout, "storage pool 'default'")[0].startswith("[  ok   ]")
        kvm, _ = _line(p.stdout, "KVM")
        assert "(cached)" in kvm, p.stdout                      # the 15 s probe ran once
        if kvm.startswith("[ warn  ]"):
            assert "QEMU emulation" in kvm and "with a warning" in p.stdout
    finally:
        assert d.stop() == []


def test_check_with_the_daemon_stopped(tmp_path):
    d = _daemon()
    uri = d.uri
    try:
        d.stop_daemons()
        p = _check(tmp_path, uri, _image(), tmp_path / "cache")
        assert p.returncode == 1, p.stdout + p.stderr
        line, fix = _line(p.stdout, "libvirt daemon at")
        assert line.startswith("[MISSING]") and "not running" in line, p.stdout
        assert fix.startswith("virtlogd -d && libvirtd -d"), p.stdout
        assert "Traceback" not in p.stderr
    finally:
        assert d.stop() == []
