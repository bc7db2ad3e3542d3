"""A command's own exit 255 told from ssh's (issue 23): ssh exits 255 on its own failures
too, so 'enos run "exit 255"' printed "ssh failed: ?" per host while the summary said exit
255. On real namespace hosts through the real command."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from enoscli import enos
from localhosts import RUN_IDS, leftovers


@pytest.mark.root
def test_a_commands_255_is_not_an_ssh_failure(tmp_path):
    """'enos run "exit 255"' on a real host: the host's status is 'exit 255' (not 'ssh
    failed'); with the host's sshd gone, the same command is an ssh failure, said as one in
    the per-host line and in the summary."""
    (tmp_path / "r.yaml").write_text("provider: local\nresources:\n  local:\n    db: 1\n")
    enos(tmp_path, "up", "-f", "r.yaml", "--env", "env", "--no-provision", timeout=300)
    st = json.loads((tmp_path / "env" / "state.json").read_text())
    RUN_IDS.append(st["run_id"])
    try:
        p = enos(tmp_path, "run", "--env", "env", "exit 255", check=False)
        assert p.returncode == 1 and "db-1 (exit 255)" in p.stdout + p.stderr, p.stdout + p.stderr
        assert "ssh failed" not in p.stdout + p.stderr
        j = enos(tmp_path, "run", "--env", "env", "-o", "json", "echo out; printf err >&2; exit 255", check=False)
        r = json.loads(j.stdout)[0]
        assert r["exit_code"] == 255 and r["error"] is None and r["stdout"] == "out\n" and r["stderr"] == "err", r
        ns = f"enos-{st['run_id']}-0"
        for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), 9)
        q = enos(tmp_path, "run", "--env", "env", "exit 255", check=False)
        assert q.returncode == 1 and "ssh failed" in q.stdout, q.stdout
        assert "(ssh failed" in q.stderr and "(exit 255)" not in q.stderr, q.stderr
    finally:
        enos(tmp_path, "destroy", "--env", "env", check=False)
        assert leftovers(st["run_id"]) == []
