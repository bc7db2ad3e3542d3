"""``enos destroy --sweep --run-id ID`` acts on that run only: a full run id is required
and matched exactly (not as a prefix), and processes are found by namespace, recorded
PID + start time or an exact argument — never by a command-line substring. Two real
local envs whose run ids share a prefix: sweeping one leaves the other intact."""
from __future__ import annotations

import subprocess
import time

import pytest

from enoscli import enos
from localhosts import leftovers, local_config, make_provider, ssh

pytestmark = pytest.mark.root

RESERVATION = "provider: local\nresources:\n  local:\n    web: 2\n"


def _state_of(run_id):
    """What of ``run_id`` exists, probed without enos: namespaces, links, processes."""
    return sorted(leftovers(run_id))


def _network_of(run_id):
    """Its namespaces and links (its processes come and go: an sshd forks a child per
    connection and rewrites its title; the listeners are checked by PID + start time)."""
    return [x for x in _state_of(run_id) if not x.startswith("process ")]


def test_sweep_needs_a_full_run_id_and_spares_the_other_run(tmp_path):
    a_id, b_id = "21a00000", "21a00001"       # share the prefix '21a0000'
    a = make_provider(tmp_path / "a", local_config({"web": 2}), run_id=a_id)
    b = make_provider(tmp_path / "b", local_config({"web": 2}), run_id=b_id)
    try:
        a.init()
        res_b = b.init()
        (tmp_path / "r.yaml").write_text(RESERVATION)
        before_b = _network_of(b_id)
        assert len([x for x in before_b if x.startswith("netns")]) == 2
        b_sshds = [(h["pid"], h["start"]) for h in b.ctx.journal.get("local")["hosts"]]
        assert all(pid and start for pid, start in b_sshds)

        # a prefix is refused: nothing touched
        for partial in ("21a0000", "21", "21a00000x", "-21a00000"):
            p = enos(tmp_path, "destroy", "--sweep", "--run-id", partial, "-f", "r.yaml", check=False)
            assert p.returncode == 2 and "give a full run id (8 hex characters" in p.stderr, p.stderr
        from enos import process
        assert _state_of(a_id) and _network_of(b_id) == before_b
        assert all(process.start_time(pid) == start for pid, start in b_sshds)

        # the full id of A: A is gone, B is intact and answers SSH
        out = enos(tmp_path, "destroy", "--sweep", "--run-id", a_id, "-f", "r.yaml").stdout
        assert "namespace enos-21a00000-0" in out and "link eb21a00000" in out
        assert not any(b_id in line for line in out.splitlines()), out
        assert _state_of(a_id) == []
        assert _network_of(b_id) == before_b
        assert all(process.start_time(pid) == start for pid, start in b_sshds)
        for h in res_b.hosts:
            assert ssh(b.ctx.ssh_key, h.address, "true").returncode == 0
    finally:
        for prov in (a, b):
            try:
                prov.destroy()
            except Exception:
                prov.sweep()
    assert _state_of(a_id) == [] and _state_of(b_id) == []


def test_destroy_kills_only_the_recorded_process(tmp_path):
    """A recorded sshd PID that now belongs to another process (the PID was reused: same
    number, another start time) is not killed by destroy, which still frees the host (its
    sshd found in the namespace). The journal is pointed at a live bystander's PID, as a
    reuse would leave it."""
    import copy
    prov = make_provider(tmp_path / "e", local_config({"web": 1}), run_id="21a00002")
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        prov.init()
        rec = prov.ctx.journal.get("local")
        real, start = rec["hosts"][0]["pid"], rec["hosts"][0]["start"]
        from enos import process
        assert prov._is_ours(real, start) and process.alive(real)
        # the PID was reused by the bystander: the journal names it, with the sshd's start time
        reused = copy.deepcopy(rec)
        reused["hosts"][0]["pid"] = bystander.pid
        prov.ctx.journal.record("local", reused)
        assert prov.ctx.journal.get("local")["hosts"][0]["pid"] == bystander.pid
        assert not prov._is_ours(bystander.pid, start)
        assert not prov._is_ours(bystander.pid)          # and no argument of this run
        prov.destroy()
        assert bystander.poll() is None, "destroy killed a process that is not the env's"
        deadline = time.monotonic() + 10
        while process.alive(real) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process.alive(real), "the env's sshd (found in its namespace) was not stopped"
    finally:
        bystander.kill()
        bystander.wait()
        try:
            prov.destroy()
        except Exception:
            prov.sweep()
    assert _state_of("21a00002") == []
