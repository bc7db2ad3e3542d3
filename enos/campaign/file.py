"""The campaign file: load, check and normalise it into a :class:`Campaign`.

Errors read ``FILE:LINE: key.path: message`` (a :class:`~enos.errors.ConfigError`, exit 2)
and are found before anything is booked: an unknown key, a wrong type, an empty sweep
(every combination excluded), a template that uses a variable the campaign does not
define (found by parsing every Jinja2 template for its undeclared variables), a playbook
that does not exist, a metric extractor that cannot be used.

Template scope: each parameter, ``repeat`` (the repetition number, from 1) and ``hosts``
(role → list of hosts with ``alias`` and ``address``; ``hosts.all`` lists every host).
The ``setup`` commands run once, before any combination: only ``hosts`` is in their scope.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from enos.errors import ConfigError
from enos.experiment.sweep import combinations
from enos.reservation.schemacheck import explain, fill_defaults, pick, show, violations
from enos.reservation.yamlpos import load_yaml

#: names every step template may use besides the parameters
STEP_SCOPE = ("repeat", "hosts")
#: names a setup command may use
SETUP_SCOPE = ("hosts",)

_SCALAR = {"type": ["string", "number", "boolean"], "x-expected": "a value (text, number or boolean)"}
_ROLES = {"anyOf": [{"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}],
          "x-expected": "a role (or host alias), or a list of them"}
_TIMEOUT = {"type": "number", "exclusiveMinimum": 0, "x-expected": "a number of seconds > 0"}
_COLLECT_TEXT = "'stdout', or a mapping with 'stdout: true' and/or 'files: [...]'"
_COLLECT = {"anyOf": [{"const": "stdout", "x-expected": _COLLECT_TEXT},
                      {"type": "object", "additionalProperties": False, "minProperties": 1,
                       "properties": {"stdout": {"type": "boolean"},
                                      "files": {"type": "array", "minItems": 1,
                                                "items": {"type": "string", "minLength": 1},
                                                "x-expected": "a non-empty list of paths on the hosts"}}}],
            "x-expected": _COLLECT_TEXT}
_SCALE = {"type": "number", "x-expected": "a number to multiply the value by"}
_FROM = {"type": "string", "minLength": 1,
         "x-expected": "'stdout' or the name of a collected file"}
_METRIC = {"type": "object", "minProperties": 1,
           "properties": {"json": {"type": "string", "minLength": 1,
                                   "x-expected": "a dotted path into the JSON output (e.g. end.sum.bits_per_second)"},
                          "regex": {"type": "string", "minLength": 1,
                                    "x-expected": "a regular expression with one group"},
                          "python": {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                                     "x-expected": "'module:function'"},
                          "scale": _SCALE, "from": _FROM},
           "additionalProperties": False,
           "x-expected": "a mapping with one of json, regex or python (and optionally scale, from)"}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["parameters", "steps"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
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
        "repeat": {"type": "integer", "minimum": 1, "default": 1},
        "setup": {"type": "array",
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
        "steps": {"type": "array", "minItems": 1,
                  "items": {"type": "object", "required": ["run"], "additionalProperties": False,
                            "properties": {"name": {"type": "string", "minLength": 1},
                                           "run": {"type": "string", "minLength": 1},
                                           "roles": _ROLES, "timeout": _TIMEOUT,
                                           "collect": _COLLECT},
                            "x-expected": "a mapping with 'run: COMMAND' (and roles, timeout, collect)"},
                  "x-expected": "a non-empty list of steps"},
        "metrics": {"type": "object", "additionalProperties": _METRIC,
                    "propertyNames": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$",
                                      "x-expected": "a metric name (letters, digits, '_', '.', '-')"},
                    "x-expected": "a mapping of metric name → extractor"},
        "monitor": {"type": "boolean", "default": False},
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

    def combinations(self) -> List[Dict[str, Any]]:
        """Return every combination of the parameters minus the excluded ones, in the
        order of the file (the first parameter varies slowest)."""
        return combinations(self.parameters, self.exclude)

    def varied(self) -> List[str]:
        """Return the parameters that take more than one value."""
        return [n for n, vs in self.parameters.items() if len(vs) > 1]

    def default_results(self) -> str:
        """Return the default results directory: ``<file stem>.results`` beside the file."""
        stem = os.path.splitext(os.path.basename(self.file))[0] or "campaign"
        return os.path.join(self.base_dir, f"{stem}.results")

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
    try:
        with open(file, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read the campaign file: {e.strerror or e}", file=file) from None
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte 0x{blob[e.start]:02x} cannot be decoded)",
                          file=file, line=blob.count(b"\n", 0, e.start) + 1) from None
    doc = load_yaml(text, file)
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
        found = violations(data, SCHEMA)
        if found:
            v = pick(found, self.line)
            where, message = explain(v, self.line, self.scalars.get)
            raise self.err(where, message)
        fill_defaults(data, SCHEMA)
        params = data["parameters"]
        exclude = self._exclude(data.get("exclude") or [], params)
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
        self._templates(camp)
        if not camp.combinations():
            raise self.err(("exclude",) if exclude else ("parameters",),
                           "empty sweep: every combination of the parameters is excluded")
        return camp

    def _exclude(self, exclude, params) -> List[Dict[str, List[Any]]]:
        out = []
        for i, ex in enumerate(exclude):
            norm = {}
            for k, v in ex.items():
                if k not in params:
                    raise self.err(("exclude", i, k), f"unknown parameter '{k}'; parameters: {', '.join(params)}")
                values = v if isinstance(v, list) else [v]
                for j, one in enumerate(values):
                    if one not in params[k]:
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
            source = m.get("from", "stdout")
            if source not in sources:
                raise self.err(("metrics", name, "from"),
                               f"nothing collects '{source}'; collected: {', '.join(sorted(sources))}")
            if source == "stdout" and not collects_stdout:
                raise self.err(("metrics", name), "no step collects its stdout (add 'collect: stdout' to a step)")
            out.append(Metric(name=name, kind=kind, expr=expr, scale=float(m.get("scale", 1.0)), source=source))
        return out

    def _templates(self, camp: Campaign) -> None:
        """Parse every template; a variable that is not in scope is an error at its line."""
        import jinja2
        from jinja2 import meta
        env = jinja2.Environment()
        step_scope = set(camp.parameters) | set(STEP_SCOPE)
        where: List[Tuple[tuple, str, set]] = []
        for i, s in enumerate(camp.setup):
            if s.play is None:
                where.append((("setup", i, "run"), s.run, set(SETUP_SCOPE)))
        for i, s in enumerate(camp.steps):
            where.append((("steps", i, "run"), s.run, step_scope))
            for j, f in enumerate(s.collect_files):
                where.append((("steps", i, "collect", "files", j), f, step_scope))
        for path, value in _strings(camp.network_constraints or {}, ("network_constraints",)):
            where.append((path, value, step_scope))
        for path, text, scope in where:
            try:
                ast = env.parse(text)
            except jinja2.TemplateSyntaxError as e:
                raise self.err(path, f"template syntax error: {e.message}") from None
            unknown = sorted(meta.find_undeclared_variables(ast) - scope)
            if unknown:
                hint = ("; a setup command runs once, before any combination: only 'hosts' is defined there"
                        if path[0] == "setup" else
                        f"; defined: {', '.join(sorted(scope))}")
                raise self.err(path, f"the template uses {', '.join(repr(u) for u in unknown)}, "
                                     f"which {'is' if len(unknown) == 1 else 'are'} not defined{hint}")


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
    """Render the Jinja2 template ``text`` with ``scope`` (undefined names are errors);
    return the text. Raises ConfigError on a template error at run time."""
    import jinja2
    try:
        return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text).render(**scope)
    except jinja2.TemplateError as e:
        raise ConfigError(f"template {text!r}: {e}") from None


def render_data(value, scope: dict):
    """Return ``value`` (nested dicts/lists) with every string rendered as a template."""
    if isinstance(value, str):
        return render(value, scope)
    if isinstance(value, dict):
        return {k: render_data(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render_data(v, scope) for v in value]
    return value
