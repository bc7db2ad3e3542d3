"""Issue 23, the command line: output that cannot be written, locales that cannot encode,
values that are accepted and should not be, a campaign given a bad environment. Every case through the real command (``python -m enos``
as a subprocess): the expected exit code, no traceback (nor Python's 'Exception ignored'),
a message naming the option."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

STATIC = "provider: static\nresources:\n  db:\n    - address: 127.0.0.1\n      port: 1\n"


def shell(cwd, script: str, env=None, timeout=60) -> subprocess.CompletedProcess:
    """Run ``script`` in bash where ``ENOS`` is the command (this interpreter's enos)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_FAILPOINT")}
    e.update(env or {})
    e["ENOS"] = f"{sys.executable} -m enos"
    return subprocess.run(["bash", "-c", script], cwd=str(cwd), env=e, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def clean(p) -> None:
    text = p.stdout + p.stderr
    assert "Traceback" not in text and "Exception ignored" not in text, text


@pytest.fixture
def static_env(tmp_path):
    """A ready static env (its host refuses connections) written as 'enos up' writes it."""
    from enos.inventory import write_inventory
    from enos.model import Host, Resources
    from enos.ssh.client import write_ssh_files
    from enos.state import State
    (tmp_path / "static.yaml").write_text(STATIC)
    env = tmp_path / "env"
    env.mkdir()
    st = State.create(env, str(tmp_path / "static.yaml"), {"provider": "static", "resources": {
        "db": [{"address": "127.0.0.1", "port": 1}]}}, "static")
    hosts = [Host(alias="db-1", address="127.0.0.1", port=1, roles=["db"])]
    st.data["resources"] = Resources(hosts=hosts).to_dict()
    cfg = write_ssh_files(env, hosts, st.run_id)
    write_inventory(env, Resources(hosts=hosts), cfg)
    st.set_phase("ready")
    return env


@pytest.mark.parametrize("script,rc,words", [
    ("$ENOS help > /dev/full", 1, "No space left on device"),
    ("$ENOS --version > /dev/full", 1, "No space left on device"),
    ("$ENOS --version >&-", 1, "standard output is closed"),
    ("$ENOS help up >&-", 1, "standard output is closed"),
    ("$ENOS validate -f static.yaml > /dev/full", 1, "No space left on device"),
    ("$ENOS validate -f nope.yaml 2>&-", 2, ""),
    ("$ENOS validate -f nope.yaml 2>/dev/full", 2, ""),
    ("$ENOS help | head -c 1 >/dev/null; exit ${PIPESTATUS[0]}", 0, ""),
])
def test_output_that_cannot_be_written(tmp_path, script, rc, words):
    (tmp_path / "static.yaml").write_text(STATIC)
    p = shell(tmp_path, script)
    assert p.returncode == rc, (p.returncode, p.stderr)
    clean(p)
    assert words in p.stderr, p.stderr


def test_info_with_stdout_closed(tmp_path, static_env):
    p = shell(tmp_path, "$ENOS info --env env >&-")
    assert p.returncode == 1 and "standard output is closed" in p.stderr, p.stderr
    clean(p)


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii", "LC_ALL": "C"}, {"LC_ALL": "C", "LANG": "C"}])
def test_an_ascii_locale_gets_escapes_not_a_traceback(tmp_path, env):
    (tmp_path / "static.yaml").write_text(STATIC)
    for script in ("$ENOS help", "$ENOS validate -f static.yaml"):
        p = shell(tmp_path, script, env=env)
        assert p.returncode == 0, p.stderr
        clean(p)
    p = shell(tmp_path, "$ENOS help", env=env)
    assert "\\u2014" in p.stdout or "—" in p.stdout


@pytest.mark.parametrize("argv,words", [
    (["--version", "extra"], "enos --version: unexpected argument"),
    (["help", "up", "extra"], "enos help: one command at most"),
    (["up", "-f", "static.yaml", "--tags", "", "--ssh-timeout", "3"], "--tags: expected tag names"),
    (["up", "-f", "static.yaml", "--tags", ",", "--ssh-timeout", "3"], "--tags: expected tag names"),
    (["up", "-f", "static.yaml", "--tags", "a b", "--ssh-timeout", "3"], "--tags: expected tag names"),
    (["up", "-f", "static.yaml", "--env", "/proc/self", "--ssh-timeout", "3"],
     "--env /proc/self: an existing directory that is not an enos environment"),
    (["up", "-f", "static.yaml", "--env", "project", "--ssh-timeout", "3"],
     "--env project: an existing directory that is not an enos environment (it holds notes.txt)"),
    (["up", "-f", "static.yaml", "--env", "", "--ssh-timeout", "3"], "--env: an empty directory name"),
    (["info", "--env", "env", "--refresh"], "--refresh gathers the facts again: it goes with --facts"),
    (["info", "--env", "loop"], "no enos environment in loop"),
    (["run", "--env", "env", ""], "the command is empty"),
    (["backup", "--env", "env", "--dest", "/dev/null", "/etc/hostname"], "--dest /dev/null: not a directory"),
    (["backup", "--env", "env", "--dest", "afile", "/etc/hostname"], "--dest afile: not a directory"),
    (["backup", "--env", "env", "--dest", "/proc/x", "/etc/hostname"], "--dest /proc/x: cannot be created"),
    (["backup", "--env", "env", "--dest", "", "/etc/hostname"], "--dest: an empty directory name"),
    (["backup", "--env", "env", ""], "an empty path"),
    (["backup", "--env", "env", "--timeout", "nan", "/etc/hostname"], "--timeout: expected a number of seconds"),
    (["backup", "--env", "env", "--timeout", "-1", "/etc/hostname"], "--timeout: expected a number of seconds"),
    (["backup", "--env", "env", "--timeout", "abc", "/etc/hostname"], "--timeout: expected a number of seconds"),
    (["destroy", "--sweep", "--run-id", "", "-f", "static.yaml"], "--run-id ''"),
    (["extend", "--env", "env", "--walltime", "+0:00"], "--walltime: expected more than 0"),
    (["extend", "--env", "env", "--walltime", "+99999999999999999999:00"], "--walltime: expected"),
    (["run", "--env", "env", "--roles", "", "true"], "--roles '': names no role or host"),
    (["run", "--env", "env", "--roles", ",", "true"], "--roles ',': names no role or host"),
    (["build", "libvirt", "--output", "/dev/null"], "--output /dev/null: not a directory"),
    (["build", "libvirt", "--cache", "afile"], "--cache afile: not a directory"),
])
def test_values_refused_with_exit_2(tmp_path, static_env, argv, words):
    (tmp_path / "afile").write_text("x\n")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "notes.txt").write_text("mine\n")
    os.symlink("loop", tmp_path / "loop")
    project_mode = (tmp_path / "project").stat().st_mode
    before = sorted(p.name for p in tmp_path.iterdir())
    p = subprocess.run([sys.executable, "-m", "enos", *argv], cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    clean(p)
    assert words in p.stderr, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == before            # nothing created
    assert os.listdir(tmp_path / "project") == ["notes.txt"]
    assert (tmp_path / "project").stat().st_mode == project_mode


@pytest.mark.parametrize("root", ["/", "/.", "/tmp/.."])
def test_the_filesystem_root_is_never_an_env_dir(tmp_path, root):
    """'enos up --env /' is refused even when / holds a state.json: enos makes its env dir
    0700, which on / locks every other user (QEMU's) out of the machine. Checked in the
    process on the claim itself (which, refused, touches nothing), so that a regression
    cannot write into / or change its mode."""
    from enos import task
    from enos.errors import UsageError
    mode = os.stat("/").st_mode
    with pytest.raises(UsageError, match="the filesystem root cannot be an enos environment"):
        task._claim_env_dir(root, tmp_path)
    assert os.stat("/").st_mode == mode


def test_campaign_with_a_bad_env_creates_no_results_dir(tmp_path, static_env):
    (tmp_path / "camp.yaml").write_text("reservation: static.yaml\nparameters:\n  a: [1]\nsteps:\n  - run: \"true\"\n")
    for bad in ("/proc/x", "afile", "nowhere", ""):      # "": an unset shell variable, not "no --env"
        (tmp_path / "afile").write_text("x")
        p = subprocess.run([sys.executable, "-m", "enos", "campaign", "run", "camp.yaml", "--env", bad],
                           cwd=str(tmp_path), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert p.returncode == 2, (bad, p.stderr)
        clean(p)
        assert not (tmp_path / "camp.results").exists(), bad


@pytest.mark.parametrize("damage", ["fifo", "zero", "missing"])
def test_inventory_of_a_damaged_env_is_said_not_waited_on(tmp_path, static_env, damage):
    """'enos inventory' read the env's inventory.yml unbounded: a FIFO there hung it (found
    by bench/hostile_inputs.py). Through the bounded reader: exit 1 at once, naming the file
    and the command that writes it again; the inventory still prints when it is sound."""
    ok = shell(tmp_path, "$ENOS inventory --env env")
    assert ok.returncode == 0 and "db-1" in ok.stdout, ok.stderr
    inv = static_env / "inventory.yml"
    inv.unlink()
    if damage == "fifo":
        os.mkfifo(inv)
    elif damage == "zero":
        os.symlink("/dev/zero", inv)
    p = shell(tmp_path, "$ENOS inventory --env env", timeout=30)
    assert p.returncode == 1, (p.returncode, p.stderr)
    clean(p)
    assert "inventory.yml" in p.stderr and f"enos up --env {static_env}" in p.stderr, p.stderr
