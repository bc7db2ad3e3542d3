"""bench case ``cli``: ``enos run`` on one host against plain ssh through the same
connection master (issue 22: ≤ 1.5×).

``enos run --env DIR --roles ALIAS hostname`` and ``ssh -F DIR/ssh_config ALIAS hostname``,
both started the same way (a subprocess of this process, wall time), interleaved, at least
15 times each (each is tens of milliseconds); the master is open for both (warm-up first).
``python -c pass`` is timed the same way, for the floor of any Python command (in the notes).
"""
from __future__ import annotations

import statistics
from pathlib import Path

from harness import ENOS, PY, log, open_env, timed

MIN_SAMPLES = 15


def bench_cli(table, env_dir: Path, repeat: int) -> None:
    """The one-host ``enos run`` row on the env at ``env_dir`` (its first host)."""
    env = open_env(env_dir)
    alias = env.resources.hosts[0].alias
    cli = ENOS + ["run", "--env", str(env_dir), "--roles", alias, "hostname"]
    ssh = ["ssh", "-F", str(env.ssh_config), "-o", "BatchMode=yes", alias, "hostname"]
    floor = [str(PY), "-c", "pass"]
    timed(cli), timed(ssh), timed(floor)         # warm: byte code, master open
    ours, theirs, interp = [], [], []
    for _ in range(max(repeat, MIN_SAMPLES)):
        ours.append(timed(cli))
        theirs.append(timed(ssh))
        interp.append(timed(floor))
    med = lambda xs: statistics.median(xs)  # noqa: E731
    log(f"enos run, one host: {med(ours):.3f}s vs ssh {med(theirs):.3f}s (python -c pass {med(interp):.3f}s)")
    table.add("`enos run hostname` CLI, one host, hot", ours, theirs, "≤ 1.50× plain ssh",
              lambda e, r: r is not None and r <= 1.5, base_name="(plain ssh, same master)")
    table.notes.append(f"One-host `enos run`: the interpreter alone (`python -c pass`, the floor of any "
                       f"Python CLI) takes {med(interp) * 1000:.1f} ms, {med(interp) / med(theirs):.2f}× "
                       f"plain ssh ({med(theirs) * 1000:.1f} ms); `enos run` {med(ours) * 1000:.1f} ms, "
                       f"{(med(ours) - med(interp)) * 1000:.1f} ms above the interpreter.")
