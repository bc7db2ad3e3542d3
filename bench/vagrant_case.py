"""bench case ``vagrant``: enos' overhead on top of Vagrant (issue 13), target ≤ 1.1×.

Per repetition, interleaved, on a private libvirtd (tests/libvirtd_fixture.py; every
command runs in its network namespace, as Vagrant must):

* enos:     ``enos up --no-provision`` of two tiny machines (backend libvirt, the box of
            ``enos build vagrant``), then ``enos destroy``;
* baseline: plain ``vagrant up --provider libvirt`` then ``vagrant destroy -f`` on **the same
            Vagrantfile** (the one enos just rendered, copied to a fresh directory), with the
            seed volumes it names re-uploaded beforehand (untimed: they are the baseline's
            prerequisites, as the box is).

Before the first repetition, untimed, the pool is warmed as a first ``vagrant up`` would warm
it: the box volume vagrant-libvirt uploads on first use (~400 MB, named as it names it) and
enos' kernel/initrd volumes, so neither side pays a once-per-pool upload.
enos' ``up`` includes its own work (plan, journal, seeds, ssh-config, the SSH wait, the env
files); the ratio is that overhead. Everything is destroyed and the daemon stopped at the end.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List

RESERVATION = """provider:
  type: vagrant
  backend: libvirt
  uri: "{uri}"
  boot_timeout: 3000
resources:
  tiny:
    a: 1
    b: 1
"""


def _timed(argv: List[str], cwd: Path, env: dict) -> float:
    t = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return dt


def _warm_pool(uri: str, box: dict) -> None:
    """Upload the box volume as vagrant-libvirt names it (``<box>_vagrant_box_image_0_<mtime of
    box.img>_box.img``) and the kernel/initrd volumes enos uploads."""
    import os
    from enos.libvirt.connection import connect
    from enos.libvirt.storage import upload_once
    from enos.vagrant.box import box_manifest
    from enos.vagrant import libvirt_side
    d = Path(box["dir"])
    img = d / "box.img"
    name = (box["name"].replace("/", "-VAGRANTSLASH-") + f"_vagrant_box_image_0_{int(os.path.getmtime(img))}_box.img")
    conn = connect(uri)
    try:
        pool = libvirt_side.pool(conn, "default")
        upload_once(conn, pool, name, img, fmt="qcow2", mode="0644")
        libvirt_side.box_boot_files(conn, pool, d, box_manifest(box["name"])["recipe_hash"])
    finally:
        conn.close()


def bench_vagrant(table, repeat: int, tmp: Path, enos: List[str], clean_env: Callable[[], dict],
                  log: Callable[[str], None]) -> None:
    """Add the rows ``enos up`` / ``enos destroy`` of 2 Vagrant machines vs plain vagrant."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from libvirtd_fixture import start_libvirtd
    from enos.libvirt.connection import connect
    from enos.libvirt.storage import upload_once
    from enos.vagrant.box import build_box
    from enos.vagrant import libvirt_side
    box = build_box()
    d = start_libvirtd()
    work = tmp / "vagrant"
    work.mkdir(parents=True, exist_ok=True)
    res = work / "reservation.yaml"
    res.write_text(RESERVATION.format(uri=d.uri))
    env = clean_env()
    env.update(d.env)
    venv = dict(env, VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_BOX_UPDATE_CHECK_DISABLE="1")
    ups, downs, vups, vdowns = [], [], [], []
    live: List[Path] = []
    try:
        _warm_pool(d.uri, box)
        log("pool warmed: box volume and kernel/initrd uploaded (untimed)")
        for i in range(repeat):
            env_dir = work / f"env-{i}"
            live.append(env_dir)
            ups.append(_timed(d.ns_exec(*enos, "-q", "up", "-f", str(res), "--env", str(env_dir),
                                        "--no-provision"), work, env))
            st = json.loads((env_dir / "state.json").read_text())
            rec = st["journal"]["vagrant"]
            downs.append(_timed(d.ns_exec(*enos, "-q", "destroy", "--env", str(env_dir)), work, env))
            live.remove(env_dir)
            log(f"vagrant via enos: up {ups[-1]:.1f}s, destroy {downs[-1]:.1f}s")
            # the baseline: the same Vagrantfile, its seed volumes put back (untimed)
            plain = work / f"plain-{i}"
            plain.mkdir()
            shutil.copy2(env_dir / "vagrant" / "Vagrantfile", plain / "Vagrantfile")
            conn = connect(d.uri)
            try:
                pool = libvirt_side.pool(conn, rec["pool"])
                for m in rec["machines"]:
                    img = Path(rec["dir"]) / "seeds" / m["alias"] / "seed.img"
                    upload_once(conn, pool, m["seed"], img)
            finally:
                conn.close()
            live.append(plain)
            vups.append(_timed(d.ns_exec("vagrant", "up", "--provider", "libvirt"), plain, venv))
            vdowns.append(_timed(d.ns_exec("vagrant", "destroy", "-f"), plain, venv))
            live.remove(plain)
            conn = connect(d.uri)
            try:
                left = libvirt_side.remove(conn, rec["pool"], rec)     # the seeds
            finally:
                conn.close()
            if left:
                raise RuntimeError(f"baseline left {left}")
            log(f"plain vagrant: up {vups[-1]:.1f}s, destroy {vdowns[-1]:.1f}s")
    finally:
        for p in live:
            if (p / "state.json").exists():
                subprocess.run(d.ns_exec(*enos, "-q", "destroy", "--env", str(p)), cwd=work, env=env,
                               capture_output=True)
            elif (p / "Vagrantfile").exists():
                subprocess.run(d.ns_exec("vagrant", "destroy", "-f"), cwd=p, env=venv, capture_output=True)
        problems = d.stop()
        if problems:
            log(f"WARNING: libvirtd fixture: {problems}")
    table.add("`enos up --no-provision` 2 Vagrant machines (libvirt)", ups, vups, "≤ 1.1×",
              lambda e, r: r is not None and r <= 1.1, base_name="(vagrant up)")
    table.add("`enos destroy` 2 Vagrant machines (libvirt)", downs, vdowns, "≤ 1.1×",
              lambda e, r: r is not None and r <= 1.1, base_name="(vagrant destroy -f)")
