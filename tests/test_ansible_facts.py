"""Provisioning gathers facts only when a play asks, and once per host: enos' preinstall
(over SSH, no Ansible) gathers none, the first playbook that gathers (Ansible's default)
keeps them in the env's fact cache, and the next playbook reuses them — the full facts,
hardware included — instead of running ``setup`` again on every host. Real namespace
hosts, a real ``enos up``."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

FIRST = """\
- name: first play, gathering facts (Ansible's default)
  hosts: all
  tasks:
    - name: facts are there
      ansible.builtin.assert:
        that:
          - ansible_hostname == enos_hostname
"""

USER = """\
- name: user play relying on implicit fact gathering
  hosts: all
  tasks:
    - name: hardware and network facts are there without gathering again
      ansible.builtin.assert:
        that:
          - ansible_memtotal_mb is defined
          - ansible_default_ipv4 is defined
          - ansible_hostname == enos_hostname
    - name: write a file
      ansible.builtin.copy:
        content: "{{ ansible_memtotal_mb }}\\n"
        dest: "{{ enos_scratch }}/mem"
"""


def _events(artifact: Path):
    for f in sorted((artifact / "job_events").glob("*.json")):
        yield json.loads(f.read_text())


@pytest.mark.root
@pytest.mark.slow
def test_facts_are_gathered_once_by_the_first_play_that_asks(tmp_path, enos_cmd, sshd_available):
    (tmp_path / "first.yml").write_text(FIRST)
    (tmp_path / "site.yml").write_text(USER)
    (tmp_path / "reservation.yaml").write_text(
        "provider:\n  type: local\nresources:\n  local:\n    a: 1\n    b: 1\n"
        "provision:\n  - first.yml\n  - site.yml\n")
    env = tmp_path / "env"
    try:
        p = subprocess.run(enos_cmd + ["-q", "up", "-f", "reservation.yaml", "--env", str(env)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        arts = sorted((env / "ansible" / "artifacts").iterdir(), key=lambda d: d.stat().st_mtime)
        by_playbook = {}
        for a in arts:
            evs = list(_events(a))
            pb = next(e["event_data"]["playbook"] for e in evs if e["event_data"].get("playbook"))
            by_playbook[Path(pb).name] = evs
        assert set(by_playbook) == {"first.yml", "site.yml"}          # no preinstall playbook
        gathered = [e for e in by_playbook["first.yml"]
                    if e["event"] == "runner_on_ok" and e["event_data"].get("task") == "Gathering Facts"]
        assert len(gathered) == 2
        user_tasks = {e["event_data"].get("task") for e in by_playbook["site.yml"] if e["event"] == "runner_on_ok"}
        assert "Gathering Facts" not in user_tasks
        assert user_tasks == {"hardware and network facts are there without gathering again", "write a file"}
        for d in (env).glob("local-*/*/scratch"):
            assert int((d / "mem").read_text()) > 0
    finally:
        d = subprocess.run(enos_cmd + ["-q", "destroy", "--env", str(env)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert d.returncode == 0, d.stdout + d.stderr
