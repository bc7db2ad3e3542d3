"""enos speed benchmark (GitHub issues 4 and 22): one command, everything it needs, a table of ratios.

    sudo .venv/bin/python bench/run.py [--hosts 20,50] [--repeat 5] [--quick] [--save bench/RESULTS.md]

It builds what it needs (EnOSlib 10.9 in bench/.work/enoslib-venv, ``local`` namespace hosts
brought up with ``enos up``), runs each enos/baseline pair interleaved ``--repeat`` times,
prints a table (case, enos, baseline, ratio, target, pass/fail; medians) and destroys every
host it created, even on failure or Ctrl-C. ``--quick`` (3 hosts, 1 repetition, no EnOSlib
unless ``--enoslib``) proves the harness works; its figures mean nothing.

Cases:
  startup   ``enos --help`` / ``validate`` / ``info`` wall time (warm: byte code cached),
            target ≤ 0.05 s for ``--help``, ≤ 0.15 s for the others; baseline = the same
            interpreter's ``python -c pass``.
            ``import enos`` (the Python API's entry point), timed inside a fresh interpreter
            around the import only: target ≤ 0.060 s; baseline EnOSlib's ``import enoslib``
            timed the same way (when its venv is there).
  up/down   ``enos up --no-provision`` of N local hosts until all answer SSH (≤ 3 s for 20),
            ``enos destroy`` of them (≤ 1.5 s for 20).
  run       ``hostname`` on N hosts: the enos CLI (``enos run``) and the Python API
            (``enos.ssh.remote.run_command``) against N ``ssh`` processes started at once by bash
            through the env's ssh_config. *hot*: connection masters open on both sides (what
            an enos environment always has: ``enos up`` opens them, ControlPersist keeps
            them); *cold*: masters closed, every ssh does a full handshake. Target ≤ 1.3×
            (hot is the target case: same connections on both sides, so the ratio is pure
            orchestration overhead; cold is dominated by 20-50 simultaneous key exchanges on
            2 cores and shown for reference). EnOSlib ``run_command`` (timed inside its own
            process, around the call only; its import is reported separately), target: enos
            API ≥ 2.5× faster. The experiment API's ``Env.run`` (``enos.load(dir).run``: the
            Results of every host) is timed the same way as ``run_command``, same targets.
  cli       ``enos run hostname`` on one host vs ``ssh ALIAS hostname`` through the same master
            (bench/cli_case.py), target ≤ 1.5×; ``enos --help`` ≤ 0.050 s (startup).
  provision enos' provisioning (what ``enos up`` runs once SSH answers: preinstall + the
            sample playbook) vs a hand-tuned ``ansible-playbook -f N`` (pipelining, the env's
            masters, enos' old preinstall playbook + the sample playbook), end state checked
            on every host, at 20 and 100 hosts (bench/provision_case.py): target ≥ 2× faster.
  campaign  1000 steps of ``true`` on 20 hosts through ``env.sweep`` + ``env.run`` and through
            ``enos campaign run``, monitoring off and on, vs 1000 × ``env.run`` alone
            (bench/campaign_case.py): target ≤ +10 ms per step.
  scale     ``enos up`` with the sample playbook and ``enos destroy`` at 20..500 hosts: linear
            cost (≤ 1.3× the least-squares line through the smaller counts), memory per host, peak
            processes/threads/handles/descriptors (< half their limits), ``enos info`` and
            ssh_config/inventory generation, ``enos run`` at the largest count vs plain ssh
            (≤ 1.3×) and vs EnOSlib on ≤ 100 of its hosts (bench/scale_case.py).
  vagrant   (only with ``--only vagrant``: needs vagrant + vagrant-libvirt, boots VMs) ``enos up
            --no-provision`` / ``enos destroy`` of two Vagrant machines vs plain ``vagrant up`` /
            ``vagrant destroy -f`` on the same Vagrantfile (bench/vagrant_case.py), target ≤ 1.1×.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from harness import (ENOS, HERE, PY, Envs, Table, clean_env, enoslib_run, env_run, log, machine,
                     open_env, plain_ssh, timed, write_hosts_json)

WORK = HERE / ".work"
ENOSLIB_VENV = WORK / "enoslib-venv"
ENOSLIB_SPEC = "enoslib==10.9.*"

def ensure_enoslib() -> Path:
    """Create bench/.work/enoslib-venv with EnOSlib 10.9 if needed; return its python."""
    py = ENOSLIB_VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import enoslib"], capture_output=True).returncode == 0:
        return py
    log(f"building {ENOSLIB_VENV} with {ENOSLIB_SPEC} (once)")
    base = shutil.which("python3") or sys.executable
    # the venv's own base interpreter, so EnOSlib gets the same Python version as enos
    base = getattr(sys, "_base_executable", None) or base
    subprocess.run([base, "-m", "venv", str(ENOSLIB_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", ENOSLIB_SPEC], check=True)
    return py


# --------------------------------------------------------------------------- baselines

def enos_api(env, use_masters: bool = True) -> float:
    """Time ``enos.ssh.remote.run_command(hostname)`` in this process; return seconds.
    ``use_masters=False``: one ssh process per host instead of the mux protocol."""
    from enos.ssh.remote import run_command
    t = time.perf_counter()
    res = run_command(env.ssh_config, env.resources.hosts, "hostname", use_masters=use_masters)
    dt = time.perf_counter() - t
    bad = [r.alias for r in res if r.stdout.strip() != r.alias]
    if bad:
        raise RuntimeError(f"enos run_command: wrong hostname on {bad}")
    return dt


IMPORT_TIMER = ("import time, sys; t = time.perf_counter(); import {mod}; "
                "print(time.perf_counter() - t)")


FIRST_USE_TIMER = ("import time, sys; t = time.perf_counter(); import enos; enos.load(sys.argv[1]).hosts; "
                   "print(time.perf_counter() - t)")


def import_time(py: Path, module: str, code: Optional[str] = None, *args: str) -> float:
    """Seconds ``import module`` (or ``code``, which prints its own time) takes in a fresh
    ``py`` interpreter (timed inside it)."""
    out = subprocess.run([str(py), "-c", code or IMPORT_TIMER.format(mod=module), *args], capture_output=True,
                         text=True, check=True, env=clean_env(), cwd=str(WORK)).stdout
    return float(out.strip().splitlines()[-1])


def close_masters(env) -> None:
    """Close the env's connection masters (cold start for the next command)."""
    from enos.ssh.client import stop_masters
    stop_masters(env.run_id)


# --------------------------------------------------------------------------- cases

def bench_startup(table: Table, envs: Envs, info_env: Path, repeat: int) -> None:
    """CLI start-up cases."""
    res = envs.reservation(3)
    cases = {"enos --help": ENOS + ["--help"],
             "enos validate": ENOS + ["validate", "-f", str(res)],
             "enos info": ENOS + ["info", "--env", str(info_env)]}
    floor = [str(PY), "-c", "pass"]
    for argv in list(cases.values()) + [floor]:   # warm: byte code written, caches filled
        timed(argv, cwd=envs.base)
    samples: Dict[str, List[float]] = {k: [] for k in cases}
    base: List[float] = []
    for _ in range(max(repeat, 5)):
        for k, argv in cases.items():
            samples[k].append(timed(argv, cwd=envs.base))
        base.append(timed(floor, cwd=envs.base))
    for k in cases:
        limit = 0.050 if k == "enos --help" else 0.150
        table.add(f"start-up: `{k}`", samples[k], base, f"≤ {limit:.3f} s",
                  lambda e, r, lim=limit: e <= lim, base_name="(python -c pass)")


def bench_import(table: Table, repeat: int, enoslib_py: Optional[Path], env_dir: Path) -> None:
    """``import enos`` inside a fresh interpreter (the API's entry point), against EnOSlib's;
    and ``import enos`` + ``enos.load(env)`` (what the API's first call imports)."""
    import_time(PY, "enos")                        # warm: byte code written
    import_time(PY, "", FIRST_USE_TIMER, str(env_dir))
    if enoslib_py:
        import_time(enoslib_py, "enoslib")
    ours, theirs, first = [], [], []
    for _ in range(max(repeat, 5)):
        ours.append(import_time(PY, "enos"))
        first.append(import_time(PY, "", FIRST_USE_TIMER, str(env_dir)))
        if enoslib_py:
            theirs.append(import_time(enoslib_py, "enoslib"))
    table.add("start-up: `import enos` (in the interpreter)", ours, theirs or None, "≤ 0.060 s",
              lambda e, r: e <= 0.060, ratio_kind="base/enos",
              base_name="(`import enoslib`)" if theirs else "")
    table.add("start-up: `import enos` + `enos.load(env).hosts` (the API's modules loaded)", first,
              theirs or None, "(reference)", lambda e, r: None, ratio_kind="base/enos",
              base_name="(`import enoslib`)" if theirs else "")


def bench_up_down(table: Table, envs: Envs, n: int, repeat: int) -> None:
    """``enos up`` / ``enos destroy`` of n hosts, repeated."""
    ups, downs = [], []
    for i in range(repeat):
        d, t_up = envs.up(n, f"updown-{n}-{i}")
        ups.append(t_up)
        downs.append(envs.destroy(d))
        log(f"up/destroy {n} hosts: {t_up:.2f}s / {downs[-1]:.2f}s")
    tu, td = ("≤ 3.0 s", "≤ 1.5 s") if n <= 20 else ("(none; 20-host target ≤ 3.0 s)", "(none; ≤ 1.5 s at 20)")
    table.add(f"`enos up` {n} local hosts (until SSH)", ups, None, tu,
              (lambda e, r: e <= 3.0) if n <= 20 else (lambda e, r: None))
    table.add(f"`enos destroy` {n} local hosts", downs, None, td,
              (lambda e, r: e <= 1.5) if n <= 20 else (lambda e, r: None))


def bench_run(table: Table, env_dir: Path, n: int, repeat: int, enoslib_py: Optional[Path],
              tmp: Path) -> None:
    """Fan-out cases on an env of n hosts."""
    import enos
    env = open_env(env_dir)
    api_env = enos.load(env_dir)
    cli = ENOS + ["run", "--env", str(env_dir), "hostname"]
    # warm-up: masters open, byte code cached
    plain_ssh(env, True)
    timed(cli)
    enos_api(env)
    env_run(api_env)
    hosts_json = write_hosts_json(env, tmp / f"hosts-{n}.json")
    if enoslib_py:
        enoslib_run(enoslib_py, env, hosts_json, warmup=1)   # Ansible's own masters open too
    s: Dict[str, List[float]] = {k: [] for k in ("cli", "api", "ssh_hot", "api_cold", "ssh_cold",
                                                 "enoslib", "enoslib_import", "api_procs", "env_run")}
    for i in range(repeat):
        s["cli"].append(timed(cli))
        s["ssh_hot"].append(plain_ssh(env, True))
        s["api"].append(enos_api(env))
        s["ssh_hot"].append(plain_ssh(env, True))
        s["env_run"].append(env_run(api_env))
        s["ssh_hot"].append(plain_ssh(env, True))
        s["api_procs"].append(enos_api(env, use_masters=False))
        close_masters(env)
        s["api_cold"].append(enos_api(env))              # opens the masters again
        s["ssh_cold"].append(plain_ssh(env, False))
        if enoslib_py:
            r = enoslib_run(enoslib_py, env, hosts_json)
            s["enoslib"].append(r["run_s"])
            s["enoslib_import"].append(r["import_s"])
            s["api"].append(enos_api(env))
            s["env_run"].append(env_run(api_env))
        log(f"run {n} hosts, round {i + 1}/{repeat}: cli {s['cli'][-1]:.3f} api {s['api'][-1]:.3f} "
            f"env.run {s['env_run'][-1]:.3f} "
            f"api-procs {s['api_procs'][-1]:.3f} "
            f"ssh-hot {s['ssh_hot'][-1]:.3f} | cold api {s['api_cold'][-1]:.3f} ssh {s['ssh_cold'][-1]:.3f}"
            + (f" | enoslib {s['enoslib'][-1]:.3f}" if enoslib_py else ""))
    le = lambda e, r: r is not None and r <= 1.3  # noqa: E731
    table.add(f"`enos run hostname` CLI, {n} hosts, hot", s["cli"], s["ssh_hot"], "≤ 1.30× plain ssh", le,
              base_name="(plain ssh, hot)")
    table.add(f"`run_command` API, {n} hosts, hot", s["api"], s["ssh_hot"], "≤ 1.30× plain ssh", le,
              base_name="(plain ssh, hot)")
    table.add(f"`env.run` experiment API, {n} hosts, hot", s["env_run"], s["ssh_hot"], "≤ 1.30× plain ssh", le,
              base_name="(plain ssh, hot)")
    table.add(f"`run_command` API with ssh processes (use_masters=False), {n} hosts, hot", s["api_procs"],
              s["ssh_hot"], "(reference)", lambda e, r: None, base_name="(plain ssh, hot)")
    table.add(f"`run_command` API, {n} hosts, cold", s["api_cold"], s["ssh_cold"],
              "(reference)", lambda e, r: None, base_name="(plain ssh, cold)")
    if enoslib_py:
        table.add(f"`run_command` API vs EnOSlib 10.9 `run_command`, {n} hosts", s["api"], s["enoslib"],
                  "≥ 2.5× faster", lambda e, r: r is not None and r >= 2.5, ratio_kind="base/enos",
                  base_name="(EnOSlib)")
        table.add(f"`env.run` experiment API vs EnOSlib 10.9 `run_command`, {n} hosts", s["env_run"],
                  s["enoslib"], "≥ 2.5× faster", lambda e, r: r is not None and r >= 2.5, ratio_kind="base/enos",
                  base_name="(EnOSlib)")
        table.add(f"`enos run` CLI (incl. start-up) vs EnOSlib `run_command` (excl. import), {n} hosts",
                  s["cli"], s["enoslib"], "≥ 2.5× faster", lambda e, r: r is not None and r >= 2.5,
                  ratio_kind="base/enos", base_name="(EnOSlib)")
        table.notes.append(f"EnOSlib 10.9 `import enoslib` ({n}-host runs): median "
                           f"{statistics.median(s['enoslib_import']):.2f} s (not in the ratios).")


# --------------------------------------------------------------------------- main

def start_network_guard() -> Path:
    """Install tests/netguard in this process and every Python process the benchmark starts
    (PYTHONPATH); return its log. The network rule: a benchmark talks only to loopback and
    to the namespace hosts it created — never to a real Grid'5000 name or another address."""
    guard = HERE.parent / "tests" / "netguard"
    fd, log_path = tempfile.mkstemp(prefix="enos-bench-netguard-", suffix=".log")
    os.close(fd)
    os.environ.update(ENOS_NETGUARD="1", ENOS_NETGUARD_LOG=log_path,
                      PYTHONPATH=os.pathsep.join([str(guard)] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]))
    sys.path.insert(0, str(guard))
    import sitecustomize  # noqa: F401  (installs the audit hook here too)
    return Path(log_path)


DEFAULT_CASES = "startup,netlink,cli,updown,run,provision,campaign,scale"


def parse_args(argv: Optional[List[str]]):
    """Return the parsed command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="20,50", help="comma-separated host counts of the fan-out cases [20,50]")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved repetitions per case [5]")
    ap.add_argument("--provision-hosts", default="20,100", help="host counts of the provisioning case [20,100]")
    ap.add_argument("--provision-repeat", type=int, default=3, help="repetitions of the provisioning case [3]")
    ap.add_argument("--scale-hosts", default="20,50,100,200,500",
                    help="ascending host counts of the scale case [20,50,100,200,500]")
    ap.add_argument("--enoslib-max", type=int, default=100,
                    help="at most this many hosts for EnOSlib in the scale case [100]")
    ap.add_argument("--campaign-steps", type=int, default=1000, help="steps of the campaign case [1000]")
    ap.add_argument("--quick", action="store_true",
                    help="3 hosts, 1 repetition, no EnOSlib: proves the harness works, no meaningful figures")
    ap.add_argument("--enoslib", action="store_true", help="with --quick: include the EnOSlib baseline")
    ap.add_argument("--no-enoslib", action="store_true",
                    help="leave the EnOSlib baseline out (enos vs plain ssh only: e.g. before/after a change)")
    ap.add_argument("--only", default=DEFAULT_CASES,
                    help=f"comma-separated cases to run [{DEFAULT_CASES}]; "
                         "'vagrant' (not in the default: boots VMs, minutes each) is enos vs plain Vagrant")
    ap.add_argument("--save", metavar="FILE", help="also write the results (Markdown) to FILE")
    ap.add_argument("--json", metavar="FILE", help="also write the raw samples (JSON) to FILE")
    a = ap.parse_args(argv)
    ints = lambda text: [int(x) for x in text.split(",") if x.strip()]  # noqa: E731
    a.counts = [3] if a.quick else ints(a.hosts)
    a.provision_counts = [3] if a.quick else ints(a.provision_hosts)
    a.scale_counts = [3, 4, 5] if a.quick else sorted(ints(a.scale_hosts))
    if a.quick:
        a.repeat = a.provision_repeat = 1
        a.campaign_steps = 20
    a.repeat, a.provision_repeat = max(1, a.repeat), max(1, a.provision_repeat)
    a.cases = set(a.only.split(","))
    a.use_enoslib = ((not a.quick or a.enoslib) and not a.no_enoslib
                     and bool(a.cases & {"run", "startup", "scale"}))
    return a


def run_cases(a, table: Table, envs: Envs, tmp: Path, enoslib_py: Optional[Path]) -> None:
    """Run the cases ``a.cases`` asks for, adding their rows to ``table``."""
    only, counts, repeat = a.cases, a.counts, a.repeat
    if "updown" in only:
        for n in counts:
            log(f"enos up / destroy of {n} hosts x{repeat}")
            bench_up_down(table, envs, n, repeat)
    if "vagrant" in only:
        log(f"enos vs plain vagrant, 2 machines x{repeat}")
        from vagrant_case import bench_vagrant
        bench_vagrant(table, repeat, tmp, ENOS, clean_env, log)
    main_envs: Dict[int, Path] = {}
    if only & {"run", "startup", "cli", "campaign"}:
        for n in counts:
            d, t = envs.up(n, f"hosts-{n}")
            main_envs[n] = d
            log(f"{n} hosts up in {t:.2f}s ({d})")
    if "startup" in only:
        log("CLI start-up")
        bench_startup(table, envs, main_envs[counts[0]], repeat)
        bench_import(table, repeat, enoslib_py, main_envs[counts[0]])
    if "netlink" in only:
        from netlink import bench_netlink
        log("local netlink through its worker thread")
        bench_netlink(table, repeat)
    if "cli" in only:
        from cli_case import bench_cli
        bench_cli(table, main_envs[counts[0]], repeat)
    if "run" in only:
        for n in counts:
            log(f"fan-out on {n} hosts x{repeat}")
            bench_run(table, main_envs[n], n, repeat, enoslib_py, tmp)
    if "campaign" in only:
        from campaign_case import bench_campaign
        log(f"campaign inner loop, {a.campaign_steps} steps on {counts[0]} hosts")
        bench_campaign(table, main_envs[counts[0]], a.campaign_steps, tmp)
    for d in list(main_envs.values()):
        envs.destroy(d)                    # free the machine for the provisioning and scale cases
    if "provision" in only:
        from provision_case import bench_provision
        for i, n in enumerate(a.provision_counts):
            d, t = envs.up(n, f"provision-{n}")
            log(f"provisioning on {n} hosts x{a.provision_repeat} ({n} hosts up in {t:.2f}s)")
            bench_provision(table, d, a.provision_repeat, tmp, first=i == 0)
            envs.destroy(d)
    if "scale" in only:
        from scale_case import bench_scale
        log(f"scale: enos up + sample playbook / destroy of {a.scale_counts} hosts")
        bench_scale(table, envs, a.scale_counts, repeat, enoslib_py, tmp, a.enoslib_max)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark; return 0 when every target passed, 1 otherwise (2 on set-up errors
    or when the network guard refused traffic that would have left the machine)."""
    a = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run.py needs root (the local provider creates network namespaces)", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc)
    desc = machine()
    log(desc)
    WORK.mkdir(parents=True, exist_ok=True)
    try:   # set-up, before the network guard: EnOSlib comes from the package index
        enoslib_py = ensure_enoslib() if a.use_enoslib else None
    except (OSError, subprocess.CalledProcessError) as e:
        log(f"FAILED: could not build EnOSlib's virtualenv: {e}")
        return 2
    guard_log = start_network_guard()
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    envs = Envs(tmp)
    table = Table()
    old_term = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rc = 0
    error = None
    try:
        run_cases(a, table, envs, tmp, enoslib_py)
    except KeyboardInterrupt:
        log("interrupted: destroying the hosts")
        rc = 130
    except Exception as e:
        log(f"FAILED: {e}")
        rc = 2
        error = str(e)
    finally:
        envs.destroy_all()
        signal.signal(signal.SIGTERM, old_term)
        if envs.live:
            log(f"WARNING: left alive (see {tmp}): {', '.join(map(str, envs.live))}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    refused = guard_log.read_text().strip() if guard_log.exists() else ""
    guard_log.unlink(missing_ok=True)
    if refused:
        log(f"FAILED: the network guard refused traffic that would have left this machine:\n{refused}")
        rc, error = 2, f"network guard: {refused}"
    if a.json:
        Path(a.json).write_text(json.dumps({"date": started.isoformat(), "machine": desc, "rows": table.rows,
                                            "notes": table.notes, "run_ids": envs.run_ids, "rc": rc,
                                            "error": error, "left_alive": [str(d) for d in envs.live]},
                                           indent=1))
    if rc:
        return rc
    return report(a, argv, table, started, desc)


def report(a, argv: Optional[List[str]], table: Table, started, desc: str) -> int:
    """Print (and with ``--save`` write) the table; return 1 if a row failed, else 0."""
    text = table.render()
    fails = [r for r in table.rows if r["pass"] is False]
    header = (f"# enos benchmark results\n\nDate: {started:%Y-%m-%d %H:%M} UTC  \n"
              f"Command: `{shlex.join(['bench/run.py'] + (argv if argv is not None else sys.argv[1:]))}`  \n"
              f"Machine: {desc}  \n"
              f"Medians of {a.repeat} interleaved repetitions (start-up: of {max(a.repeat, 5)}; provisioning: "
              f"of {a.provision_repeat}; scale: one run per count); ratio = enos/baseline unless marked "
              f"'faster' (= baseline/enos); '+N ms' = enos minus baseline.\n")
    notes = "\n".join(f"- {x}" for x in table.notes)
    print(text)
    if notes:
        print(notes)
    print(f"\n{len(table.rows) - len(fails)}/{len(table.rows)} rows pass or informative; "
          f"{len(fails)} fail" + (": " + "; ".join(r["case"] for r in fails) if fails else ""))
    if a.save:
        Path(a.save).write_text(header + "\n" + text + "\n\n" + notes + "\n")
        log(f"wrote {a.save}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
