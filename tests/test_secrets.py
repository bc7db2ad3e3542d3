"""Secrets stay private: a real ``enos up`` of namespace hosts, provisioned by a real
Ansible run, in a directory whose path has a space, with a planted secret in the
environment (``G5K_PASSWORD=<unique>``) and a unique value among the reservation's
variables. While the play runs, every process's command line (``ps -eo args``) is sampled
and the environment of every ``ansible-playbook`` process read; afterwards the whole env
dir is grepped and its permissions checked."""
from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from enoscli import enos
from localhosts import leftovers

pytestmark = pytest.mark.root

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: give ps time to see the play
      ansible.builtin.command: sleep 2
    - name: the variable reaches the play
      ansible.builtin.copy:
        content: "{{ token }}"
        dest: "{{ enos_scratch }}/token"
"""


class _PsWatch:
    """Samples ``ps -eo args`` and the environ of ansible-playbook processes until stopped."""

    def __init__(self, needles):
        self.needles = [n.encode() for n in needles]
        self.hits = []
        self.saw_playbook = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True).stdout
            for line in out.splitlines():
                if any(n in line for n in self.needles):
                    self.hits.append(("args", line.decode(errors="replace")))
                if b"ansible-playbook" in line:
                    self.saw_playbook += 1
                    pid = line.split()[0].decode()
                    try:
                        env = Path(f"/proc/{pid}/environ").read_bytes()
                    except OSError:
                        continue
                    if any(n in env for n in self.needles):
                        self.hits.append(("environ", line.decode(errors="replace")))
            self.stop.wait(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def _private(root: Path):
    """Return the entries under ``root`` readable or writable by others than the owner."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath] + [os.path.join(dirpath, f) for f in filenames]:
            st = os.lstat(name)
            if stat.S_ISLNK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
                continue
            if st.st_mode & 0o077:
                bad.append(f"{oct(st.st_mode & 0o777)} {name}")
    return bad


def test_no_secret_in_env_dir_or_ps_and_env_dir_private(tmp_path):
    password = "g5kpw-" + secrets.token_hex(8)
    token = "tok-" + secrets.token_hex(8)
    work = tmp_path / "my experiment"          # a space in every env path
    work.mkdir()
    (work / "play.yml").write_text(PLAYBOOK)
    (work / "reservation.yaml").write_text(
        f"provider: local\nresources:\n  local:\n    web: 2\nprovision: play.yml\n"
        f"variables:\n  token: {token}\n")
    env = {"G5K_PASSWORD": password, "OTHER_SECRET": password + "-2"}
    run_id = None
    try:
        with _PsWatch([password, token]) as watch:
            p = enos(work, "up", env=env, check=False, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        # 'enos up' says which variables the playbooks receive (a misspelt key would show)
        assert "variables for the playbooks (1, " in p.stderr and "token (line 7)" in p.stderr, p.stderr
        env_dir = (work / "current").resolve()
        run_id = json.loads((env_dir / "state.json").read_text())["run_id"]
        assert watch.saw_playbook > 0, "the sampler never saw ansible-playbook running"
        assert watch.hits == [], watch.hits
        # the play got the variable (through the 0600 extra-vars file)
        assert any(Path(d, "token").exists() and Path(d, "token").read_text() == token
                   for d in env_dir.glob(f"local-{run_id}/*/scratch"))
        # no trace of the environment's secrets anywhere in the env dir
        out = subprocess.run(["grep", "-rlaF", "-e", password, str(env_dir)], capture_output=True, text=True)
        assert out.stdout == "", f"secret found in: {out.stdout}"
        artifacts = list(env_dir.glob("ansible/artifacts/*/command"))
        assert artifacts, "ansible-runner wrote no command artifact"
        for a in artifacts:
            cmd = json.loads(a.read_text())
            assert "G5K_PASSWORD" not in cmd["env"] and "OTHER_SECRET" not in cmd["env"]
            assert not any(token in arg for arg in cmd["command"]), cmd["command"]
        assert not (env_dir / "ansible" / "env" / "envvars").exists()
        assert not (env_dir / "ansible" / "env" / "extravars").exists()
        vars_file = env_dir / "ansible" / "extravars.json"
        assert stat.S_IMODE(vars_file.stat().st_mode) == 0o600
        # owner-only, everything
        assert stat.S_IMODE(env_dir.stat().st_mode) == 0o700
        assert _private(env_dir) == []
        # the env works from a path with a space: run and ssh through its ssh_config
        r = enos(work, "run", "hostname", timeout=120)
        assert "web-1 (ok)" in r.stdout and "web-2 (ok)" in r.stdout
    finally:
        enos(work, "destroy", check=False, timeout=300)
    if run_id:
        assert leftovers(run_id) == []
