"""``env.actions(roles=...)`` on real ``local`` namespace hosts through real ansible-runner:
any module as a method, one playbook run per block, per-host per-task results, a failed
task raising with every host's results, task keywords, HTML checked in headless Chromium."""
from __future__ import annotations

import pytest

import browser
import enos
from enos.errors import UsageError
from enos.experiment.actions import ActionsFailed
from localhosts import RUN_IDS, api_env, leftovers

pytestmark = pytest.mark.root

RESERVATION = {"provider": "local", "resources": {"local": {"server": 1, "client": 2}}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with api_env(RESERVATION, tmp_path_factory.mktemp("actions")) as e:
        yield e


def _playbooks(env):
    return sorted((env.env_dir / "actions").glob("*.yml")) if (env.env_dir / "actions").is_dir() else []


def test_modules_as_methods_in_one_playbook(env):
    before = _playbooks(env)
    with env.actions(roles="client") as a:
        a.file(path="{{ enos_scratch }}/act", state="directory", mode="0755")
        a.copy(dest="{{ enos_scratch }}/act/hello.txt", content="{{ inventory_hostname }}\n",
               task_name="write hello")
        a.shell("cat {{ enos_scratch }}/act/hello.txt", task_changed_when=False)
        a.ansible.builtin.command("hostname")
        a.add("ansible.builtin.stat", path="{{ enos_scratch }}/act/hello.txt", task_register="st")
        a.debug(msg="size {{ st.stat.size }}")
        a.shell("echo never", task_when="inventory_hostname == 'nobody'")
        a.debug(msg="{{ inventory_hostname }} " + "x" * 100)     # a long templated default name
    res = a.results
    assert len(_playbooks(env)) == len(before) + 1                   # one playbook for the block
    assert res.ok and res.hosts == ["client-1", "client-2"] and res.failed == []
    assert res.tasks[1] == "write hello" and res.tasks[0].startswith("file: path=")
    for alias in res.hosts:
        st = [r.status for r in res[alias]]
        assert st == ["changed", "changed", "ok", "changed", "ok", "ok", "skipped", "ok"], st
        assert res[alias][7].msg == f"{alias} " + "x" * 100
        assert res[alias][2].stdout == alias and res[alias][2].rc == 0
        assert res[alias][3].stdout == alias
        assert res[alias][5].msg == f"size {len(alias) + 1}"
    assert sorted(res.changed) == ["client-1", "client-2"]
    # idempotent modules report ok the second time
    with env.actions(roles="client-1") as b:
        b.file(path="{{ enos_scratch }}/act", state="directory", mode="0755")
    assert [r.status for r in b.results["client-1"]] == ["ok"]
    df = res.to_dataframe()
    assert len(df) == 16 and set(df["status"]) == {"changed", "ok", "skipped"}


def test_a_failed_task_raises_with_every_hosts_results(env):
    with pytest.raises(ActionsFailed) as info:
        with env.actions() as a:
            a.shell("test $(hostname) != client-2 || { echo refused >&2; exit 3; }", task_name="check")
            a.shell("hostname", task_name="after")
    e = info.value
    assert e.failed == ["client-2"]
    assert "client-2: task 'check'" in str(e) and "refused" in str(e) and "rc 3" in str(e)
    res = e.results
    assert res.hosts == ["server-1", "client-1", "client-2"]
    assert [r.status for r in res["client-2"]] == ["failed", "not run"]
    assert res["client-2"][0].rc == 3 and "refused" in res["client-2"][0].stderr
    for alias in ("server-1", "client-1"):                 # the successful hosts' output is there
        assert [r.status for r in res[alias]] == ["changed", "changed"]
        assert res[alias][1].stdout == alias
    # check=False returns the results instead
    a = env.actions(roles="client-2", check=False)
    a.shell("exit 4")
    assert a.run().failed == ["client-2"]


def test_mistakes_are_refused_before_anything_runs(env):
    before = _playbooks(env)
    with pytest.raises(UsageError, match="unknown task keyword 'task_wen'"):
        with env.actions() as a:
            a.shell("true", task_wen="x")
    with pytest.raises(UsageError, match="at most one positional"):
        env.actions().shell("a", "b")
    with pytest.raises(RuntimeError):
        with env.actions() as a:
            a.shell("touch /should-not-run")
            raise RuntimeError("the block failed: nothing runs")
    with pytest.raises(UsageError, match="no task"):
        with env.actions():
            pass
    assert _playbooks(env) == before


def test_html_in_chromium(env, tmp_path):
    a = env.actions(check=False)
    a.shell("echo '<b>x</b>'; test $(hostname) != server-1")
    res = a.run()
    t = browser.tables(res._repr_html_())[0]
    assert t.headers == ["host", "#", "task", "status", "rc", "duration", "output / message"]
    assert {r[0]: r[3] for r in t.rows} == {"server-1": "failed", "client-1": "changed", "client-2": "changed"}
    seen = browser.render_tables({"actions": res._repr_html_()}, tmp_path)["actions"][0]
    colours = {row[0][0]: row[3][1] for row in seen["rows"]}
    assert colours["server-1"] == "rgb(207, 34, 46)"                        # failed: red
    assert {row[0][0]: row[6][0] for row in seen["rows"]}["client-1"] == "<b>x</b>"    # text, not markup



def test_an_unreachable_host_raises_with_the_others_results(tmp_path):
    """A host whose sshd is gone (killed; the env's connection masters closed and their
    directory removed, as after a reboot of this machine): its first task is
    ``unreachable``, the next ``not run``; ActionsFailed names it alone and carries the
    other host's results (which reached its host: the masters' directory is made again)."""
    import os
    import signal
    from enos.ssh.client import stop_masters
    e = enos.up({"provider": "local", "resources": {"local": {"server": 1, "client": 1}}}, keep=True,
                base=tmp_path, provision=False, quiet=True)
    RUN_IDS.append(e.run_id)
    try:
        os.kill(e.info()["provider_info"]["hosts"]["client-1"]["sshd_pid"], signal.SIGTERM)
        stop_masters(e.run_id)         # new connections: client-1 refuses at once
        with pytest.raises(ActionsFailed) as info:
            with e.actions() as a:
                a.shell("hostname", task_name="who")
                a.shell("true", task_name="after")
        err = info.value
        assert err.failed == ["client-1"], str(err)
        assert "client-1: task 'who'" in str(err) and "Connection refused" in str(err), str(err)
        res = err.results
        assert [r.status for r in res["client-1"]] == ["unreachable", "not run"]
        assert [r.status for r in res["server-1"]] == ["changed", "changed"] and res["server-1"][0].stdout == "server-1"
        assert res.host_status("client-1") == "unreachable"
        t = browser.tables(res._repr_html_())[0]
        assert sorted((r[0], r[1], r[3]) for r in t.rows) == [("client-1", "0", "unreachable"),
                                                              ("client-1", "1", "not run"),
                                                              ("server-1", "0", "changed"), ("server-1", "1", "changed")]
    finally:
        e.destroy()
        assert leftovers(e.run_id) == []
