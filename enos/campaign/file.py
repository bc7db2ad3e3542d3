"""The campaign file: load, check and normalise it into a :class:`Campaign`.

Errors read ``FILE:LINE: key.path: message`` (a :class:`~enos.errors.ConfigError`, exit 2)
and are found before anything is booked: an unknown key, a wrong type, an empty sweep
(every combination excluded), a template that uses a variable the campaign does not
define (found by parsing every Jinja2 template for its undeclared variables), a playbook
that does not exist, a metric extractor that cannot be used.

Template scope: each parameter, ``repeat`` (the repetition number, from 1) and ``hosts``
(role → list of hosts with ``alias`` and ``address``; ``hosts.all`` lists every host).
The ``setup`` commands run once, before any combination: only ``hosts`` is in their scope.

Bounds (checked before anything is booked): the file is read by the reservation layer's
bounded reader (a regular file of at most 1 MiB: a FIFO, a device, a link to one, a
bigger file are refused unread); combinations × repetitions at most :data:`MAX_RUNS`,
counted without enumerating them; every template rendered for the combinations in
Jinja2's sandbox with size, number and time bounds (:mod:`enos.campaign.templates`);
numbers finite; a combination's results directory name unique and short enough.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import itertools
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from enos.campaign import figures, templates
from enos.campaign.figures import FigureSpec
from enos.errors import ConfigError
from enos.experiment.sweep import combination_id
from enos.reservation.config import decode_text, read_bounded
from enos.reservation.schemacheck import explain, fill_defaults, pick, scalar_problem, show, violations
from enos.reservation.yamlpos import load_yaml

#: combinations × repetitions a campaign may have (a campaign of 100000 runs of 1 s each
#: already takes more than a day); more is refused with the figure
MAX_RUNS = 100_000
#: steps (and setup commands) a campaign may have
MAX_STEPS = 1000
#: longest results directory name of a combination (``a=1,b=x``); a file name is at most 255 bytes
MAX_COMBINATION_NAME = 200
#: values a campaign file may hold once YAML aliases are expanded (parameter lists are long)
MAX_VALUES = 300_000
#: combinations whose templates ``load_campaign`` renders (all of them up to this many)
RENDER_CHECKS = 1000
#: the longest wait a step may ask for (30 days, as on the command line)
MAX_SECONDS = 30 * 86400.0

#: names every step template may use besides the parameters
STEP_SCOPE = ("repeat", "hosts")
#: names a setup command may use
SETUP_SCOPE = ("hosts",)

_SCALAR = {"type": ["string", "number", "boolean"], "x-expected": "a value (text, number or boolean)"}
_ROLES = {"anyOf": [{"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}],
          "x-expected": "a role (or host alias), or a list of them"}
_TIMEOUT = {"type": "number", "exclusiveMinimum": 0, "maximum": 30 * 86400,
            "x-expected": "a number of seconds > 0 and at most 2592000 (30 days)"}
_COLLECT_TEXT = "'stdout', or a mapping with 'stdout: true' and/or 'files: [...]'"
_COLLECT = {"anyOf": [{"const": "stdout", "x-expected": _COLLECT_TEXT},
                      {"type": "object", "additionalProperties": False, "minProperties": 1,
                       "properties": {"stdout": {"type": "boolean"},
                                      "files": {"type": "array", "minItems": 1,
                                                "items": {"type": "string", "minLength": 1},
                                                "x-expected": "a non-empty list of paths on the hosts"}}}],
            "x-expected": _COLLECT_TEXT}
_SCALE = {"type": "number", "minimum": -1e300, "maximum": 1e300, "x-expected": "a number to multiply the value by"}
_FROM = {"type": "string", "minLength": 1,
         "x-expected": "'stdout' or the name of a collected file"}
_METRIC = {"type": "object", "minProperties": 1,
           "properties": {"json": {"type": "string", "minLength": 1,
                                   "x-expected": "a dotted path into the JSON output (e.g. end.sum.bits_per_second)"},
                          "regex": {"type": "string", "minLength": 1,
                                    "x-expected": "a regular expression with one group"},
                          "python": {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                                     "x-expected": "'module:function'"},
                          "scale": _SCALE, "from": _FROM,
                          "unit": {"type": "string", "minLength": 1, "maxLength": 40,
                                   "x-expected": "the unit of the value, shown on the figures' axes (e.g. Mbit/s)"}},
           "additionalProperties": False,
           "x-expected": "a mapping with one of json, regex or python (and optionally scale, from, unit)"}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["parameters", "steps"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200,
                 "x-expected": "a title of at most 200 characters"},
        "description": {"type": "string"},
        "reservation": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "object"}],
                        "x-expected": "a reservation file path (relative to the campaign file) or an inline reservation"},
        "parameters": {"type": "object", "minProperties": 1,
                       "propertyNames": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                                         "not": {"enum": list(STEP_SCOPE) + ["loop", "range", "true", "false", "none"]},
                                         "x-expected": "a parameter name (letters, digits, '_'; not 'repeat' or 'hosts')"},
                       "additionalProperties": {"type": "array", "minItems": 1, "items": _SCALAR,
                                                "uniqueItems": True,
                                                "x-expected": "a non-empty list of values"},
                       "x-expected": "a mapping of parameter → list of values"},
        "exclude": {"type": "array",
                    "items": {"type": "object", "minProperties": 1,
                              "additionalProperties": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]},
                              "x-expected": "a mapping of parameter → value (or list of values)"},
                    "x-expected": "a list of partial combinations to leave out"},
        "repeat": {"type": "integer", "minimum": 1, "maximum": MAX_RUNS, "default": 1,
                   "x-expected": f"a number of repetitions from 1 to {MAX_RUNS}"},
        "setup": {"type": "array", "maxItems": MAX_STEPS,
                  "items": {"type": "object",
                            "oneOf": [{"required": ["play"]}, {"required": ["run"]}],
                            "additionalProperties": False,
                            "properties": {"play": {"type": "string", "minLength": 1},
                                           "extra_vars": {"type": "object"},
                                           "run": {"type": "string", "minLength": 1},
                                           "roles": _ROLES, "timeout": _TIMEOUT},
                            "x-expected": "a mapping with 'play: PLAYBOOK' or 'run: COMMAND'"},
                  "x-expected": "a list of {play: ...} or {run: ..., roles: [...]}"},
        "network_constraints": {"type": "object", "minProperties": 1,
                                "x-expected": "a mapping of network constraints (e.g. default_rate)"},
        "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS,
                  "items": {"type": "object", "required": ["run"], "additionalProperties": False,
                            "properties": {"name": {"type": "string", "minLength": 1},
                                           "run": {"type": "string", "minLength": 1},
                                           "roles": _ROLES, "timeout": _TIMEOUT,
                                           "collect": _COLLECT},
                            "x-expected": "a mapping with 'run: COMMAND' (and roles, timeout, collect)"},
                  "x-expected": f"a non-empty list of at most {MAX_STEPS} steps"},
        "metrics": {"type": "object", "additionalProperties": _METRIC,
                    "propertyNames": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$",
                                      "x-expected": "a metric name (letters, digits, '_', '.', '-')"},
                    "x-expected": "a mapping of metric name → extractor"},
        "monitor": {"type": "boolean", "default": False},
        "figures": figures.SCHEMA,
    },
}


@dataclass
class Step:
    """One command of the campaign (a setup command or a per-combination step)."""

    run: str
    roles: Optional[List[str]] = None
    timeout: Optional[float] = None
    name: str = ""
    collect_stdout: bool = False
    collect_files: List[str] = field(default_factory=list)
    play: Optional[str] = None
    extra_vars: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Metric:
    """How one number is taken from what a run collected."""

    name: str
    kind: str          # json | regex | python
    expr: str
    scale: float = 1.0
    source: str = "stdout"
    unit: str = ""


@dataclass
class Campaign:
    """A checked campaign file. ``reservation`` is a path (absolute) or an inline dict,
    or None when the campaign must be given an environment."""

    file: str
    base_dir: str
    parameters: Dict[str, List[Any]]
    exclude: List[Dict[str, List[Any]]]
    repeat: int
    setup: List[Step]
    steps: List[Step]
    metrics: List[Metric]
    network_constraints: Optional[dict]
    monitor: bool
    reservation: Any = None
    name: str = ""
    raw: dict = field(default_factory=dict)
    positions: dict = field(default_factory=dict)
    figures: Optional[List[FigureSpec]] = None      # None: the default set
    _combinations: Optional[List[Dict[str, Any]]] = field(default=None, repr=False, compare=False)

    def combinations(self) -> List[Dict[str, Any]]:
        """Return every combination of the parameters minus the excluded ones, in the
        order of the file (the first parameter varies slowest; at most MAX_RUNS, as
        checked when the file was loaded). Computed once."""
        if self._combinations is None:
            self._combinations = list(iter_combinations(self.parameters, self.exclude))
        return [dict(c) for c in self._combinations]

    def varied(self) -> List[str]:
        """Return the parameters that take more than one value."""
        return [n for n, vs in self.parameters.items() if len(vs) > 1]

    def default_results(self) -> str:
        """Return the default results directory: ``<file stem>.results`` beside the file."""
        stem = os.path.splitext(os.path.basename(self.file))[0] or "campaign"
        return os.path.join(self.base_dir, f"{stem}.results")

    def check_against(self, config) -> None:
        """Check the campaign against its reservation ``config`` (a Config) before anything
        is booked: every ``roles`` entry names a role or group of the reservation (or a host
        alias it gives, or one a provider makes, ``<name>-<n>``), and the templates that use
        ``hosts`` render with the reservation's roles. Raises ConfigError at the line."""
        roles, aliases = _reservation_names(config)
        for key, steps in (("setup", self.setup), ("steps", self.steps)):
            for i, step in enumerate(steps):
                for j, role in enumerate(step.roles or ()):
                    if role in roles or role in aliases or _ALIAS.match(role) and not aliases:
                        continue
                    raise self._err((key, i, "roles", j), f"no role, group or host '{role}' in the reservation "
                                                          f"{config.file} (roles: {', '.join(sorted(roles)) or 'none'})")
        sites = [(p, t, sc) for p, t, sc in _template_sites(self) if "hosts" in t]
        check_rendering(self, _reservation_hosts(config), self._err, sites)

    def _err(self, path, message) -> ConfigError:
        line, p = None, tuple(path)
        while line is None and p:
            line, p = self.positions.get(p), p[:-1]
        return ConfigError(message, file=self.file, line=line, keypath=".".join(str(x) for x in path))

    def fingerprint(self) -> str:
        """Return a short hash of what defines the sweep (parameters, exclude, repeat)."""
        blob = json.dumps([self.parameters, self.exclude, self.repeat], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- loading ---------------------------------------------------------------------------

def load_campaign(source, file: Optional[str] = None, base_dir: Optional[str] = None) -> Campaign:
    """Read and check a campaign: ``source`` is a file path or an already-loaded dict
    (then ``file`` names it in errors and ``base_dir`` resolves relative paths, default
    the current directory). Return a :class:`Campaign`. Raises ConfigError."""
    if isinstance(source, dict):
        file = file or "<campaign>"
        return _Checker(copy.deepcopy(source), file, {}, base_dir or os.getcwd()).build()
    file = str(source)
    text = decode_text(read_bounded(file, what="campaign file"), file)
    # a campaign is enos' own format: a key given twice is an error, never one silently dropped
    doc = load_yaml(text, file, max_values=MAX_VALUES, what="a campaign", repeat_top_level=False)
    return _Checker(doc.data, file, doc.positions, os.path.dirname(os.path.abspath(file)),
                    doc.scalars).build()


class _Checker:
    def __init__(self, data, file, positions, base_dir, scalars=None):
        self.data, self.file, self.positions = data, file, positions
        self.base_dir, self.scalars = base_dir, scalars or {}

    def line(self, path) -> Optional[int]:
        path = tuple(path)
        while True:
            if path in self.positions:
                return self.positions[path]
            if not path:
                return None
            path = path[:-1]

    def err(self, path, message) -> ConfigError:
        return ConfigError(message, file=self.file, line=self.line(path),
                           keypath=".".join(str(p) for p in path) or None)

    def build(self) -> Campaign:
        data = self.data
        if data is None:
            raise ConfigError("the file is empty; expected a mapping with at least 'parameters' and 'steps'",
                              file=self.file)
        if not isinstance(data, dict):
            raise ConfigError(f"expected a mapping (reservation, parameters, steps, ...), got {show(data)}",
                              file=self.file, line=self.line(()))
        bad = scalar_problem(data)
        if bad:
            raise self.err(*bad)
        found = violations(data, SCHEMA)
        if found:
            v = pick(found, self.line)
            where, message = explain(v, self.line, self.scalars.get)
            raise self.err(where, message)
        fill_defaults(data, SCHEMA)
        params = data["parameters"]
        exclude = self._exclude(data.get("exclude") or [], params)
        self._size(params, exclude, data["repeat"])
        setup = [self._step(s, ("setup", i), setup=True) for i, s in enumerate(data.get("setup") or [])]
        steps = [self._step(s, ("steps", i)) for i, s in enumerate(data["steps"])]
        metrics = self._metrics(data.get("metrics") or {}, steps)
        reservation = data.get("reservation")
        if isinstance(reservation, str):
            reservation = os.path.normpath(os.path.join(self.base_dir, reservation))
            if not os.path.isfile(reservation):
                raise self.err(("reservation",), f"no reservation file {reservation}")
        camp = Campaign(file=self.file, base_dir=self.base_dir, parameters=params, exclude=exclude,
                        repeat=data["repeat"], setup=setup, steps=steps, metrics=metrics,
                        network_constraints=data.get("network_constraints"), monitor=data["monitor"],
                        reservation=reservation, name=data.get("name") or "", raw=data,
                        positions=self.positions)
        if "figures" in data:
            camp.figures = figures.check(data["figures"], params, [m.name for m in metrics], camp.monitor,
                                         self.err)
        self._templates(camp)
        self._render_all(camp)
        return camp

    def _size(self, params, exclude, repeat) -> None:
        """Refuse an empty sweep, one of more than MAX_RUNS runs (counted, not
        enumerated), and parameter values whose results directory names collide or are
        too long."""
        n = count_combinations(params, exclude, limit=MAX_RUNS)
        if n == 0:
            raise self.err(("exclude",) if exclude else ("parameters",),
                           "empty sweep: every combination of the parameters is excluded")
        if n * repeat > MAX_RUNS:
            where = ("repeat",) if repeat > 1 and n <= MAX_RUNS else ("parameters",)
            count = f"{n}" if n <= MAX_RUNS else f"more than {MAX_RUNS}"
            raise self.err(where, f"the sweep has {count} combination(s) × {repeat} repetition(s); "
                                  f"a campaign may have at most {MAX_RUNS} runs (split it, or use fewer values)")
        longest = 0
        for name, values in params.items():
            seen: Dict[str, Any] = {}
            for i, v in enumerate(values):
                cid = combination_id({name: v})
                if cid in seen:
                    raise self.err(("parameters", name, i),
                                   f"{v!r} and {seen[cid]!r} would share the results directory name "
                                   f"'{cid}'; make the values differ in letters or digits")
                seen[cid] = v
            longest += max(len(c) for c in seen) + 1
        if longest - 1 > MAX_COMBINATION_NAME:
            raise self.err(("parameters",), f"a combination's results directory name would be up to "
                                            f"{longest - 1} characters (at most {MAX_COMBINATION_NAME}): "
                                            f"shorten the parameter names or values")

    def _exclude(self, exclude, params) -> List[Dict[str, List[Any]]]:
        out = []
        known = {k: {(type(x) is bool, x) for x in vs} for k, vs in params.items()}
        for i, ex in enumerate(exclude):
            norm = {}
            for k, v in ex.items():
                if k not in params:
                    raise self.err(("exclude", i, k), f"unknown parameter '{k}'; parameters: {', '.join(params)}")
                values = v if isinstance(v, list) else [v]
                for j, one in enumerate(values):
                    if not isinstance(one, (str, int, float, bool)) or (type(one) is bool, one) not in known[k]:
                        raise self.err(("exclude", i, k) + ((j,) if isinstance(v, list) else ()),
                                       f"{one!r} is not a value of '{k}' ({', '.join(map(str, params[k]))})")
                norm[k] = values
            out.append(norm)
        return out

    def _step(self, s: dict, path, setup: bool = False) -> Step:
        roles = s.get("roles")
        if isinstance(roles, str):
            roles = [roles]
        collect = s.get("collect")
        stdout = collect == "stdout" or (isinstance(collect, dict) and bool(collect.get("stdout")))
        files = list(collect.get("files") or []) if isinstance(collect, dict) else []
        play = s.get("play")
        if play is not None:
            play = os.path.normpath(os.path.join(self.base_dir, play))
            if not os.path.isfile(play):
                raise self.err(path + ("play",), f"no playbook {play}")
        return Step(run=s.get("run", ""), roles=roles, timeout=s.get("timeout"),
                    name=s.get("name") or (f"setup {path[1] + 1}" if setup else f"step {path[1] + 1}"),
                    collect_stdout=stdout, collect_files=files, play=play,
                    extra_vars=s.get("extra_vars") or {})

    def _metrics(self, metrics: dict, steps: List[Step]) -> List[Metric]:
        sources = {"stdout"} | {os.path.basename(f) for s in steps for f in s.collect_files}
        collects_stdout = any(s.collect_stdout for s in steps)
        out = []
        for name, m in metrics.items():
            kinds = [k for k in ("json", "regex", "python") if k in m]
            if len(kinds) != 1:
                raise self.err(("metrics", name), "give exactly one of json, regex or python")
            kind = kinds[0]
            expr = m[kind]
            if kind == "regex":
                try:
                    rx = re.compile(expr)
                except re.error as e:
                    raise self.err(("metrics", name, "regex"), f"not a regular expression: {e}") from None
                if rx.groups != 1:
                    raise self.err(("metrics", name, "regex"),
                                   f"expected exactly one group '(...)' around the number, got {rx.groups}")
            if kind == "python":
                self._python_metric(expr, ("metrics", name, "python"))
            source = m.get("from", "stdout")
            if source not in sources:
                raise self.err(("metrics", name, "from"),
                               f"nothing collects '{source}'; collected: {', '.join(sorted(sources))}")
            if source == "stdout" and not collects_stdout:
                raise self.err(("metrics", name), "no step collects its stdout (add 'collect: stdout' to a step)")
            out.append(Metric(name=name, kind=kind, expr=expr, scale=float(m.get("scale", 1.0)), source=source,
                              unit=m.get("unit", "")))
        return out

    def _python_metric(self, expr: str, path) -> None:
        """Import the module of a ``python: module:function`` metric (looked up beside the
        campaign file first, as the report does) and check that the function exists."""
        mod_name, func_name = expr.split(":")
        if self.base_dir not in sys.path:
            sys.path.insert(0, self.base_dir)
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            raise self.err(path, f"no Python module '{e.name or mod_name}' (looked in {self.base_dir} "
                                 f"and the installed packages)") from None
        except BaseException as e:          # the user's module failed to import: say why
            if isinstance(e, KeyboardInterrupt):
                raise
            raise self.err(path, f"importing '{mod_name}' failed: {type(e).__name__}: {e}") from None
        func = getattr(module, func_name, None)
        if not callable(func):
            raise self.err(path, f"module '{mod_name}' ({getattr(module, '__file__', '') or 'built in'}) "
                                 f"has no function '{func_name}'")

    def _templates(self, camp: Campaign) -> None:
        """Parse every template; a variable that is not in scope is an error at its line."""
        for path, text, scope in _template_sites(camp):
            try:
                names = templates.variables(text)
            except templates.TemplateFailed as e:
                raise self.err(path, str(e)) from None
            unknown = sorted(names - scope)
            if unknown:
                hint = ("; a setup command runs once, before any combination: only 'hosts' is defined there"
                        if path[0] == "setup" else
                        f"; defined: {', '.join(sorted(scope))}")
                raise self.err(path, f"the template uses {', '.join(repr(u) for u in unknown)}, "
                                     f"which {'is' if len(unknown) == 1 else 'are'} not defined{hint}")

    def _render_all(self, camp: Campaign) -> None:
        """Render every template for the combinations (all of them up to RENDER_CHECKS),
        with the first and the last repetition and a placeholder host for any role, in
        the bounded sandbox: a template that cannot be rendered, or passes a bound, is an
        error at its line before anything is booked."""
        check_rendering(camp, AnyHosts(), self.err)


def _template_sites(camp: "Campaign"):
    """Yield (key path, template text, names in scope) of every template of ``camp``."""
    step_scope = set(camp.parameters) | set(STEP_SCOPE)
    for i, s in enumerate(camp.setup):
        if s.play is None:
            yield ("setup", i, "run"), s.run, set(SETUP_SCOPE)
    for i, s in enumerate(camp.steps):
        yield ("steps", i, "run"), s.run, step_scope
        for j, f in enumerate(s.collect_files):
            yield ("steps", i, "collect", "files", j), f, step_scope
    for path, value in _strings(camp.network_constraints or {}, ("network_constraints",)):
        yield path, value, step_scope


_ALIAS = re.compile(r"^[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*-\d+$")


def _reservation_names(config):
    """Return (roles and groups, host aliases known before booking) of a reservation."""
    roles, aliases = set(), set()
    for m in config.machines:
        roles.update(m.roles)
        if m.group:
            roles.add(m.group)
        opts = m.options or {}
        if "address" in opts:
            aliases.add(str(opts.get("alias") or opts["address"]))
    return roles, aliases


def _reservation_hosts(config) -> dict:
    """The ``hosts`` template variable as the reservation will give it (placeholder
    addresses of TEST-NET-2, aliases as known or ``<role>-<n>``)."""
    hosts, every = {}, []
    for m in config.machines:
        opts = m.options or {}
        for n in range(1, min(int(m.count), 1000) + 1):
            alias = str(opts.get("alias") or opts.get("address") or f"{'-'.join(m.roles) or 'host'}-{n}")
            h = {"alias": alias, "address": str(opts.get("address") or f"198.51.100.{(len(every) % 254) + 1}"),
                 "roles": list(m.roles) + ([m.group] if m.group else [])}
            every.append(h)
            for r in h["roles"]:
                hosts.setdefault(r, []).append(h)
    hosts.setdefault("all", every)
    return hosts


class _AnyHostList(list):
    """A role's hosts before any host exists: one placeholder, and any index gives one."""

    def __getitem__(self, index):
        if isinstance(index, int):
            return dict(AnyHosts.HOST, alias=f"host-{index + 1 if index >= 0 else 1}")
        return super().__getitem__(index)


class AnyHosts(dict):
    """The ``hosts`` of a template checked before any host exists: every role (and
    ``all``) has placeholder hosts (addresses of TEST-NET-2, never contacted)."""

    HOST = {"alias": "host-1", "address": "198.51.100.1", "roles": ["role"]}

    def __missing__(self, key):
        return _AnyHostList([dict(self.HOST)])


def check_rendering(camp: "Campaign", hosts, err, sites=None) -> None:
    """Render the templates of ``camp`` (``sites``: (path, text, scope) tuples, default all)
    for its combinations (at most RENDER_CHECKS) with ``hosts`` in scope; raise
    ``err(path, message)`` for the first that fails."""
    sites = list(_template_sites(camp) if sites is None else sites)
    if not sites:
        return
    repeats = sorted({1, camp.repeat})
    for combo in itertools.islice(iter_combinations(camp.parameters, camp.exclude), RENDER_CHECKS):
        for repeat in repeats:
            for path, text, scope in sites:
                values = {"hosts": hosts} if path[0] == "setup" else dict(combo, repeat=repeat, hosts=hosts)
                try:
                    templates.render(text, values)
                except templates.TemplateFailed as e:
                    where = "" if path[0] == "setup" else \
                        " (with " + ", ".join(f"{k}={v}" for k, v in dict(combo, repeat=repeat).items()) + ")"
                    raise err(path, f"template: {e}{where}") from None
        if all(p[0] == "setup" for p, _, _ in sites):
            break


def iter_combinations(parameters: Dict[str, List[Any]], exclude: List[Dict[str, List[Any]]]):
    """Yield the combinations of ``parameters`` minus ``exclude`` lazily, in the order of
    :func:`enos.experiment.sweep.combinations` (the first parameter varies slowest)."""
    names = list(parameters)
    rules = [{k: set(vs) for k, vs in r.items()} for r in exclude]
    # each rule is looked at only for combinations holding one value of its first key
    anchored: Dict[Tuple[str, Any], List[int]] = {}
    for i, rule in enumerate(rules):
        key = next(iter(rule))
        for v in rule[key]:
            anchored.setdefault((key, v), []).append(i)
    for values in itertools.product(*(parameters[n] for n in names)):
        combo = dict(zip(names, values))
        candidates = [i for n in names for i in anchored.get((n, combo[n]), ())]
        if not any(all(combo[k] in vs for k, vs in rules[i].items()) for i in candidates):
            yield combo


def count_combinations(parameters: Dict[str, List[Any]], exclude: List[Dict[str, List[Any]]],
                       limit: int = MAX_RUNS) -> int:
    """Return how many combinations of ``parameters`` no ``exclude`` rule matches, without
    enumerating them: the parameters are taken in order, the values of one parameter that
    leave the same rules alive are counted once (memoised), so 20 parameters of 10 values
    are counted at once. Returns ``limit + 1`` as soon as the count is known to pass
    ``limit`` (a sweep that large is refused anyway)."""
    names = list(parameters)
    rules = [{k: set(vs) for k, vs in r.items()} for r in exclude]
    last = [max(names.index(k) for k in r) for r in rules]
    if not rules:
        total = math.prod(len(parameters[n]) for n in names)
        return total if total <= limit else limit + 1

    mention = [frozenset(r for r, rule in enumerate(rules) if n in rule) for n in names]
    by_value: List[Dict[Any, set]] = []
    for i, n in enumerate(names):
        index: Dict[Any, set] = {}
        for r in mention[i]:
            for v in rules[r][n]:
                index.setdefault(v, set()).add(r)
        by_value.append(index)

    @functools.lru_cache(maxsize=None)
    def count(i: int, alive: frozenset) -> int:
        if i == len(names):
            return 1
        free = alive - mention[i]             # rules that do not name this parameter
        groups: Dict[frozenset, int] = {}
        for v in parameters[names[i]]:
            matched = alive & by_value[i].get(v, set())
            if any(last[r] == i for r in matched):
                continue                      # every key of a rule matched: excluded
            still = free | matched
            groups[still] = groups.get(still, 0) + 1
        total = 0
        for still, n in groups.items():
            total += n * count(i + 1, still)
            if total > limit:
                return limit + 1
        return total

    return min(count(0, frozenset(range(len(rules)))), limit + 1)


def _strings(value, path):
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, path + (i,))


def render(text: str, scope: dict) -> str:
    """Render the Jinja2 template ``text`` with ``scope`` in the bounded sandbox of
    :mod:`enos.campaign.templates` (undefined names are errors); return the text. Raises
    ConfigError (TemplateFailed) naming the template and the error or bound."""
    try:
        return templates.render(text, scope)
    except templates.TemplateFailed as e:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise templates.TemplateFailed(f"template {shown!r}: {e}") from None


def render_data(value, scope: dict):
    """Return ``value`` (nested dicts/lists) with every string rendered as a template."""
    if isinstance(value, str):
        return render(value, scope)
    if isinstance(value, dict):
        return {k: render_data(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render_data(v, scope) for v in value]
    return value
