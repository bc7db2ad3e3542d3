"""Network constraints on two real VMs (libvirt provider, real libvirtd + QEMU/TCG): the
Debian guest kernel has sch_netem, so a delay really takes effect. ``enos up`` applies
the constraints (``enable: true``), ``enos tc --test`` measures the round-trip time between
the two VMs with real UDP echoes and the rate with a real TCP transfer (both must be what
was asked: a failed measurement fails the test), and ``enos tc --reset`` removes the qdiscs (the same probes then show the VMs' own RTT).

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
RATE_MBIT = 20


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
            assert abs(m["rtt_ms"] - 2 * DELAY_MS) <= 0.2 * 2 * DELAY_MS, m      # real UDP echoes
            # the rate is measured too (a real TCP transfer) and must be the one asked for:
            # a failed or missing measurement fails the test
            assert m["rate_requested_bit"] == RATE_MBIT * 10**6, m
            assert m["rate_bit"] is not None and abs(m["rate_bit"] - RATE_MBIT * 10**6) <= 0.15 * RATE_MBIT * 10**6, m
        assert report["ok"] and t.returncode == 0, (t.stdout[-2000:], t.stderr[-2000:])
        # without the constraints, the same probes: the delay was the netem qdisc's
        r = _enos(libvirtd, tmp_path, "tc", "--reset", "--env", str(env))
        assert r.returncode == 0, r.stderr[-2000:]
        base = _enos(libvirtd, tmp_path, "tc", "--test", "--env", str(env), "-o", "json")
        baseline = json.loads(base.stdout)["test"]
        print(json.dumps(baseline, indent=2))
        assert base.returncode == 1                     # 100 ms asked, not there any more
        for m in baseline["measures"]:
            assert m["rtt_ms"] < DELAY_MS, m
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
