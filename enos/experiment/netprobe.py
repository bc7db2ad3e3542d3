"""``enos tc --test``: measure what the network really does between every two groups and
compare it with the constraints.

For each ordered pair of groups (src, dst) — and (g, g) when a rule constrains traffic
within g — one host of src measures towards one host of dst, pair after pair (so that
transfers do not compete): a small Python 3 program (only ``python3`` is needed on the
hosts, which enos' preinstall guarantees) runs as a server on the dst host and as a
client on the src host. The client sends UDP echo probes (every 20 ms; round-trip time =
median, loss = share of probes with no echo) then one TCP transfer sized for ~2 s at the
requested rate (throughput = what the receiver got from its first quarter to its last byte,
divided by that time, so that TCP's slow start is left out).

Tolerances (:data:`RTT_TOLERANCE` …): a measure passes when
* RTT: |measured − requested| ≤ max(20 % of requested, 2 ms); requested RTT =
  delay(src→dst) + delay(dst→src);
* rate: |measured − requested| ≤ 15 % of requested (only pairs with a rate limit);
* loss: |measured − requested| ≤ 3·√(p(1−p)/n) + 2/n (n probes; requested round-trip
  loss p = 1 − (1 − loss(src→dst))(1 − loss(dst→src))).
"""
from __future__ import annotations

import json
import math
import os
import random
import shlex
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from enos import render
from enos.errors import EnosError
from enos.experiment.facts import gather_facts
from enos.experiment.tc import _endpoint
from enos.reservation.netconstraints import format_delay, format_rate
from enos.ssh.remote import run_command, run_sessions

if TYPE_CHECKING:  # pragma: no cover
    from enos.model import Host
    from enos.reservation.netconstraints import NetworkConstraints
    from enos.task import EnvDir

RTT_TOLERANCE = 0.20
RTT_FLOOR_MS = 2.0
RATE_TOLERANCE = 0.15
TRANSFER_SECONDS = 2.0

PROGRAM = r'''
import json, os, select, socket, struct, sys, threading, time
_beat = [0.0]
def beat():
    # a line every 0.5 s: once enos' SSH session is gone (Ctrl-C), the write fails: stop
    now = time.time()
    if now - _beat[0] > 0.5:
        _beat[0] = now
        try:
            sys.stdout.write("\n"); sys.stdout.flush()
        except OSError:
            os._exit(1)
def serve(port, limit):
    fam = socket.AF_INET6 if ":" in sys.argv[4] else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((sys.argv[4], port))
    t = socket.socket(fam, socket.SOCK_STREAM); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((sys.argv[4], port)); t.listen(4)
    end = time.time() + limit
    def alive():
        beat()
        return time.time() < end
    def echo():
        while alive():
            r, _, _ = select.select([u], [], [], 0.5)
            if r:
                data, peer = u.recvfrom(2048); u.sendto(data, peer)
        os._exit(0)
    threading.Thread(target=echo, daemon=True).start()
    print("@@ready", flush=True)
    t.settimeout(0.5)
    while alive():
        try:
            c, _ = t.accept()
        except socket.timeout:
            continue
        c.settimeout(limit)
        kind = c.recv(1)
        if kind == b"B":
            head = b""
            while len(head) < 8:
                head += c.recv(8 - len(head))
            total = struct.unpack("!Q", head)[0]
            n, t25, n25 = 0, None, 0
            while True:
                d = c.recv(262144)
                if not d: break
                n += len(d); beat()
                if t25 is None and n >= total // 4:
                    t25, n25 = time.perf_counter(), n
            t_end = time.perf_counter()
            # steady-state rate: from a quarter of the bytes to the last (TCP's slow start left out)
            rate = (n - n25) * 8 / (t_end - t25) if t25 is not None and t_end > t25 else 0
            c.sendall(json.dumps({"bytes": n, "rate_bit": rate}).encode()); c.close()
            print("@@bulk", n, flush=True); return
        c.sendall(b"R"); c.close()
def client(addr, port, nbytes, nprobes, wait):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    deadline = time.time() + 30
    while True:
        try:
            c = socket.create_connection((addr, port), timeout=5); c.sendall(b"H"); c.recv(1); c.close(); break
        except OSError:
            if time.time() > deadline: raise
            beat(); time.sleep(0.2)
    u = socket.socket(fam, socket.SOCK_DGRAM); u.connect((addr, port)); u.setblocking(False)
    sent, rtts = {}, {}
    i = 0; nxt = time.time(); last = None
    while True:
        now = time.time(); beat()
        if i < nprobes and now >= nxt:
            sent[i] = time.perf_counter(); u.send(struct.pack("!I", i) + b"x" * 60); i += 1; nxt += 0.02
            if i == nprobes: last = now
        if last is not None and (now - last > wait or len(rtts) == nprobes): break
        r, _, _ = select.select([u], [], [], max(0.0, min(nxt - time.time(), 0.05)) if i < nprobes else 0.05)
        if r:
            try:
                d = u.recv(2048)
            except OSError:
                continue
            k = struct.unpack("!I", d[:4])[0]
            if k in sent and k not in rtts: rtts[k] = (time.perf_counter() - sent[k]) * 1000
    c = socket.create_connection((addr, port), timeout=60)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b"\0" * 65536; left = nbytes
    t0 = time.perf_counter(); c.sendall(b"B" + struct.pack("!Q", nbytes))
    while left > 0:
        k = c.send(buf[:min(left, 65536)]); left -= k; beat()
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        d = c.recv(4096)
        if not d: break
        reply += d
    t1 = time.perf_counter(); c.close()
    got = json.loads(reply or b"{}")
    v = sorted(rtts.values())
    print(json.dumps({"probes": nprobes, "answered": len(v), "rtt_ms": v[len(v) // 2] if v else None,
                      "rtt_min_ms": v[0] if v else None, "bytes": got.get("bytes", 0), "seconds": t1 - t0,
                      "rate_bit": got.get("rate_bit") or None}))
if sys.argv[1] == "serve":
    serve(int(sys.argv[2]), float(sys.argv[3]))
else:
    client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
'''


class TcTestFailed(EnosError):
    """Some measures are outside the tolerance (``report`` holds them all)."""

    def __init__(self, report: "TestReport"):
        self.report = report
        bad = [m for m in report.measures if not m.ok]
        super().__init__(f"{len(bad)} of {len(report.measures)} group pair(s) are outside the tolerance: "
                         + "; ".join(f"{m.src}→{m.dst} ({', '.join(m.problems)})" for m in bad))


@dataclass
class Measure:
    """What one group pair was asked for and what was measured (ms, bit/s, %)."""

    src: str
    dst: str
    src_host: str
    dst_host: str
    dst_address: str
    rtt_requested_ms: float
    rate_requested_bit: Optional[int]
    loss_requested_pct: float
    rtt_ms: Optional[float] = None
    rtt_median_ms: Optional[float] = None
    rate_bit: Optional[float] = None
    loss_pct: Optional[float] = None
    probes: int = 0
    error: Optional[str] = None
    problems: Tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when measured and within the tolerances."""
        return self.error is None and not self.problems

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict (with ``ok``)."""
        d = asdict(self)
        d["problems"] = list(self.problems)
        d["ok"] = self.ok
        return d


@dataclass
class TestReport:
    """Every measured pair."""

    measures: List[Measure]

    @property
    def ok(self) -> bool:
        """True when every pair is within the tolerances."""
        return all(m.ok for m in self.measures)

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return {"ok": self.ok, "tolerances": {"rtt": RTT_TOLERANCE, "rtt_floor_ms": RTT_FLOOR_MS,
                                              "rate": RATE_TOLERANCE},
                "measures": [m.to_dict() for m in self.measures]}

    def __repr__(self) -> str:
        bad = sum(1 for m in self.measures if not m.ok)
        return (f"<TestReport {len(self.measures)} group pair(s), {bad} outside the tolerance\n"
                + "\n".join("  " + line for line in self.table().splitlines()) + ">")

    def _repr_html_(self) -> str:
        rows = []
        for m in self.measures:
            status = "ok" if m.ok else (m.error or "; ".join(m.problems))
            rows.append([m.src, m.dst, f"{m.src_host} → {m.dst_host}", format_delay(m.rtt_requested_ms),
                         f"{m.rtt_ms:.2f} / {m.rtt_median_ms:.2f} ms" if m.rtt_ms is not None else "-",
                         format_rate(m.rate_requested_bit), format_rate(int(m.rate_bit)) if m.rate_bit else "-",
                         f"{m.loss_requested_pct:g}%", f"{m.loss_pct:.1f}%" if m.loss_pct is not None else "-",
                         (status, render.OK_COLOUR if m.ok else render.FAIL_COLOUR)])
        return render.table(["src", "dst", "hosts", "RTT asked", "RTT measured (min / median)", "rate asked",
                             "rate measured", "loss asked", "loss measured", "status"], rows,
                            caption=f"network constraints measured: {'ok' if self.ok else 'OUT OF TOLERANCE'}",
                            css_class="enos-tc-test")

    def table(self) -> str:
        """Return the requested-vs-measured matrix as text (one row per group pair)."""
        rows = [("SRC", "DST", "RTT requested", "RTT measured (min/median)", "RATE requested", "RATE measured",
                 "LOSS req", "LOSS meas", "")]
        for m in self.measures:
            mark = "ok" if m.ok else ("ERROR " + m.error if m.error else "OUT: " + ", ".join(m.problems))
            rows.append((m.src, m.dst, format_delay(m.rtt_requested_ms),
                         f"{m.rtt_ms:.2f}/{m.rtt_median_ms:.2f}ms" if m.rtt_ms is not None else "-",
                         format_rate(m.rate_requested_bit),
                         format_rate(int(m.rate_bit)) if m.rate_bit else "-",
                         f"{m.loss_requested_pct:g}%", f"{m.loss_pct:.1f}%" if m.loss_pct is not None else "-",
                         mark))
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(x) for c, x in zip(r, w)).rstrip() for r in rows)


def judge(m: Measure) -> Measure:
    """Fill ``m.problems`` from the tolerances; return ``m``."""
    problems = []
    if m.rtt_ms is not None:
        tol = max(RTT_TOLERANCE * m.rtt_requested_ms, RTT_FLOOR_MS)
        if abs(m.rtt_ms - m.rtt_requested_ms) > tol:
            problems.append(f"RTT {m.rtt_ms:.2f}ms, asked {m.rtt_requested_ms:g}ms ± {tol:.2g}ms")
    elif m.error is None:
        problems.append("no echo came back")
    if m.rate_requested_bit and m.rate_bit is not None:
        if abs(m.rate_bit - m.rate_requested_bit) > RATE_TOLERANCE * m.rate_requested_bit:
            problems.append(f"rate {format_rate(int(m.rate_bit))}, asked {format_rate(m.rate_requested_bit)} "
                            f"± {RATE_TOLERANCE:.0%}")
    if m.loss_pct is not None and m.probes:
        p, n = m.loss_requested_pct / 100, m.probes
        tol = 3 * math.sqrt(p * (1 - p) / n) + 2 / n
        if abs(m.loss_pct / 100 - p) > tol:
            problems.append(f"loss {m.loss_pct:.1f}%, asked {m.loss_requested_pct:g}% ± {tol * 100:.1f}%")
    m.problems = tuple(problems)
    return m


def _python(argv: Sequence[str], host: "Host") -> str:
    return "python3 -c " + shlex.quote(PROGRAM) + " " + " ".join(shlex.quote(str(a)) for a in argv)


def measure_pair(env: "EnvDir", src: "Host", dst: "Host", dst_address: str, nbytes: int,
                 nprobes: int, wait: float, timeout: float = 120.0) -> dict:
    """Run the probe from ``src`` to ``dst`` (at ``dst_address``); return the client's
    figures (``rtt_ms``, ``answered``, ``probes``, ``rate_bit``, ``bytes``, ``seconds``).
    Raises EnosError when the probe could not run."""
    port = random.randint(20000, 59000)
    bind = "::" if ":" in dst_address else "0.0.0.0"
    server_out: dict = {}
    cancel_r, cancel_w = os.pipe()

    def serve():
        try:
            server_out["r"] = run_sessions(env.ssh_config, [dst], _python(["serve", port, timeout, bind], dst),
                                           timeout=timeout + 10, cancel_fd=cancel_r)[dst.alias]
        except Exception as e:  # reported below with the client's outcome
            server_out["e"] = e
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        client = run_command(env.ssh_config, [src], _python(["client", dst_address, port, nbytes, nprobes, wait], src),
                             timeout=timeout, tolerate_failures=True)[0]
        t.join(15)
    finally:
        os.write(cancel_w, b"x")      # interrupted, or the server still waiting: end its session
        t.join(10)
        os.close(cancel_w)
        os.close(cancel_r)
    if not client.ok:
        srv = server_out.get("r")
        detail = (client.stderr.strip().splitlines() or [client.error or "?"])[-1]
        if srv is not None and srv.exit_code != 0:
            srv_err = srv.stderr.strip().splitlines() or [srv.error or "?"]
            detail += f" (server on {dst.alias}: {srv_err[-1]})"
        raise EnosError(f"probe {src.alias} → {dst.alias} failed: {detail}")
    return json.loads(client.stdout.strip().splitlines()[-1])


def test(env: "EnvDir", constraints: "NetworkConstraints", groups: Sequence[str],
         progress=None) -> TestReport:
    """Measure every ordered pair of groups (with at least one host each) and compare with
    ``constraints``; return a :class:`TestReport` (``report.ok`` False when some measure
    is outside the tolerances; the caller decides to raise :class:`TcTestFailed`)."""
    hosts = env.resources.hosts
    facts = gather_facts(env)
    rules = {(r.src, r.dst): r for r in constraints.group_rules(list(groups))}
    all_groups = list(dict.fromkeys(list(groups) + [g for k in rules for g in k]))
    members: Dict[str, List["Host"]] = {}
    for h in hosts:
        for r in h.roles:
            members.setdefault(r, []).append(h)
    measures = []
    for a in all_groups:
        for b in all_groups:
            if a == b and (a, a) not in rules:
                continue
            pair = next(((s, d) for s in members.get(a, []) for d in members.get(b, []) if s.alias != d.alias), None)
            if pair is None:
                continue
            s, d = pair
            fwd, back = rules.get((a, b)), rules.get((b, a))
            net = (fwd.network if fwd else None) or constraints.default_network
            rtt = (fwd.delay_ms or 0 if fwd else 0) + (back.delay_ms or 0 if back else 0)
            lf = (fwd.loss_pct or 0) / 100 if fwd else 0
            lb = (back.loss_pct or 0) / 100 if back else 0
            rate = fwd.rate_bit if fwd else None
            _, addr = _endpoint(d, facts[d.alias], net)
            m = Measure(a, b, s.alias, d.alias, addr, rtt, rate, round((1 - (1 - lf) * (1 - lb)) * 100, 6))
            nbytes = int(min(max((rate or 400 * 10**6) / 8 * TRANSFER_SECONDS, 256 * 1024), 64 * 2**20))
            nprobes = 200 if (lf or lb) else 40
            if progress is not None:
                progress.info(f"tc test: {a} ({s.alias}) → {b} ({d.alias} {addr})")
            try:
                r = measure_pair(env, s, d, addr, nbytes, nprobes, wait=max(1.0, 3 * rtt / 1000))
            except EnosError as e:
                m.error = str(e)
            else:
                m.rtt_ms, m.rtt_median_ms = r["rtt_min_ms"], r["rtt_ms"]
                m.rate_bit, m.probes = r["rate_bit"], r["probes"]
                m.loss_pct = 100 * (r["probes"] - r["answered"]) / r["probes"]
            measures.append(judge(m))
    return TestReport(measures)
