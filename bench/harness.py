"""Shared pieces of the enos benchmark (bench/run.py and its case modules): progress lines,
timed subprocesses, the local environments a run creates, the plain-ssh baseline, the
results table and the machine description."""
from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = Path(sys.executable)
VENV_BIN = PY.parent
#: the command a user types: the venv's ``enos`` script (``python -m enos`` adds runpy's
#: ~5 ms of start-up a user of the script never pays), ``python -m enos`` without one
ENOS = [str(VENV_BIN / "enos")] if (VENV_BIN / "enos").is_file() else [str(PY), "-m", "enos"]


def log(msg: str) -> None:
    """Print a progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def clean_env() -> Dict[str, str]:
    """Return the environment for timed subprocesses: byte code may be written (warm runs
    are what a user sees), no colour, the venv first in PATH."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


def timed(argv: List[str], cwd: Optional[Path] = None, env: Optional[dict] = None,
          check: bool = True) -> float:
    """Run ``argv``; return its wall time in seconds. Raises RuntimeError (with its output)
    if it fails and ``check``."""
    t = time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, env=env or clean_env(), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    dt = time.perf_counter() - t
    if check and p.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return dt


class Envs:
    """The enos environments (local hosts) this run created; ``destroy_all`` frees them."""

    def __init__(self, base: Path):
        self.base = base
        self.live: List[Path] = []
        self.run_ids: List[str] = []

    def reservation(self, n: int, provision: Optional[List[Path]] = None) -> Path:
        """Write (once) and return a reservation of ``n`` local hosts: roles ``a``/``b``
        (half each); with ``provision`` (playbooks), the sample reservation's shape instead:
        ``control: 1``, ``compute: n-1`` and the ``greeting`` variable its playbook uses."""
        path = self.base / (f"local-{n}.yaml" if not provision else f"local-{n}-provision.yaml")
        if path.exists():
            return path
        if provision:
            roles = "    control: 1\n" + (f"    compute: {n - 1}\n" if n > 1 else "")
            extra = "provision:\n" + "".join(f"  - {p}\n" for p in provision) + "greeting: hello from enos\n"
        else:
            a = (n + 1) // 2
            roles = f"    a: {a}\n" + (f"    b: {n - a}\n" if n - a else "")
            extra = ""
        path.write_text(f"provider:\n  type: local\nresources:\n  local:\n{roles}{extra}")
        return path

    def up(self, n: int, name: str, provision: Optional[List[Path]] = None) -> tuple:
        """Bring ``n`` hosts up in a new env dir (running ``provision`` playbooks, else none);
        return (env dir, seconds)."""
        d = self.base / name
        self.live.append(d)
        argv = ENOS + ["-q", "up", "-f", str(self.reservation(n, provision)), "--env", str(d)]
        try:
            dt = timed(argv + ([] if provision else ["--no-provision"]), cwd=self.base)
        finally:
            if (d / "state.json").exists():
                self.run_ids.append(json.loads((d / "state.json").read_text())["run_id"])
        return d, dt

    def destroy(self, d: Path) -> float:
        """Destroy the env ``d``; return the seconds it took."""
        dt = timed(ENOS + ["-q", "destroy", "--env", str(d)], cwd=self.base)
        self.live.remove(d)
        return dt

    def destroy_all(self) -> None:
        """Destroy every env still alive (best effort, reports failures)."""
        for d in list(self.live):
            try:
                self.destroy(d)
            except Exception as e:  # keep going: free the others
                log(f"WARNING: could not destroy {d}: {e}")


def open_env(d: Path):
    """Return the env dir (enos.task.EnvDir: paths, state, resources) of dir ``d``."""
    import enos
    env = enos.load(str(d))
    env.require_hosts()
    return env.envdir


def plain_ssh(env, hot: bool) -> float:
    """Start one ``ssh ALIAS hostname`` per host at once from bash, wait for all; return
    the seconds measured inside bash. ``hot`` goes through the env's masters; cold forbids
    them (every ssh does its own handshake)."""
    aliases = " ".join(shlex.quote(h.alias) for h in env.resources.hosts)
    opts = "" if hot else "-o ControlMaster=no -o ControlPath=none"
    script = (f"s=$EPOCHREALTIME; for h in {aliases}; do ssh -F {shlex.quote(str(env.ssh_config))} {opts} "
              f"-o BatchMode=yes \"$h\" hostname >/dev/null || echo FAIL $h & done; wait; "
              f"e=$EPOCHREALTIME; echo \"TIME $s $e\"")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    if "FAIL" in out:
        raise RuntimeError(f"plain ssh failed: {out}")
    _, s, e = [ln for ln in out.splitlines() if ln.startswith("TIME")][0].split()
    return float(e) - float(s)


def env_run(api_env, roles=None) -> float:
    """Time ``Env.run("hostname", roles)`` (the experiment API: Results with every host's
    result) in this process; return seconds."""
    t = time.perf_counter()
    res = api_env.run("hostname", roles)
    dt = time.perf_counter() - t
    bad = [r.host.alias for r in res if r.stdout.strip() != r.host.alias]
    if bad:
        raise RuntimeError(f"enos Env.run: wrong hostname on {bad}")
    return dt


def enoslib_run(py: Path, env, hosts_json: Path, warmup: int = 0) -> dict:
    """Run bench/enoslib_run.py in EnOSlib's venv; return its JSON (import_s, run_s, ...)."""
    p = subprocess.run([str(py), str(HERE / "enoslib_run.py"), str(hosts_json), "hostname", str(warmup)],
                       capture_output=True, text=True, env=clean_env())
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"EnOSlib baseline failed ({p.returncode}): {p.stdout[-1500:]} {p.stderr[-1500:]}")
    return json.loads(lines[-1])


def write_hosts_json(env, path: Path, limit: Optional[int] = None) -> Path:
    """Write the host list EnOSlib's side needs (the first ``limit`` hosts, else all);
    return its path."""
    path.write_text(json.dumps([{"alias": h.alias, "address": h.address, "user": h.user,
                                 "keyfile": h.keyfile, "known_hosts": str(env.known_hosts)}
                                for h in env.resources.hosts[:limit]]))
    return path


class Table:
    """Rows of (case, enos, baseline, ratio, target, verdict) built from sample lists."""

    def __init__(self):
        self.rows: List[dict] = []
        self.notes: List[str] = []

    def add(self, case: str, enos: List[float], base: Optional[List[float]], target: str,
            check: Callable[[float, Optional[float]], Optional[bool]], ratio_kind: str = "enos/base",
            base_name: str = "", unit: str = "s") -> None:
        """Add a row from samples; ``check(enos_median, ratio)`` says pass/fail (None = info).
        ``ratio_kind``: ``enos/base``, ``base/enos`` (shown "faster") or ``enos-base`` (a
        difference in seconds, shown in ms: the overhead above the baseline). ``unit``: how
        the figures read when they are not seconds (e.g. ``MB/host``, ``processes``)."""
        em = statistics.median(enos)
        bm = statistics.median(base) if base else None
        ratio = None
        if ratio_kind == "enos-base" and bm is not None:
            ratio = em - bm
        elif bm:
            ratio = em / bm if ratio_kind == "enos/base" else bm / em
        verdict = check(em, ratio)
        self.rows.append({"case": case, "enos": em, "baseline": bm, "baseline_name": base_name,
                          "ratio": ratio, "ratio_kind": ratio_kind, "target": target,
                          "pass": verdict, "n": len(enos), "unit": unit,
                          "enos_samples": [round(x, 3) for x in enos],
                          "baseline_samples": [round(x, 3) for x in base] if base else None})

    def render(self) -> str:
        """Return the table as Markdown."""
        out = ["| case | enos (s) | baseline (s) | ratio | target | result |",
               "|---|---:|---:|---:|---|---|"]
        for r in self.rows:
            unit = r.get("unit", "s")
            base = (f"{_fig(r['baseline'], unit)} {r['baseline_name']}".strip()
                    if r["baseline"] is not None else "—")
            if r["ratio"] is None:
                ratio = "—"
            elif r["ratio_kind"] == "enos-base":
                ratio = f"{r['ratio'] * 1000:+.1f} ms"
            else:
                ratio = f"{r['ratio']:.2f}×" + (" faster" if r["ratio_kind"] == "base/enos" else "")
            res = {True: "PASS", False: "FAIL", None: "info"}[r["pass"]]
            enos = _fig(r["enos"], unit)
            out.append(f"| {r['case']} | {enos} | {base} | {ratio} | {r['target']} | {res} |")
        return "\n".join(out)


def _fig(x: float, unit: str) -> str:
    """A figure as the table shows it: seconds with 3 decimals (5 under 10 ms), other units
    with theirs."""
    if unit == "s":
        return f"{x:.3f}" if x >= 0.01 else f"{x:.5f}"    # e.g. `import enos`
    return f"{x:.1f} {unit}" if x < 100 else f"{x:.0f} {unit}"


def machine() -> str:
    """Return a short description of this machine (nproc, memory, kernel, Python, load)."""
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()
    total = mem[1].split()[1] if len(mem) > 1 else "?"
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    try:
        from ansible.release import __version__ as ans
    except ImportError:
        ans = "?"
    return (f"{os.cpu_count()} CPUs (nproc), {total} RAM, kernel {platform.release()}, "
            f"{platform.platform()}, Python {platform.python_version()}, {ssh}, ansible-core {ans}, "
            f"load average at start {os.getloadavg()[0]:.2f}")


