"""The local provider through the real CLI (``python -m enos``, subprocesses): the
conformance suite (cold destroy, crash at every failpoint, sweep, ...), the sample
reservation end to end with a plain ``ansible -m ping``, two envs at once, the env lock."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enos.testing.conformance import ConformanceSuite
from enoscli import enos
from localhosts import exists, leftovers

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.root

RESERVATION = """\
provider:
  type: local
resources:
  local:
    control: 1
    compute: 2
"""


def state(env_dir: Path) -> dict:
    """Return the saved state of ``env_dir``."""
    return json.loads((Path(env_dir) / "state.json").read_text())


class TestLocalConformance(ConformanceSuite):
    """The provider conformance suite against real namespace hosts (no provisioning, so that
    the crash-at-every-failpoint test stays under a minute)."""

    up_args = ("--no-provision",)
    min_crash_points = 8
    command_timeout = 120.0

    @pytest.fixture
    def reservation(self, tmp_path) -> Path:
        p = tmp_path / "reservation.yaml"
        p.write_text(RESERVATION)
        return p

    def leftovers(self, run_id: str):
        return leftovers(run_id)


def test_sample_end_to_end(tmp_path):
    """The shipped sample: up (with its playbook) → run hostname → inventory for a plain
    ansible → destroy; nothing left, no zombie sshd."""
    shutil.copy(REPO / "reservation.yaml.sample", tmp_path / "reservation.yaml")
    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "sample-playbook.yml", tmp_path / "examples")
    enos(tmp_path, "up", "-f", "reservation.yaml")
    env_dir = (tmp_path / "current").resolve()
    st = state(env_dir)
    run_id = st["run_id"]
    pids = [h["pid"] for h in st["journal"]["local"]["hosts"]]
    try:
        assert st["phase"] == "ready"
        hosts = st["resources"]["hosts"]
        assert sorted(h["alias"] for h in hosts) == ["compute-1", "compute-2", "compute-3", "control-1"]
        # the playbook wrote into each host's own scratch dir
        for h in hosts:
            ident = Path(h["extra"]["enos_scratch"], "identity.txt").read_text()
            assert f"hello from enos from {h['alias']}" in ident and h["address"] in ident
        # enos run: each host answers its own name
        out = enos(tmp_path, "run", "hostname").stdout
        for h in hosts:
            assert f"── {h['alias']} (ok)\n{h['alias']}\n" in out, out
        # enos inventory, used by a plain ansible
        inv = enos(tmp_path, "inventory", "--path").stdout.strip()
        ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or "ansible"
        ping = subprocess.run([ansible, "-i", inv, "all", "-m", "ping", "-o"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True"})
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert sorted(line.split()[0] for line in ping.stdout.splitlines() if "SUCCESS" in line) == \
            sorted(h["alias"] for h in hosts)
    finally:
        enos(tmp_path, "destroy")
    assert leftovers(run_id) == []
    deadline = time.monotonic() + 10
    while any(exists(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)       # the sshds were orphaned when 'enos up' exited: PID 1 reaps them
    assert not any(exists(p) for p in pids), "sshd zombies left after destroy"


def test_two_envs_at_once_and_the_env_lock(tmp_path):
    """Two 'enos up' in two env dirs at once both work and do not interfere; a second 'enos up'
    on a busy env dir fails fast naming the lock holder."""
    (tmp_path / "r.yaml").write_text(RESERVATION)
    procs = [subprocess.Popen([sys.executable, "-m", "enos", "up", "-f", "r.yaml", "--env", f"env{i}"],
                              cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    # while env0 is busy (booking or provisioning), a second up on it is refused at once
    deadline = time.monotonic() + 60
    while not (tmp_path / "env0" / "state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    busy = enos(tmp_path, "up", "-f", "r.yaml", "--env", "env0", check=False)
    run_ids = []
    try:
        # env0's up provisions (several seconds): it still holds the lock
        assert procs[0].poll() is None, "the first 'enos up' ended before the second one started"
        assert busy.returncode != 0 and "locked by process" in busy.stderr, busy.stderr
        assert str(procs[0].pid) in busy.stderr   # at once: procs[0] still runs (no timing assertion)
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        run_ids = [state(tmp_path / f"env{i}")["run_id"] for i in range(2)]
        nets = [state(tmp_path / f"env{i}")["resources"]["networks"][0]["cidr"] for i in range(2)]
        assert nets[0] != nets[1]
        enos(tmp_path, "destroy", "--env", "env0")
        assert leftovers(run_ids[0]) == []
        out = enos(tmp_path, "run", "hostname", "--env", "env1").stdout
        assert "── compute-2 (ok)\ncompute-2\n" in out
    finally:
        for i in range(2):
            if (tmp_path / f"env{i}" / "state.json").exists():
                enos(tmp_path, "destroy", "--env", f"env{i}", check=False)
    for r in run_ids:
        assert leftovers(r) == []


def test_sweep_from_the_cli_with_the_env_dir_gone(tmp_path):
    (tmp_path / "r.yaml").write_text(RESERVATION)
    enos(tmp_path, "up", "-f", "r.yaml", "--env", "env", "--no-provision")
    run_id = state(tmp_path / "env")["run_id"]
    assert len(leftovers(run_id)) == 3 + 1 + 3 + 3
    shutil.rmtree(tmp_path / "env")
    out = enos(tmp_path, "destroy", "--sweep", "--run-id", run_id, "-f", "r.yaml")
    assert leftovers(run_id) == [], out.stdout + out.stderr


def test_check_and_new(tmp_path):
    p = enos(tmp_path, "check", "--provider", "local", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    for what in ("root privileges", "sshd", "ip", "unshare", "ssh-keygen"):
        assert f"[  ok   ] {what}" in p.stdout, p.stdout
    enos(tmp_path, "new", "--provider", "local")
    written = [f for f in os.listdir(tmp_path) if f.endswith((".yaml", ".yml"))]
    assert written, os.listdir(tmp_path)
    v = enos(tmp_path, "validate", "-f", written[0])
    assert "provider local" in v.stdout


def test_sample_validates_from_the_repo():
    v = enos(REPO, "validate", "-f", "reservation.yaml.sample")
    assert "4 host(s) in 2 role(s)" in v.stdout


FAILING_PLAYBOOK = """\
- hosts: compute
  gather_facts: false
  tasks:
    - name: this task fails on purpose
      ansible.builtin.command: sh -c 'echo broken >&2; exit 3'
"""


def test_failing_task_names_host_task_and_message_then_destroy(tmp_path):
    """A failed provisioning task exits 1 naming each host, the task and its message, no
    traceback; the env stays destroyable."""
    (tmp_path / "fail.yml").write_text(FAILING_PLAYBOOK)
    (tmp_path / "r.yaml").write_text(RESERVATION + "provision: [fail.yml]\n")
    p = enos(tmp_path, "up", "-f", "r.yaml", "--env", "env", check=False)
    run_id = state(tmp_path / "env")["run_id"]
    try:
        assert p.returncode == 1, p.stderr
        assert "Traceback" not in p.stderr
        assert f"provisioning failed in {tmp_path / 'fail.yml'}" in p.stderr
        for host in ("compute-1", "compute-2"):
            assert f"{host}: task 'this task fails on purpose': non-zero return code (rc 3): broken" \
                in p.stderr, p.stderr
        assert "control-1:" not in p.stderr
        assert state(tmp_path / "env")["phase"] == "booked"
    finally:
        enos(tmp_path, "destroy", "--env", "env")
    assert leftovers(run_id) == []


@pytest.mark.parametrize("point", ["task.before_preinstall", "task.preinstalled", "task.provisioned"])
def test_kill_during_provisioning_then_destroy(tmp_path, point):
    """The conformance run skips Ansible; these are the checkpoints around it."""
    (tmp_path / "r.yaml").write_text(RESERVATION)
    p = enos(tmp_path, "up", "-f", "r.yaml", "--env", "env", env={"ENOS_FAILPOINTS": f"{point}=kill"}, check=False)
    assert p.returncode == -9, p.stderr
    run_id = state(tmp_path / "env")["run_id"]
    assert leftovers(run_id), "nothing was up when the kill came"
    enos(tmp_path, "destroy", "--env", "env")
    assert leftovers(run_id) == []
