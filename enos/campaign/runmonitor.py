"""Monitoring of a campaign's runs (``monitor: true``) with no SSH round trip of its own per run.

One :class:`~enos.experiment.monitor.Monitor` samples every host once a second for the whole
campaign (started before the first run, stopped after the last). The samples each run's exact
totals come from — one at its start and one at its end on every host — are taken inside the
run's own sessions: on each host, the first step's command is preceded by a sample and the
last step's command followed by one (an ``EXIT`` trap), both printed on the session's stdout
between marks holding a random token, and taken out of the output before anything is recorded.
A sample uses shell builtins only (``read``/``printf`` on ``/proc``): no process is started.

A host gets a sample session of its own only when the run's first (last) step does not run on
it, or when its session ended without the sample (a timeout, a step failing before the last
one, a command that replaced the trap or ``exec``-ed): one round trip for those hosts, the
others not waiting for anything. A run's ``monitor.csv``: its start sample, the campaign
monitor's samples taken in between, its end sample (same columns as ``env.monitor()``).
"""
from __future__ import annotations

import logging
import secrets
import time
from typing import Dict, List, Optional, Sequence

from enos.experiment.monitor import (SAMPLE_FUNCTIONS as SAMPLE_FN, Monitor, MonitorError, Sample, host_rows,
                                    host_totals, parse_sample)

log = logging.getLogger(__name__)

def _parse(lines: Sequence[str]) -> Optional[Sample]:
    lines = [ln for ln in lines if ln]
    if len(lines) < 2 or not lines[0].startswith("@S ") or lines[-1] != "@E":
        return None
    try:
        return parse_sample(lines[:-1])
    except (ValueError, IndexError):
        return None


class RunSamples:
    """The start and end samples of one run on the campaign monitor's hosts."""

    def __init__(self, campaign: "CampaignMonitor"):
        self.cm = campaign
        self.aliases = [h.alias for h in campaign.hosts]
        self.start: Dict[str, Sample] = {}
        self.end: Dict[str, Sample] = {}
        self.wall_start = time.time()

    # --- folding samples into the steps' sessions ---------------------------------------
    def command(self, command: str, first: bool, last: bool) -> str:
        """Return the shell text of a step's ``command`` with the run's start sample before
        it (``first``) and its end sample after it (``last``)."""
        if not (first or last):
            return command
        tok = self.cm.token
        text = SAMPLE_FN
        if first:
            text += f"__enos_s start; echo {tok}\n"
        if last:
            text += f"trap '__enos_rc=$?; printf \"\\n%s\\n\" {tok}; __enos_s end; exit $__enos_rc' EXIT\n"
        return text + command

    def take(self, results, first: bool, last: bool) -> None:
        """Take the samples out of each result's stdout (in place) and keep them."""
        if not (first or last):
            return
        mark = self.cm.token + "\n"
        for r in results:
            out = r.stdout or ""
            if first and out.startswith("@S "):
                i = out.find("\n" + mark)
                if i >= 0:
                    s = _parse(out[:i].split("\n"))
                    if s is not None and r.host.alias in self.aliases:
                        self.start[r.host.alias] = s
                    out = out[i + 1 + len(mark):]
            if last:
                j = out.rfind("\n" + mark)
                s = _parse(out[j + 1 + len(mark):].split("\n")) if j >= 0 else None
                if s is not None and s.kind == "end":
                    if r.host.alias in self.aliases:
                        self.end[r.host.alias] = s
                    out = out[:j]
            r.stdout = out

    # --- sample sessions of their own, for the hosts the steps did not give one ---------
    def sample(self, kind: str, aliases: Sequence[str]) -> None:
        """Take a ``kind`` (start | end) sample on ``aliases`` over one session each."""
        hosts = [h for h in self.cm.hosts if h.alias in set(aliases)]
        if not hosts:
            return
        text = SAMPLE_FN + f"__enos_s {kind}"
        res = self.cm.env._run_sessions(hosts, f"monitor {kind} sample", {h.alias: text for h in hosts},
                                        timeout=30)
        for r in res:
            s = _parse((r.stdout or "").split("\n")) if r.rc == 0 else None
            if s is not None:
                (self.start if kind == "start" else self.end)[r.host.alias] = s
            else:
                self.cm.why[r.host.alias] = r.error or f"no {kind} sample (exit {r.rc})"

    def begin(self, first_step_aliases: Sequence[str]) -> None:
        """Before the first step: a start sample on the hosts it does not run on."""
        self.wall_start = time.time()
        self.sample("start", [a for a in self.aliases if a not in set(first_step_aliases)])

    def finish(self) -> dict:
        """After the last step: an end sample on the hosts without one; return
        ``{"rows": [...], "totals": {alias: ...}, "errors": {alias: why}}``."""
        self.sample("end", [a for a in self.aliases if a in self.start and a not in self.end])
        rows: List[dict] = []
        totals: Dict[str, Optional[dict]] = {}
        errors: Dict[str, str] = {}
        for h in self.cm.hosts:
            a = h.alias
            if a not in self.start or a not in self.end:
                errors[a] = ("no start sample" if a not in self.start else "no end sample") + \
                    (f": {self.cm.why[a]}" if a in self.cm.why else "")
                totals[a] = None
                continue
            start, end = self.start[a], self.end[a]
            start.clk_tck = self.cm.clk_tck.get(a) or start.clk_tck
            samples = [start] + self.cm.between(a, start.uptime, end.uptime) + [end]
            mine = host_rows(a, h.roles, samples, self.wall_start, self.cm.interfaces)
            totals[a] = host_totals(samples, mine)
            rows.extend(mine)
        rows.sort(key=lambda r: (r["elapsed"], r["host"]))
        return {"rows": rows, "totals": totals, "errors": errors}


class CampaignMonitor:
    """The campaign-long sampling loops (``env.monitor()``, 1 Hz) and what the runs share:
    the output token, each host's clock tick. Use :meth:`run` for each run."""

    def __init__(self, env, interval: float = 1.0):
        self.env = env
        self.token = "@enos-run-sample-" + secrets.token_hex(8)
        self.mon: Optional[Monitor] = env.monitor(interval=interval)
        self.hosts = env.select(None)
        self.interfaces = None
        self.clk_tck: Dict[str, int] = {}
        self.why: Dict[str, str] = {}

    def start(self) -> "CampaignMonitor":
        """Start the loops (one round trip for the campaign); return self. When some host
        gives no start sample, the loops are ended, a warning says why, and the runs still
        get their start and end samples (without the samples in between)."""
        try:
            self.mon.start()
        except MonitorError as e:
            log.warning("monitor: %s; the runs get their start and end samples only", e)
            self.mon = None
            return self
        with self.mon._seen:
            for a, st in self.mon._streams.items():
                if st.samples and st.samples[0].clk_tck:
                    self.clk_tck[a] = st.samples[0].clk_tck
        return self

    def run(self) -> RunSamples:
        """Return the sample book of a new run."""
        self.why = {}
        return RunSamples(self)

    def between(self, alias: str, t0: float, t1: float) -> List[Sample]:
        """Return the periodic samples of ``alias`` taken strictly between the uptimes
        ``t0`` and ``t1``, and forget those taken before ``t1`` (memory stays bounded)."""
        if self.mon is None:
            return []
        with self.mon._seen:
            st = self.mon._streams[alias]
            out = [s for s in st.samples if s.kind == "sample" and t0 < s.uptime < t1]
            st.samples = [s for s in st.samples if s.uptime >= t1]
        return out

    def stop(self, interrupted: bool) -> None:
        """End the loops: with an end sample, or at once (``interrupted``: Ctrl-C)."""
        if self.mon is None:
            return
        if interrupted:
            self.mon.cancel()
        else:
            self.mon.stop()
