"""The ``network_constraints:`` key of reservation.yaml (Enos' format), checked and normalised.

::

    network_constraints:
      enable: true              # 'enos up' applies them (enos tc always does)
      default_delay: 10ms       # between every two groups, each way
      default_rate: 1Gbit       # tc units, any case: bit kbit mbit gbit tbit, bps kbps ... (bytes/s)
      default_loss: 0.1%        # or a number (percent)
      default_network: n1       # the network (IP pool name or role) whose interface is shaped
      groups: [grp1, grp2]      # the groups the defaults apply between (default: every
                                # topology group, or every role without a topology)
      except: [grp3]            # no default constraint from or to these groups
      constraints:
        - {src: grp1, dst: "grp[2-3]", delay: 50ms, rate: 100mbit, loss: 0, symmetric: true,
           network: n1}
        - {src: grp1, dst: grp1, delay: 1ms}   # within a group: between its hosts

``grp[2-4]`` stands for grp2, grp3, grp4. ``symetric`` (the spelling of Enos' own code
and of real files) is accepted for ``symmetric``. A constraint's missing values come from
the defaults. Everything is validated with file:line errors (:class:`ConfigError`);
group names must be roles or topology groups of the reservation.

:func:`parse_network_constraints` returns a :class:`NetworkConstraints`; its values are
normalised: delays in milliseconds, rates in bit/s, losses in percent.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

KEY = "network_constraints"
TOP_KEYS = ("enable", "default_delay", "default_rate", "default_loss", "default_network",
            "constraints", "except", "groups")
RULE_KEYS = ("src", "dst", "delay", "rate", "loss", "symmetric", "symetric", "network")

_VALUE = {"anyOf": [{"type": "string"}, {"type": "number"}]}
_GROUP_PATTERN = {"type": "string", "minLength": 1, "x-expected": "a group or role name (e.g. grp1 or grp[2-4])"}
_GROUP_LIST = {"type": "array", "items": _GROUP_PATTERN, "x-expected": "a list of group or role names"}
_RULE = {"type": "object", "required": ["src", "dst"], "additionalProperties": False,
         "properties": {"src": _GROUP_PATTERN, "dst": _GROUP_PATTERN,
                        "delay": dict(_VALUE, **{"x-expected": "a delay such as 10ms"}),
                        "rate": dict(_VALUE, **{"x-expected": "a rate such as 100mbit"}),
                        "loss": dict(_VALUE, **{"x-expected": "a loss such as 0.5% or 0.5"}),
                        "symmetric": {"type": "boolean"}, "symetric": {"type": "boolean"},
                        "network": {"type": "string", "minLength": 1,
                                    "x-expected": "a network name"}},
         "x-expected": "a mapping {src, dst, delay, rate, loss, symmetric, network}"}
SCHEMA = {"type": "object", "additionalProperties": False,
          "properties": {"enable": {"type": "boolean"},
                         "default_delay": dict(_VALUE, **{"x-expected": "a delay such as 10ms"}),
                         "default_rate": dict(_VALUE, **{"x-expected": "a rate such as 100mbit"}),
                         "default_loss": dict(_VALUE, **{"x-expected": "a loss such as 0.5% or 0.5"}),
                         "default_network": {"type": "string", "minLength": 1,
                                             "x-expected": "a network name"},
                         "constraints": {"type": "array", "items": _RULE,
                                         "x-expected": "a list of constraints {src, dst, ...}"},
                         "except": _GROUP_LIST, "groups": _GROUP_LIST},
          "x-expected": "a mapping {enable, default_delay, default_rate, default_loss, "
                        "default_network, constraints, except}"}

_TIME_UNITS = {"s": 1000.0, "sec": 1000.0, "secs": 1000.0, "ms": 1.0, "msec": 1.0, "msecs": 1.0,
               "us": 0.001, "usec": 0.001, "usecs": 0.001}
# tc's rate units: *bit are bits per second, *bps BYTES per second (tc(8))
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
               "kibit": 2**10, "mibit": 2**20, "gibit": 2**30, "tibit": 2**40,
               "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9, "tbps": 8 * 10**12,
               "kibps": 8 * 2**10, "mibps": 8 * 2**20, "gibps": 8 * 2**30, "tibps": 8 * 2**40}
#: the longest delay tc is asked for (1 hour, in ms) and the highest rate (10 tbit/s):
#: beyond them a value is a typo, and tc would overflow its counters
MAX_DELAY_MS = 3_600_000.0
MAX_RATE_BIT = 10 * 10**12
_NUM_UNIT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z%]*)\s*$")


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:20] + f"...({len(text)} characters)"


def parse_delay(value) -> float:
    """Return ``value`` (``'10ms'``, ``'1.5s'``, ``'500us'``, ``0``) in milliseconds.
    Raises ValueError with a plain-words reason."""
    if isinstance(value, bool):
        raise ValueError(f"expected a delay such as 10ms, got {value!r}")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        raise ValueError(f"a delay needs a unit (tc would read {value} as microseconds): write {value}ms")
    m = _NUM_UNIT.match(str(value))
    unit = m.group(2).lower() if m else None
    if m is None or (unit and unit not in _TIME_UNITS) or (not unit and float(m.group(1)) != 0):
        raise ValueError(f"expected a delay such as 10ms, 1.5s or 500us, got '{value}'")
    ms = float(m.group(1)) * _TIME_UNITS.get(unit, 1.0)
    if not ms <= MAX_DELAY_MS:
        raise ValueError(f"a delay is at most 1 hour (3600s), got '{_short(value)}'")
    return ms


def parse_rate(value) -> int:
    """Return ``value`` (``'100mbit'``, ``'1Gbit'``, ``'10MBps'`` = megabytes/s as in tc) in
    bit/s (> 0). Raises ValueError with a plain-words reason."""
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise ValueError(f"a rate needs a unit: write e.g. {value}mbit (tc units: bit, kbit, "
                         f"mbit, gbit; kbps, mbps = bytes per second)")
    m = _NUM_UNIT.match(str(value))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _RATE_UNITS:
        raise ValueError(f"expected a rate such as 100mbit or 1gbit (tc units, any case: bit, kbit, "
                         f"mbit, gbit, tbit; bps, kbps, mbps, gbps = bytes per second), got '{value}'")
    number = float(m.group(1)) * _RATE_UNITS[unit]
    if not number <= MAX_RATE_BIT:
        raise ValueError(f"a rate is at most 10tbit, got '{_short(value)}'")
    bits = int(round(number))
    if bits <= 0:
        raise ValueError(f"a rate must be more than 0, got '{value}'")
    return bits


def parse_loss(value) -> float:
    """Return ``value`` (``'0.5%'``, ``0.5``, ``0``) in percent, 0..100. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a loss such as 0.5%, got {value!r}")
    if isinstance(value, (int, float)):
        pct = float(value)
    else:
        m = _NUM_UNIT.match(str(value))
        if m is None or m.group(2) not in ("", "%"):
            raise ValueError(f"expected a loss in percent such as 0.5% or 0.5, got '{value}'")
        pct = float(m.group(1))
    if not 0 <= pct <= 100:
        raise ValueError(f"a loss is a percentage between 0 and 100, got '{value}'")
    return pct


def format_rate(bits: Optional[int]) -> str:
    """Return a rate in bit/s as tc writes it (``100mbit``, ``1.5gbit``); '-' for None."""
    if bits is None:
        return "-"
    for unit, n in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= n:
            return f"{bits / n:.4g}{unit}"
    return f"{bits}bit"


def format_delay(ms: Optional[float]) -> str:
    """Return a delay in ms as tc writes it (``10ms``, ``250us``); '-' for None."""
    if ms is None:
        return "-"
    if ms and ms < 1:
        return f"{ms * 1000:.6g}us"
    return f"{ms:.6g}ms"


@dataclass
class Rule:
    """One constraint between two groups (expanded: one group each side, one direction).

    ``delay_ms``/``rate_bit``/``loss_pct`` None mean 'the default'; ``origin`` says which
    entry of the file it comes from (``network_constraints.constraints.0`` or
    ``default``)."""

    src: str
    dst: str
    delay_ms: Optional[float] = None
    rate_bit: Optional[int] = None
    loss_pct: Optional[float] = None
    network: Optional[str] = None
    origin: str = "default"

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)


@dataclass
class NetworkConstraints:
    """The validated ``network_constraints:`` section (values normalised: ms, bit/s, %)."""

    enable: bool = False
    default_delay_ms: Optional[float] = None
    default_rate_bit: Optional[int] = None
    default_loss_pct: Optional[float] = None
    default_network: Optional[str] = None
    groups: Optional[List[str]] = None
    except_groups: List[str] = field(default_factory=list)
    rules: List[Rule] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)

    def group_rules(self, all_groups: List[str]) -> List[Rule]:
        """Return the rules between groups, Enos' way: a default rule each way between
        every two distinct groups of ``self.groups`` (or ``all_groups``) outside
        ``except`` (and within a group that an explicit rule names as both src and dst),
        each overridden (value by value) by the explicit rules, which are added when no
        default matches. Values left None take the defaults. Later explicit rules win."""
        groups = list(self.groups) if self.groups is not None else list(all_groups)
        excluded = set(self.except_groups)
        intra = {r.src for r in self.rules if r.src == r.dst}
        out: Dict[Tuple[str, str], Rule] = {}
        if any(v is not None for v in (self.default_delay_ms, self.default_rate_bit, self.default_loss_pct)):
            for a in groups:
                for b in groups:
                    if (a != b or a in intra) and a not in excluded and b not in excluded:
                        out[(a, b)] = Rule(a, b, self.default_delay_ms, self.default_rate_bit,
                                           self.default_loss_pct, self.default_network, "default")
        for r in self.rules:
            base = out.get((r.src, r.dst)) or Rule(r.src, r.dst, self.default_delay_ms, self.default_rate_bit,
                                                   self.default_loss_pct, self.default_network)
            out[(r.src, r.dst)] = Rule(r.src, r.dst,
                                       r.delay_ms if r.delay_ms is not None else base.delay_ms,
                                       r.rate_bit if r.rate_bit is not None else base.rate_bit,
                                       r.loss_pct if r.loss_pct is not None else base.loss_pct,
                                       r.network or base.network, r.origin)
        return [r for r in out.values()
                if r.delay_ms or r.rate_bit is not None or r.loss_pct]


def parse_network_constraints(value: Any, known_groups: List[str], check: Callable, err: Callable,
                              expand: Callable[[str], List[str]]) -> NetworkConstraints:
    """Check the ``network_constraints`` value and return a :class:`NetworkConstraints`.

    ``known_groups``: roles and topology groups of the reservation; ``check(instance,
    schema, path)`` and ``err(path, message)`` are the reservation builder's checker and
    error factory (file:line messages); ``expand`` expands ``grp[2-4]``. Raises the
    ConfigError ``err`` makes."""
    path = (KEY,)
    check(value, SCHEMA, path)
    known = set(known_groups)

    def groups_of(text: str, p) -> List[str]:
        try:
            names = expand(text)
        except ValueError as e:
            raise err(p, str(e)) from None
        unknown = [n for n in names if n not in known]
        if unknown:
            import difflib
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise err(p, f"unknown group or role '{unknown[0]}'{hint} (known: {', '.join(sorted(known))})")
        return names

    def value_of(parser, v, p):
        if v is None:
            return None
        try:
            return parser(v)
        except ValueError as e:
            raise err(p, str(e)) from None

    nc = NetworkConstraints(
        enable=bool(value.get("enable", False)),
        default_delay_ms=value_of(parse_delay, value.get("default_delay"), path + ("default_delay",)),
        default_rate_bit=value_of(parse_rate, value.get("default_rate"), path + ("default_rate",)),
        default_loss_pct=value_of(parse_loss, value.get("default_loss"), path + ("default_loss",)),
        default_network=value.get("default_network"))
    if "groups" in value:
        nc.groups = [n for i, g in enumerate(value["groups"]) for n in groups_of(g, path + ("groups", i))]
    nc.except_groups = [n for i, g in enumerate(value.get("except", []))
                        for n in groups_of(g, path + ("except", i))]
    for i, entry in enumerate(value.get("constraints", [])):
        p = path + ("constraints", i)
        if "symmetric" in entry and "symetric" in entry:
            raise err(p + ("symetric",), "give either 'symmetric' or 'symetric' (the old spelling), not both")
        srcs = groups_of(entry["src"], p + ("src",))
        dsts = groups_of(entry["dst"], p + ("dst",))
        delay = value_of(parse_delay, entry.get("delay"), p + ("delay",))
        rate = value_of(parse_rate, entry.get("rate"), p + ("rate",))
        loss = value_of(parse_loss, entry.get("loss"), p + ("loss",))
        sym = bool(entry.get("symmetric", entry.get("symetric", False)))
        origin = f"{KEY}.constraints.{i}"
        for s in srcs:
            for d in dsts:
                nc.rules.append(Rule(s, d, delay, rate, loss, entry.get("network"), origin))
                if sym and s != d:
                    nc.rules.append(Rule(d, s, delay, rate, loss, entry.get("network"), origin))
    return nc

