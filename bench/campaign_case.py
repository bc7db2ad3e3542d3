"""bench case ``campaign``: what a campaign step costs above the command itself (issue 22:
≤ 10 ms per step, monitoring on and off).

On an env of N local hosts (the first ``--hosts`` count, 20 by default), STEPS steps
(``--campaign-steps``, 1000 by default) of the trivial command ``true`` on every host:

* **baseline** (the command itself): STEPS × ``env.run("true")`` in one interpreter, timed
  around the loop (bench/campaign_loop.py ``loop``), run before and after the others;
* ``env.sweep`` + ``env.run``: the same loop inside a sweep of STEPS combinations
  (``sweep``), and inside ``env.monitor()`` as well when this enos has it (``sweep-monitor``);
* ``enos campaign run FILE --env DIR``: a campaign of STEPS combinations, one step ``true``
  on every host, ``monitor: false`` then ``monitor: true``, timed as the user's command
  (start-up, environment description and the per-run files included).

Each row: the time per step, the baseline's per step, and the difference (enos' overhead per
step), target ≤ +10 ms.
"""
from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

from harness import ENOS, HERE, PY, clean_env, log, timed

COMMAND = "true"
MAX_OVERHEAD = 0.010


def loop(env_dir: Path, steps: int, mode: str, results: Path) -> Optional[float]:
    """Run bench/campaign_loop.py; return seconds per step (None: mode not available)."""
    p = subprocess.run([str(PY), str(HERE / "campaign_loop.py"), str(env_dir), str(steps), mode, str(results),
                        COMMAND], capture_output=True, text=True, env=clean_env())
    if p.returncode == 3:
        return None
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"campaign loop {mode} failed ({p.returncode}): {p.stdout[-1500:]} {p.stderr[-1500:]}")
    return json.loads(lines[-1])["seconds"] / steps


def campaign_file(tmp: Path, steps: int, monitor: bool) -> Path:
    """Write a campaign of ``steps`` runs of one step (``true`` on every host); return its path."""
    path = tmp / f"campaign-{steps}-{'mon' if monitor else 'nomon'}.yaml"
    path.write_text(json.dumps({"name": "bench inner loop", "parameters": {"i": list(range(steps))},
                                "steps": [{"run": COMMAND}], "monitor": monitor}))
    return path


def campaign_cli(env_dir: Path, steps: int, monitor: bool, tmp: Path) -> float:
    """Time ``enos campaign run`` of :func:`campaign_file` on the env; return seconds per step."""
    f = campaign_file(tmp, steps, monitor)
    results = tmp / f"{f.stem}.results"
    dt = timed(ENOS + ["-q", "campaign", "run", str(f), "--results", str(results), "--env", str(env_dir)])
    return dt / steps


def bench_campaign(table, env_dir: Path, steps: int, tmp: Path) -> None:
    """Campaign inner-loop rows on the env at ``env_dir``."""
    import enos
    n = len(enos.load(env_dir).hosts)
    s: Dict[str, List[float]] = {"loop": []}
    s["loop"].append(loop(env_dir, steps, "loop", tmp / "unused"))
    variants = {"sweep": lambda: loop(env_dir, steps, "sweep", tmp / "sweep-results"),
                "sweep-monitor": lambda: loop(env_dir, steps, "sweep-monitor", tmp / "sweep-mon-results"),
                "campaign": lambda: campaign_cli(env_dir, steps, False, tmp),
                "campaign-monitor": lambda: campaign_cli(env_dir, steps, True, tmp)}
    for name, fn in variants.items():
        v = fn()
        if v is not None:
            s[name] = [v]
        log(f"campaign inner loop, {steps} steps on {n} hosts: {name} "
            + (f"{v * 1000:.1f} ms/step" if v is not None else "not available in this enos"))
    s["loop"].append(loop(env_dir, steps, "loop", tmp / "unused"))
    log(f"campaign inner loop: baseline {', '.join(f'{x * 1000:.1f}' for x in s['loop'])} ms/step")
    ok = lambda e, d: d is not None and d <= MAX_OVERHEAD  # noqa: E731
    labels = {"sweep": "`env.sweep` + `env.run`, monitoring off",
              "sweep-monitor": "`env.sweep` + `env.run` in `env.monitor()`",
              "campaign": "`enos campaign run`, `monitor: false`",
              "campaign-monitor": "`enos campaign run`, `monitor: true`"}
    for name, label in labels.items():
        if name in s:
            table.add(f"campaign step ({steps} steps, `{COMMAND}` on {n} hosts): {label}, per step", s[name],
                      s["loop"], "≤ +10 ms per step", ok, ratio_kind="enos-base",
                      base_name="(`env.run` alone)")
        else:
            table.notes.append(f"{label}: not measured (this enos has no `env.monitor`).")
    table.notes.append(f"Campaign baseline (`env.run('{COMMAND}')` on {n} hosts, per step): "
                       f"{statistics.median(s['loop']) * 1000:.1f} ms (before/after: "
                       f"{', '.join(f'{x * 1000:.1f}' for x in s['loop'])} ms).")
