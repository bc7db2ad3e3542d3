"""Environment state: atomic writes, serial, lock contention, journal."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from enos.errors import NoEnvironment, StateError, StateLocked
from enos.state import (CURRENT, Lock, MemoryJournal, State, atomic_write, resolve_env,
                        set_current)


def test_create_load_roundtrip_and_serial(tmp_path):
    st = State.create(tmp_path, "r.yaml", {"provider": "local"}, "local")
    assert st.data["serial"] == 1 and len(st.run_id) == 8
    int(st.run_id, 16)
    st.set_phase("booking")
    st.journal.record("bridge", "eb1234")
    st.set_phase("booked")
    again = State.load(tmp_path)
    assert again.data["serial"] == 4
    assert again.phase == "booked"
    assert [h["phase"] for h in again.data["history"]] == ["booking", "booked"]
    assert again.journal.get("bridge") == "eb1234"
    assert again.run_id == st.run_id


def test_unknown_phase_rejected(tmp_path):
    st = State.create(tmp_path, "r.yaml", {}, "local")
    with pytest.raises(ValueError):
        st.set_phase("flying")


def test_journal_operations_persist_each_call(tmp_path):
    st = State.create(tmp_path, "r.yaml", {}, "local")
    j = st.journal
    j.update("net", name="n1")
    j.update("net", uuid="u1")
    j.append("domains", "d1")
    j.append("domains", "d1")
    j.append("domains", "d2")
    j.forget("absent")
    on_disk = json.loads((tmp_path / "state.json").read_text())["journal"]
    assert on_disk == {"net": {"name": "n1", "uuid": "u1"}, "domains": ["d1", "d2"]}
    j.forget("net")
    assert "net" not in json.loads((tmp_path / "state.json").read_text())["journal"]
    # get() returns copies: mutating them does not change the journal
    d = j.get("domains")
    d.append("x")
    assert j.get("domains") == ["d1", "d2"]


def test_memory_journal_counts_saves():
    j = MemoryJournal()
    j.record("a", 1)
    j.update("b", c=2)
    assert j.data == {"a": 1, "b": {"c": 2}}
    assert j._state.saves == 2


def test_load_missing_and_corrupt(tmp_path):
    with pytest.raises(NoEnvironment):
        State.load(tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StateError, match="unreadable state file"):
        State.load(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"schema": 99}))
    with pytest.raises(StateError, match="unknown state schema 99"):
        State.load(tmp_path)


def test_atomic_write_survives_kill_mid_write(tmp_path):
    """A writer killed while rewriting the file in a loop never leaves a torn file."""
    target = tmp_path / "state.json"
    atomic_write(target, json.dumps({"n": 0, "pad": "x" * 200000}))
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(os.getcwd())!r})
        from enos.state import atomic_write
        from pathlib import Path
        n = 0
        print("go", flush=True)
        while True:
            n += 1
            atomic_write(Path({str(target)!r}), json.dumps({{"n": n, "pad": "x" * 200000}}))
    """)
    for _ in range(5):
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "go"
        time.sleep(0.15)
        p.send_signal(signal.SIGKILL)
        p.wait()
        data = json.loads(target.read_text())          # must parse: old or new, never torn
        assert data["pad"] == "x" * 200000 and data["n"] >= 0
    leftovers = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    # a kill between mkstemp and rename may leave a temp file, never a torn state.json
    assert all(f.startswith(".state.json.") for f in leftovers)


def test_lock_contention_between_processes(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.getcwd())!r})
        from enos.state import Lock
        l = Lock({str(tmp_path)!r}).acquire()
        print("held", flush=True)
        time.sleep(30)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(StateLocked) as e:
            Lock(tmp_path).acquire()
        assert e.value.pid == p.pid
        assert f"locked by process {p.pid}" in str(e.value)
    finally:
        p.kill()
        p.wait()
    # the holder died: the lock is free again
    with Lock(tmp_path):
        pass


def test_lock_released_and_reacquired_in_process(tmp_path):
    l1 = Lock(tmp_path).acquire()
    l1.release()
    l1.release()   # idempotent
    with Lock(tmp_path):
        pass


def test_current_symlink_and_resolve(tmp_path):
    a = tmp_path / "enos_a"
    b = tmp_path / "enos_b"
    for d in (a, b):
        d.mkdir()
        State.create(d, "r.yaml", {}, "local")
    set_current(tmp_path, a)
    assert resolve_env(None, tmp_path) == a.resolve()
    set_current(tmp_path, b)
    assert os.readlink(tmp_path / CURRENT) == "enos_b"
    assert resolve_env(None, tmp_path) == b.resolve()
    assert resolve_env(str(a), tmp_path) == a.resolve()
    with pytest.raises(NoEnvironment, match="run 'enos up' first"):
        resolve_env(str(tmp_path / "nope"), tmp_path)
    (tmp_path / CURRENT).unlink()
    with pytest.raises(NoEnvironment, match="no 'current' link"):
        resolve_env(None, tmp_path)
