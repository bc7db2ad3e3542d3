"""The Python API where researchers use it: a real Jupyter kernel (ipykernel, driven by
nbclient) executes examples/notebook/experiment.ipynb on real ``local`` namespace hosts,
under the kernel's running asyncio loop, and every output is checked (the HTML ones
parsed strictly and rendered in headless Chromium); nothing of the envs is left after.
And the same API called from inside ``asyncio.run(...)``."""
from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path
from typing import Dict, List

import pytest

import browser
from localhosts import RUN_IDS, leftovers
from prereq import missing

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "examples" / "notebook" / "experiment.ipynb"
RESERVATION = {"provider": "local", "resources": {"local": {"server": 1, "client": 2}}}


def _destroy_all(base: Path) -> List[str]:
    """Destroy every env found under ``base`` that is not destroyed yet (a failed cell
    must not leak hosts); return their run ids."""
    import json
    import enos
    run_ids = []
    for state in sorted(base.rglob("state.json")):
        data = json.loads(state.read_text())
        run_ids.append(data["run_id"])
        RUN_IDS.append(data["run_id"])
        if data.get("phase") != "destroyed":
            enos.load(state.parent).destroy()
    return run_ids


def _processes_with(marker: str) -> List[str]:
    """Return the processes (this one excluded) whose environment holds ``marker``: the
    kernel and anything it started."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker.encode() in env:
            out.append(f"{pid} {args}")
    return out


def _outputs(nb) -> Dict[str, dict]:
    """Return tag → {"stdout": text, "stderr": text, "plain": text/plain of the result,
    "html": list of HTML outputs, "errors": [ename: evalue]} for each tagged code cell."""
    out = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tag = cell.metadata["tags"][0]
        o = {"stdout": "", "stderr": "", "plain": "", "html": [], "png": [], "errors": []}
        for x in cell.outputs:
            if x.output_type == "stream":
                o[x.name] += x.text
            elif x.output_type == "error":
                o["errors"].append(f"{x.ename}: {x.evalue}")
            else:
                o["plain"] += x.data.get("text/plain", "")
                if "text/html" in x.data:
                    o["html"].append(x.data["text/html"])
                if "image/png" in x.data:
                    o["png"].append(base64.b64decode(x.data["image/png"]))
        out[tag] = o
    return out


def _execute(base: Path):
    """Execute the notebook in a fresh python3 kernel (this venv's interpreter) with
    ``ENOS_NOTEBOOK_BASE=base``, cwd the notebook's directory; return the notebook."""
    try:
        import nbclient
        import nbformat
    except ImportError:
        missing("nbclient/nbformat/ipykernel are not installed (the 'test' extra)")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    old = os.environ.get("ENOS_NOTEBOOK_BASE")
    os.environ["ENOS_NOTEBOOK_BASE"] = str(base)
    try:
        client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600, allow_errors=True,
                                         resources={"metadata": {"path": str(NOTEBOOK.parent)}})
        client.execute()
    finally:
        if old is None:
            del os.environ["ENOS_NOTEBOOK_BASE"]
        else:
            os.environ["ENOS_NOTEBOOK_BASE"] = old
    return nb


def _table(o: dict, headers: List[str]) -> browser.Table:
    """The one table of a cell's HTML output, strictly parsed, with these headers."""
    assert len(o["html"]) == 1, o
    tabs = browser.tables(o["html"][0])
    assert len(tabs) >= 1 and tabs[0].headers[:len(headers)] == headers, tabs
    return tabs[0]


def test_notebook_runs_the_whole_experiment_in_a_real_kernel(tmp_path):
    base = tmp_path / "envs"
    base.mkdir()
    try:
        nb = _execute(base)
    finally:
        run_ids = _destroy_all(base)
    out = _outputs(nb)
    errors = {tag: o["errors"] for tag, o in out.items() if o["errors"]}
    assert not errors, errors

    assert "running loop: yes" in out["setup"]["stdout"]            # the hostile case indeed
    assert f"python: {sys.executable}" in out["setup"]["stdout"]
    hosts = _table(out["up"], ["role", "alias", "address", "user", "port", "extra"])
    assert sorted(r[1] for r in hosts.rows) == ["client-1", "client-2", "server-1"]
    assert "ready: 3 host(s)" in out["up"]["plain"]

    res = _table(out["run"], ["host", "roles", "status", "duration", "stdout", "stderr"])
    assert {r[0]: (r[2], r[4]) for r in res.rows} == {a: ("ok", a) for a in ("server-1", "client-1", "client-2")}

    acts = _table(out["actions"], ["host", "#", "task", "status", "rc", "duration", "output / message"])
    assert [(r[0], r[1], r[3]) for r in acts.rows] == [(h, str(i), st) for h in ("client-1", "client-2")
                                                       for i, st in enumerate(("changed", "changed", "ok"))]
    assert {r[0]: r[6] for r in acts.rows if r[1] == "2"} == {"client-1": "client-1", "client-2": "client-2"}

    play = _table(out["play"], ["host", "status", "ok", "changed", "failed", "skipped", "failures"])
    assert {r[0]: (r[1], r[3], r[4]) for r in play.rows} == {"client-1": ("changed", "1", "0"),
                                                            "client-2": ("changed", "1", "0")}
    facts = _table(out["facts"], ["host", "cpus", "memory", "OS", "kernel", "arch", "netem", "addresses", "tools"])
    assert sorted(r[0] for r in facts.rows) == ["client-1", "client-2", "server-1"]
    assert all(r[4] and "(ssh)" in r[7] for r in facts.rows), facts.rows
    assert out["tc"]["plain"] == "{'client-1': 'applied', 'client-2': 'applied', 'server-1': 'applied'}"
    tct = _table(out["tc_test"], ["src", "dst", "hosts", "RTT asked", "RTT measured (min / median)", "rate asked",
                                  "rate measured", "loss asked", "loss measured", "status"])
    assert {(r[0], r[1]) for r in tct.rows} == {("client", "server"), ("server", "client")}
    assert all(r[5] == "20mbit" and r[9] == "ok" for r in tct.rows), tct.rows

    back = _table(out["backup"], ["host", "status", "size", "files", "fetched", "missing", "into"])
    assert sorted(r[0] for r in back.rows) == ["client-1", "client-2"]
    for alias in ("client-1", "client-2"):
        # local hosts share the disk: each client fetched both scratch dirs, its own included
        got = list(base.glob(f"enos_*/backup/{alias}/**/{alias}/scratch/notebook/message.txt"))
        assert len(got) == 1 and got[0].read_text() == f"{alias}: hello from the notebook\n"

    assert out["monitor"]["stdout"] == "received 2000000\n"
    mon = _table(out["monitor"], ["host", "status", "duration", "cpu %", "mem max MiB", "net rx B", "net tx B",
                                  "disk read B", "disk write B"])
    rows = {r[0]: r for r in mon.rows}
    assert set(rows) == {"server-1", "client-1", "client-2"} and {r[1] for r in mon.rows} == {"ok"}
    assert 2_000_000 <= int(rows["server-1"][5]) <= 2_000_000 * 1.08 + 64_000      # every byte counted
    assert 2_000_000 <= int(rows["client-1"][6]) <= 2_000_000 * 1.08 + 64_000
    df = browser.tables(out["monitor_df"]["html"][0])[0]
    assert int(dict((r[0], r) for r in df.rows)["server-1"][1]) == int(rows["server-1"][5])
    # the monitor's figure is an image in a kernel where pyplot was never imported
    assert out["monitor_plot"]["stdout"] == "pyplot imported: False\n", out["monitor_plot"]
    assert len(out["monitor_plot"]["png"]) == 1 and out["monitor_plot"]["png"][0][:8] == b"\x89PNG\r\n\x1a\n"
    assert len(out["monitor_plot"]["png"][0]) > 10_000          # panels drawn, not an empty canvas

    sweep = _table(out["sweep"], ["size", "repeat", "bytes"])
    assert [r[:3] for r in sweep.rows] == [["1", "1", "1024"], ["1", "2", "1024"], ["4", "1", "4096"], ["4", "2", "4096"]]
    assert out["sweep_again"]["stdout"] == "ran 0\n" and "nothing left to do" in out["sweep_again"]["stderr"]
    again = browser.tables(out["sweep_again"]["html"][0])[0]
    assert [[r[1], r[2], r[4]] for r in again.rows] == [["1", "1", "1024"], ["1", "2", "1024"], ["4", "1", "4096"], ["4", "2", "4096"]]
    assert sorted(p.read_text() for p in base.glob("sweep/runs/*/*/wc.txt")) == ["1024\n"] * 2 + ["4096\n"] * 2
    assert out["destroy"]["plain"] == "'destroyed'"
    assert out["with"]["stdout"] == "{'server-1': 'server-1\\n'}\ndestroyed\ndestroyed\n"
    counts = out["campaign"]["plain"]
    assert "'done': 2" in counts and "'failed': 0" in counts and "'total': 2" in counts, counts

    # what the user sees: the same outputs rendered by a real browser
    parts = {tag: o["html"][0] for tag, o in out.items() if o["html"]}
    seen = browser.render_tables(parts, tmp_path)
    assert set(seen) == {"up", "run", "actions", "play", "facts", "tc_test", "backup", "monitor", "monitor_df",
                         "sweep", "sweep_again"}
    assert {row[9][1] for row in seen["tc_test"][0]["rows"]} == {"rgb(26, 127, 55)"}
    assert all(t["visible"] for tabs in seen.values() for t in tabs)
    assert {row[2][1] for row in seen["run"][0]["rows"]} == {"rgb(26, 127, 55)"}          # ok: green

    # nothing left: every env destroyed, no namespace, link or process of theirs, no
    # process of the kernel
    assert len(run_ids) == 4, run_ids                    # up, with, kept, campaign
    assert {rid: leftovers(rid) for rid in run_ids} == {rid: [] for rid in run_ids}
    assert _processes_with(f"ENOS_NOTEBOOK_BASE={base}") == []


def test_the_api_works_inside_asyncio_run(tmp_path):
    """Called from a coroutine (a running loop in the calling thread): up in a ``with``
    block, run, tc, tc_reset, facts, destroy, ``enos.destroy``, a campaign (as data and from
    its file), its status, results as a DataFrame, report, and its archive made and checked."""
    import json
    import enos
    import enos.archive
    import enos.campaign
    seen = {}

    async def main():
        assert asyncio.get_running_loop()
        with enos.up(RESERVATION, base=tmp_path, provision=False, quiet=True) as env:
            RUN_IDS.append(env.run_id)
            seen["run_id"] = env.run_id
            seen["hostname"] = env.run("hostname", roles="server")[0].stdout
            seen["facts"] = sorted(env.facts())
            seen["tc"] = env.tc({"default_rate": "50mbit", "groups": ["server", "client"]})
            seen["reset"] = env.tc_reset()
        seen["phase"] = env.reload().phase
        kept = enos.up(RESERVATION, keep=True, base=tmp_path, provision=False, quiet=True)
        RUN_IDS.append(kept.run_id)
        seen["kept"] = kept.run_id
        seen["destroyed"] = enos.destroy(base=tmp_path).phase
        camp = {"reservation": RESERVATION, "parameters": {"n": [1, 2]},
                "steps": [{"roles": ["server"], "run": "echo value={{ n }}", "collect": "stdout"}],
                "metrics": {"v": {"regex": "value=([0-9]+)"}}}
        seen["campaign"] = enos.campaign.run(camp, results=tmp_path / "camp", destroy=True)
        # the campaign's data, report and archive too (from its file)
        (tmp_path / "c.yaml").write_text(json.dumps(camp))
        enos.campaign.run(str(tmp_path / "c.yaml"), destroy=True)
        seen["status"] = enos.campaign.status(str(tmp_path / "c.yaml"))["done"]
        seen["values"] = sorted(enos.campaign.results(str(tmp_path / "c.yaml"))["value"])
        seen["report"] = [Path(f).name for f in enos.campaign.report(str(tmp_path / "c.yaml"))["figures"]]
        enos.archive.create(tmp_path / "c.tar.gz", campaign=str(tmp_path / "c.yaml"))
        seen["check"] = enos.archive.check(tmp_path / "c.tar.gz").ok

    try:
        asyncio.run(main())
    finally:
        _destroy_all(tmp_path)
    assert seen["hostname"] == "server-1\n"
    assert seen["facts"] == ["client-1", "client-2", "server-1"]
    assert seen["tc"] == {"client-1": "applied", "client-2": "applied", "server-1": "applied"}
    assert seen["reset"] == {"client-1": "removed", "client-2": "removed", "server-1": "removed"}
    assert seen["phase"] == "destroyed" and seen["destroyed"] == "destroyed"
    assert seen["campaign"]["done"] == 2 and seen["campaign"]["failed"] == 0
    assert seen["status"] == 2 and seen["values"] == [1.0, 2.0] and seen["report"] and seen["check"] is True, seen
    for rid in (seen["run_id"], seen["kept"]):
        assert leftovers(rid) == []
