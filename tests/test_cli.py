"""The CLI: help for every command, exit codes, suggestions, no tracebacks."""
import json
import subprocess
import sys
import types

import pytest

import enos.provider as registry
from enos import cli
from enos.errors import ProviderError
from enos.provider.provider import Host, IpPool, Provider, Resources


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "enos", *args], capture_output=True, text=True,
                          cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("cmd", sorted(cli.COMMANDS))
def test_every_command_has_help(cmd):
    for argv in ([cmd, "--help"], ["help", cmd]):
        p = run(*argv)
        assert p.returncode == 0, p.stderr
        assert "Usage:" in p.stdout and f"enos {cmd}" in p.stdout
        assert p.stdout.strip() == cli.COMMANDS[cmd].strip()


def test_top_level_help_documents_exit_codes():
    p = run("--help")
    assert p.returncode == 0
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"\n  {code}" in p.stdout
    for cmd in cli.COMMANDS:
        assert f"\n  {cmd}" in p.stdout


def test_no_arguments_is_a_usage_error():
    p = run()
    assert p.returncode == 2 and "Usage:" in p.stdout


def test_version():
    from enos import __version__
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"enos {__version__}"


def test_mistyped_command_suggests():
    p = run("destory")
    assert p.returncode == 2
    assert "unknown command 'destory'; did you mean 'enos destroy'?" in p.stderr


def test_bad_arguments_show_usage():
    p = run("up", "--no-such-flag")
    assert p.returncode == 2
    assert "enos up: invalid arguments --no-such-flag" in p.stderr and "Usage:" in p.stderr


def test_commands_without_env_exit_2_without_traceback(tmp_path):
    for args in (["info"], ["inventory"], ["destroy"], ["run", "true"], ["ssh", "h"]):
        p = run(*args, cwd=tmp_path)
        assert p.returncode == 2, (args, p.stderr)
        assert "no current enos environment" in p.stderr and "Traceback" not in p.stderr


def test_quiet_and_verbose_anywhere():
    rest, g = cli._split_globals(["up", "-q", "-f", "x", "-vv"])
    assert rest == ["up", "-f", "x"] and g == {"verbose": 2, "quiet": True}
    rest, g = cli._split_globals(["ssh", "h", "--", "ls", "-q"])
    assert rest == ["ssh", "h", "--", "ls", "-q"] and g["quiet"] is False


def test_extend_rejects_malformed_walltime(tmp_path):
    p = run("extend", "--walltime", "2h", cwd=tmp_path)
    assert p.returncode == 2 and "expected +H:MM[:SS]" in p.stderr


# --- exit codes of up through a test provider (in-process) ----------------------------

class _Flaky(Provider):
    """A provider whose behaviour the test chooses: 'ok', 'fail' or 'interrupt'."""

    type = "flaky"
    schema = {"type": "object", "properties": {"type": {"const": "flaky"},
                                              "mode": {"enum": ["ok", "fail", "interrupt"]}}}
    capabilities = frozenset({"reserve", "destroy", "ip_pool"})
    destroyed = []

    def init(self, force_deploy=False):
        self.ctx.journal.record("booked", True)
        mode = self.ctx.options.get("mode", "ok")
        if mode == "fail":
            raise ProviderError("the testbed said no")
        if mode == "interrupt":
            raise KeyboardInterrupt()
        return Resources(hosts=[], networks=[IpPool.from_range("10.9.0.0/29", gateway="10.9.0.1")])

    def destroy(self):
        _Flaky.destroyed.append(self.ctx.journal.get("booked"))
        self.ctx.journal.forget("booked")


@pytest.fixture
def flaky(monkeypatch):
    monkeypatch.setattr(registry, "_entry_points",
                        lambda: {"flaky": types.SimpleNamespace(load=lambda: _Flaky)})
    _Flaky.destroyed = []
    return _Flaky


def _reservation(tmp_path, mode):
    f = tmp_path / "r.yaml"
    f.write_text(f"provider:\n  type: flaky\n  mode: {mode}\nresources:\n  any:\n    a: 1\n")
    return f


@pytest.mark.parametrize("mode,code", [("ok", 0), ("fail", 1), ("interrupt", 130)])
def test_up_exit_codes_and_destroy(flaky, tmp_path, monkeypatch, capsys, mode, code):
    monkeypatch.chdir(tmp_path)
    f = _reservation(tmp_path, mode)
    assert cli.main(["up", "-q", "-f", str(f)]) == code
    err = capsys.readouterr().err
    if mode == "fail":
        assert "enos up: error: the testbed said no" in err
    if mode == "interrupt":
        assert "interrupted; 'enos destroy' frees what was booked" in err
    state = json.loads((tmp_path / "current" / "state.json").read_text())
    assert state["phase"] == ("ready" if mode == "ok" else "booking")
    assert state["journal"] == {"booked": True}
    assert cli.main(["destroy", "-q"]) == 0
    assert flaky.destroyed == [True]
    assert cli.main(["destroy", "-q"]) == 0          # twice is fine
    assert flaky.destroyed == [True, None]
    state = json.loads((tmp_path / "current" / "state.json").read_text())
    assert state["phase"] == "destroyed" and state["journal"] == {}


def test_info_formats(flaky, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["up", "-q", "-f", str(_reservation(tmp_path, "ok"))]) == 0
    capsys.readouterr()
    assert cli.main(["info", "-o", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["phase"] == "ready" and d["provider"] == "flaky" and d["networks"][0]["cidr"] == "10.9.0.0/29"
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "phase        ready" in out and "10.9.0.2..10.9.0.6 (5 free)" in out
    assert cli.main(["info", "-o", "xml"]) == 2


def test_up_on_locked_env_fails_fast(flaky, tmp_path, monkeypatch, capsys):
    from enos.state import Lock
    monkeypatch.chdir(tmp_path)
    f = _reservation(tmp_path, "ok")
    env = tmp_path / "env"
    assert cli.main(["up", "-q", "-f", str(f), "--env", str(env)]) == 0
    capsys.readouterr()
    with Lock(env):
        assert cli.main(["up", "-q", "-f", str(f), "--env", str(env)]) == 1
    assert "is locked by process" in capsys.readouterr().err


def test_resume_keeps_run_id_and_new_env_after_destroy(flaky, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = _reservation(tmp_path, "ok")
    assert cli.main(["up", "-q", "-f", str(f)]) == 0
    first = json.loads((tmp_path / "current" / "state.json").read_text())
    assert cli.main(["up", "-q", "-f", str(f)]) == 0
    second = json.loads((tmp_path / "current" / "state.json").read_text())
    assert second["run_id"] == first["run_id"] and second["serial"] > first["serial"]
    assert cli.main(["destroy", "-q"]) == 0
    assert cli.main(["up", "-q", "-f", str(f)]) == 0
    third = json.loads((tmp_path / "current" / "state.json").read_text())
    assert third["run_id"] != first["run_id"]


def test_closed_stdout_is_not_a_traceback():
    p = subprocess.run(f"{sys.executable} -m enos help up | head -1", shell=True, capture_output=True, text=True)
    assert p.returncode == 0 and "Traceback" not in p.stderr and p.stdout.startswith("Book")
    p = subprocess.run([sys.executable, "-c", "import sys; from enos.cli import main; sys.stdout.close = lambda: None; "
                        "import os; r, w = os.pipe(); os.close(r); os.dup2(w, 1); sys.exit(main(['--help']))"],
                       capture_output=True, text=True)
    assert "Traceback" not in p.stderr


def test_check_and_validate_are_python_api(tmp_path):
    """What 'enos check' and 'enos validate' do is a call of the Python API (the CLI only
    prints): enos.check gives the provider and each need; enos.validate the Config."""
    import enos
    report = enos.check(provider="static")
    assert report.provider == "static"
    whats = [c.what for c in report.checks]
    assert whats[:3] == ["ssh client", "ssh-keygen", "ansible-playbook"]
    assert "python libraries of 'static'" in whats
    assert report.missing == [c for c in report.checks if not c.ok]
    f = tmp_path / "r.yaml"
    f.write_text("provider: static\nresources:\n  db:\n    - address: 10.0.0.3\n")
    cfg = enos.validate(f)
    assert cfg.provider_type == "static" and cfg.summary()["provider"] == "static"
    with pytest.raises(enos.errors.UsageError):
        enos.check()
