"""Crowded, full or damaged: real concurrent ``enos`` processes, a real small tmpfs that
fills up, a read-only bind mount, and state files damaged in every way we know, all
through the real CLI on the local provider (namespace hosts)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enoscli import enos
from localhosts import RUN_IDS, leftovers

pytestmark = pytest.mark.root

ONE_HOST = """\
provider:
  type: local
resources:
  local:
    solo: 1
"""


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}


def start(cwd, *args, env=None) -> subprocess.Popen:
    """Start ``python -m enos ARGS`` in ``cwd`` without waiting."""
    e = _env()
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "enos", *args], cwd=str(cwd), env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def wait_stopped(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``proc`` stopped itself at a ``=stop`` failpoint (state T in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early: {proc.communicate()}"
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the process never reached its stop failpoint")


def no_traceback(p) -> None:
    out = (p.stdout or "") + (p.stderr or "")
    assert "Traceback" not in out, out


def run_id_of(env_dir: Path) -> str:
    rid = json.loads((Path(env_dir) / "state.json").read_text())["run_id"]
    RUN_IDS.append(rid)
    return rid


@pytest.fixture
def reservation(tmp_path) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(ONE_HOST)
    return p


# --- 1. concurrency -------------------------------------------------------------------

def test_same_second_ups_claim_distinct_dirs(tmp_path, reservation):
    """Pairs of ``enos up`` started together in one dir (most in the same second): each one
    either creates its own env dir (a ``-2`` suffix on a same-second collision), resumes the
    other's through ./current, or is told it is locked; no dir is shared by two creators,
    none is deleted. The processes stop right after the state is written (failpoint), so no
    host is booked."""
    import re
    pairs, collided = 12, 0
    for i in range(pairs):
        d = tmp_path / f"pair{i}"
        d.mkdir()
        shutil.copy(reservation, d / "r.yaml")
        procs = [start(d, "up", "-f", "r.yaml", env={"ENOS_FAILPOINTS": "task.env_created=raise"})
                 for _ in range(2)]
        created = {}
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 1 and "Traceback" not in err, err
            assert "failpoint task.env_created" in err or "locked" in err, err
            m = re.search(r"^environment (\S+) \(run ([0-9a-f]{8})\)", err, re.M)
            if m:
                assert m.group(1) not in created, f"two creators of {m.group(1)}"
                created[m.group(1)] = m.group(2)
        assert created
        for path, rid in created.items():       # every dir a process created is still there, its own
            assert json.loads((Path(path) / "state.json").read_text())["run_id"] == rid
        dirs = [x.name for x in d.iterdir() if x.name.startswith("enos_")]
        assert len(dirs) == len(created), (dirs, created)
        collided += any(x.endswith("-2") for x in dirs)
    assert collided >= 1, "no pair created two dirs in the same second: the race was not exercised"


def test_two_ups_on_one_env_one_wins_none_deleted(tmp_path, reservation):
    """``enos up --env X`` twice at once: the first (held at 'booked') wins; the second
    says X is locked (exit 1, no traceback) and X is intact; X is destroyable after."""
    first = start(tmp_path, "up", "-f", "r.yaml", "--env", "X", "--no-provision",
                  env={"ENOS_FAILPOINTS": "task.booked=stop"})
    try:
        wait_stopped(first)
        rid = run_id_of(tmp_path / "X")
        second = enos(tmp_path, "up", "-f", "r.yaml", "--env", "X", "--no-provision", check=False, timeout=120)
        assert second.returncode == 1, second.stderr
        assert f"locked by process {first.pid}" in second.stderr
        no_traceback(second)
        assert json.loads((tmp_path / "X" / "state.json").read_text())["run_id"] == rid
        destroy_during_up = enos(tmp_path, "destroy", "--env", "X", check=False, timeout=120)
        assert destroy_during_up.returncode == 1 and "locked" in destroy_during_up.stderr
        no_traceback(destroy_during_up)
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    enos(tmp_path, "destroy", "--env", "X", timeout=300)
    assert leftovers(rid) == []


def test_racing_ups_on_one_env_never_delete_it(tmp_path, reservation):
    """Free races (no failpoint): two ``up --env X`` at once, several times; every time X
    survives with one run, each process exits 0 (won, or resumed after the winner) or 1
    saying 'locked', never with a traceback."""
    rids = set()
    for i in range(3):
        procs = [start(tmp_path, "up", "-f", "r.yaml", "--env", "X", "--no-provision") for _ in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert "Traceback" not in err, err
            assert p.returncode == 0 or (p.returncode == 1 and "locked" in err), err
        assert (tmp_path / "X" / "state.json").is_file()
        rids.add(run_id_of(tmp_path / "X"))
        enos(tmp_path, "destroy", "--env", "X", timeout=300)
        assert leftovers(run_id_of(tmp_path / "X")) == []
    assert len(rids) == 3


def test_run_during_destroy_says_so(tmp_path, reservation):
    """``enos run`` and ``enos inventory`` while ``destroy`` is at work: a clear 'is
    destroying' (exit 2, nothing done), no traceback."""
    enos(tmp_path, "up", "-f", "r.yaml", "--no-provision", timeout=300)
    rid = run_id_of(tmp_path / "current")
    d = start(tmp_path, "destroy", env={"ENOS_FAILPOINTS": "task.destroying=stop"})
    try:
        wait_stopped(d)
        r = enos(tmp_path, "run", "hostname", check=False, timeout=120)
        assert r.returncode == 2 and "is destroying" in r.stderr, r.stderr
        i = enos(tmp_path, "inventory", check=False, timeout=120)
        assert i.returncode == 2 and "is destroying" in i.stderr, i.stderr
        no_traceback(r)
    finally:
        d.send_signal(signal.SIGCONT)
    out, err = d.communicate(timeout=300)
    assert d.returncode == 0, err
    assert leftovers(rid) == []


# --- 2. full disk ---------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MiB tmpfs mounted in tmp_path/disk (unmounted after)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0755", "enos-test-full", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> Path:
    """Fill the file system of ``mnt`` to the last byte; return the filler file."""
    filler = mnt / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    try:
        with open(filler, "ab") as f:   # the last partial block
            while True:
                f.write(b"\0" * 512)
                f.flush()
    except OSError:
        pass
    assert shutil.disk_usage(mnt).free < 4096
    return filler


def test_destroy_on_full_disk_frees_first(tmp_path, reservation, small_disk):
    """Disk full after ``up``: destroy frees every resource anyway (the 'destroying' record
    fails first); then either the freed files made room and 'destroyed' is recorded (exit
    0), or it says the record could not be written (exit 1); never a traceback. Once
    space is back, destroy records it."""
    env = small_disk / "env"
    enos(tmp_path, "up", "-f", "r.yaml", "--env", str(env), "--no-provision", timeout=300)
    rid = run_id_of(env)
    assert leftovers(rid)
    filler = fill(small_disk)
    p = enos(tmp_path, "destroy", "--env", str(env), check=False, timeout=300)
    no_traceback(p)
    assert leftovers(rid) == []                                   # freed although nothing could be written
    assert "cannot record the state (No space left on device)" in p.stderr, p.stderr
    assert p.returncode == 0 or (p.returncode == 1 and "could not be recorded" in p.stderr), p.stderr
    filler.unlink()
    enos(tmp_path, "destroy", "--env", str(env), timeout=300)
    assert json.loads((env / "state.json").read_text())["phase"] == "destroyed"


@pytest.mark.parametrize("point", ["task.booked", "task.before_preinstall"])
def test_up_when_disk_fills_after_booking(tmp_path, reservation, small_disk, point):
    """The disk fills while ``up`` is held after booking (before the SSH files are written,
    or before Ansible starts): up stops at once (exit 1, no traceback, no Ansible hanging on
    a full disk, says what to do), and destroy frees everything once there is room."""
    env = small_disk / "env"
    p = start(tmp_path, "up", "-f", "r.yaml", "--env", str(env), env={"ENOS_FAILPOINTS": f"{point}=stop"})
    try:
        wait_stopped(p)
        rid = run_id_of(env)
        filler = fill(small_disk)
    finally:
        p.send_signal(signal.SIGCONT)
    out, err = p.communicate(timeout=300)
    assert "Traceback" not in err, err
    assert p.returncode == 1 and "enos destroy" in err and "free" in err, err
    filler.unlink()
    enos(tmp_path, "destroy", "--env", str(env), timeout=300)
    assert leftovers(rid) == []


def test_up_on_full_disk_books_nothing(tmp_path, reservation, small_disk):
    """``up`` on an already full disk: exit 1 'nothing was booked', no env dir left."""
    fill(small_disk)
    p = enos(tmp_path, "up", "-f", "r.yaml", "--env", str(small_disk / "env"), check=False, timeout=300)
    no_traceback(p)
    assert p.returncode == 1 and "nothing was booked" in p.stderr, p.stderr
    assert not (small_disk / "env").exists()


def test_destroy_on_read_only_env_dir(tmp_path, reservation):
    """The env dir becomes read-only (a read-only bind mount over it): destroy still frees,
    exits 1 saying it could not record it, and records it once writable again."""
    env = tmp_path / "env"
    enos(tmp_path, "up", "-f", "r.yaml", "--env", "env", "--no-provision", timeout=300)
    rid = run_id_of(env)
    subprocess.run(["mount", "--bind", str(env), str(env)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(env)], check=True)
        p = enos(tmp_path, "destroy", "--env", "env", check=False, timeout=300)
        no_traceback(p)
        assert leftovers(rid) == []
        assert p.returncode == 1 and "Read-only file system" in p.stderr, p.stderr
    finally:
        subprocess.run(["umount", str(env)], check=True)
    enos(tmp_path, "destroy", "--env", "env", timeout=300)


# --- 3. damaged state -----------------------------------------------------------------

def _set(key, value):
    def damage(path: Path):
        d = json.loads(path.read_text())
        d[key] = value
        path.write_text(json.dumps(d))
    return damage


def _drop(key):
    def damage(path: Path):
        d = json.loads(path.read_text())
        del d[key]
        path.write_text(json.dumps(d))
    return damage


def _bytes(blob):
    def damage(path: Path):
        path.write_bytes(blob(path.read_bytes()))
    return damage


def _as_dir(path: Path):
    path.unlink()
    path.mkdir()


def _dangling(path: Path):
    path.unlink()
    path.symlink_to("nowhere.json")


DAMAGES = {
    "not UTF-8": (_bytes(lambda b: b[:20] + b"\xff\xfe" + b[20:]), "not UTF-8"),
    "truncated": (_bytes(lambda b: b[: len(b) // 2]), "not valid JSON"),
    "empty": (_bytes(lambda b: b""), "not valid JSON"),
    "a list": (_bytes(lambda b: b"[1, 2]"), "JSON list"),
    "no schema": (_drop("schema"), "unknown state schema"),
    "future schema": (_set("schema", 99), "unknown state schema 99"),
    "no run_id": (_drop("run_id"), "lacks the key 'run_id'"),
    "no journal": (_drop("journal"), "lacks the key 'journal'"),
    "no config": (_drop("config"), "lacks the key 'config'"),
    "phase number": (_set("phase", 3), "for 'phase'"),
    "unknown phase": (_set("phase", "flying"), "unknown phase"),
    "serial text": (_set("serial", "seven"), "for 'serial'"),
    "serial negative": (_set("serial", -4), "negative serial"),
    "serial bool": (_set("serial", True), "for 'serial'"),
    "run_id malformed": (_set("run_id", "../../etc"), "malformed run_id"),
    "journal list": (_set("journal", []), "for 'journal'"),
    "config without data": (_set("config", {"file": "r.yaml"}), "without the reservation"),
    "resources list": (_set("resources", [1]), "for 'resources'"),
    "history null": (_set("history", None), "for 'history'"),
    "a directory": (_as_dir, "is a directory"),
    "dangling symlink": (_dangling, "dangling symbolic link"),
    "deleted": (lambda p: p.unlink(), "is missing"),
}


def test_damaged_state_every_kind(tmp_path, reservation):
    """For every kind of damage, ``destroy``, ``up`` and ``info`` give a clear error that
    names the file and the sweep command with the env's run id (exit 1, no traceback),
    and ``up`` books nothing; then the sweep it names frees the hosts."""
    env = tmp_path / "env"
    enos(tmp_path, "up", "-f", "r.yaml", "--env", "env", "--no-provision", timeout=300)
    rid = run_id_of(env)
    state_file = env / "state.json"
    good = state_file.read_bytes()
    booked = leftovers(rid)
    assert booked
    failures = []
    for kind, (damage, says) in DAMAGES.items():
        damage(state_file)
        for args in (("destroy", "--env", "env"), ("up", "-f", "r.yaml", "--env", "env", "--no-provision"),
                     ("info", "--env", "env")):
            p = enos(tmp_path, *args, check=False, timeout=120)
            msg = p.stderr
            ok = (p.returncode == 1 and "Traceback" not in msg + p.stdout and str(state_file) in msg
                  and says in msg and f"enos destroy --sweep --run-id {rid}" in msg)
            if not ok:
                failures.append(f"{kind} / {args[0]}: rc {p.returncode}: {msg.strip()}")
        assert sorted(x.name for x in env.iterdir() if x.name.startswith("local-")) == [f"local-{rid}"]
        if state_file.is_dir():
            state_file.rmdir()
        elif os.path.lexists(state_file):
            state_file.unlink()
        state_file.write_bytes(good)
    assert not failures, "\n".join(failures)
    assert leftovers(rid) == booked                      # nothing freed, nothing booked twice
    # the way out the message gives: sweep by run id, with the damaged state still there
    DAMAGES["not UTF-8"][0](state_file)
    enos(tmp_path, "destroy", "--sweep", "--run-id", rid, "-f", "r.yaml", timeout=300)
    assert leftovers(rid) == []


def test_deleted_state_then_up_refuses(tmp_path, reservation):
    """state.json deleted, then ``up --env`` on the same dir: refused (the old run's hosts
    would be orphaned), naming the run id to sweep; nothing new is booked."""
    enos(tmp_path, "up", "-f", "r.yaml", "--env", "env", "--no-provision", timeout=300)
    rid = run_id_of(tmp_path / "env")
    (tmp_path / "env" / "state.json").unlink()
    p = enos(tmp_path, "up", "-f", "r.yaml", "--env", "env", "--no-provision", check=False, timeout=300)
    no_traceback(p)
    assert p.returncode == 1 and f"--run-id {rid}" in p.stderr and "orphan" in p.stderr, p.stderr
    assert not (tmp_path / "env" / "state.json").exists()
    assert [x.name for x in (tmp_path / "env").iterdir() if x.name.startswith("local-")] == [f"local-{rid}"]
    enos(tmp_path, "destroy", "--sweep", "--run-id", rid, "-f", "r.yaml", timeout=300)
    assert leftovers(rid) == []


# --- 4. configuration errors found before anything is created -------------------------

@pytest.fixture
def busy_network():
    """A /24 in use on this machine: a veth pair of the test's own holding its first address
    (removed afterwards); yield the network's text."""
    import random
    name = f"rb{os.getpid() % 10000}{random.randrange(1000)}"
    third = random.randrange(1, 250)
    net = f"10.77.{third}.0/24"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"10.77.{third}.1/24", "dev", name], check=True)
        yield net
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_subnet_overlap_found_before_anything_is_created(tmp_path, busy_network):
    """A ``subnet`` overlapping a network in use on this machine: validate warns, up refuses
    (exit 2, file and key), creates no env dir and leaves ./current. (A loopback subnet
    is refused by the reservation's own check, whatever the machine.)"""
    (tmp_path / "r.yaml").write_text(f"provider:\n  type: local\n  subnet: {busy_network}\n"
                                     "resources:\n  local:\n    solo: 1\n")
    v = enos(tmp_path, "validate", "-f", "r.yaml", check=False)     # a fact of this machine: a warning
    assert v.returncode == 0 and "on this machine: " in v.stderr, v.stderr
    assert f"r.yaml:3: provider.subnet: {busy_network} overlaps" in v.stderr, v.stderr
    (tmp_path / "elsewhere").mkdir()
    os.symlink("elsewhere", tmp_path / "current")
    p = enos(tmp_path, "up", "-f", "r.yaml", check=False, timeout=120)
    assert p.returncode == 2 and "overlaps" in p.stderr, p.stderr
    no_traceback(p)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["current", "elsewhere", "r.yaml"]
    assert os.readlink(tmp_path / "current") == "elsewhere"
    (tmp_path / "lo.yaml").write_text("provider:\n  type: local\n  subnet: 127.0.5.0/24\n"
                                      "resources:\n  local:\n    solo: 1\n")
    lo = enos(tmp_path, "validate", "-f", "lo.yaml", check=False)
    assert lo.returncode == 2 and "127.0.5.0/24 is the loopback range" in lo.stderr, lo.stderr


@pytest.mark.parametrize("key", ["./no-such-key", "/tmp", "/dev/zero"])
def test_missing_static_keyfile_found_before_anything_is_created(tmp_path, key):
    """A static host's ``keyfile`` that does not exist, or is a directory or a device: a
    fact of this machine, not of the file (the real static files of the corpus name keys
    'vagrant up' makes later): validate accepts the file and warns naming the line; check
    says it is missing (exit 1); up exits 2 and creates no env dir."""
    (tmp_path / "r.yaml").write_text("provider: static\nresources:\n  ctl:\n    - address: 127.0.0.1\n"
                                     f"      keyfile: {key}\n")
    v = enos(tmp_path, "validate", "-f", "r.yaml", check=False)
    assert v.returncode == 0 and "warning: on this machine: " in v.stderr and "r.yaml:5:" in v.stderr, v.stderr
    assert f"{key.lstrip('./')} does not exist, is not readable or is not a regular file" in v.stderr, v.stderr
    c = enos(tmp_path, "check", "-f", "r.yaml", check=False)
    assert c.returncode == 1 and "MISSING" in c.stdout + c.stderr, c.stdout + c.stderr
    p = enos(tmp_path, "up", "-f", "r.yaml", check=False, timeout=120)
    assert p.returncode == 2 and key.lstrip("./") in p.stderr, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["r.yaml"]


def test_env_dir_claim_is_exclusive_across_processes(tmp_path):
    """8 processes each claim 120 env dirs in one base at the same time with the same stamp
    (the clock pinned): 960 distinct dirs, each reported by exactly one claimer."""
    n, each = 8, 120
    go = time.time() + 3
    code = ("import sys, time, enos.state as s; s.utc_stamp = lambda: '20260101T000000Z'; "
            f"time.sleep(max(0, {go} - time.time())); "
            f"print('\\n'.join(s.claim_env_dir(sys.argv[1]).name for _ in range({each})))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    names = [x for p in procs for x in p.communicate(timeout=300)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert len(names) == n * each
    assert len(set(names)) == n * each, f"{n * each - len(set(names))} dirs claimed twice"
    assert len(list(tmp_path.iterdir())) == n * each
