"""The fast provisioning path (enos.provision, issue 22) gives what plain Ansible gives.

Real namespace hosts (3, brought up with ``enos up --no-provision``) plus one unreachable
host (a loopback port that accepts and never answers):

* a play with a task failing on one host, an ignored failure, a skipped task and a file
  written everywhere, run through enos' fast path (Mitogen's strategy, interpreters found
  by enos' preinstall pinned in the inventory) and through plain ``ansible-playbook``
  (Ansible's own strategy and interpreter discovery, its JSON callback as the oracle):
  the same per-host counters, the same failed and unreachable (host, task), the same
  failure detail, the same end state;
* enos' preinstall over SSH reports the unreachable host under the same task as the
  preinstall playbook it replaces did under plain Ansible, and finds the others' python3;
* a Mitogen that cannot even load falls back to Ansible's ``linear`` strategy, saying so;
* the strategy choice: the override variable, the memory bound when the hosts are this
  machine, no Mitogen installed.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from prereq import missing

from enos import ansible, provision
from enos.errors import ProvisionError, UsageError
from enos.model import Host

PLAY = """\
- name: results and failures
  hosts: all
  gather_facts: false
  tasks:
    - name: who am I
      ansible.builtin.command: hostname
      changed_when: false
    - name: break on one host
      ansible.builtin.command: "sh -c 'echo broken >&2; exit 3'"
      when: inventory_hostname == 'b-1'
    - name: write a file
      ansible.builtin.copy:
        content: "{{ inventory_hostname }}\\n"
        dest: "{{ enos_scratch }}/fast.txt"
        mode: "0644"
    - name: a failure that is ignored
      ansible.builtin.command: /bin/false
      ignore_errors: true
      when: inventory_hostname == 'a-1'
"""

# enos' preinstall playbook as it was before the fast path (the oracle of its replacement)
OLD_PREINSTALL = """\
- name: enos preinstall
  hosts: all
  gather_facts: false
  tasks:
    - name: make sure python3 is installed
      ansible.builtin.raw: command -v python3 >/dev/null 2>&1
      changed_when: false
"""

# plain Ansible's results, written by Ansible's own callback API (the oracle; no enos code)
CALLBACK = """\
import json, os
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "oracle"

    def __init__(self):
        super().__init__()
        self.failures = []

    def _keep(self, kind, r, ignore_errors=False):
        res = r._result
        self.failures.append({"host": r._host.get_name(), "task": r._task.get_name(), "kind": kind,
                              "rc": res.get("rc"), "stderr": res.get("stderr", ""), "msg": str(res.get("msg", "")),
                              "ignored": bool(ignore_errors)})

    def v2_runner_on_failed(self, r, ignore_errors=False):
        self._keep("failed", r, ignore_errors)

    def v2_runner_on_unreachable(self, r):
        self._keep("unreachable", r)

    def v2_playbook_on_stats(self, stats):
        out = {"stats": {h: stats.summarize(h) for h in sorted(stats.processed)}, "failures": self.failures}
        with open(os.environ["ORACLE_OUT"], "w") as f:
            json.dump(out, f)
"""

COUNTERS = {"ok": "ok", "changed": "changed", "failures": "failures", "dark": "unreachable",
            "skipped": "skipped", "ignored": "ignored", "rescued": "rescued"}


class SilentPort:
    """A loopback port that accepts connections and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


class Recorder:
    """A progress object that keeps what it is told."""

    def __init__(self):
        self.infos = []

    def info(self, msg):
        self.infos.append(msg)

    @contextlib.contextmanager
    def task(self, description, total=None):
        class _T:
            def update(self, *a, **k):
                pass

            def advance(self, *a, **k):
                pass
        yield _T()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Three local hosts (a-1, a-2, b-1) up without provisioning; destroyed after."""
    import enos
    if os.geteuid() != 0:
        missing("needs root (network namespaces)")
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()):
        missing("sshd not installed (apt-get install openssh-server)")
    d = tmp_path_factory.mktemp("fast")
    (d / "r.yaml").write_text("provider:\n  type: local\nresources:\n  local:\n    a: 2\n    b: 1\n")
    p = subprocess.run([sys.executable, "-m", "enos", "-q", "up", "-f", "r.yaml", "--env", "env", "--no-provision"],
                       cwd=d, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    try:
        e = enos.load(str(d / "env"))
        yield e.envdir
    finally:
        p = subprocess.run([sys.executable, "-m", "enos", "-q", "destroy", "--env", "env"], cwd=d,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr


@pytest.fixture
def silent():
    s = SilentPort()
    yield s
    s.close()


def _inventory(env, path: Path, ghost_port: int, interpreters=None) -> Path:
    """The env's inventory (with ``interpreters`` pinned, else Ansible's discovery) plus the
    unreachable host ``ghost`` (5 s connect timeout)."""
    from enos.inventory import build_inventory
    inv = build_inventory(env.resources, env.ssh_config, interpreters=interpreters)
    ghost = {"ansible_host": "127.0.0.1", "ansible_port": ghost_port, "ansible_timeout": 5,
             "enos_scratch": str(path.parent / "ghost-scratch"), "enos_roles": []}
    if interpreters:
        ghost["ansible_python_interpreter"] = "/usr/bin/python3"
    inv["all"]["hosts"]["ghost"] = ghost
    path.write_text(yaml.safe_dump(inv))
    return path


def _clear(env) -> None:
    for h in env.resources.hosts:
        (Path(h.extra["enos_scratch"]) / "fast.txt").unlink(missing_ok=True)


def _end_state(env) -> dict:
    out = {}
    for h in env.resources.hosts:
        f = Path(h.extra["enos_scratch"]) / "fast.txt"
        out[h.alias] = f.read_text() if f.exists() else None
    return out


def _plain(env, inventory: Path, playbook: Path) -> dict:
    """Plain ``ansible-playbook`` (linear, pipelining, interpreter discovery); return what
    the oracle callback saw: {"stats": {host: counters}, "failures": [...]}."""
    cb = playbook.parent / "callbacks"
    cb.mkdir(exist_ok=True)
    (cb / "oracle.py").write_text(CALLBACK)
    out = playbook.parent / f"{playbook.stem}.oracle.json"
    e = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    e.update(ANSIBLE_STDOUT_CALLBACK="oracle", ANSIBLE_CALLBACK_PLUGINS=str(cb), ORACLE_OUT=str(out),
             ANSIBLE_PIPELINING="True", ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_RETRY_FILES_ENABLED="False",
             PATH=str(Path(sys.executable).parent) + os.pathsep + e["PATH"])
    p = subprocess.run(["ansible-playbook", "-i", str(inventory), "-f", "4", str(playbook)], env=e,
                       capture_output=True, text=True, timeout=300, cwd=env.env_dir)
    assert p.returncode in (2, 4), p.stdout[-2000:] + p.stderr[-2000:]     # failed / unreachable hosts
    return json.loads(out.read_text())


def _plain_failures(out: dict) -> dict:
    """{(host, task): failure} of plain Ansible's failed and unreachable results (ignored
    failures left out)."""
    return {(f["host"], f["task"]): f for f in out["failures"] if not f["ignored"]}


@pytest.mark.root
@pytest.mark.slow
def test_fast_path_gives_plain_ansibles_results_and_failures(env, silent, tmp_path):
    pb = tmp_path / "play.yml"
    pb.write_text(PLAY)
    assert ansible.mitogen_strategies() is not None, "mitogen is installed by setup.sh --test (enos[all])"
    plain_inv = _inventory(env, tmp_path / "plain.yml", silent.port)
    _clear(env)
    plain = _plain(env, plain_inv, pb)
    plain_state = _end_state(env)

    interpreters = provision.preinstall(env.ssh_config, env.resources.hosts)
    fast_inv = _inventory(env, tmp_path / "fast.yml", silent.port, interpreters)
    _clear(env)
    rec = Recorder()
    run = ansible.run_playbook(env.env_dir, fast_inv, env.ssh_config, pb, 4, progress=rec,
                               strategy=ansible.MITOGEN)
    assert rec.infos == []                                 # no fallback: Mitogen ran it
    cmd = json.loads(sorted((env.env_dir / "ansible" / "artifacts").glob("*/command"),
                            key=lambda f: f.stat().st_mtime)[-1].read_text())
    assert cmd["env"]["ANSIBLE_STRATEGY"] == "mitogen_linear"

    hosts = [h.alias for h in env.resources.hosts] + ["ghost"]
    for ours, theirs in COUNTERS.items():
        assert {h: run.stats.get(ours, {}).get(h, 0) for h in hosts} == \
            {h: plain["stats"][h][theirs] for h in hosts}, ours
    expected = _plain_failures(plain)
    assert {(h, t) for h, t, _ in run.failures} == set(expected)
    assert set(expected) == {("b-1", "break on one host"), ("ghost", "who am I")}
    for host, task, msg in run.failures:
        res = expected[(host, task)]
        if res["kind"] == "unreachable":
            assert msg.startswith("unreachable: "), msg
        else:
            assert f"(rc {res['rc']})" in msg and res["stderr"].strip() in msg, (msg, res)
    # b-1 failed before the copy: no file there, on either path
    assert _end_state(env) == plain_state == {"a-1": "a-1\n", "a-2": "a-2\n", "b-1": None}


@pytest.mark.root
@pytest.mark.slow
def test_preinstall_reports_what_the_preinstall_playbook_did(env, silent, tmp_path):
    pb = tmp_path / "old-preinstall.yml"
    pb.write_text(OLD_PREINSTALL)
    plain = _plain(env, _inventory(env, tmp_path / "plain.yml", silent.port), pb)
    ghost = Host("ghost", "127.0.0.1", port=silent.port)
    cfg = tmp_path / "ssh_config"          # the env's, plus the unreachable host
    cfg.write_text(f"Host ghost\n  HostName 127.0.0.1\n  Port {silent.port}\n  ConnectTimeout 5\n\n"
                   f"Match all\nInclude {env.ssh_config}\n")
    with pytest.raises(ProvisionError) as ei:
        provision.preinstall(cfg, [*env.resources.hosts, ghost], timeout=8)
    assert ei.value.playbook == "preinstall"
    assert [(h, t) for h, t, _ in ei.value.failures] == \
        [(h, t) for (h, t) in _plain_failures(plain)] == [("ghost", provision.PREINSTALL_TASK)]
    assert ei.value.failures[0][2].startswith("unreachable: ")
    found = provision.preinstall(env.ssh_config, env.resources.hosts)
    assert set(found) == {h.alias for h in env.resources.hosts}
    assert set(found.values()) == {shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")}


@pytest.mark.root
@pytest.mark.slow
def test_a_mitogen_that_cannot_load_falls_back_to_linear(env, tmp_path, monkeypatch):
    broken = tmp_path / "strategy"
    broken.mkdir()
    (broken / "mitogen_linear.py").write_text("raise ImportError('this Mitogen is broken on purpose')\n")
    monkeypatch.setattr(ansible, "mitogen_strategies", lambda: broken)
    pb = tmp_path / "ok.yml"
    pb.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: hostname\n"
                  "      changed_when: false\n")
    rec = Recorder()
    run = ansible.run_playbook(env.env_dir, env.inventory, env.ssh_config, pb, 3, progress=rec,
                               strategy=ansible.MITOGEN)
    assert run.rc == 0 and run.status == "successful" and run.failures == []
    assert run.stats["ok"] == {h.alias: 1 for h in env.resources.hosts}
    assert len(rec.infos) == 1 and "failed in Mitogen" in rec.infos[0] and "linear" in rec.infos[0], rec.infos


def test_strategy_choice(monkeypatch):
    have = {"mb": 10_000.0}
    monkeypatch.setattr(provision, "_available_mb", lambda: have["mb"])
    monkeypatch.setattr(provision, "mitogen_strategies", lambda: Path("/x"))
    monkeypatch.delenv(provision.STRATEGY_ENV, raising=False)
    rec = Recorder()
    assert provision.choose_strategy(100, True, rec) == ansible.MITOGEN          # 3.2 GB of 10 GB
    assert provision.choose_strategy(500, False, rec) == ansible.MITOGEN         # hosts elsewhere
    assert rec.infos == []
    assert provision.choose_strategy(500, True, rec) == ansible.LINEAR           # 16 GB: too much here
    assert "500 hosts on this machine" in rec.infos[0]
    monkeypatch.setenv(provision.STRATEGY_ENV, "mitogen")
    assert provision.choose_strategy(500, True, rec) == ansible.MITOGEN          # asked for
    monkeypatch.setenv(provision.STRATEGY_ENV, "linear")
    assert provision.choose_strategy(3, False, rec) == ansible.LINEAR
    monkeypatch.setenv(provision.STRATEGY_ENV, "fastest")
    with pytest.raises(UsageError, match="linear, mitogen or auto"):
        provision.choose_strategy(3, False, rec)
    monkeypatch.setenv(provision.STRATEGY_ENV, "mitogen")
    monkeypatch.setattr(provision, "mitogen_strategies", lambda: None)
    assert provision.choose_strategy(3, False, rec) == ansible.LINEAR            # not installed
    assert "not installed" in rec.infos[-1]
