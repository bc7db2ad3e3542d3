"""enos speed benchmark (GitHub issue 4): one command, everything it needs, a table of ratios.

    sudo .venv/bin/python bench/run.py [--hosts 20,50] [--repeat 5] [--quick] [--save bench/RESULTS.md]

It builds what it needs (EnOSlib 10.9 in bench/.work/enoslib-venv, ``local`` namespace hosts
brought up with ``enos up``), runs each enos/baseline pair interleaved ``--repeat`` times,
prints a table (case, enos, baseline, ratio, target, pass/fail; medians) and destroys every
host it created, even on failure or Ctrl-C. ``--quick`` (3 hosts, 1 repetition, no EnOSlib
unless ``--enoslib``) proves the harness works; its figures mean nothing.

Cases:
  startup   ``enos --help`` / ``validate`` / ``info`` wall time (warm: byte code cached),
            target ≤ 0.15 s each; baseline = the same interpreter's ``python -c pass``.
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
  provision preinstall + a 3-task user playbook on the first host count: enos
            (``enos.ansible.run_playbooks``) vs a hand-tuned ``ansible-playbook -f N`` with
            pipelining (target: enos no slower, ratio ≤ 1.0) and vs ``ansible_runner.run``
            with its defaults (target: enos ≥ 1.3× faster).
  vagrant   (only with ``--only vagrant``: needs vagrant + vagrant-libvirt, boots VMs) ``enos up
            --no-provision`` / ``enos destroy`` of two Vagrant machines vs plain ``vagrant up`` /
            ``vagrant destroy -f`` on the same Vagrantfile (bench/vagrant_case.py), target ≤ 1.1×.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
PY = Path(sys.executable)
VENV_BIN = PY.parent
ENOS = [str(PY), "-m", "enos"]
ENOSLIB_VENV = WORK / "enoslib-venv"
ENOSLIB_SPEC = "enoslib==10.9.*"

USER_PLAYBOOK = """\
# bench: a 3-task user playbook (per-host files go under enos_scratch: the hosts share a disk)
- name: bench user playbook
  hosts: all
  tasks:
    - name: read the hostname
      ansible.builtin.command: hostname
      changed_when: false
    - name: write a file
      ansible.builtin.copy:
        content: "hello from {{ inventory_hostname }}\\n"
        dest: "{{ enos_scratch }}/bench.txt"
        mode: "0644"
    - name: add a line
      ansible.builtin.lineinfile:
        path: "{{ enos_scratch }}/bench.txt"
        line: "roles {{ enos_roles | join(',') }}"
"""


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


# --------------------------------------------------------------------------- set-up

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


class Envs:
    """The enos environments (local hosts) this run created; ``destroy_all`` frees them."""

    def __init__(self, base: Path):
        self.base = base
        self.live: List[Path] = []
        self.run_ids: List[str] = []

    def reservation(self, n: int) -> Path:
        """Write (once) and return a reservation of ``n`` local hosts in two roles."""
        path = self.base / f"local-{n}.yaml"
        if not path.exists():
            a = (n + 1) // 2
            roles = f"    a: {a}\n" + (f"    b: {n - a}\n" if n - a else "")
            path.write_text(f"provider:\n  type: local\nresources:\n  local:\n{roles}")
        return path

    def up(self, n: int, name: str) -> tuple:
        """Bring ``n`` hosts up in a new env dir; return (env dir, seconds)."""
        d = self.base / name
        self.live.append(d)
        try:
            dt = timed(ENOS + ["-q", "up", "-f", str(self.reservation(n)), "--env", str(d), "--no-provision"],
                       cwd=self.base)
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


# --------------------------------------------------------------------------- baselines

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


def env_run(api_env) -> float:
    """Time ``Env.run("hostname")`` (the experiment API: Results with every host's result)
    in this process; return seconds."""
    t = time.perf_counter()
    res = api_env.run("hostname")
    dt = time.perf_counter() - t
    bad = [r.host.alias for r in res if r.stdout.strip() != r.host.alias]
    if bad:
        raise RuntimeError(f"enos Env.run: wrong hostname on {bad}")
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


def enoslib_run(py: Path, env, hosts_json: Path, warmup: int = 0) -> dict:
    """Run bench/enoslib_run.py in EnOSlib's venv; return its JSON (import_s, run_s, ...)."""
    p = subprocess.run([str(py), str(HERE / "enoslib_run.py"), str(hosts_json), "hostname", str(warmup)],
                       capture_output=True, text=True, env=clean_env())
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"EnOSlib baseline failed ({p.returncode}): {p.stdout[-1500:]} {p.stderr[-1500:]}")
    return json.loads(lines[-1])


def write_hosts_json(env, path: Path) -> Path:
    """Write the host list EnOSlib's side needs; return its path."""
    path.write_text(json.dumps([{"alias": h.alias, "address": h.address, "user": h.user,
                                 "keyfile": h.keyfile, "known_hosts": str(env.known_hosts)}
                                for h in env.resources.hosts]))
    return path


# --------------------------------------------------------------------------- provisioning

def provision_enos(env, playbooks: List[Path]) -> float:
    """Time enos' own provisioning (``run_playbooks``) in this process; return seconds."""
    from enos.ansible import run_playbooks
    t = time.perf_counter()
    run_playbooks(env.env_dir, env.inventory, env.ssh_config, playbooks, len(env.resources.hosts),
                  extravars={"enos_env_dir": str(env.env_dir), "enos_run_id": env.run_id})
    return time.perf_counter() - t


def provision_tuned(env, playbooks: List[Path]) -> float:
    """Time a hand-tuned ``ansible-playbook -f N`` with pipelining (one process, both
    playbooks) on the env's inventory; return seconds."""
    e = clean_env()
    e.update(ANSIBLE_PIPELINING="True", ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_RETRY_FILES_ENABLED="False",
             ANSIBLE_NOCOLOR="True")
    n = len(env.resources.hosts)
    return timed([str(VENV_BIN / "ansible-playbook"), "-i", str(env.inventory), "-f", str(n),
                  "-e", f"enos_env_dir={env.env_dir} enos_run_id={env.run_id}", *map(str, playbooks)],
                 cwd=env.env_dir, env=e)


def provision_runner_defaults(env, playbooks: List[Path], tmp: Path) -> float:
    """Time ``ansible_runner.run`` with its defaults (one run per playbook, as its API
    takes one), only PATH set so it finds ansible-playbook; return seconds."""
    import ansible_runner
    t = time.perf_counter()
    for pb in playbooks:
        r = ansible_runner.run(private_data_dir=str(tmp), playbook=str(pb), inventory=str(env.inventory),
                               extravars={"enos_env_dir": str(env.env_dir), "enos_run_id": env.run_id},
                               envvars={"PATH": clean_env()["PATH"]}, quiet=True,
                               project_dir=str(pb.parent))
        if r.rc != 0:
            raise RuntimeError(f"ansible-runner (defaults) failed on {pb}: rc {r.rc}")
    return time.perf_counter() - t


# --------------------------------------------------------------------------- table

class Table:
    """Rows of (case, enos, baseline, ratio, target, verdict) built from sample lists."""

    def __init__(self):
        self.rows: List[dict] = []
        self.notes: List[str] = []

    def add(self, case: str, enos: List[float], base: Optional[List[float]], target: str,
            check: Callable[[float, Optional[float]], Optional[bool]], ratio_kind: str = "enos/base",
            base_name: str = "") -> None:
        """Add a row from samples; ``check(enos_median, ratio)`` says pass/fail (None = info)."""
        em = statistics.median(enos)
        bm = statistics.median(base) if base else None
        ratio = None
        if bm:
            ratio = em / bm if ratio_kind == "enos/base" else bm / em
        verdict = check(em, ratio)
        self.rows.append({"case": case, "enos": em, "baseline": bm, "baseline_name": base_name,
                          "ratio": ratio, "ratio_kind": ratio_kind, "target": target,
                          "pass": verdict, "n": len(enos),
                          "enos_samples": [round(x, 3) for x in enos],
                          "baseline_samples": [round(x, 3) for x in base] if base else None})

    def render(self) -> str:
        """Return the table as Markdown."""
        out = ["| case | enos (s) | baseline (s) | ratio | target | result |",
               "|---|---:|---:|---:|---|---|"]
        for r in self.rows:
            base = f"{r['baseline']:.3f} {r['baseline_name']}".strip() if r["baseline"] is not None else "—"
            if r["ratio"] is None:
                ratio = "—"
            else:
                ratio = f"{r['ratio']:.2f}×" + (" faster" if r["ratio_kind"] == "base/enos" else "")
            res = {True: "PASS", False: "FAIL", None: "info"}[r["pass"]]
            enos = f"{r['enos']:.3f}" if r["enos"] >= 0.01 else f"{r['enos']:.5f}"   # e.g. `import enos`
            out.append(f"| {r['case']} | {enos} | {base} | {ratio} | {r['target']} | {res} |")
        return "\n".join(out)


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
        table.add(f"start-up: `{k}`", samples[k], base, "≤ 0.150 s",
                  lambda e, r: e <= 0.150, base_name="(python -c pass)")


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


def bench_provision(table: Table, env_dir: Path, repeat: int, tmp: Path) -> None:
    """Provisioning cases on the env at env_dir."""
    from enos.ansible import PREINSTALL
    env = open_env(env_dir)
    n = len(env.resources.hosts)
    user = tmp / "user.yml"
    user.write_text(USER_PLAYBOOK)
    pbs = [PREINSTALL, user]
    rtmp = tmp / "runner-defaults"
    rtmp.mkdir(exist_ok=True)
    provision_tuned(env, pbs)        # warm-up: Ansible's masters, interpreter discovery, caches
    s: Dict[str, List[float]] = {"enos": [], "tuned": [], "runner": []}
    for i in range(repeat):
        s["enos"].append(provision_enos(env, pbs))
        s["tuned"].append(provision_tuned(env, pbs))
        s["runner"].append(provision_runner_defaults(env, pbs, rtmp))
        log(f"provision {n} hosts, round {i + 1}/{repeat}: enos {s['enos'][-1]:.2f} "
            f"tuned {s['tuned'][-1]:.2f} runner-defaults {s['runner'][-1]:.2f}")
    table.add(f"provisioning {n} hosts (preinstall + 3 tasks) vs `ansible-playbook -f {n}` pipelined",
              s["enos"], s["tuned"], "≤ 1.00×", lambda e, r: r is not None and r <= 1.0,
              base_name="(hand-tuned)")
    table.add(f"provisioning {n} hosts vs ansible-runner defaults", s["enos"], s["runner"], "≥ 1.3× faster",
              lambda e, r: r is not None and r >= 1.3, ratio_kind="base/enos", base_name="(runner defaults)")


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


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark; return 0 when every target passed, 1 otherwise (2 on set-up errors
    or when the network guard refused traffic that would have left the machine)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="20,50", help="comma-separated host counts [20,50]")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved repetitions per case [5]")
    ap.add_argument("--quick", action="store_true",
                    help="3 hosts, 1 repetition, no EnOSlib: proves the harness works, no meaningful figures")
    ap.add_argument("--enoslib", action="store_true", help="with --quick: include the EnOSlib baseline")
    ap.add_argument("--no-enoslib", action="store_true",
                    help="leave the EnOSlib baseline out (enos vs plain ssh only: e.g. before/after a change)")
    ap.add_argument("--only", default="startup,updown,run,provision",
                    help="comma-separated cases to run [startup,updown,run,provision]; "
                         "'vagrant' (not in the default: boots VMs, minutes each) is enos vs plain Vagrant")
    ap.add_argument("--save", metavar="FILE", help="also write the results (Markdown) to FILE")
    ap.add_argument("--json", metavar="FILE", help="also write the raw samples (JSON) to FILE")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run.py needs root (the local provider creates network namespaces)", file=sys.stderr)
        return 2
    counts = [3] if a.quick else [int(x) for x in a.hosts.split(",") if x.strip()]
    repeat = 1 if a.quick else max(1, a.repeat)
    only = set(a.only.split(","))
    use_enoslib = (not a.quick or a.enoslib) and not a.no_enoslib and bool(only & {"run", "startup"})
    started = datetime.datetime.now(datetime.timezone.utc)
    desc = machine()
    log(desc)
    WORK.mkdir(parents=True, exist_ok=True)
    guard_log = start_network_guard()
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    envs = Envs(tmp)
    table = Table()
    old_term = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rc = 0
    error = None
    try:
        enoslib_py = ensure_enoslib() if use_enoslib else None
        if "updown" in only:
            for n in counts:
                log(f"enos up / destroy of {n} hosts x{repeat}")
                bench_up_down(table, envs, n, repeat)
        if "vagrant" in only:
            log(f"enos vs plain vagrant, 2 machines x{repeat}")
            sys.path.insert(0, str(HERE))
            from vagrant_case import bench_vagrant
            bench_vagrant(table, repeat, tmp, ENOS, clean_env, log)
        main_envs: Dict[int, Path] = {}
        for n in counts:
            if only & {"run", "provision", "startup"}:
                d, t = envs.up(n, f"hosts-{n}")
                main_envs[n] = d
                log(f"{n} hosts up in {t:.2f}s ({d})")
        if "startup" in only:
            log("CLI start-up")
            bench_startup(table, envs, main_envs[counts[0]], repeat)
            bench_import(table, repeat, enoslib_py, main_envs[counts[0]])
        if "run" in only:
            for n in counts:
                log(f"fan-out on {n} hosts x{repeat}")
                bench_run(table, main_envs[n], n, repeat, enoslib_py, tmp)
        if "provision" in only:
            n = counts[0]
            log(f"provisioning on {n} hosts x{repeat}")
            bench_provision(table, main_envs[n], repeat, tmp)
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
    text = table.render()
    fails = [r for r in table.rows if r["pass"] is False]
    header = (f"# enos benchmark results\n\nDate: {started:%Y-%m-%d %H:%M} UTC  \n"
              f"Command: `{shlex.join(['bench/run.py'] + (argv if argv is not None else sys.argv[1:]))}`  \n"
              f"Machine: {desc}  \n"
              f"Medians of {repeat} interleaved repetitions (start-up: of {max(repeat, 5)}); "
              f"ratio = enos/baseline unless marked 'faster' (= baseline/enos).\n")
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
