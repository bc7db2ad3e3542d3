"""``env.monitor(...)``: CPU, memory, disk I/O and network counters of the hosts, sampled
on the hosts from ``/proc`` with nothing to install, for any block of an experiment::

    with env.monitor(roles="server", interval=1.0) as mon:
        env.run("bench ...")
    mon.totals()          # per host: exact totals (end counters minus start counters)
    mon.to_dataframe()    # one row per sample (pandas, the 'campaign' extra)
    mon.plot()            # one panel per role and metric, a line per host

How it works. One SSH session per host (the env's connection masters) runs a POSIX ``sh``
loop that prints a sample at once (the start sample), then one every ``interval`` seconds,
and a last one (the end sample) the moment :meth:`Monitor.stop` sends it ``SIGUSR1``, then
exits. The samples come back on the session's stdout, so nothing is written on the hosts.
Totals are the end sample's counters minus the start sample's, whatever the length of the
block (0.2 s or hours) and whatever the interval: no byte is lost between samples.

A sample is ``/proc/uptime`` (elapsed time, 10 ms), the first line of ``/proc/stat``
(CPU jiffies of all CPUs), the first 5 lines of ``/proc/meminfo``, ``/proc/net/dev`` and
``/proc/diskstats``; the start sample adds ``getconf CLK_TCK`` and ``ls /sys/block``. Only
``sh``, ``cat``, ``head``, ``ls``, ``sleep`` and ``getconf`` are needed (coreutils or busybox).
``dstat``/``sar`` are not used even when present: they read the same counters but print
averaged rates, from which totals cannot be recovered exactly.

Stopping. The block's end and an exception stop the loops with an end sample; Ctrl-C
(SIGINT/SIGTERM, a KeyboardInterrupt) ends them at once, without one (``with``). If enos is
killed (``kill -9``), its sessions close and each loop dies of SIGPIPE at its next sample;
as a second guard each monitor is recorded in ``<env>/monitors/<id>.json`` (owner PID and
start time, its hosts) before it starts, and the next :class:`Monitor` of the
env and ``enos destroy`` end the loops of a dead owner (:func:`end_stale`), checking each
PID still runs the loop (its command line holds the monitor id) before signalling it.

On the ``local`` provider the hosts share this machine's CPU, memory and disks (those
columns describe the machine) but each has its own network namespace.
"""
from __future__ import annotations

import csv
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from enos.errors import EnosError, UsageError
from enos import process, render
from enos.frames import pandas
from enos.experiment.monitor_plot import plot
from enos.state import atomic_write

#: columns of a monitor's samples (CSV, DataFrame); counters are cumulative since the start
COLUMNS = ("time", "elapsed", "host", "roles", "kind", "cpu_percent", "cpu_busy_seconds",
           "mem_used_mib", "net_rx_bytes", "net_tx_bytes", "disk_read_bytes", "disk_write_bytes")
#: what :meth:`Monitor.totals` gives per host
TOTALS = ("duration", "cpu_percent", "cpu_busy_seconds", "mem_used_mib_max", "net_rx_bytes",
          "net_tx_bytes", "disk_read_bytes", "disk_write_bytes", "samples")
#: block devices left out of the disk totals (virtual, or stacked on disks already counted)
SKIP_DISKS = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")
RECORDS = "monitors"
SECTOR = 512


class MonitorError(EnosError):
    """The monitor could not start (or give an end sample) on some hosts: ``.hosts`` maps
    each alias to why."""

    def __init__(self, what: str, hosts: Dict[str, str]):
        self.hosts = dict(hosts)
        super().__init__(f"monitor: {what} on {len(hosts)} host(s): "
                         + "; ".join(f"{a}: {m}" for a, m in sorted(hosts.items())))


#: shell functions: ``__enos_s KIND`` prints one sample block with shell builtins only
#: (``read``/``printf`` on /proc: no process is started); a start sample adds the block
#: devices (``@B``) and, when ``$__enos_tck`` is set, the clock tick (``@T``).
#: ``__enos_r FILE`` prints a /proc file: under bash in one ``read -d ''`` (a line-by-line
#: ``read`` of a /proc file makes the kernel regenerate it for every line: a start + end
#: sample took 1.75 ms of CPU that way and 0.80 ms this way, measured in one bash, 500
#: pairs each), line by line under a POSIX shell (dash: the sampling loop of
#: ``env.monitor()``). ``|| :`` keeps a step under ``set -e`` whole (the end sample runs
#: in the step's EXIT trap); ``${__enos_tck:-}`` one under ``set -u``.
SAMPLE_FUNCTIONS = (
    "if [ -n \"${BASH_VERSION:-}\" ]; then __enos_r() { IFS= read -r -d '' __l < \"$1\" || :; "
    "printf '%s' \"$__l\"; }\n"
    "else __enos_r() { while IFS= read -r __l || [ -n \"$__l\" ]; do printf '%s\\n' \"$__l\"; done < \"$1\"; }\n"
    "fi\n"
    "__enos_s() { read __u __i < /proc/uptime || return 1; printf '@S %s %s\\n' \"$1\" \"$__u\"; "
    "read __l < /proc/stat; printf '%s\\n' \"$__l\"; __n=0; "
    "while [ $__n -lt 5 ] && IFS= read -r __l; do printf '%s\\n' \"$__l\"; __n=$((__n+1)); done < /proc/meminfo; "
    "__enos_r /proc/net/dev; __enos_r /proc/diskstats; "
    "if [ \"$1\" = start ]; then printf '@B'; for __d in /sys/block/*; do printf ' %s' \"${__d##*/}\"; done; echo; "
    "if [ -n \"${__enos_tck:-}\" ]; then printf '@T %s\\n' \"$__enos_tck\"; fi; fi; "
    "echo @E; }\n")


def sampler(interval: float, tag: str) -> str:
    """Return the shell text of the sampling loop (run as ``exec sh -c TEXT TAG``: ``$0``,
    hence the process's command line, holds ``tag``). Each sample is taken with shell
    builtins (:data:`SAMPLE_FUNCTIONS`): the loop starts one process per interval, its
    ``sleep`` (with ``cat``/``head``, 6 per sample: 4.2-4.8 ms of CPU per sample under
    dash in a host's network namespace, 0.6-0.8 ms with builtins)."""
    body = (
        SAMPLE_FUNCTIONS +
        "__enos_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)\n"
        "stop=; w=; trap 'stop=1' USR1; trap '[ -n \"$w\" ] && kill $w 2>/dev/null; exit 0' TERM INT HUP PIPE\n"
        "__enos_s start || exit 0\n"
        "while [ -z \"$stop\" ]; do\n"
        f"  sleep {interval:g} & w=$!; wait $w; kill $w 2>/dev/null; w=\n"
        "  [ -n \"$stop\" ] && break\n"
        "  __enos_s sample || exit 0\n"
        "done\n"
        "__enos_s end\n")
    return "exec sh -c " + _quote(body) + " " + _quote(tag)


def _quote(text: str) -> str:
    import shlex
    return shlex.quote(text)


@dataclass
class Sample:
    """One parsed sample of one host: raw counters."""
    kind: str
    uptime: float
    cpu_busy: int = 0
    cpu_total: int = 0
    mem_total_kib: int = 0
    mem_available_kib: int = 0
    net: Dict[str, tuple] = field(default_factory=dict)     # interface → (rx, tx) bytes
    disks: Dict[str, tuple] = field(default_factory=dict)   # device → (read, written) sectors
    clk_tck: Optional[int] = None
    block: Optional[List[str]] = None


def parse_sample(lines: Sequence[str]) -> Sample:
    """Parse the lines of one ``@S ... @E`` block; return its :class:`Sample`. Raises
    ValueError on a malformed block."""
    head = lines[0].split()
    s = Sample(kind=head[1], uptime=float(head[2]))
    for line in lines[1:]:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "cpu":
            v = [int(x) for x in parts[1:]]
            idle = v[3] + (v[4] if len(v) > 4 else 0)
            total = sum(v[:8])               # guest time is already in user/nice
            s.cpu_busy, s.cpu_total = total - idle, total
        elif parts[0] == "MemTotal:":
            s.mem_total_kib = int(parts[1])
        elif parts[0] == "MemAvailable:":
            s.mem_available_kib = int(parts[1])
        elif parts[0] == "@T":
            s.clk_tck = int(parts[1])
        elif parts[0] == "@B":
            s.block = parts[1:]
        elif ":" in line and len(line.partition(":")[2].split()) >= 16:      # /proc/net/dev
            name, _, rest = line.partition(":")
            nums = rest.split()
            s.net[name.strip()] = (int(nums[0]), int(nums[8]))
        elif len(parts) >= 14 and parts[0].isdigit() and parts[1].isdigit():  # /proc/diskstats
            s.disks[parts[2]] = (int(parts[5]), int(parts[9]))
    return s


class _Stream:
    """Turns one host's output lines into Samples (a block cut short is dropped)."""

    def __init__(self):
        self.samples: List[Sample] = []
        self.errors: List[str] = []
        self._block: Optional[List[str]] = None

    def line(self, text: str) -> None:
        if text.startswith("@S "):
            self._block = [text]
        elif text == "@E":
            if self._block:
                try:
                    self.samples.append(parse_sample(self._block))
                except (ValueError, IndexError) as e:
                    self.errors.append(f"malformed sample: {e}")
            self._block = None
        elif self._block is not None:
            self._block.append(text)


def _disks(start: Sample) -> List[str]:
    names = start.block if start.block is not None else list(start.disks)
    return [d for d in names if d in start.disks and not d.startswith(SKIP_DISKS)]


def _net_sum(s: Sample, interfaces: Optional[Sequence[str]]) -> tuple:
    names = [n for n in s.net if (n in interfaces if interfaces else n != "lo")]
    return sum(s.net[n][0] for n in names), sum(s.net[n][1] for n in names)


def host_rows(alias: str, roles: Sequence[str], samples: Sequence[Sample], wall_start: float,
              interfaces: Optional[Sequence[str]] = None) -> List[dict]:
    """Return one row of :data:`COLUMNS` per sample of a host (the first one its start
    sample): counters cumulative since the start, CPU % over the interval before the row."""
    if not samples or samples[0].kind != "start":
        return []
    first = samples[0]
    tck = first.clk_tck or 100
    disks = _disks(first)
    rx0, tx0 = _net_sum(first, interfaces)
    rd0 = sum(first.disks[d][0] for d in disks)
    wr0 = sum(first.disks[d][1] for d in disks)
    rows, prev = [], first
    for s in samples:
        rx, tx = _net_sum(s, interfaces)
        dt = s.cpu_total - prev.cpu_total
        rows.append({
            "time": round(wall_start + s.uptime - first.uptime, 3), "elapsed": round(s.uptime - first.uptime, 2),
            "host": alias, "roles": ",".join(roles), "kind": s.kind,
            "cpu_percent": round(100.0 * (s.cpu_busy - prev.cpu_busy) / dt, 2) if dt > 0 else None,
            "cpu_busy_seconds": round((s.cpu_busy - first.cpu_busy) / tck, 2),
            "mem_used_mib": round((s.mem_total_kib - s.mem_available_kib) / 1024.0, 1),
            "net_rx_bytes": rx - rx0, "net_tx_bytes": tx - tx0,
            "disk_read_bytes": (sum(s.disks.get(d, (0, 0))[0] for d in disks) - rd0) * SECTOR,
            "disk_write_bytes": (sum(s.disks.get(d, (0, 0))[1] for d in disks) - wr0) * SECTOR})
        prev = s
    return rows


def host_totals(samples: Sequence[Sample], rows: Sequence[dict]) -> Optional[dict]:
    """Return a host's totals (:data:`TOTALS`) from its start and end samples, or None
    when it has no end sample (the totals would be wrong)."""
    if not rows or samples[-1].kind != "end":
        return None
    first, last = samples[0], samples[-1]
    total = last.cpu_total - first.cpu_total
    end = rows[-1]
    return {"duration": end["elapsed"],
            "cpu_percent": round(100.0 * (last.cpu_busy - first.cpu_busy) / total, 2) if total > 0 else 0.0,
            "cpu_busy_seconds": end["cpu_busy_seconds"],
            "mem_used_mib_max": max(r["mem_used_mib"] for r in rows),
            "net_rx_bytes": end["net_rx_bytes"], "net_tx_bytes": end["net_tx_bytes"],
            "disk_read_bytes": end["disk_read_bytes"], "disk_write_bytes": end["disk_write_bytes"],
            "samples": len(rows)}


def _tag(monitor_id: str) -> str:
    return f"enos-monitor-{monitor_id}"


def _end_by_tag_script(monitor_id: str, signal: str = "TERM") -> str:
    """Shell text that sends ``signal`` to every process whose command line holds the tag
    of ``monitor_id`` (the tag is assembled at run time, so this script never matches
    itself), then SIGCONT (a stopped process only acts on it then); prints ``ended N``."""
    return ("t='enos-monitor'-'" + monitor_id + "'; n=0; "
            "for d in /proc/[0-9]*; do p=${d#/proc/}; [ \"$p\" = \"$$\" ] && continue; "
            "c=$(tr '\\000' ' ' < $d/cmdline 2>/dev/null) || continue; "
            "case \"$c\" in *\"$t\"*) kill -" + signal + " \"$p\" 2>/dev/null && kill -CONT \"$p\" 2>/dev/null; n=$((n+1));; esac; done; "
            "echo ended $n")


def _end_pid_script(pid: int, monitor_id: str) -> str:
    """Shell text that sends SIGTERM (then SIGCONT) to the loop ``pid`` if its command line
    still holds the tag of ``monitor_id`` (a PID reused by another process is left alone);
    prints ``ended N``."""
    pid = int(pid)
    return ("t='enos-monitor'-'" + monitor_id + "'; n=0; "
            f"case \"$(tr '\\000' ' ' < /proc/{pid}/cmdline 2>/dev/null)\" in *\"$t\"*) "
            f"kill -TERM {pid} 2>/dev/null && kill -CONT {pid} 2>/dev/null; n=1;; esac; echo ended $n")


def _alive(pid: int, start: Optional[int]) -> bool:
    if pid <= 0:
        return False     # abandoned (cancelled) by its owner
    now = process.start_time(pid)
    return now is not None and (start is None or now == start)


class Monitor:
    """Samples the hosts of ``roles`` every ``interval`` seconds between :meth:`start` and
    :meth:`stop` (or over a ``with`` block); see the module's description.

    ``interfaces``: the network interfaces counted (default: all but ``lo``). After the
    stop: :attr:`rows` (one dict per sample, :data:`COLUMNS`), :meth:`totals`,
    :meth:`to_csv`, :meth:`to_dataframe`, :meth:`plot`, an HTML table in Jupyter."""

    def __init__(self, env, roles=None, interval: float = 1.0, interfaces: Optional[Sequence[str]] = None,
                 start_timeout: float = 30.0):
        if not (0.05 <= float(interval) <= 3600):
            raise UsageError(f"monitor: interval must be between 0.05 and 3600 seconds, got {interval}")
        self.env = env
        self.hosts = env.select(roles)
        if not self.hosts:
            raise UsageError("monitor: no host selected")
        self.interval = float(interval)
        self.interfaces = list(interfaces) if interfaces else None
        self.start_timeout = start_timeout
        self.id = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.wall_start: Optional[float] = None
        self._streams = {h.alias: _Stream() for h in self.hosts}
        self._seen = threading.Condition()
        self._bg = None
        self._record: Optional[Path] = None
        self.rows: List[dict] = []
        self.errors: Dict[str, str] = {}

    # --- life cycle ----------------------------------------------------------------------
    def _on_output(self, host, stream: str, line: str) -> None:
        if stream != "stdout":
            return
        with self._seen:
            self._streams[host.alias].line(line.rstrip("\n"))
            self._seen.notify_all()

    def start(self) -> "Monitor":
        """Start the loops and wait for every host's start sample; return self. Ends the
        loops a dead enos left on this env first. Raises MonitorError (nothing is left
        running) when some host gave no start sample within ``start_timeout``."""
        end_stale(self.env)
        self._record = _write_record(self.env, self.id, [h.alias for h in self.hosts])
        self.wall_start = time.time()
        self._bg = self.env.run(sampler(self.interval, _tag(self.id)), roles=self.hosts, background=True,
                                on_output=self._on_output)
        deadline = time.monotonic() + self.start_timeout
        with self._seen:
            while self._bg.running and time.monotonic() < deadline and \
                    any(not s.samples for s in self._streams.values()):
                self._seen.wait(0.05)
        missing = {a: "no start sample" for a, s in self._streams.items() if not s.samples}
        if missing:
            self._abort()
            raise MonitorError("no start sample" + (" (session ended)" if not self._bg.running else ""),
                               self._why(missing))
        return self

    def _why(self, hosts: Dict[str, str]) -> Dict[str, str]:
        res = self._bg.results if self._bg is not None and not self._bg.running else None
        if res is not None:
            for r in res:
                if r.host.alias in hosts and not r.ok:
                    hosts[r.host.alias] = r.status + (": " + r.stderr.strip()[-200:] if r.stderr.strip() else "")
        return hosts

    def _abort(self) -> None:
        if self._bg is not None and self._bg.running:
            self._bg.kill("TERM", grace=2)
        _forget_record(self._record)

    def stop(self) -> "Monitor":
        """Take every host's end sample and end the loops; compute :attr:`rows`; return
        self. Idempotent. A host without an end sample gets no totals (its error is in
        :attr:`errors`); raises nothing for it."""
        if self._bg is None or self.rows or self.errors:
            return self      # not started, or stopped (or cancelled) already
        pids = self._bg.pids(timeout=5.0)
        if pids:
            cmds = {a: f"kill -USR1 {int(p)} 2>/dev/null; true" for a, p in pids.items()}
            self.env._run_sessions([h for h in self.hosts if h.alias in pids], "monitor stop", cmds, timeout=30)
        try:
            self._bg.wait(timeout=max(10.0, 3 * self.interval), check=False)
        except Exception:       # Timeout: a host does not answer
            self._bg.kill("TERM", grace=2)
        _forget_record(self._record)
        self._build()
        return self

    def _build(self) -> None:
        for h in self.hosts:
            st = self._streams[h.alias]
            rows = host_rows(h.alias, h.roles, st.samples, self.wall_start or 0.0, self.interfaces)
            if not st.samples or st.samples[-1].kind != "end":
                self.errors[h.alias] = "no end sample" + ("; " + "; ".join(st.errors) if st.errors else "")
            self.rows.extend(rows)
        self.rows.sort(key=lambda r: (r["elapsed"], r["host"]))

    def cancel(self) -> None:
        """End the loops at once, with no end sample (an interrupt: Ctrl-C): each host's
        loop (its PID, checked to still hold the monitor's tag) is sent SIGTERM over a short
        session of its own, then the sessions are dropped. A host that does not answer
        within a second is left (its loop dies at its next sample, its session being gone)
        and the record stays, marked abandoned, so that the next monitor of the env or
        ``enos destroy`` ends what is left. Idempotent."""
        confirmed = False
        if self._bg is not None and self._bg.running:
            pids = self._bg.pids(timeout=0)
            hosts = [h for h in self.hosts if h.alias in pids]
            if hosts:
                res = self.env._run_sessions(hosts, "monitor cancel",
                                             {a: _end_pid_script(p, self.id) for a, p in pids.items()}, timeout=1.0)
                confirmed = len(hosts) == len(self.hosts) and not res.failed
            self._bg._cancel(wait=2.0)
        if confirmed:
            _forget_record(self._record)
        elif self._record is not None and self._record.exists():
            try:
                rec = json.loads(self._record.read_text())
                rec.update(pid=0, start=None, abandoned=time.time())
                atomic_write(self._record, json.dumps(rec), mode=0o600)
            except (OSError, ValueError):
                pass
        self.errors = self.errors or {h.alias: "cancelled" for h in self.hosts}

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.cancel()
        else:
            self.stop()

    # --- results -------------------------------------------------------------------------
    def totals(self) -> Dict[str, Optional[dict]]:
        """Return alias → totals (:data:`TOTALS`: exact, from the start and end counters),
        None for a host without an end sample (see :attr:`errors`)."""
        out = {}
        for h in self.hosts:
            st = self._streams[h.alias]
            rows = [r for r in self.rows if r["host"] == h.alias]
            out[h.alias] = host_totals(st.samples, rows) if st.samples else None
        return out

    def to_csv(self, path) -> Path:
        """Write the samples to ``path`` (CSV with :data:`COLUMNS`); return the path."""
        path = Path(path)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(self.rows)
        return path

    def to_dataframe(self):
        """Return the samples as a pandas DataFrame (columns :data:`COLUMNS`). Raises
        MissingDependency without pandas (``pip install 'enos[campaign]'``)."""
        return pandas("monitor.to_dataframe()").DataFrame(self.rows, columns=list(COLUMNS))

    def plot(self, metrics: Sequence[str] = ("cpu_percent", "mem_used_mib", "net_rx_rate", "net_tx_rate"),
             path=None):
        """Plot ``metrics`` over time, one panel per metric and role, one line per host
        (``net_*_rate``/``disk_*_rate`` are bytes/s between samples); save to ``path``
        when given; return the matplotlib Figure."""
        return plot(self, metrics, path)

    def __repr__(self) -> str:
        state = "running" if self._bg is not None and self._bg.running else ("done" if self.rows else "new")
        return f"<Monitor {self.id} {len(self.hosts)} host(s) every {self.interval:g}s: {state}, {len(self.rows)} sample(s)>"

    def _repr_html_(self) -> str:
        rows = []
        for alias, t in self.totals().items():
            if t is None:
                rows.append([alias, (self.errors.get(alias, "running"), render.FAIL_COLOUR)] + [""] * 7)
                continue
            rows.append([alias, ("ok", render.OK_COLOUR), f"{t['duration']:.2f}s", f"{t['cpu_percent']:.1f}",
                         f"{t['mem_used_mib_max']:.0f}", t["net_rx_bytes"], t["net_tx_bytes"],
                         t["disk_read_bytes"], t["disk_write_bytes"]])
        return render.table(["host", "status", "duration", "cpu %", "mem max MiB", "net rx B", "net tx B",
                             "disk read B", "disk write B"], rows, caption=repr(self), css_class="enos-monitor")


# --- records of live monitors, for the clean-up after a kill -9 ---------------------------
def _records_dir(env) -> Path:
    return Path(env.env_dir) / RECORDS


def _write_record(env, monitor_id: str, aliases: List[str]) -> Path:
    d = _records_dir(env)
    d.mkdir(mode=0o700, exist_ok=True)
    path = d / f"{monitor_id}.json"
    atomic_write(path, json.dumps({"id": monitor_id, "pid": os.getpid(), "start": process.start_time(os.getpid()),
                                   "hosts": aliases, "at": time.time()}), mode=0o600)
    return path


def _forget_record(path: Optional[Path]) -> None:
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def end_stale(env, everyone: bool = False) -> List[str]:
    """End the sampling loops recorded in the env whose owner process is gone (all of
    them with ``everyone``: ``enos destroy``), on the hosts still in the env, and forget
    their records; return the ids ended. Hosts that do not answer are skipped (their loops
    end by themselves when their sessions are gone)."""
    d = _records_dir(env)
    if not d.is_dir():
        return []
    ended = []
    for path in sorted(d.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            _forget_record(path)
            continue
        if not everyone and _alive(int(rec.get("pid", 0)), rec.get("start")):
            continue
        hosts = [h for h in env.hosts if h.alias in set(rec.get("hosts", []))]
        if hosts:
            script = _end_by_tag_script(str(rec["id"]))
            env._run_sessions(hosts, "monitor clean-up", {h.alias: script for h in hosts}, timeout=30)
        _forget_record(path)
        ended.append(str(rec["id"]))
    return ended
