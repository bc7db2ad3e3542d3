"""Campaign results that refuse to lie, as data and figures (issue 20 §4-7), through the
real ``enos`` command on real ``local`` hosts: an edited step (or a script it calls) is
refused with exit 2 naming the change and the choices; ``--rerun-changed`` and a new
results dir; ``campaign validate`` rejects what ``campaign run`` rejects; the counts add
up; ``enos.campaign.results`` as a DataFrame; a ``figures:`` section drawn; the report
dated, versioned, with the scripts; ``env.sweep`` returns what was measured on a re-run."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import enos
import enos.campaign
from enoscli import enos as enos_cli
from localhosts import api_env

pytestmark = pytest.mark.root

RESERVATION = {"provider": "local", "resources": {"local": {"worker": 2}}}

CAMPAIGN = """\
name: provenance
parameters:
  size: [1, 2]
repeat: 1
steps:
  - name: measure
    roles: [worker]
    run: "sh {here}/bench.sh {{{{ size }}}}"
    collect: stdout
metrics:
  kib: {{regex: "value=([0-9]+)", unit: KiB}}
monitor: true
figures:
  - name: kib
    y: kib
    x: size
    kind: bar
    ylabel: "KiB counted"
  - name: sent
    y: monitor_net_tx_bytes
    x: size
    hue: host
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with api_env(RESERVATION, tmp_path_factory.mktemp("prov-env")) as e:
        yield e


def _campaign(d: Path, factor: int = 1) -> Path:
    (d / "bench.sh").write_text(f"echo value=$(( $1 * {factor} ))\n")
    (d / "campaign.yaml").write_text(CAMPAIGN.format(here=d))
    return d / "campaign.yaml"


def _values(results: Path) -> dict:
    return {p.parents[2].name: p.read_text() for p in results.glob("runs/*/1/worker-1/stdout")}


def test_an_edited_step_is_refused_then_rerun_or_kept_apart(env, tmp_path):
    camp = _campaign(tmp_path)
    enos_cli(tmp_path, "campaign", "run", str(camp), "--env", str(env.env_dir))
    res = tmp_path / "campaign.results"
    assert _values(res) == {"size=1": "value=1\n", "size=2": "value=2\n"}
    text = camp.read_text()
    camp.write_text(text.replace("sh {0}/bench.sh".format(tmp_path), "sh {0}/bench.sh 10 #".format(tmp_path)))
    p = enos_cli(tmp_path, "campaign", "run", str(camp), "--env", str(env.env_dir), check=False)
    assert p.returncode == 2, p.stderr
    err = p.stderr
    assert f"{camp}:8: steps.0.run: 2 finished run(s) in {res}" in err, err
    assert "step 1 (measure): run changed:" in err and "was: sh " in err and "now: sh " in err
    assert "--results NEW_DIR" in err and "--rerun-changed" in err and "Traceback" not in err
    assert _values(res) == {"size=1": "value=1\n", "size=2": "value=2\n"}          # nothing ran
    print("FIGURE refused campaign edit:\n" + err)
    # a metric edited alone is not a change of the runs: they are read again
    camp.write_text(text.replace("unit: KiB", "unit: KiB, scale: 2"))
    enos_cli(tmp_path, "campaign", "run", str(camp), "--env", str(env.env_dir))
    # a script the step calls, edited: refused, naming it
    (tmp_path / "bench.sh").write_text("echo value=$(( $1 * 3 ))\n")
    p = enos_cli(tmp_path, "campaign", "run", str(camp), "--env", str(env.env_dir), check=False)
    assert p.returncode == 2 and "the file bench.sh (named by the campaign) changed" in p.stderr, p.stderr
    # kept apart in a new results dir, or redone
    enos_cli(tmp_path, "campaign", "run", str(camp), "--env", str(env.env_dir), "--results", str(tmp_path / "new"))
    assert _values(tmp_path / "new") == {"size=1": "value=3\n", "size=2": "value=6\n"}
    enos_cli(tmp_path, "campaign", "run", str(camp), "--env", str(env.env_dir), "--rerun-changed")
    assert _values(res) == {"size=1": "value=3\n", "size=2": "value=6\n"}
    fps = {json.loads(p.read_text())["fingerprint"] for p in res.glob("runs/*/*/result.json")}
    assert len(fps) == 1 and (res / "provenance" / f"{fps.pop()}.json").is_file()
    enos_cli(tmp_path, "campaign", "run", str(camp), "--env", str(env.env_dir))      # nothing to redo


def test_results_as_a_dataframe_figures_chosen_and_a_dated_report(env, tmp_path):
    camp = _campaign(tmp_path, factor=4)
    enos.campaign.run(str(camp), env=str(env.env_dir))
    out = enos.campaign.report(str(camp))
    res = tmp_path / "campaign.results"
    assert [Path(f).name for f in out["figures"]] == ["kib.png", "sent.png"]
    for f in out["figures"]:
        from PIL import Image, ImageStat
        with Image.open(f) as im:
            assert im.size[0] >= 500 and ImageStat.Stat(im.convert("L")).var[0] > 100
    df = enos.campaign.results(str(camp))
    assert list(df.columns) == ["size", "repeat", "host", "role", "metric", "value", "unit"]
    kib = df[df.metric == "kib"]
    assert sorted(zip(kib["size"], kib["host"], kib["value"])) == [
        (1, "worker-1", 4.0), (1, "worker-2", 4.0), (2, "worker-1", 8.0), (2, "worker-2", 8.0)]
    assert set(kib["unit"]) == {"KiB"} and set(kib["role"]) == {"worker"}
    sent = df[df.metric == "monitor_net_tx_bytes"]
    assert len(sent) == 4 and (sent["value"] > 0).all() and set(sent["unit"]) == {"B"}
    html = (res / "report.html").read_text()
    assert "Report made 20" in html and f"by enos {enos.__version__}" in html
    assert "<code>bench.sh</code>" in html and "echo value=$(( $1 * 4 ))" in html
    assert "chosen in the campaign file (figures:)" in html and "Provenance" in html


def test_validate_rejects_what_run_rejects(tmp_path):
    bad = {"reservation": RESERVATION, "parameters": {"rate": [200, 300]},
           "network_constraints": {"default_rate": "{{ rate }}", "groups": ["worker"]},
           "steps": [{"run": "true"}]}
    (tmp_path / "c.yaml").write_text(json.dumps(bad))
    v = enos_cli(tmp_path, "campaign", "validate", str(tmp_path / "c.yaml"), check=False)
    r = enos_cli(tmp_path, "campaign", "run", str(tmp_path / "c.yaml"), check=False)
    assert v.returncode == r.returncode == 2, (v.stderr, r.stderr)
    assert "rate=200" in v.stderr and v.stderr.splitlines()[-1] == r.stderr.splitlines()[-1], (v.stderr, r.stderr)
    assert not (tmp_path / "c.results" / "env").exists()                    # nothing booked


def test_counts_add_up_when_runs_fail(env, tmp_path):
    camp = tmp_path / "c.yaml"
    camp.write_text(textwrap.dedent("""\
        parameters: {n: [1, 2, 3]}
        steps:
          - {roles: [worker], run: "test {{ n }} != 2"}
        """))
    p = enos_cli(tmp_path, "campaign", "run", str(camp), "--env", str(env.env_dir), check=False)
    assert p.returncode == 1
    st = json.loads(enos_cli(tmp_path, "campaign", "status", str(camp), "-o", "json").stdout)
    assert {k: st[k] for k in ("done", "remaining", "in_progress", "failed", "total")} == \
        {"done": 2, "remaining": 0, "in_progress": 0, "failed": 1, "total": 3}


def test_a_rerun_sweep_returns_what_was_measured(tmp_path, capfd):
    def body():
        loop = enos.campaign.sweep({"size": [1, 4]}, results=tmp_path / "out", repeat=2)
        for p in loop:
            (p.dir / "raw.txt").write_text("x" * p["size"])
            p.record(bytes=p["size"] * 1024)
        return loop
    first = body()
    assert first.ran == 4
    capfd.readouterr()
    again = body()                                   # the cell run again: nothing left to do
    assert again.ran == 0
    assert "nothing left to do" in capfd.readouterr().err
    got = [(r["size"], r["repeat"], r["bytes"], Path(r["dir"]).name) for r in again.results()]
    assert got == [(1, 1, 1024, "1"), (1, 2, 1024, "2"), (4, 1, 4096, "1"), (4, 2, 4096, "2")]
    assert all((Path(r["dir"]) / "raw.txt").read_text() == "x" * r["size"] for r in again.results())
    assert list(again.to_dataframe()["bytes"]) == [1024, 1024, 4096, 4096]
