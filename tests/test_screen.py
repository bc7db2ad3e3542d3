"""What the screen says, read from real CLI runs (``python -m enos`` subprocesses) on real
namespace hosts (the local provider): the progress lines (plain, and rich under a real
pseudo-terminal), ``-v``, ``enos info`` after up / after a SIGTERM while booking / after
destroy, ``enos up`` on a destroyed env, and the install (no setuptools warnings)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from enoscli import enos
from localhosts import leftovers

REPO = Path(__file__).resolve().parent.parent

RESERVATION = """\
provider:
  type: local
resources:
  local:
    control: 1
    compute: 2
"""


def _state(d: Path) -> dict:
    return json.loads((d / "state.json").read_text())


def _progress_lies(text: str) -> list:
    """Lines that say something false: a count and a 'left' that do not add up ("N/N 1 left",
    "0/4 3 left"), "0/None"."""
    bad = []
    for ln in text.splitlines():
        m = re.search(r"\b(\d+)/(\d+) (\d+) left\b", ln)
        if m and int(m[1]) + int(m[3]) != int(m[2]):
            bad.append(ln)
    bad += [ln for ln in text.splitlines() if "/None" in ln]
    return bad


@pytest.mark.root
def test_up_progress_is_true_and_said_once_with_v_then_info_tables(tmp_path):
    (tmp_path / "r.yaml").write_text(RESERVATION)
    p = enos(tmp_path, "-v", "up", "-f", "r.yaml", "--env", "env")
    run_id = _state(tmp_path / "env")["run_id"]
    try:
        err = p.stderr
        assert not _progress_lies(err), err
        # -v: every progress line once (as a log line), not once plain and once logged
        said = [ln.split(" enos: ", 1)[-1] for ln in err.splitlines()]
        env_lines = [ln for ln in said if ln.startswith("environment ") and run_id in ln]
        assert len(env_lines) == 1, err
        ready = [ln for ln in said if ln.startswith("ready: 3 host(s)")]
        assert len(ready) == 1, err
        assert err.count("waiting for SSH ...") == 1, err
        # enos info: tables, no raw JSON; -o json keeps the data
        info = enos(tmp_path, "info", "--env", "env").stdout
        assert re.search(r"^HOST\s+ADDRESS\s+ROLES$", info, re.M), info
        assert re.search(r"^NETWORK\s+CIDR\s+GATEWAY\s+DNS\s+IP POOL$", info, re.M), info
        assert "local details:" in info and re.search(r"^\s+HOST\s+NAMESPACE\s+ADDRESS\s+SSHD_PID$", info, re.M), info
        assert "{" not in info and "}" not in info, info
        data = json.loads(enos(tmp_path, "info", "--env", "env", "-o", "json").stdout)
        assert set(data["provider_info"]["hosts"]) == {"control-1", "compute-1", "compute-2"}
    finally:
        enos(tmp_path, "destroy", "--env", "env")
    assert leftovers(run_id) == []


@pytest.mark.root
def test_rich_progress_under_a_terminal_has_no_none_total(tmp_path):
    """Under a real pseudo-terminal (util-linux 'script'), rich draws the bars: the Ansible
    task (no total) must not read "0/None"."""
    (tmp_path / "r.yaml").write_text(RESERVATION)
    log = tmp_path / "typescript"
    cmd = f"{sys.executable} -m enos up -f r.yaml --env env"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
    env.update(TERM="xterm", COLUMNS="160")
    p = subprocess.run(["script", "-q", "-e", "-c", cmd, str(log)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    run_id = _state(tmp_path / "env")["run_id"]
    try:
        assert p.returncode == 0, log.read_text(errors="replace")[-3000:]
        screen = log.read_text(errors="replace")
        assert "preinstall: python3 on 3 host(s)" in screen, screen[-3000:]   # rich drew the preinstall
        assert "/None" not in screen, [ln for ln in screen.splitlines() if "/None" in ln][:3]
        assert not _progress_lies(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen))
    finally:
        enos(tmp_path, "destroy", "--env", "env")
    assert leftovers(run_id) == []


@pytest.mark.root
def test_info_after_a_signal_while_hosts_run_shows_the_journal(tmp_path):
    """SIGTERM (a real signal, sent by enos to itself at the failpoint) right after the
    first host's sshd started: exit 130, phase 'booking', no resources saved — yet
    'enos info' lists the running host from the provider's journal, not "no hosts"."""
    (tmp_path / "r.yaml").write_text(RESERVATION)
    p = enos(tmp_path, "up", "-f", "r.yaml", "--env", "env",
             env={"ENOS_FAILPOINTS": "local.sshd_recorded=term"}, check=False)
    run_id = _state(tmp_path / "env")["run_id"]
    try:
        assert p.returncode == 130, p.stderr
        assert _state(tmp_path / "env")["phase"] == "booking"
        info = enos(tmp_path, "info", "--env", "env").stdout
        assert "no hosts yet: 'enos up' was interrupted while booking" in info, info
        assert re.search(rf"^\s+control-1\s+enos-{run_id}-\S+\s+10\.\S+\s+\d+$", info, re.M), info
    finally:
        enos(tmp_path, "destroy", "--env", "env")
    assert leftovers(run_id) == []


@pytest.mark.root
def test_up_on_a_destroyed_current_env_creates_a_new_one_as_help_says(tmp_path):
    (tmp_path / "reservation.yaml").write_text(RESERVATION)
    assert "unless destroyed, else create ./enos_<UTC timestamp>" in " ".join(
        enos(tmp_path, "help", "up").stdout.split())
    enos(tmp_path, "up", "--no-provision")
    first = (tmp_path / "current").resolve()
    run1 = _state(first)["run_id"]
    enos(tmp_path, "destroy")
    assert "no hosts (destroyed)" in enos(tmp_path, "info").stdout
    p = enos(tmp_path, "up", "--no-provision")
    second = (tmp_path / "current").resolve()
    run2 = _state(second)["run_id"]
    try:
        assert second != first and second.name.startswith("enos_") and run2 != run1
        assert _state(first)["phase"] == "destroyed"        # the old env is left as it was
        assert f"environment {second} (run {run2})" in p.stderr and "resuming" not in p.stderr
    finally:
        enos(tmp_path, "destroy")
    assert leftovers(run1) == [] and leftovers(run2) == []


def test_install_says_no_setuptools_warning_and_ships_the_templates(tmp_path):
    """Building enos' wheel (what pip install does) warns about no absent package or
    missing data, and the wheel holds the Vagrantfile template."""
    # offline: the build tools of the venv (pyproject's setuptools + wheel, installed by
    # setup.sh's test extra), no index — a test sends nothing off this machine
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-w", str(tmp_path), "-v", str(REPO)], capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert "absent from" not in out and "warning: no files found matching" not in out, \
        [ln for ln in out.splitlines() if "absent" in ln or "no files found" in ln]
    import zipfile
    (wheel,) = tmp_path.glob("enos-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "enos/vagrant/Vagrantfile.j2" in names


def test_check_reports_a_missing_provider_library_instead_of_dying(tmp_path):
    """A new user's venv without the g5k extra: 'enos check -f g5k.yaml' lists the missing
    library with its pip command (exit 1), like every other missing requirement. (The
    module is made unimportable with sys.modules[name] = None: what Python does for a
    module that is not installed.)"""
    (tmp_path / "g5k.yaml").write_text("provider:\n  type: g5k\nresources:\n  paravance:\n    compute: 1\n")
    code = ("import sys; sys.modules['grid5000'] = None; from enos.cli import main; "
            "sys.exit(main(['check', '-f', 'g5k.yaml']))")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "[MISSING] python libraries of 'g5k'" in p.stdout and "fix: pip install 'enos[g5k]'" in p.stdout, p.stdout
    assert "error" not in p.stderr, p.stderr


def test_new_writes_a_file_ending_with_a_newline(tmp_path):
    for provider in ("local", "static", "g5k", "libvirt"):
        enos(tmp_path, "new", "--provider", provider, "-o", f"{provider}.yaml")
        assert (tmp_path / f"{provider}.yaml").read_text().endswith("\n"), provider
