"""``enos check`` (libvirt, vagrant-libvirt): QEMU's user must be able to enter every
directory on the way to QEMU's files and the pool. A fresh machine here had ``/`` at mode
0700: every guest then died on "accel-tcg-x86_64.so: Permission denied". Real directories,
a real unprivileged account (``nobody``), the printed fix run as printed."""
import pwd
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from enos.libvirt.diagnose import check_qemu_access, closed_directory, qemu_user

pytestmark = pytest.mark.root


@pytest.fixture
def locked_tree():
    """/var/tmp/X (0755) / locked (0700, root's) / pool (0755): 'nobody' cannot reach pool
    (under /var/tmp: pytest's own tmp dir is 0700, closed to 'nobody' already)."""
    pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="enos-qemu-access-", dir="/var/tmp"))
    top.chmod(0o755)
    locked = top / "locked"
    pool = locked / "pool"
    pool.mkdir(parents=True)
    locked.chmod(0o700)
    pool.chmod(0o755)
    try:
        yield locked, pool
    finally:
        shutil.rmtree(top)


def test_closed_directory_names_the_first_one_the_user_cannot_enter(locked_tree):
    locked, pool = locked_tree
    assert closed_directory("nobody", pool) == locked
    assert closed_directory("nobody", pool / "image.qcow2") == locked
    assert closed_directory("root", pool) is None
    locked.chmod(0o711)
    assert closed_directory("nobody", pool) is None


def test_check_reports_it_and_its_printed_fix_works(locked_tree, tmp_path):
    locked, pool = locked_tree
    conf = tmp_path / "qemu.conf"
    conf.write_text('#user = "libvirt-qemu"\nuser = "nobody"\n')
    assert qemu_user(conf) == "nobody"
    check = check_qemu_access("qemu:///system", str(pool), conf=conf)
    assert check is not None and not check.ok
    assert str(locked) in check.detail and "0700" in check.detail and "Permission denied" in check.detail
    fix = check.fix.split(" (or ")[0]
    assert fix == f"chmod o+x {shlex.quote(str(locked))}"
    subprocess.run(fix, shell=True, check=True)
    again = check_qemu_access("qemu:///system", str(pool), conf=conf)
    assert again.ok, again.detail


def test_remote_and_session_daemons_are_not_judged_from_here(locked_tree, tmp_path):
    _, pool = locked_tree
    conf = tmp_path / "qemu.conf"
    conf.write_text('user = "nobody"\n')
    assert check_qemu_access("qemu+ssh://hv.example/system", str(pool), conf=conf) is None
    assert check_qemu_access("qemu:///session", str(pool), conf=conf) is None
    assert check_qemu_access("qemu:///system?socket=/var/tmp/x/libvirt-sock", str(pool), conf=conf) is None
