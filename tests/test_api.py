"""The Python API (``import enos``) on real ``local`` namespace hosts: up/load/current and
the CLI on the same env dirs, ``Env.run`` (a result for every host, CommandFailed carrying
them all, timeouts, environment variables, streaming, background runs killed for real)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import enos
from enos.errors import CommandFailed, ConfigError, NoEnvironment, Timeout, UsageError
from enoscli import enos as enos_cli
from localhosts import RUN_IDS, alive, api_env, leftovers, wait_running

pytestmark = pytest.mark.root

RESERVATION = {"provider": {"type": "local"}, "resources": {"local": {"control": 1, "compute": 2}}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Three hosts (control: 1, compute: 2) brought up by ``enos.up`` from a dict, kept
    for the module, destroyed (and checked for leftovers) at its end."""
    with api_env(RESERVATION, tmp_path_factory.mktemp("api")) as e:
        yield e


def test_env_shape_and_json(env):
    assert env.phase == "ready" and env.provider == "local"
    assert sorted(env.roles) == ["compute", "control"]
    assert [h.alias for h in env.roles["compute"]] == ["compute-1", "compute-2"]
    assert sorted(h.alias for h in env.hosts) == ["compute-1", "compute-2", "control-1"]
    h = env.roles["compute"][0]
    assert h.address and h.user == "root" and h.port == 22 and "enos_scratch" in h.extra
    assert "compute-1" in repr(h) and h.address in repr(h)
    d = json.loads(env.to_json())
    assert d["run_id"] == env.run_id and d["roles"]["compute"] == ["compute-1", "compute-2"]
    assert {x["alias"] for x in d["hosts"]} == {"compute-1", "compute-2", "control-1"}
    assert env.run_id in repr(env) and "compute: 2" in repr(env)


def test_run_returns_a_result_for_every_host(env):
    res = env.run("hostname", roles="compute")
    assert isinstance(res, enos.Results) and len(res) == 2
    for r in res:
        assert r.rc == 0 and r.ok and r.stdout.strip() == r.host.alias
        assert r.ended >= r.started and r.duration >= 0
    assert res["compute-2"].stdout == "compute-2\n"
    assert res[0].host.alias == "compute-1"
    assert len(res.ok) == 2 and len(res.failed) == 0 and res.all_ok
    every = env.run("hostname")
    assert set(every.by_role) == {"compute", "control"}
    assert every.by_role["control"].aliases == ["control-1"]
    d = json.loads(every.to_json())
    assert d["ok"] is True and [x["host"] for x in d["results"]] == every.aliases
    assert all(x["rc"] == x["exit_code"] == 0 and x["stdout"] == x["host"] + "\n" for x in d["results"])
    assert every[0].exit_code is every[0].rc                   # rc the one name, exit_code an alias
    # as a DataFrame: one row per host, the failed ones too
    mixed = env.run("test $(hostname) != compute-2", roles="compute", check=False)
    df = mixed.to_dataframe()
    assert list(df.columns) == ["host", "roles", "address", "command", "rc", "status", "stdout", "stderr",
                                "started", "ended", "duration", "error"]
    assert list(zip(df["host"], df["roles"], df["rc"], df["status"])) == [("compute-1", "compute", 0, "ok"),
                                                                          ("compute-2", "compute", 1, "exit 1")]
    assert list(df["address"]) == [h.address for h in env.roles["compute"]]
    assert (df["duration"] >= 0).all() and set(df["command"]) == {"test $(hostname) != compute-2"}
    # a list of roles and aliases, Host objects
    assert env.run("true", roles=["control", "compute-2"]).aliases == ["control-1", "compute-2"]
    assert env.run("true", roles=env.roles["compute"][1]).aliases == ["compute-2"]
    with pytest.raises(UsageError, match="unknown role.*nope.*known roles: compute, control"):
        env.run("true", roles="nope")
    with pytest.raises(KeyError, match="no result for host 'x'"):
        res["x"]


def test_failure_carries_every_hosts_result(env):
    """The failure path: CommandFailed names the failed host and carries the Results of all
    three, the successful ones with their output (EnOSlib's error drops them)."""
    with pytest.raises(CommandFailed) as e:
        env.run("hostname; test $(hostname) != compute-1")
    err = e.value
    assert "compute-1 (exit 1)" in str(err) and "1 of 3" in str(err)
    assert isinstance(err.results, enos.Results) and len(err.results) == 3
    assert err.results.failed.aliases == ["compute-1"]
    assert sorted(err.results.ok.aliases) == ["compute-2", "control-1"]
    assert err.results["control-1"].stdout == "control-1\n" and err.results["compute-1"].rc == 1
    # check=False: the same Results, returned
    res = env.run("exit 3", roles="control", check=False)
    assert res["control-1"].rc == 3 and not res.all_ok and res.failed.aliases == ["control-1"]


def test_timeout_env_vars_and_sudo(env):
    res = env.run("sleep 3143 & sleep 3144", roles="compute", timeout=0.5, check=False)
    assert all(r.rc is None and r.error == "timed out after 0.5s (killed)" and r.stderr == "" for r in res)
    # the command does not outlive its timeout on the hosts (they share this PID space)
    deadline = time.monotonic() + 10
    while _sleeps("sleep 3143", "sleep 3144") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sleeps("sleep 3143", "sleep 3144")
    streamed = []
    res = env.run("echo out; echo err >&2", roles="control", timeout=30,
                  on_output=lambda h, s, line: streamed.append((s, line)))
    assert res["control-1"].stderr == "err\n" and sorted(streamed) == [("stderr", "err"), ("stdout", "out")]
    tricky = "a b 'c' \"d\" $HOME `x`\nline2"
    res = env.run('printf "%s|%s" "$ONE" "$TWO"', env={"ONE": tricky, "TWO": 2}, roles="control")
    assert res["control-1"].stdout == f"{tricky}|2"
    with pytest.raises(UsageError, match="not a valid environment variable name"):
        env.run("true", env={"A-B": "x"})
    # root hosts: sudo is a no-op; for another user the command goes through 'sudo -n'
    assert env.run("id -u", sudo=True, roles="control")["control-1"].stdout == "0\n"
    from enos.experiment.command import wrap_command
    assert wrap_command("id -u", sudo=True, user="debian") == "sudo -n -- sh -c 'id -u'"


def test_streaming_delivers_lines_while_the_command_runs(env, tmp_path):
    """Each host prints a line, then waits until the callback for that line has created a
    file (the hosts share this machine's filesystem): without streaming the command would
    never see its file and would time out."""
    seen = []

    def on_output(host, stream, line):
        seen.append((host.alias, stream, line))
        if line == "ready":
            (tmp_path / host.alias).touch()
    cmd = (f'echo ready; echo warn >&2; i=0; while [ ! -e "{tmp_path}/$(hostname)" ]; do '
           f'sleep 0.05; i=$((i+1)); [ $i -gt 400 ] && exit 9; done; printf "done"')
    res = env.run(cmd, on_output=on_output, timeout=60)
    assert all(r.stdout == "ready\ndone" for r in res)
    for h in env.hosts:
        mine = [(s, line) for a, s, line in seen if a == h.alias]
        assert mine.index(("stdout", "ready")) < mine.index(("stdout", "done"))   # the last, unterminated line too
        assert ("stderr", "warn") in mine


def test_background_wait_and_kill(env):
    bg = env.run("sleep 0.3; hostname", background=True)
    res = bg.wait(timeout=60)
    assert [r.stdout for r in res] == [f"{h.alias}\n" for h in env.hosts]
    assert all("enos-pid" not in r.stderr for r in res)

    bg = env.run("sleep 300 & sleep 301; echo never", roles="compute", background=True)
    pids = bg.pids()
    assert sorted(pids) == ["compute-1", "compute-2"] and bg.running
    with pytest.raises(Timeout):
        bg.wait(timeout=0.2)
    # the hosts share this machine's PID space: the session's process group is visible here
    group = {a: [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
                 if _pgid(p) == pid] for a, pid in pids.items()}
    assert all(len(g) >= 3 for g in group.values()), group      # sh + two sleeps
    res = bg.kill()
    assert not bg.running
    assert all(r.rc == 143 and r.error == "killed by SIGTERM" and "never" not in r.stdout for r in res)
    deadline = time.monotonic() + 10
    while any(alive(p) for g in group.values() for p in g) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for g in group.values() for p in g), "the background command survived kill()"


def _pgid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return -1


def test_up_validates_like_the_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider:\n  type: local\nresources:\n  local:\n    compute: zero\n")
    with pytest.raises(ConfigError) as e:
        enos.up(bad, base=tmp_path)
    assert e.value.file == str(bad) and e.value.line == 5
    with pytest.raises(ConfigError, match="compute"):
        enos.up({"provider": {"type": "local"}, "resources": {"local": {"compute": 0}}}, base=tmp_path)
    with pytest.raises(ConfigError, match="provision"):
        enos.up({**RESERVATION, "provision": ["missing.yml"]}, base=tmp_path)
    with pytest.raises(UsageError):
        enos.up(42, base=tmp_path)
    assert not any(tmp_path.glob("enos_*")), "an env dir was created for an invalid reservation"
    with pytest.raises(NoEnvironment):
        enos.current(tmp_path)


def test_cli_env_used_from_python_and_python_env_from_the_cli(tmp_path):
    """``enos up`` (CLI) → ``enos.current()``/``enos.load()`` run on it and destroy it;
    ``enos.up(keep=True)`` → ``enos info``/``run``/``destroy`` (CLI) on it."""
    (tmp_path / "r.yaml").write_text(json.dumps(RESERVATION))
    enos_cli(tmp_path, "up", "-f", "r.yaml", "--no-provision")
    e = enos.current(tmp_path)
    RUN_IDS.append(e.run_id)
    assert e.env_dir == (tmp_path / "current").resolve()
    assert enos.load(e.env_dir).run_id == e.run_id == enos.load(tmp_path).run_id
    assert e.run("hostname", roles="control")["control-1"].stdout == "control-1\n"
    with enos.load(e.env_dir, keep=False) as loaded:
        assert len(loaded.hosts) == 3
    assert e.reload().phase == "destroyed" and leftovers(e.run_id) == []
    with pytest.raises(NoEnvironment, match="destroyed"):
        e.run("true")

    other = tmp_path / "py"
    other.mkdir()
    env = enos.up(tmp_path / "r.yaml", keep=True, base=other, provision=False, quiet=True)
    RUN_IDS.append(env.run_id)
    try:
        info = json.loads(enos_cli(other, "info", "-o", "json").stdout)
        assert info["run_id"] == env.run_id and info["env_dir"] == str(env.env_dir)
        rows = json.loads(enos_cli(other, "run", "-o", "json", "--roles", "compute", "hostname").stdout)
        assert [(r["host"], r["exit_code"], r["stdout"]) for r in rows] == \
            [("compute-1", 0, "compute-1\n"), ("compute-2", 0, "compute-2\n")]
        failed = enos_cli(other, "run", "exit 4", check=False)
        assert failed.returncode == 1 and "failed on 3 of 3 host(s)" in failed.stderr
    finally:
        enos_cli(other, "destroy")
    assert env.reload().phase == "destroyed" and leftovers(env.run_id) == []


def test_context_manager_destroys_even_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with enos.up(RESERVATION, base=tmp_path, provision=False, quiet=True) as env:
            RUN_IDS.append(env.run_id)
            assert env.run("true").all_ok
            raise RuntimeError("boom")
    assert env.reload().phase == "destroyed" and leftovers(env.run_id) == []


def test_import_enos_is_lazy():
    import subprocess
    import sys
    code = ("import sys, enos; heavy = [m for m in sys.modules if m.startswith(('enos.', 'yaml', "
            "'ansible_runner', 'jsonschema', 'docopt'))]; print(heavy); "
            "enos.up; print('enos.experiment.env' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "True"], out


PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: write the rate
      ansible.builtin.copy:
        content: "{{ rate }} from {{ inventory_hostname }} of run {{ enos_run_id }}\\n"
        dest: "{{ enos_scratch }}/rate.txt"
    - name: nothing to change
      ansible.builtin.command: "true"
      changed_when: false
    - name: fail where asked
      ansible.builtin.command: "false"
      when: inventory_hostname in (fail_on | default([]))
"""


def test_play_reports_per_host(env, tmp_path):
    pb = tmp_path / "site.yml"
    pb.write_text(PLAYBOOK)
    play = env.play(pb, extra_vars={"rate": "10mbit"}, roles="compute")
    assert play.ok and sorted(play.hosts) == ["compute-1", "compute-2"]
    for h in env.roles["compute"]:
        assert play[h.alias].changed == 1 and play[h.alias].ok == 2 and play[h.alias].failed == 0
        assert not play[h.alias].unreachable and play[h.alias].status == "changed"
        assert Path(h.extra["enos_scratch"], "rate.txt").read_text() == \
            f"10mbit from {h.alias} of run {env.run_id}\n"
    again = env.play(pb, extra_vars={"rate": "10mbit"}, limit="compute-2")
    assert list(again.hosts) == ["compute-2"] and again["compute-2"].changed == 0   # idempotent
    # failure: ProvisionError naming host and task, with the per-host PlayResult
    from enos.errors import ProvisionError
    with pytest.raises(ProvisionError) as e:
        env.play(pb, extra_vars={"rate": "1", "fail_on": ["compute-1"]})
    res = e.value.result
    assert "compute-1: task 'fail where asked'" in str(e.value)
    assert res.failed == ["compute-1"] and res["compute-1"].failures[0][0] == "fail where asked"
    assert res["control-1"].status == "changed" and res["compute-2"].failed == 0
    d = json.loads(res.to_json())
    assert d["ok"] is False and d["hosts"]["compute-1"]["status"] == "failed"
    unchecked = env.play(pb, extra_vars={"rate": "1", "fail_on": ["control-1"]}, check=False)
    assert not unchecked.ok and unchecked.failed == ["control-1"]
    with pytest.raises(UsageError, match="not found"):
        env.play(tmp_path / "nope.yml")


AWKWARD = ["plain.txt", "with space.txt", "new\nline.txt", "quote ' and \" and $(x).txt",
           "dir with space/sub\ndir/deep file", "dir with space/é-ü.bin", "-dash-first"]


def _make_tree(root: Path) -> dict:
    """Files with awkward names under ``root``; return {relative name: content}."""
    content = {}
    for i, name in enumerate(AWKWARD):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(1000 * (i + 1))
        p.write_bytes(data)
        content[name] = data
    (root / "empty dir").mkdir()
    return content


def test_backup_many_hosts_awkward_names(env, tmp_path, monkeypatch):
    """One tar stream per host through the masters (no ssh or scp process: only the local
    tar extractors are started), names with spaces/newlines/quotes intact, missing paths
    reported per host, sizes counted."""
    src = tmp_path / "src tree\nwith newline"
    content = _make_tree(src)
    single = tmp_path / "single file 'x'"
    single.write_bytes(b"abc")
    import subprocess
    started = []
    real = subprocess.Popen

    def popen(argv, *a, **kw):
        started.append(argv[0])
        return real(argv, *a, **kw)
    monkeypatch.setattr(subprocess, "Popen", popen)
    report = env.backup([str(src), str(single), "/no such\npath"])
    monkeypatch.undo()
    assert sorted(started) == ["tar"] * 3, started
    assert report.ok and sorted(report.hosts) == sorted(h.alias for h in env.hosts)
    total = sum(len(v) for v in content.values()) + 3
    for h in env.hosts:
        hb = report[h.alias]
        assert hb.missing == ["/no such\npath"] and hb.fetched == [str(src), str(single)]
        assert hb.bytes == total and hb.files == len(AWKWARD) + 1
        base = env.env_dir / "backup" / h.alias
        assert Path(hb.dest) == base
        for name, data in content.items():
            assert (base / str(src).lstrip("/") / name).read_bytes() == data
        assert (base / str(src).lstrip("/") / "empty dir").is_dir()
        assert (base / str(single).lstrip("/")).read_bytes() == b"abc"
    assert report.missing == {h.alias: ["/no such\npath"] for h in env.hosts}
    assert "missing: '/no such\\npath'" in report.lines()[0]
    d = json.loads(report.to_json())
    assert d["bytes"] == total * 3 and d["ok"] is True

    # --dest elsewhere, one role, a relative path (from the remote home) starting with a
    # dash, and a path that exists nowhere: reported, not a failure
    dest = tmp_path / "out dir"
    import uuid
    rel = f"-enos-api-test-{uuid.uuid4().hex[:8]} dir"
    home = Path(os.path.expanduser("~root"))     # the local hosts share root's home
    (home / rel).mkdir()
    try:
        (home / rel / "f").write_text("home")
        only = env.backup([rel, "/no/such/file"], roles="control", dest=dest)
    finally:
        import shutil
        shutil.rmtree(home / rel)
    assert only.ok and only["control-1"].missing == ["/no/such/file"] and only["control-1"].bytes == 4
    assert (dest / "control-1" / rel / "f").read_text() == "home"
    with pytest.raises(UsageError, match=r"'\.\.' is not allowed"):
        env.backup(["/etc/../etc/passwd"])
    with pytest.raises(UsageError):
        env.backup(["/"])


def test_backup_cli(env, tmp_path):
    src = tmp_path / "a b"
    src.mkdir()
    (src / "f\nx").write_text("hello")
    out = enos_cli(tmp_path, "backup", "--env", str(env.env_dir), "--roles", "compute", "--dest",
                   str(tmp_path / "d"), str(src), "/not/there")
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("compute-1: 5 B in 1 file(s)") and "missing: /not/there" in lines[0]
    assert (tmp_path / "d" / "compute-2" / str(src).lstrip("/") / "f\nx").read_text() == "hello"
    js = json.loads(enos_cli(tmp_path, "backup", "--env", str(env.env_dir), "-o", "json", str(src)).stdout)
    assert js["ok"] and set(js["hosts"]) == {h.alias for h in env.hosts}
    assert (env.env_dir / "backup" / "control-1" / str(src).lstrip("/") / "f\nx").exists()
    bad = enos_cli(tmp_path, "backup", "--env", str(env.env_dir), "--roles", "nope", "/x", check=False)
    assert bad.returncode == 2 and "unknown role" in bad.stderr and "Traceback" not in bad.stderr


class _Checker:
    """A strict well-formedness check of an HTML fragment: every element closed, in order."""

    VOID = {"br", "hr", "img", "meta", "input", "col"}

    def __init__(self, text: str):
        from html.parser import HTMLParser
        self.stack, self.tags, self.errors = [], [], []
        outer = self

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                outer.tags.append(tag)
                if tag not in outer.VOID:
                    outer.stack.append(tag)

            def handle_endtag(self, tag):
                if not outer.stack or outer.stack[-1] != tag:
                    outer.errors.append(f"</{tag}> closes {outer.stack[-1:] or 'nothing'}")
                else:
                    outer.stack.pop()
        p = P()
        p.feed(text)
        p.close()
        if self.stack:
            self.errors.append(f"unclosed {self.stack}")


def test_jupyter_html_rendered_in_chromium(env, tmp_path):
    """Every object's ``_repr_html_`` is well-formed (strict parse), escapes what the hosts
    print, and renders in a real headless Chromium as the expected tables, the status of
    a failed host in red and of a successful one in green."""
    results = env.run("echo '<b>bold</b> & <script>x</script>'; test $(hostname) != compute-2", check=False)
    pb = tmp_path / "p.yml"
    pb.write_text(PLAYBOOK)
    play = env.play(pb, extra_vars={"rate": "html"}, roles="control")
    (tmp_path / "f").write_text("x")
    report = env.backup([str(tmp_path / "f"), "/nope"], roles="compute")
    parts = {"env": env._repr_html_(), "results": results._repr_html_(), "result": results[0]._repr_html_(),
             "roles": env.roles._repr_html_(), "host": env.hosts[0]._repr_html_(),
             "play": play._repr_html_(), "backup": report._repr_html_()}
    for name, frag in parts.items():
        c = _Checker(frag)
        assert not c.errors and c.tags[0] == "table", (name, c.errors, frag[:200])
        assert "<script>" not in frag and "<b>" not in frag, name
    probe = """<script>
    const out = {};
    for (const div of document.querySelectorAll('div[data-part]')) {
      const t = div.querySelector('table');
      out[div.dataset.part] = {
        headers: [...t.querySelectorAll('th')].map(x => x.textContent),
        rows: [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(
          td => [td.textContent, getComputedStyle(td).color])),
        scripts: div.querySelectorAll('script').length};
    }
    document.getElementById('out').textContent = JSON.stringify(out);
    </script>"""
    page = "<html><body>" + "".join(f'<div data-part="{k}">{v}</div>' for k, v in parts.items()) \
        + '<pre id="out"></pre>' + probe + "</body></html>"
    (tmp_path / "page.html").write_text(page)
    from chromium import chromium       # in a network namespace of its own: nothing can leave
    dom = chromium(["--dump-dom", (tmp_path / "page.html").as_uri()], tmp_path, "api").stdout
    import html as htmllib
    import re
    got = json.loads(htmllib.unescape(re.search(r'<pre id="out">(.*?)</pre>', dom, re.S).group(1)))
    assert got["env"]["headers"] == ["role", "alias", "address", "user", "port", "extra"]
    assert sorted(r[1][0] for r in got["env"]["rows"]) == sorted(h.alias for h in env.hosts)
    res = {r[0][0]: r for r in got["results"]["rows"]}
    assert got["results"]["headers"][:4] == ["host", "roles", "status", "duration"]
    assert res["compute-2"][2] == ["exit 1", "rgb(207, 34, 46)"]
    assert res["compute-1"][2] == ["ok", "rgb(26, 127, 55)"]
    assert res["compute-1"][4][0] == "<b>bold</b> & <script>x</script>"     # shown as text
    assert all(p["scripts"] == 0 for p in got.values())
    assert got["play"]["rows"][0][0][0] == "control-1" and got["play"]["rows"][0][1][0] == "changed"
    assert [r[0][0] for r in got["backup"]["rows"]] == ["compute-1", "compute-2"]
    assert got["backup"]["rows"][0][5][0] == "/nope"


def test_issue_example_end_to_end(tmp_path):
    """The example of the issue, as written (reservation file, with play and backup), then
    keep=True, load and destroy."""
    (tmp_path / "reservation.yaml").write_text(json.dumps(RESERVATION))
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        printed = []
        with enos.up("reservation.yaml", quiet=True) as env:
            RUN_IDS.append(env.run_id)
            printed.append(repr(env.roles["compute"]))
            res = env.run("hostname", roles="compute")
            for r in res:
                printed.append((r.host.alias, r.rc, r.stdout.strip(), r.duration))
            play = env.play("site.yml", extra_vars={"rate": "10mbit"})
            for h in env.roles["compute"]:
                Path(h.extra["enos_scratch"], "app").mkdir()
                Path(h.extra["enos_scratch"], "app", "log 1").write_text(h.alias)
            reports = [env.backup([h.extra["enos_scratch"] + "/app"], roles=h) for h in env.roles["compute"]]
            backup_dir = env.env_dir / "backup"
        assert "compute-1" in printed[0] and [p[:3] for p in printed[1:]] == \
            [("compute-1", 0, "compute-1"), ("compute-2", 0, "compute-2")]
        assert play.ok and sorted(play.hosts) == ["compute-1", "compute-2", "control-1"]
        for h, rep in zip(["compute-1", "compute-2"], reports):
            f = backup_dir / h / rep[h].fetched[0].lstrip("/") / "log 1"
            assert f.read_text() == h
        assert env.reload().phase == "destroyed" and leftovers(env.run_id) == []

        env = enos.up("reservation.yaml", keep=True, provision=False, quiet=True)
        RUN_IDS.append(env.run_id)
        with env:
            pass                                 # keep=True: not destroyed on exit
        again = enos.load(env.env_dir)
        assert again.phase == "ready" and again.run("true").all_ok
        assert enos.current().env_dir == env.env_dir
        again.destroy()
        assert env.reload().phase == "destroyed" and leftovers(env.run_id) == []
    finally:
        os.chdir(cwd)


def test_api_example_runs_after_the_quickstart(tmp_path):
    """examples/api_example.py as is, in a copy of the repository's sample files, after what
    scripts/quickstart.sh does once the venv exists (`enos up -f reservation.yaml.sample`)."""
    import shutil
    import subprocess
    import sys
    repo = Path(__file__).resolve().parent.parent
    shutil.copy(repo / "reservation.yaml.sample", tmp_path)
    shutil.copytree(repo / "examples", tmp_path / "examples")
    enos_cli(tmp_path, "up", "-f", "reservation.yaml.sample")
    run_id = json.loads((tmp_path / "current" / "state.json").read_text())["run_id"]
    RUN_IDS.append(run_id)
    try:
        p = subprocess.run([sys.executable, "examples/api_example.py"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        out = p.stdout
        assert f"resuming environment {(tmp_path / 'current').resolve()} (run {run_id}" in p.stderr
        assert "compute-1 0 compute-1" in out and "compute-3 0 compute-3" in out
        assert "failed on ['compute-2'] - fine on ['control-1', 'compute-1', 'compute-3']" in out
        assert "<PlayResult api_site.yml successful" in out
        assert out.count("1 file(s)") == 3 and out.rstrip().endswith("destroyed")
        for h in ("compute-1", "compute-2", "compute-3"):
            logs = list((tmp_path / "current" / "backup" / h).rglob("app log.txt"))
            assert len(logs) == 1 and logs[0].read_text() == f"{h} runs at 10mbit\n"
    finally:
        enos_cli(tmp_path, "destroy")
    assert leftovers(run_id) == []


CTRL_C_SCRIPT = """\
import sys, enos
with enos.up({"provider": {"type": "local"}, "resources": {"local": {"compute": 2}}}, provision=False,
             quiet=True) as env:
    print(env.env_dir, env.run_id, flush=True)
    bg = env.run("sleep 3141", background=True)
    bg.pids()
    print("running", flush=True)
    env.run("sleep 3142; echo never")
print("not reached", flush=True)
"""


def test_ctrl_c_inside_the_with_block_destroys(tmp_path):
    """A real SIGINT sent to the script's process group (as a terminal's Ctrl-C) while
    ``env.run`` waits and a background command runs: the ``with`` block destroys the env on
    the way out; no namespace, sshd or remote sleep is left, no ssh child either."""
    import signal
    import subprocess
    import sys
    from promise import communicate_or_dump
    (tmp_path / "s.py").write_text(CTRL_C_SCRIPT)
    p = subprocess.Popen([sys.executable, "-X", "faulthandler", "s.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    env_dir = None
    try:
        env_dir, run_id = p.stdout.readline().split()
        RUN_IDS.append(run_id)
        assert p.stdout.readline() == "running\n"
        # the background command runs on both hosts, and so does the foreground one env.run waits for
        sleeps = wait_running("sleep 3141", 2, run_id=run_id) + wait_running("sleep 3142", 2, run_id=run_id)
        children = _children(p.pid)
        os.killpg(p.pid, signal.SIGINT)
        out, err = communicate_or_dump(p, 120, "SIGINT inside the with block")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        destroyed_here = False
        if env_dir and json.loads((Path(env_dir) / "state.json").read_text())["phase"] != "destroyed":
            enos.load(env_dir).destroy()          # a failure above must not leave the hosts running
            destroyed_here = True
    assert p.returncode != 0 and "not reached" not in out and "KeyboardInterrupt" in err, (p.returncode, err)
    assert not destroyed_here, "the with block did not destroy the env"
    assert leftovers(run_id) == []
    assert not any(alive(c) for c in children), "a child of the script outlived it"
    assert [pid for pid in sleeps if _cmdline(str(pid)) in ("sleep 3141", "sleep 3142")] == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _children(pid: int) -> list:
    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(p))
    return out


def _sleeps(*cmdlines: str) -> list:
    return [pid for pid in filter(str.isdigit, os.listdir("/proc")) if _cmdline(pid) in cmdlines]


ATEXIT_SCRIPT = """\
import sys, enos
from enos.ssh.client import stop_masters
env = enos.load(sys.argv[1])
stop_masters(env.run_id)                 # no master: every session is an ssh process
bg = env.run("sleep 3145", roles="compute", background=True)
print(sorted(bg.pids().items()), flush=True)
"""


def test_background_left_running_at_exit_leaves_no_ssh_process(env, tmp_path):
    """A script that ends while a background run (here through ssh processes: masters
    closed) is still going: its sessions are dropped at exit, no ssh process is orphaned."""
    import subprocess
    import sys
    (tmp_path / "s.py").write_text(ATEXIT_SCRIPT)
    p = subprocess.run([sys.executable, "s.py", str(env.env_dir)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    import ast
    import signal
    pids = dict(ast.literal_eval(p.stdout))
    assert p.returncode == 0 and sorted(pids) == ["compute-1", "compute-2"], p.stdout + p.stderr
    time.sleep(0.5)
    orphans = [pid for pid in filter(str.isdigit, os.listdir("/proc"))
               if _cmdline(pid).startswith("ssh ") and "sleep 3145" in _cmdline(pid)]
    for pid in pids.values():     # the remote commands keep running (documented): end them by PID
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert orphans == [], [_cmdline(x) for x in orphans]


def test_the_core_runs_without_pandas():
    """pandas is in the 'campaign' extra only: with it missing, the experiment layer and the
    CLI import, a Results still prints and gives JSON, and to_dataframe() says what to
    install (a typed error, exit status 2) instead of an ImportError."""
    import subprocess
    import sys
    code = (
        "import sys; sys.modules['pandas'] = None\n"             # as if it were not installed
        "import enos, enos.cli, enos.results, enos.experiment.env, enos.experiment.monitor, "
        "enos.experiment.actions, enos.experiment.sweep, enos.campaign.runner\n"
        "from enos.model import Host\n"
        "from enos.results import Result, Results\n"
        "from enos.errors import MissingDependency\n"
        "res = Results([Result(Host('h-1', '10.0.0.1'), 'true', 0, '', '', 1.0, 2.0)], 'true')\n"
        "print(repr(res).split(':')[0], res.to_dict()['results'][0]['rc'])\n"
        "try:\n"
        "    res.to_dataframe()\n"
        "except MissingDependency as e:\n"
        "    print(type(e).__name__, e.exit_code, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["<Results 'true' 0",
                                "MissingPandas 2 Results.to_dataframe() needs pandas, which is not installed: "
                                "pip install 'enos[campaign]'"], out
