"""Network constraints on two real VMs (libvirt provider, real libvirtd + QEMU/TCG): the
Debian guest kernel has sch_netem, so a delay really takes effect. ``enos up`` applies
the constraints (``enable: true``), ``enos tc --test`` measures the round-trip time between
the two VMs with real UDP echoes and the rate with a real TCP transfer (a failed measurement
fails the test; the delay is never undercut nor the rate exceeded, and load, which only adds
delay and removes throughput in TCG guests, is allowed for on that side: see RTT_SLACK_UP),
and ``enos tc --reset`` removes the qdiscs (the same probes then show the VMs' own RTT and
rate).

Slow: two VMs booting under TCG (~1-3 min), see tests/test_libvirt_real.py.
"""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_libvirt_real import _enos, libvirtd  # noqa: E402,F401  (the session fixture)
from libvirtd_fixture import leftovers  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.libvirtd]

DELAY_MS = 50
#: a rate well below what two TCG guests move between them here (asked 20 Mbit, they moved
#: only 8.2-8.5 under load 12), so the baseline after 'tc --reset' is clearly faster
RATE_MBIT = 2
#: Load only ever ADDS delay and REMOVES throughput in these guests: QEMU/TCG vCPUs on 2
#: shared cores are descheduled for tens of ms, so netem's and htb's timers fire late.
#: Measured under load 10-12: asked 20 Mbit -> 8.2/8.5 Mbit (CI failure); asked 2 Mbit ->
#: 1.48/1.81 Mbit with the minimum RTT 108/133 ms for 100 asked. So the physical side is
#: checked tight (the delay is never undercut, the rate never exceeded beyond the
#: tolerance) and the side load moves is checked loose (up to 1.5x the RTT, down to half the
#: rate); the baseline without the constraints (RTT < the delay, rate above the limit's
#: band) shows they were what made the difference.
RTT_SLACK_UP = 1.5
RATE_SLACK_DOWN = 0.5


def test_delay_really_takes_effect_between_two_vms(libvirtd, tmp_path):
    res = tmp_path / "reservation.yaml"
    res.write_text(f"""provider:
  type: libvirt
  uri: "{libvirtd.uri}"
  image: {libvirtd.image}
  jump: {libvirtd.jump}
  boot_timeout: 420
resources:
  tiny:
    control: 1
    compute: 1
network_constraints:
  enable: true
  default_delay: {DELAY_MS}ms
  default_rate: {RATE_MBIT}Mbit
""")
    env = tmp_path / "env"
    p = _enos(libvirtd, tmp_path, "up", "-f", str(res), "--env", str(env))
    run_id = json.loads((env / "state.json").read_text())["run_id"]
    try:
        assert p.returncode == 0, p.stderr[-3000:]
        facts = _enos(libvirtd, tmp_path, "info", "--facts", "--env", str(env), "-o", "json")
        assert facts.returncode == 0, facts.stderr[-2000:]
        assert {f["netem"] for f in json.loads(facts.stdout).values()} <= {"loaded", "module", "builtin"}
        # the guests' own view: a netem qdisc with the delay under enos' htb class
        q = _enos(libvirtd, tmp_path, "run", "--env", str(env), "tc qdisc show; tc class show dev eth0")
        assert q.returncode == 0, q.stderr[-2000:]
        assert q.stdout.count(f"delay {DELAY_MS}ms") == 2 and q.stdout.count("qdisc htb 1: dev eth0 root") == 2, q.stdout
        t = _enos(libvirtd, tmp_path, "tc", "--test", "--env", str(env), "-o", "json")
        report = json.loads(t.stdout)["test"]
        print(json.dumps(report, indent=2))
        assert {(m["src"], m["dst"]) for m in report["measures"]} == {("control", "compute"), ("compute", "control")}
        for m in report["measures"]:
            assert m["rtt_requested_ms"] == 2 * DELAY_MS
            # real UDP echoes; rtt_ms is the smallest of the probes': netem never undercuts its delay
            assert m["error"] is None and m["rtt_ms"] is not None, m
            assert 0.98 * 2 * DELAY_MS <= m["rtt_ms"] <= RTT_SLACK_UP * 2 * DELAY_MS, m
            # the rate is measured too (a real TCP transfer): a failed or missing measurement
            # fails the test, and htb never lets more through than asked (+ the tolerance)
            assert m["rate_requested_bit"] == RATE_MBIT * 10**6, m
            assert m["rate_bit"] is not None, m
            assert RATE_SLACK_DOWN * RATE_MBIT * 10**6 <= m["rate_bit"] <= 1.15 * RATE_MBIT * 10**6, m
        # enos' own verdict is 0 (as asked) or 1 (the load made it slower: it says which)
        assert t.returncode == (0 if report["ok"] else 1), (t.stdout[-2000:], t.stderr[-2000:])
        # without the constraints, the same probes: the delay was the netem qdisc's
        r = _enos(libvirtd, tmp_path, "tc", "--reset", "--env", str(env))
        assert r.returncode == 0, r.stderr[-2000:]
        base = _enos(libvirtd, tmp_path, "tc", "--test", "--env", str(env), "-o", "json")
        baseline = json.loads(base.stdout)["test"]
        print(json.dumps(baseline, indent=2))
        assert base.returncode == 1                     # 100 ms asked, not there any more
        for m in baseline["measures"]:
            assert m["rtt_ms"] < DELAY_MS, m
            assert m["rate_bit"] is not None and m["rate_bit"] > 1.15 * RATE_MBIT * 10**6, m    # the guests can go faster
        a = _enos(libvirtd, tmp_path, "tc", "--env", str(env))
        assert a.returncode == 0 and a.stdout.count(": applied") == 2, a.stdout + a.stderr[-2000:]
        r = _enos(libvirtd, tmp_path, "tc", "--reset", "--env", str(env))
        assert r.returncode == 0, r.stderr[-2000:]
        q = _enos(libvirtd, tmp_path, "run", "--env", str(env), "tc qdisc show dev eth0")
        assert "netem" not in q.stdout and "htb" not in q.stdout, q.stdout
    finally:
        d = _enos(libvirtd, tmp_path, "destroy", "--env", str(env))
        assert d.returncode == 0, d.stderr[-2000:]
    assert leftovers(libvirtd.uri, run_id) == []
