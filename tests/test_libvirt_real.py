"""libvirt provider against a real libvirtd + QEMU (TCG), booting two real VMs.

The session fixture installs the apt packages if needed (skips with the reason if it
cannot; fails under CI=true), builds (or finds in ~/.cache/enos/images) the image of ``enos build libvirt`` and
starts a private libvirtd in its own network + mount namespaces (tests/libvirtd_fixture.py);
everything it started is killed by PID and the namespace deleted at the end, even on
failure. Measured here: image build ~36 s (cached afterwards), two VMs answering SSH
~50-160 s under TCG depending on the machine's load, preinstall ~11 s, destroy ~6 s.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prereq import missing, need_module  # noqa: E402
from libvirtd_fixture import FixtureUnavailable, ensure_packages, leftovers, start_libvirtd  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.libvirtd]


@pytest.fixture(scope="session")
def libvirtd():
    if os.geteuid() != 0:
        missing("needs root")
    try:
        ensure_packages()
    except FixtureUnavailable as e:
        missing(f"cannot install libvirtd/QEMU: {e}")
    need_module("libvirt")
    from enos.libvirt.image import build_image
    image = build_image()
    d = start_libvirtd()
    d.image = image
    try:
        yield d
    finally:
        problems = d.stop()
        assert not problems, problems


def _reservation(d, path: Path) -> Path:
    path.write_text(f"""provider:
  type: libvirt
  uri: "{d.uri}"
  image: {d.image}
  jump: {d.jump}
  boot_timeout: 420
resources:
  tiny:
    control: 1
    compute: 1
""")
    return path


def _enos(d, cwd, *args, extra_env=None, timeout=900):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
    env.update(d.env)
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "enos", *args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _archive_records_the_image(libvirtd, tmp_path, env, run_id):
    """``enos archive`` of the env: the provider record names the base image the VMs were
    made from, with the disk's SHA-256 (checked against the file) and its build manifest,
    and each VM's domain; ``enos archive --check`` accepts it."""
    import hashlib
    from enoscli import archived_provider_record
    rec = archived_provider_record(lambda *a: _enos(libvirtd, tmp_path, *a), env, tmp_path / "vms.tar.gz")
    image = rec["image"]
    digest = hashlib.sha256()
    with open(image["disk"], "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    assert image["disk_sha256"] == digest.hexdigest(), image
    assert isinstance(image.get("manifest"), dict) and image["manifest"], image
    assert {a: v["domain"] for a, v in rec["info"]["vms"].items()} == \
        {a: f"enos-{run_id}-{a}" for a in ("compute-1", "control-1")}


def test_two_real_vms_up_run_destroy(libvirtd, tmp_path):
    res = _reservation(libvirtd, tmp_path / "reservation.yaml")
    env = tmp_path / "env"
    p = _enos(libvirtd, tmp_path, "up", "-f", str(res), "--env", str(env))
    run_id = json.loads((env / "state.json").read_text())["run_id"]
    try:
        assert p.returncode == 0, p.stderr[-3000:]
        st = json.loads((env / "state.json").read_text())
        assert st["phase"] == "ready"
        hosts = st["resources"]["hosts"]
        assert sorted(h["alias"] for h in hosts) == ["compute-1", "control-1"]
        assert len(leftovers(libvirtd.uri, run_id)) == 2 + 6 + 1    # + overlay, seed, console log each
        # the screen: each wait once, no "N/N k left", no "0/None"
        err = p.stderr
        assert err.count("waiting for SSH ...") == 1 and err.count("booting the VMs (until sshd answers) ...") == 1, err
        assert not re.search(r"\b(\d+)/\1\b.*\b\d+ left", err) and "/None" not in err, err
        info = _enos(libvirtd, tmp_path, "info", "--env", str(env)).stdout
        assert f"uri          {libvirtd.uri}" in info and "libvirt details:" in info, info
        assert re.search(r"^\s+VM\s+DOMAIN\s+STATE\s+ADDRESS\s+CONSOLE_LOG$", info, re.M), info
        assert re.search(rf"^\s+control-1\s+enos-{run_id}-control-1\s+running\s+", info, re.M), info
        # private: the VMs' disks and seeds (which hold their SSH host private keys) are
        # 0600 in the pool, even under libvirt's dynamic ownership, and so is the env dir
        vols = sorted((libvirtd.base / "images").glob(f"enos-{run_id}-*"))
        assert len(vols) == 6             # overlay, seed, console log of each VM
        for v in vols:
            assert (v.stat().st_mode & 0o777) == 0o600, (v, oct(v.stat().st_mode))
        assert (env.stat().st_mode & 0o777) == 0o700
        for seed in env.glob("libvirt/*/seed.img"):
            assert (seed.stat().st_mode & 0o777) == 0o600
        loose = [f"{oct(q.stat().st_mode & 0o777)} {q}" for q in env.rglob("*")
                 if not q.is_symlink() and not q.is_socket() and q.stat().st_mode & 0o077]
        assert loose == []
        # the VMs run a real Debian: their hostname and their own (pinned) host keys
        r = _enos(libvirtd, tmp_path, "run", "--env", str(env), "-o", "json",
                  "hostname; cat /etc/ssh/ssh_host_ed25519_key.pub; python3 -c 'print(6*7)'")
        assert r.returncode == 0, r.stderr[-2000:]
        out = r.stdout
        for h in hosts:
            assert h["alias"] in out and h["host_key"].split()[1] in out
        assert out.count("42") >= 2
        # VMs reach each other by name (the env's hosts), have ping, and resolve through
        # their network's dnsmasq — not through a copy of the build host's resolv.conf
        gateway = st["resources"]["networks"][0]["gateway"]
        r = _enos(libvirtd, tmp_path, "run", "--env", str(env), "-o", "json",
                  "ping -c 1 -W 10 compute-1 >/dev/null && ping -c 1 -W 10 control-1 >/dev/null "
                  "&& echo names-ok; grep '^nameserver' /etc/resolv.conf")
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
        for res in json.loads(r.stdout):
            assert res["stdout"].split("\n")[:2] == ["names-ok", f"nameserver {gateway}"], res
        # the serial console logs are volumes of the pool, next to the overlays
        for h in hosts:
            log = h["extra"]["enos_libvirt_console_log"]
            assert log.startswith(str(libvirtd.pool_dir)) and os.path.getsize(log) > 0, log
        qemu_logs = libvirtd.base / "var/log/libvirt/qemu"
        assert sorted(p.name for p in qemu_logs.glob(f"enos-{run_id}-*")) == \
            [f"enos-{run_id}-compute-1.log", f"enos-{run_id}-control-1.log"]
        _archive_records_the_image(libvirtd, tmp_path, env, run_id)
    finally:
        d = _enos(libvirtd, tmp_path, "destroy", "--env", str(env))
        assert d.returncode == 0, d.stderr[-2000:]
    assert leftovers(libvirtd.uri, run_id) == []
    # libvirt's QEMU logs of the destroyed VMs are gone (libvirt itself never removes them)
    assert list((libvirtd.base / "var/log/libvirt/qemu").glob(f"enos-{run_id}-*")) == []
    assert _enos(libvirtd, tmp_path, "destroy", "--env", str(env)).returncode == 0


def test_crash_after_domains_defined_then_destroy(libvirtd, tmp_path):
    res = _reservation(libvirtd, tmp_path / "reservation.yaml")
    env = tmp_path / "env"
    p = _enos(libvirtd, tmp_path, "up", "-f", str(res), "--env", str(env),
              extra_env={"ENOS_FAILPOINTS": "libvirt.domain_defined=kill"})
    assert p.returncode == -9, p.stderr[-2000:]
    run_id = json.loads((env / "state.json").read_text())["run_id"]
    assert leftovers(libvirtd.uri, run_id), "nothing was created before the crash"
    d = _enos(libvirtd, tmp_path, "destroy", "--env", str(env))
    assert d.returncode == 0, d.stderr[-2000:]
    assert leftovers(libvirtd.uri, run_id) == []
