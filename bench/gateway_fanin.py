"""Measure (not a test): N hosts reached through ONE real sshd jump host that enforces
OpenSSH's default ``MaxStartups 10:30:100`` / ``MaxSessions 10`` (tests/gatewaybed.py), with
the ``static`` provider (every host ``jump: root@<gateway>``):

* ``enos up --no-provision`` (waits for SSH on every host), then ``enos run hostname``,
  optionally ``enos up`` again with the provisioning (``--play``);
* while each runs, ``ss`` samples the TCP connections to the gateway every 0.1 s;
* afterwards: the gateway's log (connections accepted, dropped past MaxStartups), the
  commands' exit codes, time, and per-host failures;
* ``--compare``: plain ``ssh HOST hostname`` to every host at once, masters closed (cold)
  then open (hot), with the ssh_config shape enos writes (one master per jump host,
  ProxyCommand through it) against the baseline ProxyJump per host, interleaved
  ``--repeat`` times in the same run.

As root, from the repository::

    .venv/bin/python bench/gateway_fanin.py [--hosts 200] [--ssh-timeout 180] [--play]
                                            [--compare] [--repeat 2] [--json FILE]

The network guard of the test suite runs in the enos processes it starts.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))


def reservation(bed, path: Path) -> Path:
    """A static reservation of every host of ``bed``, each through the gateway."""
    lines = ["provider:", "  type: static", "resources:", "  node:"]
    for i, ip in enumerate(bed.host_ips, 1):
        lines.append(f"    - {{address: {ip}, alias: h{i}, user: root, keyfile: {bed.client_key}, "
                     f"jump: root@{bed.gw_ip}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


def timed_enos(args, env, timeout: float, sampler_ip: str, cwd: Path) -> dict:
    """Run ``enos ARGS`` while sampling connections to the gateway; return the figures."""
    from gatewaybed import SsSampler
    argv = [sys.executable, "-m", "enos", *args]
    t0 = time.monotonic()
    with SsSampler(sampler_ip, interval=0.1) as s:
        p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGTERM)
            out, err = p.communicate(timeout=30)
    took = time.monotonic() - t0
    samples = s.samples
    return {"cmd": "enos " + " ".join(a for a in args if not a.startswith("/")), "rc": p.returncode,
            "seconds": round(took, 1), "peak_connections": max(samples, default=0),
            "mean_connections": round(sum(samples) / max(1, len(samples)), 1), "samples": len(samples),
            "stdout": out, "stderr": err[-3000:]}


def run_failures(stdout: str) -> int:
    """Number of hosts where ``enos run -o json`` did not exit 0 (-1 if unreadable)."""
    try:
        data = json.loads(stdout)
    except ValueError:
        return -1
    rows = data if isinstance(data, list) else data.get("results", [])
    return sum(1 for r in rows if r.get("exit_code", r.get("rc")) != 0)


def _plain_fanout(bed, cfg: Path, n: int) -> dict:
    """``ssh -F cfg hI hostname`` for every host at once; return time, failures, peak, drops."""
    from gatewaybed import SsSampler
    drops = bed.dropped()
    t = time.monotonic()
    with SsSampler(bed.gw_ip, interval=0.05) as s:
        ps = [subprocess.Popen(["ssh", "-F", str(cfg), f"h{i}", "hostname"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL) for i in range(1, n + 1)]
        rcs = [p.wait() for p in ps]
    return {"seconds": round(time.monotonic() - t, 1), "failed": sum(1 for r in rcs if r),
            "peak_connections": s.peak, "dropped": bed.dropped() - drops}


def compare(bed, work: Path, repeat: int) -> dict:
    """Plain ssh fan-outs, enos' shape vs ProxyJump per host, cold and hot, interleaved."""
    import shutil
    from enos.ssh import jump
    from gatewaybed import ssh_config
    cdir = Path(tempfile.mkdtemp(prefix="gwb-"))      # short: socket paths are limited
    out: dict = {}
    try:
        for r in range(repeat):
            for name, fanin in (("proxyjump", False), ("enos", True)):
                cfg = work / f"ssh_config.{name}"
                ssh_config(bed, cfg, cdir, fanin)
                for sock in list(cdir.iterdir()):
                    subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True)
                if fanin:
                    jump.ensure_for(cfg, ["h1"])      # what enos does before a fan-out
                for mode in ("cold", "hot"):
                    row = _plain_fanout(bed, cfg, len(bed.host_ips))
                    out.setdefault(f"{name} {mode}", []).append(row)
                    print(f"  ssh fan-out {name:9s} {mode}: {row}", flush=True)
        for sock in list(cdir.iterdir()):
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True)
    finally:
        shutil.rmtree(cdir, ignore_errors=True)
    return out


def close_masters(envdir: Path) -> None:
    """Close the env's SSH connection masters (as ControlPersist's expiry would)."""
    sys.path.insert(0, str(ROOT))
    from enos.ssh.client import stop_masters
    stop_masters(json.loads((envdir / "state.json").read_text())["run_id"])


def main(argv=None) -> int:
    """Measure and print; return 0 (this is a measurement, not a verdict)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--ssh-timeout", type=float, default=180)
    ap.add_argument("--run-timeout", type=float, default=300)
    ap.add_argument("--play", action="store_true", help="also 'enos up' with the provisioning playbook")
    ap.add_argument("--delay-ms", type=float, default=0.0,
                    help="one-way delay to the gateway (a relay: the kernel has no netem), e.g. 10")
    ap.add_argument("--compare", action="store_true",
                    help="also plain ssh fan-outs: enos' ssh_config shape vs ProxyJump per host")
    ap.add_argument("--repeat", type=int, default=2, help="repetitions of --compare")
    ap.add_argument("--json", help="write the figures there")
    a = ap.parse_args(argv)
    from gatewaybed import GatewayBed
    work = Path(tempfile.mkdtemp(prefix="enos-gw-bench-"))
    figures = {"hosts": a.hosts}
    env = {**os.environ, "ENOS_NETGUARD": "1", "ENOS_NETGUARD_LOG": str(work / "netguard.log"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "netguard"), str(ROOT)])}
    agent = None
    bed = GatewayBed(work / "bed", hosts=a.hosts, delay_ms=a.delay_ms)
    figures["delay_ms"] = a.delay_ms
    t = time.monotonic()
    bed.start()
    figures["testbed_start_s"] = round(time.monotonic() - t, 1)
    try:
        from gatewaybed import start_agent
        agent = start_agent(bed.client_key, work / "agent.sock")
        env["SSH_AUTH_SOCK"] = str(work / "agent.sock")
        res = reservation(bed, work / "reservation.yaml")
        envdir = work / "env"
        run = ["run", "--env", str(envdir), "-o", "json", "--timeout", "60", "hostname"]
        steps = [("up", ["up", "-f", str(res), "--env", str(envdir), "--no-provision",
                         "--ssh-timeout", str(int(a.ssh_timeout))], a.ssh_timeout + 120),
                 ("run", run, a.run_timeout),
                 # the next morning: ControlPersist expired, every connection master is gone
                 ("run-cold", run, a.run_timeout)]
        if a.play:
            steps.append(("play", ["up", "-f", str(res), "--env", str(envdir), "--ssh-timeout",
                                   str(int(a.ssh_timeout))], a.ssh_timeout + 900))
        for name, args, timeout in steps:
            if name == "run-cold":
                close_masters(envdir)
            before = (bed.accepted(), bed.dropped())
            r = timed_enos(args, env, timeout, bed.gw_ip, work)
            r["gateway_accepted"] = bed.accepted() - before[0]
            r["gateway_dropped"] = bed.dropped() - before[1]
            if name.startswith("run"):
                r["hosts_failed"] = run_failures(r["stdout"])
            r["stdout"] = r["stdout"][-2000:]
            figures[name] = r
            print(f"{name:5s} rc={r['rc']} {r['seconds']:7.1f} s  peak {r['peak_connections']:3d} / mean "
                  f"{r['mean_connections']:5.1f} TCP connections to the gateway; gateway accepted "
                  f"{r['gateway_accepted']}, dropped {r['gateway_dropped']} past MaxStartups"
                  + (f"; hosts failed {r['hosts_failed']}" if "hosts_failed" in r else ""), flush=True)
            if r["rc"] != 0:
                print("   " + (r["stderr"].strip().splitlines() or ["(no stderr)"])[-1][:300], flush=True)
        subprocess.run([sys.executable, "-m", "enos", "destroy", "--env", str(envdir)], env=env, cwd=work,
                       capture_output=True, timeout=300)
        if a.compare:
            figures["compare"] = compare(bed, work, a.repeat)
        guard = (work / "netguard.log").read_text() if (work / "netguard.log").exists() else ""
        figures["netguard_refusals"] = len(guard.splitlines())
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=10)
        bed.stop()
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))
    print(f"testbed: {a.hosts} hosts up in {figures['testbed_start_s']} s, gateway one-way delay "
          f"{a.delay_ms:g} ms; network guard refusals: "
          f"{figures.get('netguard_refusals')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
