"""End to end on the ``local`` provider (real namespace hosts, real sshd, real ansible):
a reduced campaign killed -9 in the middle and resumed, its CSV, figures and report, a
second campaign on the same results refused, failures recorded, the report opened in a
real headless Chromium, and the iperf3 example's throughput against its rate limits."""
from __future__ import annotations

import base64
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enoscli import enos

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent

RESERVATION = "provider: local\nresources:\n  local:\n    worker: 2\n"

CAMPAIGN = """\
reservation: reservation.yaml
parameters:
  size: [1, 2]
  mode: [x, y]
repeat: 2
setup:
  - run: "mkdir -p {count}"
steps:
  - roles: [worker]
    run: "echo {{{{ size }}}}-{{{{ mode }}}}-{{{{ repeat }}}} >> {count}/$(hostname) && sleep 2 && echo value=$(( {{{{ size }}}} * 10 ))"
    collect: stdout
  - roles: [worker-1]
    run: 'echo {{{{ hosts.worker[1].address }}}} > /dev/null && echo "{{\\"half\\": {{{{ size }}}}.5}}" > {count}/out.json'
    collect: {{files: ["{count}/out.json"]}}
metrics:
  score: {{regex: "value=([0-9]+)"}}
  half: {{json: half, from: out.json, scale: 2}}
monitor: true
"""

COMBOS = [(s, m) for s in (1, 2) for m in ("x", "y")]
REPEAT = 2


def _status(cwd) -> dict:
    return json.loads(enos(cwd, "campaign", "status", "camp.yaml", "-o", "json", timeout=120).stdout)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """Run the reduced campaign: kill -9 the first `enos campaign run` while a run is in
    progress (a second one started meanwhile must be refused), resume it, report it."""
    d = tmp_path_factory.mktemp("campaign")
    count = d / "count"
    (d / "reservation.yaml").write_text(RESERVATION)
    (d / "camp.yaml").write_text(CAMPAIGN.format(count=count))
    info = {"dir": d, "count": count}
    env_dir = d / "camp.results" / "env"
    t0 = time.monotonic()
    first = subprocess.Popen([sys.executable, "-m", "enos", "campaign", "run", "camp.yaml"], cwd=d,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 400
        while True:
            assert first.poll() is None, first.stdout.read().decode()
            assert time.monotonic() < deadline, "the campaign did not get to its 4th run"
            st = _status(d)
            if st["done"] >= 3 and st["in_progress"] == 1:
                break
            time.sleep(0.3)
        # a second campaign on the same results dir, while the first one lives
        info["second"] = enos(d, "campaign", "run", "camp.yaml", check=False, timeout=120)
        info["first_pid"] = first.pid
        # the first one went on meanwhile: kill it inside a run (its 2 s step), not in the
        # few ms between two runs where execo's sweeper is writing its record
        while _status(d)["in_progress"] != 1:
            assert first.poll() is None and time.monotonic() < deadline, "no run in progress any more"
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        info["at_kill"] = _status(d)
        info["done_before_kill"] = _done_runs(d)
        t1 = time.monotonic()
        info["resume"] = enos(d, "campaign", "run", "camp.yaml", timeout=900)
        info["resume_seconds"] = time.monotonic() - t1
        info["total_seconds"] = time.monotonic() - t0
        info["final"] = _status(d)
        info["report"] = enos(d, "campaign", "report", "camp.yaml", timeout=300)
        yield info
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stdout.close()
        if (env_dir / "state.json").exists():
            enos(d, "destroy", "--env", str(env_dir), check=False, timeout=300)


def _done_runs(d: Path):
    """The runs execo's sweeper marked done (read from the results, not from enos)."""
    out = set()
    for r in (d / "camp.results" / "runs").glob("*/*/result.json"):
        if json.loads(r.read_text())["status"] == "ok":
            params = json.loads((r.parent / "params.json").read_text())
            out.add(f"{params['size']}-{params['mode']}-{params['repeat']}")
    return out


def test_kill_9_then_resume_redoes_only_the_run_in_progress(campaign):
    at_kill, final = campaign["at_kill"], campaign["final"]
    print(f"reduced campaign (4 combinations x 2 repetitions, 2 hosts): {campaign['total_seconds']:.1f}s "
          f"in all (hosts up, killed -9 after {at_kill['done']} runs, resumed in "
          f"{campaign['resume_seconds']:.1f}s)")
    assert at_kill["done"] >= 3 and at_kill["in_progress"] == 1 and at_kill["owner"] is None
    assert {k: final[k] for k in ("done", "remaining", "in_progress", "failed", "total")} == \
        {"done": 8, "remaining": 0, "in_progress": 0, "failed": 0, "total": 8}
    done_before = campaign["done_before_kill"]
    assert len(done_before) == at_kill["done"]
    # count the executions on the hosts themselves: one line per execution, per host file
    files = sorted(p for p in campaign["count"].iterdir() if p.name.startswith("worker-"))
    assert len(files) == 2
    for f in files:
        lines = f.read_text().split()
        every = {f"{s}-{m}-{r}" for s, m in COMBOS for r in range(1, REPEAT + 1)}
        assert set(lines) == every
        for run in done_before:
            assert lines.count(run) == 1, (run, lines)      # finished before the kill: never redone
        redone = [r for r in every if lines.count(r) > 1]
        assert len(redone) <= 1 and len(lines) <= 9, lines  # at most the run in progress, once more


def test_second_campaign_on_the_same_results_is_refused(campaign):
    p = campaign["second"]
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert f"in use by process {campaign['first_pid']}" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_results_csv_has_one_row_per_run_metric_and_host(campaign):
    d = campaign["dir"] / "camp.results"
    with open(d / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["size", "mode", "repeat", "host", "role", "metric", "value", "unit"]
    metrics = {r["metric"] for r in rows}
    assert {"score", "half", "monitor_cpu_percent", "monitor_mem_used_mib", "monitor_net_rx_bytes",
            "monitor_net_tx_bytes", "monitor_disk_read_bytes", "monitor_disk_write_bytes",
            "monitor_cpu_busy_seconds"} <= metrics
    assert {r["role"] for r in rows} == {"worker"}
    hosts = {r["host"] for r in rows}
    assert len(hosts) == 2
    for metric in metrics:
        for host in hosts:
            if metric == "half" and host != "worker-1":       # only worker-1 collects out.json
                assert not [r for r in rows if r["metric"] == metric and r["host"] == host]
                continue
            mine = [r for r in rows if r["metric"] == metric and r["host"] == host]
            assert len(mine) == len(COMBOS) * REPEAT, (metric, host, len(mine))
            assert {(r["size"], r["mode"], r["repeat"]) for r in mine} == \
                {(str(s), m, str(rep)) for s, m in COMBOS for rep in range(1, REPEAT + 1)}
    for r in rows:
        if r["metric"] == "score":
            assert float(r["value"]) == 10 * int(r["size"])
        if r["metric"] == "half":
            assert float(r["value"]) == 2 * int(r["size"]) + 1
    run = d / "runs" / "size=1,mode=x" / "1"
    assert json.loads((run / "params.json").read_text()) == {"size": 1, "mode": "x", "repeat": 1}
    timing = json.loads((run / "timing.json").read_text())
    assert [s["name"] for s in timing["steps"]] == ["step 1", "step 2"] and timing["duration"] > 2
    with open(run / "monitor.csv", newline="") as f:
        mon = list(csv.DictReader(f))
    assert {m["host"] for m in mon} == hosts
    assert all(0 <= float(m["cpu_percent"]) <= 100 for m in mon if m["kind"] != "start")
    totals = json.loads((run / "monitor.json").read_text())["totals"]
    for h in hosts:                   # one sample at the start and one at the end of every run
        mine = [m for m in mon if m["host"] == h]
        assert mine[0]["kind"] == "start" and mine[-1]["kind"] == "end"
        assert int(mine[-1]["net_tx_bytes"]) == totals[h]["net_tx_bytes"] > 0


def _png_ok(path: Path):
    from PIL import Image
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_figures_are_valid_pngs_with_the_expected_names(campaign):
    figdir = campaign["dir"] / "camp.results" / "figures"
    names = {p.name for p in figdir.glob("*.png")}
    # the default set: one per metric, x the first varied parameter, hue the second
    expected = {f"{m}-vs-size.png" for m in ("score", "half", "monitor_cpu_percent", "monitor_mem_used_mib",
                                             "monitor_net_rx_bytes", "monitor_net_tx_bytes")}
    assert names == expected
    for n in names:
        _png_ok(figdir / n)


def test_report_embeds_every_figure(campaign):
    d = campaign["dir"] / "camp.results"
    html = (d / "report.html").read_text()
    for png in (d / "figures").glob("*.png"):
        assert "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode() in html, png.name
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//|file:)""", html)
    for words in ("size", "mode", "Reservation", "worker: 2", "enos", "Hosts", "provider local"):
        assert words in html
    env = json.loads((d / "environment.json").read_text())
    assert len(env["hosts"]) == 2 and all(h["os"] and h["kernel"] for h in env["hosts"]), env
    for h in env["hosts"]:
        assert h["os"] in html and h["kernel"] in html


PROBE = """<script>window.addEventListener('load', function () {
  var im = document.images, ok = 0, inline = 0;
  for (var i = 0; i < im.length; i++) {
    if (im[i].complete && im[i].naturalWidth > 0) ok++;
    if (im[i].currentSrc.indexOf('data:image/png;base64,') === 0) inline++;
  }
  var res = performance.getEntriesByType('resource').map(function (e) { return e.name; });
  var d = document.createElement('div'); d.id = 'enos-probe';
  d.textContent = JSON.stringify({images: im.length, loaded: ok, inline: inline, fetched: res});
  document.body.appendChild(d);
});</script>"""


def _chromium(args, tmp: Path, name: str) -> subprocess.CompletedProcess:
    from chromium import chromium
    return chromium(args, tmp, name)


def test_report_in_headless_chromium(campaign, tmp_path):
    report = campaign["dir"] / "camp.results" / "report.html"
    n_figures = len(list((report.parent / "figures").glob("*.png")))
    probed = tmp_path / "probed.html"      # the report plus a script that reports what loaded
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    p = _chromium(["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], tmp_path, "dom")
    m = re.search(r'<div id="enos-probe">([^<]*)</div>', p.stdout)
    assert m, p.stdout[-2000:] + p.stderr[-2000:]
    probe = json.loads(m.group(1).replace("&quot;", '"'))
    assert probe["images"] == probe["loaded"] == probe["inline"] == n_figures, probe
    assert probe["fetched"] == [], probe          # every figure is inline: nothing was fetched
    import enos as enos_pkg
    for words in ("Report made 20", f"by enos {enos_pkg.__version__}", "Provenance", "Scripts and files",
                  "the default set (no figures: section)", "Archive"):
        assert words in p.stdout, words               # as the browser built the page
    shot = tmp_path / "shot.png"
    p = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri()], tmp_path, "shot")
    assert shot.exists(), p.stderr[-2000:]
    from PIL import Image, ImageStat
    with Image.open(shot) as im:
        stat = ImageStat.Stat(im.convert("L"))
    assert stat.var[0] > 100, stat.var           # not a blank page


FAILING = """\
parameters:
  n: [1, 2, 3]
steps:
  - run: "test {{ n }} != 2 || { echo two is refused >&2; exit 3; }"
    roles: [worker]
  - run: "if [ {{ n }} = 3 ]; then sleep 60; fi; echo value={{ n }}"
    roles: [worker]
    timeout: 3
    collect: stdout
metrics:
  v: {regex: "value=([0-9]+)"}
"""


def test_failed_runs_are_recorded_and_the_campaign_goes_on(campaign):
    d = campaign["dir"]
    (d / "fail.yaml").write_text(FAILING)
    env = str(d / "camp.results" / "env")
    p = enos(d, "campaign", "run", "fail.yaml", "--env", env, check=False, timeout=300)
    assert p.returncode == 1 and "2 run(s) failed" in p.stderr, (p.stdout, p.stderr)
    st = json.loads(enos(d, "campaign", "status", "fail.yaml", "-o", "json").stdout)
    assert (st["done"], st["failed"], st["total"]) == (1, 2, 3)
    errors = {f["run"]["n"]: f["error"] for f in st["failures"]}
    assert "exit 3" in errors[2] and "two is refused" in errors[2]
    assert "timed out" in errors[3]
    text = enos(d, "campaign", "status", "fail.yaml").stdout
    assert "FAILED n=2, repeat=1" in text
    # --stop-on-error stops at the first failure (n=2 again: failed runs are retried)
    p = enos(d, "campaign", "run", "fail.yaml", "--env", env, "--stop-on-error", check=False, timeout=300)
    assert p.returncode == 1 and "--stop-on-error" in p.stderr, p.stderr
    st = json.loads(enos(d, "campaign", "status", "fail.yaml", "-o", "json").stdout)
    assert st["failed"] == 2 and st["done"] == 1


def test_iperf_example_throughput_within_its_rate_limits(tmp_path):
    """The shipped example, unchanged (setup playbook, network constraints, 3 repetitions):
    every measured throughput is below its rate limit and above half of it."""
    example = REPO / "examples" / "iperf-campaign" / "campaign.yaml"
    results = tmp_path / "iperf.results"
    try:
        t0 = time.monotonic()
        enos(tmp_path, "campaign", "run", str(example), "--results", str(results), "--destroy", timeout=1800)
        elapsed = time.monotonic() - t0
        state = json.loads((results / "env" / "state.json").read_text())
        assert state["phase"] == "destroyed"          # --destroy gave the hosts back
        from localhosts import leftovers
        assert leftovers(state["run_id"]) == []
        enos(tmp_path, "campaign", "report", str(example), "--results", str(results), timeout=300)
    finally:
        if (results / "env" / "state.json").exists():    # idempotent: frees what a failure left
            enos(tmp_path, "destroy", "--env", str(results / "env"), check=False, timeout=300)
    with open(results / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "throughput_mbps"]
    assert len(rows) == 8 * 3
    table = {}
    for r in rows:
        limit = float(r["rate"].removesuffix("mbit"))
        value = float(r["value"])
        assert limit / 2 < value < limit, r
        table.setdefault((r["rate"], r["clients"]), []).append(value)
    summary = {f"{k[0]} x{k[1]}": [round(v, 2) for v in vs] for k, vs in table.items()}
    print(f"iperf example: {elapsed:.0f}s; {json.dumps(summary)}")
    # the figures chosen in its 'figures:' section
    assert sorted(p.name for p in (results / "figures").glob("*.png")) == ["bytes-sent-by-role.png", "throughput.png"]
    for png in (results / "figures").glob("*.png"):
        _png_ok(png)
    print(f"FIGURE chosen with figures: {results / 'figures' / 'throughput.png'}")
    # one archive of it all, checked, whose manifest the report shows
    out = tmp_path / "iperf-campaign.tar.gz"
    enos(tmp_path, "archive", "--campaign", str(example), "--results", str(results), "-o", str(out))
    check = enos(tmp_path, "archive", "--check", str(out))
    assert " ok — " in check.stdout, check.stdout
    import tarfile
    with tarfile.open(out) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    manifest = json.loads(files["MANIFEST.json"])
    for name in ("campaign/campaign.yaml", "campaign/files/setup.yml", "campaign/files/reservation.yaml",
                 "env/state.json", "env/provider.json", "env/facts.json", "results/results.csv",
                 "results/figures/throughput.png", "results/report.html", "software/pip-freeze.txt"):
        assert name in manifest["files"], name
    report = files["results/report.html"].decode()
    assert manifest["files"]["results/results.csv"]["sha256"] in report       # the report shows the manifest
    assert f"by enos {manifest['meta']['enos']}" in report and "Report made 20" in report
    print("FIGURE manifest of the iperf example's archive:\n" + json.dumps(manifest, indent=1)[:6000])


SLOW = """\
parameters:
  n: [1, 2]
setup:
  - play: noop.yml        # ansible-runner in this process first: it replaces the signal handlers
steps:
  - run: "echo started-{{ n }}; sleep 120"
    roles: [worker]
    timeout: 300
monitor: true
"""


def test_ctrl_c_exits_130_quickly_and_leaves_no_process(campaign):
    """SIGINT to the process group of `enos campaign run` (as a terminal's Ctrl-C) in the
    middle of a run: exit 130 within 2 s, nothing of its group left; the run is redone."""
    d = campaign["dir"]
    (d / "slow.yaml").write_text(SLOW)
    (d / "noop.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    env = str(d / "camp.results" / "env")
    p = subprocess.Popen([sys.executable, "-m", "enos", "campaign", "run", "slow.yaml", "--env", env],
                         cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((d / "slow.results" / "runs").glob("*/1/params.json")) or \
                json.loads(enos(d, "campaign", "status", "slow.yaml", "-o", "json").stdout)["in_progress"] != 1:
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.3)
        time.sleep(2)                        # inside the step's sleep
        t = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - t
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 130, err
    from promise import assert_interrupted_in_time
    assert_interrupted_in_time("SIGINT during a campaign run", took)
    assert "interrupted" in err and "Traceback" not in err
    # on the hosts, at once: no sampling loop of its monitor (tagged enos-monitor-<its pid>-...)
    import enos as enos_api
    count = (f"t='enos-mon''itor-{p.pid}-'; n=0; for d in /proc/[0-9]*; do "
             "case \"$(tr '\\000' ' ' < $d/cmdline 2>/dev/null)\" in *\"$t\"*) n=$((n+1));; esac; done; echo $n")
    on_hosts = {r.host.alias: r.stdout.strip() for r in enos_api.load(env).run(count)}
    assert on_hosts == {"worker-1": "0", "worker-2": "0"}, on_hosts
    # execo's conductor helper (a process execo forks at import) polls its parent once a
    # second and exits when it is gone: give it that second
    deadline = time.monotonic() + 5
    while True:
        left = subprocess.run(["ps", "-o", "pid=,args=", "-s", str(p.pid)], capture_output=True,
                              text=True).stdout
        if not left.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left.strip() == "", left
    st = json.loads(enos(d, "campaign", "status", "slow.yaml", "-o", "json").stdout)
    assert (st["done"], st["in_progress"], st["owner"]) == (0, 1, None)


ENV_SWEEP = """\
import sys
import enos
env = enos.load(sys.argv[1])
results, count = sys.argv[2], sys.argv[3]
for p in env.sweep({"n": [1, 2, 3, 4]}, results=results):
    env.run(f"echo {p['n']} >> {count}/sweep-$(hostname)", roles="worker")
    if p["n"] == 3 and len(sys.argv) > 4:
        env.run("sleep 60", roles="worker", timeout=120)      # killed -9 here
"""


def test_env_sweep_in_a_script_resumes_after_kill_9(campaign):
    """`for p in env.sweep(...)` in a user's script, killed -9 inside the third
    combination: the next run of the script redoes the third and does the fourth only
    (counted on the hosts)."""
    d = campaign["dir"]
    script = d / "sweep_script.py"
    script.write_text(ENV_SWEEP)
    env, results, count = str(d / "camp.results" / "env"), str(d / "sweep.results"), campaign["count"]
    p = subprocess.Popen([sys.executable, str(script), env, results, str(count), "hang"], cwd=d)
    try:
        deadline = time.monotonic() + 120
        while not all("3" in f.read_text().split() for f in count.glob("sweep-*")) or \
                len(list(count.glob("sweep-*"))) != 2:
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.2)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    subprocess.run([sys.executable, str(script), env, results, str(count)], cwd=d, check=True, timeout=300)
    for f in count.glob("sweep-*"):
        assert f.read_text().split() == ["1", "2", "3", "3", "4"], (f.name, f.read_text())


UNREACHABLE = """\
parameters:
  n: [1, 2]
steps:
  - run: "echo hello {{ n }}"
    timeout: 8
"""


def test_unreachable_host_fails_the_run_and_the_campaign_goes_on(campaign):
    """One host's namespace loses its link (packets dropped): each run fails with that
    host named and the error recorded, the campaign goes through every run."""
    d = campaign["dir"]
    env_dir = d / "camp.results" / "env"
    hosts = json.loads((env_dir / "state.json").read_text())["resources"]["hosts"]
    victim = [h for h in hosts if h["alias"] == "worker-2"][0]
    ns = victim["extra"]["enos_netns"]
    links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True, check=True).stdout
    dev = [l.split(":")[1].strip().split("@")[0] for l in links.splitlines() if ": lo:" not in l][0]
    (d / "unreachable.yaml").write_text(UNREACHABLE)
    subprocess.run(["ip", "-n", ns, "link", "set", dev, "down"], check=True)
    try:
        p = enos(d, "campaign", "run", "unreachable.yaml", "--env", str(env_dir), check=False, timeout=300)
    finally:
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
    assert p.returncode == 1 and "2 run(s) failed" in p.stderr, (p.stdout, p.stderr)
    st = json.loads(enos(d, "campaign", "status", "unreachable.yaml", "-o", "json").stdout)
    assert (st["done"], st["failed"], st["total"]) == (0, 2, 2)
    for f in st["failures"]:
        assert "worker-2" in f["error"] and "worker-1" not in f["error"], f
    # worker-1 did its part of each run
    for n in (1, 2):
        out = d / "unreachable.results" / "runs" / f"n={n}" / "1" / "worker-1" / "1.stdout"
        assert out.read_text() == f"hello {n}\n"
