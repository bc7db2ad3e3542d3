"""Resource monitor of a run: CPU, memory and network bytes per host, sampled at 1 Hz from
``/proc`` *on the hosts* while the steps run.

:func:`start` launches a small detached shell loop on every host (it reads ``/proc/stat``,
``/proc/meminfo`` and ``/proc/net/dev`` once a second into a temporary file and stops by
itself after ``max_seconds``, so a killed campaign leaves nothing running for long);
:func:`stop` kills it, reads the samples back and removes the file; :func:`to_rows` turns
the raw counters into per-second figures and :func:`write_csv` writes ``monitor.csv``.
"""
from __future__ import annotations

import csv
import shlex
from pathlib import Path
from typing import Dict, List

#: columns of monitor.csv
COLUMNS = ("time", "host", "cpu_percent", "mem_used_mib", "net_rx_bytes", "net_tx_bytes")

_AWK = (r"""FNR==1{f++} f==1 && /^cpu /{b=$2+$3+$4+$7+$8; t=b+$5+$6+$9}"""
        r""" f==2 && /^MemTotal:/{mt=$2} f==2 && /^MemAvailable:/{ma=$2}"""
        r""" f==3 && /:/{split($0,a,":"); gsub(/ /,"",a[1]); if(a[1]!="lo"){split(a[2],c," "); rx+=c[1]; tx+=c[9]}}"""
        r""" END{printf "%s %d %d %d %d %.0f %.0f\n", T, b, t, mt, ma, rx, tx}""")


def _loop(max_seconds: int) -> str:
    body = (f"end=$(( $(date +%s) + {int(max_seconds)} )); "
            f"while [ $(date +%s) -lt $end ]; do "
            f"awk -v T=$(date +%s.%N) {shlex.quote(_AWK)} /proc/stat /proc/meminfo /proc/net/dev; "
            f"sleep 1; done")
    return body


def start(env, token: str, roles=None, max_seconds: int = 3600) -> List[str]:
    """Start the sampler on the hosts (files ``/tmp/enos-monitor-TOKEN-<hostname>``; hosts
    may share a filesystem and a PID space, so each finds its own by its host name);
    return the aliases where it started."""
    f = f"/tmp/enos-monitor-{token}-$(hostname)"
    cmd = (f"f={f}; setsid sh -c {shlex.quote(_loop(max_seconds))} </dev/null >\"$f\" 2>/dev/null & "
           "echo $! > \"$f.pid\" && echo started")
    return [r.host.alias for r in env.run(cmd, roles=roles, timeout=30, check=False)
            if r.rc == 0 and "started" in (r.stdout or "")]


def stop(env, token: str, aliases: List[str]) -> Dict[str, str]:
    """Stop the samplers started by :func:`start` with ``token`` on ``aliases``; return
    {alias: raw samples text}."""
    if not aliases:
        return {}
    f = f"/tmp/enos-monitor-{token}-$(hostname)"
    cmd = (f"f={f}; [ -f \"$f.pid\" ] && kill $(cat \"$f.pid\") 2>/dev/null; "
           "cat \"$f\" 2>/dev/null; rm -f \"$f\" \"$f.pid\"; true")
    out = {r.host.alias: r.stdout or "" for r in env.run(cmd, roles=aliases, timeout=30, check=False)}
    return {a: out.get(a, "") for a in aliases}


def to_rows(raw: Dict[str, str]) -> List[dict]:
    """Turn raw samples into rows of :data:`COLUMNS` (CPU % and bytes since the first sample)."""
    rows = []
    for alias, text in sorted(raw.items()):
        samples = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 7:
                continue
            try:
                samples.append([float(x) for x in parts])
            except ValueError:
                continue
        if not samples:
            continue
        t0, rx0, tx0 = samples[0][0], samples[0][5], samples[0][6]
        prev = samples[0]
        for s in samples[1:]:
            dt_total = s[2] - prev[2]
            cpu = 100.0 * (s[1] - prev[1]) / dt_total if dt_total > 0 else 0.0
            rows.append({"time": round(s[0] - t0, 3), "host": alias, "cpu_percent": round(cpu, 2),
                         "mem_used_mib": round((s[3] - s[4]) / 1024.0, 1),
                         "net_rx_bytes": int(s[5] - rx0), "net_tx_bytes": int(s[6] - tx0)})
            prev = s
    return rows


def write_csv(path: Path, rows: List[dict]) -> None:
    """Write ``rows`` to ``path`` as CSV with :data:`COLUMNS`."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


def summary(rows: List[dict]) -> Dict[str, Dict[str, float]]:
    """Return {host: {monitor_cpu_percent (mean), monitor_mem_used_mib (max),
    monitor_net_rx_bytes, monitor_net_tx_bytes (totals)}} of one run's rows."""
    out: Dict[str, Dict[str, float]] = {}
    by: Dict[str, List[dict]] = {}
    for r in rows:
        by.setdefault(r["host"], []).append(r)
    for host, rs in by.items():
        out[host] = {"monitor_cpu_percent": sum(float(r["cpu_percent"]) for r in rs) / len(rs),
                     "monitor_mem_used_mib": max(float(r["mem_used_mib"]) for r in rs),
                     "monitor_net_rx_bytes": float(rs[-1]["net_rx_bytes"]),
                     "monitor_net_tx_bytes": float(rs[-1]["net_tx_bytes"])}
    return out
