"""bench case ``scale``: ``enos up`` with the sample playbook and ``enos destroy`` from 20 to
500 local hosts (issue 22: linear cost, memory per host, no fd/thread/process exhaustion,
instant inventory and ``enos info``, ``enos run`` at 500 hosts).

For each host count N (``--scale-hosts``, default 20,50,100,200,500), one ``enos up`` of the
sample reservation's shape (``control: 1``, ``compute: N-1``, ``examples/sample-playbook.yml``)
timed as a user runs it, while :class:`sysprobe.Probe` samples the machine's processes,
threads and file handles and the descriptors of the ``enos`` process tree; then the summed
PSS of the env's processes (memory per host), ``enos info`` and the generation of the env's
``ssh_config`` + inventory in this process; at the largest N the fan-out rows; then ``enos
destroy``, probed too.

Linearity: the baseline of the largest count is the least-squares line through the smaller
counts' times (measured in the same run): a ratio ≤ 1.3 means the cost per added host did
not grow by more than 30 %. The least-squares fit of all counts (t = a + b·N, R²) and the
cost per host go to the notes.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import sysprobe
from harness import ENOS, clean_env, enoslib_run, env_run, log, open_env, plain_ssh, timed, write_hosts_json
from provision_case import SAMPLE, check_state

LINEAR = 1.3
HALF = 0.5


def fit(points: List[Tuple[int, float]]) -> Tuple[float, float, float]:
    """Return (a, b, r2) of the least-squares line t = a + b·n through ``points``."""
    ns = [p[0] for p in points]
    ts = [p[1] for p in points]
    mn, mt = statistics.mean(ns), statistics.mean(ts)
    sxx = sum((n - mn) ** 2 for n in ns)
    b = sum((n - mn) * (t - mt) for n, t in points) / sxx if sxx else 0.0
    a = mt - b * mn
    sst = sum((t - mt) ** 2 for t in ts)
    sse = sum((t - (a + b * n)) ** 2 for n, t in points)
    return a, b, (1 - sse / sst) if sst else 1.0


def files_time(env) -> float:
    """Seconds to write the env's ssh_config and inventory again (what ``enos up`` writes
    once its hosts are booked), in this process."""
    from enos.inventory import write_inventory
    from enos.ssh.client import write_ssh_files
    t = time.perf_counter()
    write_ssh_files(env.env_dir, env.resources.hosts, env.run_id)
    write_inventory(env.env_dir, env.resources, env.ssh_config)
    return time.perf_counter() - t


def _probed(argv: List[str], cwd: Path, what: str) -> Tuple[float, sysprobe.Probe]:
    probe = sysprobe.Probe()
    dt, rc, out, err = sysprobe.run_probed(argv, probe, cwd=str(cwd), env=clean_env())
    if rc != 0:
        raise RuntimeError(f"{what} exited {rc}:\n{out[-2000:]}\n{err[-2000:]}")
    return dt, probe


def up_one(envs, n: int) -> dict:
    """``enos up`` (sample playbook) of n hosts, probed; return its figures (env dir kept live)."""
    mem0 = sysprobe.mem_available_mb()
    d = envs.base / f"scale-{n}"
    envs.live.append(d)
    argv = ENOS + ["-q", "up", "-f", str(envs.reservation(n, [SAMPLE])), "--env", str(d)]
    try:
        t_up, probe = _probed(argv, envs.base, f"enos up of {n} hosts")
    finally:
        if (d / "state.json").exists():
            envs.run_ids.append(open_env(d).run_id)
    env = open_env(d)
    check_state(env, f"enos up of {n} hosts")
    pss = sysprobe.env_pss_mb(sysprobe.env_namespaces(env.run_id), env.run_id)
    fig = {"n": n, "dir": d, "up": t_up, "up_peak": dict(probe.peak), "up_base": dict(probe.base),
           "limits": sysprobe.limits(), "pss_mb": pss, "avail_drop_mb": mem0 - sysprobe.mem_available_mb(),
           "info": statistics.median(timed(ENOS + ["info", "--env", str(d)]) for _ in range(3)),
           "files": statistics.median(files_time(env) for _ in range(3))}
    log(f"scale {n} hosts: up {t_up:.2f}s, {pss / n:.2f} MB/host (PSS), peak {probe.peak}, "
        f"info {fig['info']:.3f}s, files {fig['files']:.4f}s")
    return fig


def destroy_one(envs, fig: dict) -> None:
    """``enos destroy`` of the env of ``fig``, probed; adds its figures to ``fig``."""
    t, probe = _probed(ENOS + ["-q", "destroy", "--env", str(fig["dir"])], envs.base, "enos destroy")
    envs.live.remove(fig["dir"])
    fig.update(destroy=t, destroy_peak=dict(probe.peak))
    log(f"scale {fig['n']} hosts: destroy {t:.2f}s")


def fanout_rows(table, env_dir: Path, repeat: int, enoslib_py: Optional[Path], tmp: Path,
                enoslib_max: int) -> None:
    """``enos run hostname`` (CLI) and ``env.run`` on every host vs plain ssh through the
    same masters; ``env.run`` vs EnOSlib on the first ``enoslib_max`` hosts."""
    import enos
    env = open_env(env_dir)
    n = len(env.resources.hosts)
    api_env = enos.load(env_dir)
    cli = ENOS + ["run", "--env", str(env_dir), "hostname"]
    plain_ssh(env, True), timed(cli), env_run(api_env)          # warm-up
    s: Dict[str, List[float]] = {"cli": [], "api": [], "ssh": [], "sub": [], "enoslib": []}
    k = min(n, enoslib_max)
    sub = [h.alias for h in api_env.hosts[:k]]
    if enoslib_py:
        hosts_json = write_hosts_json(env, tmp / f"hosts-{n}.json", limit=k)
        enoslib_run(enoslib_py, env, hosts_json, warmup=1)
    for i in range(repeat):
        s["cli"].append(timed(cli))
        s["ssh"].append(plain_ssh(env, True))
        s["api"].append(env_run(api_env))
        s["ssh"].append(plain_ssh(env, True))
        if enoslib_py:
            s["enoslib"].append(enoslib_run(enoslib_py, env, hosts_json)["run_s"])
            s["sub"].append(env_run(api_env, sub))
        log(f"fan-out {n} hosts, round {i + 1}/{repeat}: cli {s['cli'][-1]:.3f} env.run {s['api'][-1]:.3f} "
            f"ssh {s['ssh'][-1]:.3f}" + (f" | {k} hosts: env.run {s['sub'][-1]:.3f} enoslib {s['enoslib'][-1]:.3f}"
                                         if enoslib_py else ""))
    le = lambda e, r: r is not None and r <= 1.3  # noqa: E731
    table.add(f"`enos run hostname` CLI, {n} hosts, hot", s["cli"], s["ssh"], "≤ 1.30× plain ssh", le,
              base_name="(plain ssh, hot)")
    table.add(f"`env.run` experiment API, {n} hosts, hot", s["api"], s["ssh"], "≤ 1.30× plain ssh", le,
              base_name="(plain ssh, hot)")
    if enoslib_py:
        table.add(f"`env.run` vs EnOSlib 10.9 `run_command`, {k} of the {n} hosts", s["sub"], s["enoslib"],
                  "≥ 2.5× faster", lambda e, r: r is not None and r >= 2.5, ratio_kind="base/enos",
                  base_name="(EnOSlib)")
        if k < n:
            table.notes.append(f"EnOSlib ran on {k} of the {n} hosts (`--enoslib-max {k}`): its `run_command` "
                               f"costs ~0.2 s per host on this machine; enos ran on the same {k} hosts.")


def _resource_rows(table, big: dict) -> None:
    """Peak processes, threads, file handles and per-process descriptors during the largest
    ``enos up``, each against half its limit."""
    lim, peak, base = big["limits"], big["up_peak"], big["up_base"]
    n = big["n"]
    for key, limit_key, what in (("procs", "pid_max", "processes on the machine"),
                                 ("threads", "threads_max", "threads on the machine"),
                                 ("handles", "file_max", "file handles on the machine"),
                                 ("tree_max_fds", "nofile", "descriptors of one enos/ansible process")):
        limit = lim[limit_key]
        table.add(f"`enos up` {n} hosts: peak {what} (limit {limit})", [float(peak.get(key, 0))],
                  [float(base.get(key, 0)) or 1.0], f"< {int(limit * HALF)} (half the limit)",
                  lambda e, r, lim_=limit: e < lim_ * HALF, unit=key.replace("tree_max_fds", "fds"),
                  base_name="(before)")


def _linear_rows(table, figs: List[dict], key: str, what: str) -> None:
    """One row per count; at the largest, the ratio to the least-squares line through all
    the smaller counts (measured in the same run): ≤ 1.3 means the cost per added host did
    not grow by more than 30 %."""
    pts = [(f["n"], f[key]) for f in figs]
    for i, (n, t) in enumerate(pts):
        last = i == len(pts) - 1 and i >= 2
        base = None
        if last:
            a, b, _ = fit(pts[:-1])
            base = [a + b * n]
        table.add(f"{what}, {n} local hosts" + (" vs the line through the smaller counts" if last else ""),
                  [t], base, f"≤ {LINEAR:.1f}× (linear)" if last else "(per host: see notes)",
                  (lambda e, r: r is not None and r <= LINEAR) if last else (lambda e, r: None),
                  base_name="(extrapolated)")
    if len(pts) >= 2:
        a, b, r2 = fit(pts)
        per = ", ".join(f"{n}: {t / n * 1000:.0f} ms" for n, t in pts)
        table.notes.append(f"{what}: per host {per}; least-squares fit t = {a:.2f} s + {b * 1000:.1f} ms × N "
                           f"(R² {r2:.3f}).")


def bench_scale(table, envs, counts: List[int], repeat: int, enoslib_py: Optional[Path], tmp: Path,
                enoslib_max: int = 100) -> None:
    """Scale rows from ``counts`` (ascending) hosts; the fan-out rows at the largest."""
    figs = []
    for n in counts:
        fig = up_one(envs, n)
        if n == counts[-1]:
            fanout_rows(table, fig["dir"], repeat, enoslib_py, tmp, enoslib_max)
        destroy_one(envs, fig)
        figs.append(fig)
    _linear_rows(table, figs, "up", "`enos up` + sample playbook")
    _linear_rows(table, figs, "destroy", "`enos destroy`")
    small, big = figs[0], figs[-1]
    table.add(f"memory per host (PSS of the env's processes), {big['n']} hosts", [big["pss_mb"] / big["n"]],
              [small["pss_mb"] / small["n"]], "(documented)", lambda e, r: None, unit="MB/host",
              base_name=f"(at {small['n']} hosts)")
    table.notes.append("MemAvailable drop per host after `enos up`: " + ", ".join(
        f"{f['n']}: {f['avail_drop_mb'] / f['n']:.1f} MB" for f in figs) + " (machine-wide: other work moves it).")
    _resource_rows(table, big)
    table.add(f"`enos info`, {big['n']} hosts", [big["info"]], [small["info"]], "≤ 0.150 s",
              lambda e, r: e <= 0.150, base_name=f"(at {small['n']} hosts)")
    table.add(f"ssh_config + inventory written, {big['n']} hosts", [big["files"]], [small["files"]], "≤ 0.050 s",
              lambda e, r: e <= 0.050, base_name=f"(at {small['n']} hosts)")
