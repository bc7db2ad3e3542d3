"""reservation.yaml: loading with line numbers, validation, normalisation.

The result is a :class:`Config`. Errors are :class:`~enos.errors.ConfigError` naming the
file, the line and the key path, e.g.
``reservation.yaml:12: resources.paravance.compute: expected an integer ≥ 1, got 'two'``.

Entry points: :func:`load_config` (a file) and :func:`config_from_data` (data already
loaded, e.g. the copy saved in an env's state; :meth:`Config.to_state` /
:meth:`Config.from_state` do the round trip). ``docs/reservation.md`` is the user's
reference; in short, the top-level keys are:

``provider``
    ``TYPE`` or ``{type: TYPE, <provider keys>}``. The mapping *without* its ``resources``
    key is checked against the provider class's ``schema`` (JSON Schema); the schema's
    ``default`` values are filled into :attr:`Config.options` (which never holds
    ``resources``).
``resources``
    Three forms. *Compact*: ``{LABEL: {ROLE: COUNT}}`` (LABEL a cluster, a flavour or a
    free label) → one :class:`MachineSpec` per (label, role). *Static list*:
    ``{ROLE: [{address: ..., alias: ..., ...}]}`` → one spec per host, its keys in
    ``options``, checked against the provider's ``machine_schema``. *Explicit* (EnOSlib
    style): ``{machines: [...], networks: [...]}``, also accepted as
    ``provider.resources``; ``machines`` is this list only when its value is a list (a
    mapping there is a compact label named ``machines``). An explicit machine has ``role`` or ``roles``, ``cluster`` or
    ``flavour`` (→ ``label``), ``nodes`` or ``number`` (→ ``count``, default 1); its other
    keys go to ``options``, checked against ``machine_schema`` (defaults filled).
    ``networks`` is therefore a reserved name under ``resources``.
``networks`` (under ``resources`` or ``provider.resources``)
    A list of mappings → :attr:`Config.networks`. If the provider's ``schema`` declares
    ``properties.resources.properties.networks``, that sub-schema checks them (``$ref``
    resolved in the provider schema) wherever they are written; otherwise any list of
    mappings is accepted and the provider checks them in ``validate``.
``topology``
    ``{GROUP: {LABEL: {ROLE: COUNT}}}``; ``grp[2-4]`` stands for grp2, grp3, grp4. As in
    the original Enos (``gen_enoslib_roles`` + ``expand_groups``: machines get the roles
    ``[group, role]``), each spec gets ``roles = [ROLE, GROUP]`` (the role first, so it
    stays the primary one) and ``group = GROUP``. Unlike the original, giving both
    ``topology`` and machines in ``resources`` is an error instead of silently ignoring
    ``resources``.
``provision``
    A playbook path or a list of them, relative to the reservation file's directory;
    made absolute, and each must be an existing file.
``network_constraints``
    Enos' network emulation between groups (delay, rate, loss): checked and normalised
    by :mod:`enos.reservation.netconstraints` → :attr:`Config.network_constraints`;
    applied by ``enos tc`` (and ``enos up`` when ``enable: true``). Never an Ansible
    variable.
``variables``
    A mapping of experiment variables (Ansible extra vars). Any other top-level key
    (``kolla:``, ``registry:`` ...) is an experiment variable too, unless it is within a
    difflib ratio of 0.8 of a known key (``resource:``), which is reported as a typo.

Exactly one place gives the machines (``resources``, ``provider.resources`` or
``topology``), and it gives at least one. Counts are integers ≥ 1; role and group names
are Ansible group names (letters, digits, ``_``, ``-``; not ``all``/``ungrouped``).
Last, the provider class's ``validate(config)`` does its semantic checks.

JSON Schema checking is :mod:`enos.reservation.schemacheck` (a fast subset; see there why).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from enos.errors import ConfigError, ProviderError, ProviderNotFound
from enos.reservation.multi import MULTI, build_parts, part_keypath, part_positions
from enos.state import read_bounded as _read_bounded
from enos.reservation.netconstraints import parse_network_constraints
from enos.reservation.schemacheck import (SchemaUnsupported, explain, fill_defaults, pick, scalar_problem, show,
                                         violations)

if TYPE_CHECKING:  # pragma: no cover
    from enos.reservation.netconstraints import NetworkConstraints


@dataclass
class MachineSpec:
    """One group of identical machines asked for.

    ``label`` is the compact form's first level or the explicit ``cluster``/``flavour``
    (a Grid'5000 cluster, a VM flavour, a free label for ``local``); ``count`` is
    ``nodes``/``number``; ``options`` holds every other key of an explicit entry (or a
    static host's ``address``/``alias``/...); ``group`` is the topology group if any;
    ``keypath``/``line`` say where it was written, for error messages.
    """

    roles: List[str]
    count: int = 1
    label: Optional[str] = None
    group: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)
    keypath: str = ""
    line: Optional[int] = None


@dataclass
class Config:
    """A validated reservation.

    ``options``: the provider's section (dict form, defaults applied, ``resources`` removed);
    ``machines``: normalised :class:`MachineSpec` list; ``networks``: the explicit
    networks (list of dicts); ``variables``: experiment variables (unknown top-level keys
    and ``variables:``) handed to Ansible as extra vars; ``provision``: absolute paths of
    the user's playbooks; ``raw``: the file's data as loaded; ``positions``: key path
    tuple → line number; ``base_dir``: the absolute directory relative paths of the
    reservation are resolved in; ``warnings``: what the user should read but that does
    not stop enos (``FILE:LINE: ...`` lines, e.g. a repeated top-level key).
    """

    file: str
    provider_type: str
    options: Dict[str, Any]
    machines: List[MachineSpec]
    networks: List[Dict[str, Any]] = field(default_factory=list)
    variables: Dict[str, Any] = field(default_factory=dict)
    provision: List[str] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict)
    positions: Dict[Tuple, int] = field(default_factory=dict)
    base_dir: str = ""
    warnings: List[str] = field(default_factory=list)
    network_constraints: Optional["NetworkConstraints"] = None
    #: a ``providers:`` reservation (type ``multi``): each block's name and own Config
    parts: List[Tuple[str, "Config"]] = field(default_factory=list)
    #: the index of this Config's block in ``providers:`` (its key paths are reported there)
    block: Optional[int] = None

    def constraint_groups(self) -> List[str]:
        """Return the groups network constraints apply between by default: the topology
        groups when the reservation has a topology, else every role (in file order)."""
        groups = [m.group for m in self.machines if m.group]
        if not groups:
            groups = [r for m in self.machines for r in m.roles]
        return list(dict.fromkeys(groups))

    def line_of(self, keypath) -> Optional[int]:
        """Return the line of ``keypath`` (tuple or dotted string, where all-digit parts
        may be list indices), or of its closest ancestor that has one; None if unknown
        (e.g. a config rebuilt from state)."""
        if isinstance(keypath, str):
            return _line_of(self.positions, _resolve_dotted(self.positions, keypath))
        return _line_of(self.positions, tuple(keypath))

    def variables_summary(self) -> str:
        """Return the line telling which variables the playbooks will receive from the
        reservation, each with its line, so that a misspelt top-level key is visible
        ('' when there is none)."""
        if not self.variables:
            return ""
        names = []
        for k in sorted(self.variables, key=str):
            line = self.positions.get((k,)) or self.positions.get(("variables", k))
            names.append(f"{k} (line {line})" if line else str(k))
        return (f"variables for the playbooks ({len(names)}, from 'variables:' and the top-level "
                f"keys enos does not use itself): " + ", ".join(names))

    def summary(self) -> dict:
        """Return the normalised reservation as ``enos validate -o json`` prints it (file,
        provider, options, machines, networks, variables, provision, warnings,
        network_constraints)."""
        nc = self.network_constraints
        if self.parts:
            return {"file": self.file, "provider": self.provider_type,
                    "providers": [{"name": n, "provider": c.provider_type, "options": c.options, "networks": c.networks,
                                   "machines": [dict(vars(m), keypath=part_keypath(m.keypath, i)) for m in c.machines]}
                                  for i, (n, c) in enumerate(self.parts)],
                    "variables": self.variables, "provision": self.provision, "warnings": self.warnings,
                    "network_constraints": nc.to_dict() if nc is not None else None}
        return {"file": self.file, "provider": self.provider_type, "options": self.options,
                "machines": [dict(vars(m)) for m in self.machines], "networks": self.networks,
                "variables": self.variables, "provision": self.provision, "warnings": self.warnings,
                "network_constraints": nc.to_dict() if nc is not None else None}

    def error(self, keypath, message: str) -> ConfigError:
        """Return (not raise) a ConfigError located at ``keypath``."""
        kp = keypath if isinstance(keypath, str) else _dotted(keypath)
        line = self.line_of(keypath)
        if self.block is not None:
            kp = part_keypath(kp or "", self.block)
        return ConfigError(message, file=self.file, line=line, keypath=kp or None)

    def to_state(self) -> dict:
        """Return what an env's state keeps of this reservation (JSON-serialisable):
        ``{"file", "base_dir", "data"}``; :meth:`from_state` rebuilds the Config."""
        return {"file": self.file, "base_dir": self.base_dir, "data": copy.deepcopy(self.raw)}

    @classmethod
    def from_state(cls, saved: dict, provider_loader: Callable) -> "Config":
        """Rebuild a Config from :meth:`to_state` output, re-validated, without requiring
        the playbooks to still exist (``enos destroy`` must work after they moved).
        Raises ConfigError (or the registry's MissingDependency)."""
        return config_from_data(saved["data"], saved["file"], provider_loader=provider_loader,
                                base_dir=saved.get("base_dir") or None, check_files=False)


# --- public entry points ---------------------------------------------------------------

def load_config(path, provider_loader: Callable, check_files: bool = True) -> Config:
    """Read, check and normalise the reservation file ``path``; return a :class:`Config`.

    ``provider_loader(type) -> Provider class`` is given by the caller (the task runner
    passes :func:`enos.provider.load_provider_class`; this layer never loads providers
    itself). Raises :class:`ConfigError`
    (``FILE:LINE: key.path: message``) for anything wrong in the file, including an
    unreadable file, YAML syntax and an unknown provider type; the registry's
    :class:`~enos.errors.MissingDependency` propagates as is."""
    from enos.reservation.yamlpos import load_yaml   # PyYAML (~30 ms) only when a file is read
    file = str(path)
    text = decode_text(read_bounded(file), file)
    doc = load_yaml(text, file)
    base_dir = os.path.dirname(os.path.abspath(file))
    config = _Builder(doc.data, file, doc.positions, doc.scalars, provider_loader,
                      base_dir, check_files=check_files).build()
    config.warnings[:0] = doc.warnings
    return config


#: a reservation (or campaign) file is a few kilobytes; anything above this is refused unread
MAX_FILE_BYTES = 1 << 20


def read_bounded(file: str, limit: int = MAX_FILE_BYTES, what: str = "reservation file") -> bytes:
    """Return the bytes of the reservation (or campaign) file ``file``: the state layer's
    bounded reader (:func:`enos.state.read_bounded`), limited to MAX_FILE_BYTES. Raises
    ConfigError (UnreadableFile) naming the file."""
    return _read_bounded(file, limit, what)


def decode_text(blob: bytes, file: str) -> str:
    """Return ``blob`` decoded as UTF-8 (a BOM is dropped). Raises ConfigError naming the
    line of the first byte that is not UTF-8."""
    try:
        return blob.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte 0x{blob[e.start]:02x} cannot be decoded)",
                          file=file, line=blob.count(b"\n", 0, e.start) + 1) from None


def network_problem(text: str) -> Optional[str]:
    """Return why ``text`` is not an IPv4 network testbed hosts can have addresses in
    (``'10.20.0.0/24'`` is; a multicast, loopback, link-local, reserved or unspecified
    range, a /31 or /32, or no CIDR at all are not), or None."""
    import ipaddress
    try:
        net = ipaddress.IPv4Network(text, strict=False)
    except ValueError as e:
        return f"expected an IPv4 network like 10.20.0.0/24, got {text!r} ({e})"
    if "/" not in text:
        return f"expected an IPv4 network with its prefix length, like {text}/24"
    for test, what in ((net.is_multicast, "a multicast range"), (net.is_loopback, "the loopback range"),
                       (net.is_link_local, "the link-local range"), (net.is_unspecified, "the unspecified range"),
                       (net.network_address.is_unspecified, "a range starting at 0.0.0.0"),
                       (net.is_reserved, "a reserved range")):
        if test:
            return f"{text} is {what}: hosts cannot be given addresses in it"
    if net.prefixlen > 30:
        return f"{text} has no room for hosts (a /{net.prefixlen}); use a prefix length of at most 30"
    return None


def config_from_data(data: dict, file: str, positions: Optional[dict] = None, *,
                     provider_loader: Callable,
                     base_dir: Optional[str] = None, check_files: Optional[bool] = None) -> Config:
    """Check and normalise already-loaded reservation ``data`` (as :func:`load_config`
    does); return a :class:`Config`.

    ``file`` names it in errors; ``positions`` (key path tuple → line) locates errors
    when known. Relative playbook paths resolve in ``base_dir`` (default: the directory
    of ``file``). ``check_files`` (default: only when ``positions`` is given, i.e. not
    for a reservation rebuilt from saved state) requires the playbooks to exist.
    Raises :class:`ConfigError`; MissingDependency propagates."""
    if base_dir is None:
        base_dir = os.path.dirname(os.path.abspath(file))
    if check_files is None:
        check_files = positions is not None
    return _Builder(copy.deepcopy(data), file, dict(positions or {}), {}, provider_loader,
                    base_dir, check_files).build()


# --- the checking itself ---------------------------------------------------------------

KNOWN_KEYS = ("provider", "providers", "resources", "topology", "provision", "variables", "network_constraints")
TYPO_RATIO = 0.8
EXPLICIT_KEYS = ("role", "roles", "cluster", "flavour", "nodes", "number")

_NAME = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_-]*$", "not": {"enum": ["all", "ungrouped"]},
         "x-expected": "a role name (letters, digits, '_' or '-', not starting with a digit; "
                       "not 'all' or 'ungrouped')"}
_GROUP_NAME = dict(_NAME, **{"x-expected": "a group name (letters, digits, '_' or '-', not starting "
                                           "with a digit; not 'all' or 'ungrouped')"})
_COUNT = {"type": "integer", "minimum": 1}
_LABEL = {"type": "string", "minLength": 1, "x-expected": "a non-empty label (a cluster or flavour name)"}
_ROLE_COUNTS = {"type": "object", "minProperties": 1, "propertyNames": _NAME,
                "additionalProperties": _COUNT,
                "x-expected": "a mapping of role → number of machines"}
_COMPACT = {"type": "object", "minProperties": 1,
            "x-expected": "a mapping of cluster/flavour → {role: number}, or of role → list of hosts, "
                          "or {machines: [...], networks: [...]}"}
_STATIC_LIST = {"type": "array", "minItems": 1,
                "items": {"type": "object", "x-expected": "a mapping describing one host (address, alias, ...)"},
                "x-expected": "a non-empty list of hosts"}
_EXPLICIT = {"type": "object", "required": ["machines"], "additionalProperties": False,
             "properties": {"machines": {"type": "array", "minItems": 1,
                                         "x-expected": "a non-empty list of machines"},
                            "networks": {"type": "array"}},
             "x-expected": "a mapping with 'machines' (a list) and optionally 'networks'"}
_MACHINE = {"type": "object",
            "properties": {"role": _NAME,
                           "roles": {"type": "array", "minItems": 1, "items": _NAME, "uniqueItems": True,
                                     "x-expected": "a non-empty list of role names"},
                           "cluster": _LABEL, "flavour": _LABEL, "nodes": _COUNT, "number": _COUNT},
            "x-expected": "a mapping describing machines (roles, cluster or flavour, nodes or number, ...)"}
_TOPOLOGY = {"type": "object", "minProperties": 1,
             "x-expected": "a mapping of group → {cluster/flavour → {role: number}}"}
_TOPO_GROUP = {"type": "object", "minProperties": 1, "additionalProperties": _ROLE_COUNTS,
               "x-expected": "a mapping of cluster/flavour → {role: number}"}
_NETWORKS = {"type": "array", "items": {"type": "object", "x-expected": "a mapping describing one network"},
             "x-expected": "a list of networks"}
_PROVISION = {"anyOf": [{"type": "string", "minLength": 1},
                        {"type": "array", "items": {"type": "string", "minLength": 1,
                                                    "x-expected": "a playbook path"}}],
              "x-expected": "a playbook path or a list of playbook paths"}
_VARIABLES = {"type": "object", "x-expected": "a mapping of variable → value"}
_GROUP_RANGE = re.compile(r"^(?P<name>.+)\[(?P<start>\d+)-(?P<end>\d+)\]$")
#: at most this many groups from one ``grp[a-b]`` range
MAX_GROUP_RANGE = 1000
#: at most this many machines in one reservation (Grid'5000 has ~1000 nodes)
MAX_MACHINES = 10_000
_MISSING_SPACE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*:\S")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


def _dotted(path) -> str:
    return ".".join(str(p) for p in path)


def _as_path(keypath) -> Tuple:
    if isinstance(keypath, str):
        return tuple(int(p) if p.isdigit() else p for p in keypath.split(".")) if keypath else ()
    return tuple(keypath)


def _resolve_dotted(positions: dict, keypath: str) -> Tuple:
    """Return the key path a dotted string names, matching keys that contain dots
    themselves (``resources.m1.large.compute`` → ('resources', 'm1.large', 'compute'))
    against the known positions; unknown parts are split on dots."""
    parts = keypath.split(".") if keypath else []
    path: Tuple = ()
    i = 0
    while i < len(parts):
        for j in range(len(parts), i, -1):
            cand = ".".join(parts[i:j])
            key = int(cand) if cand.isdigit() else cand
            if path + (key,) in positions or path + (cand,) in positions:
                path += (key,) if path + (key,) in positions else (cand,)
                i = j
                break
        else:
            return path + _as_path(".".join(parts[i:]))
    return path


def _line_of(positions: dict, path: Tuple) -> Optional[int]:
    path = tuple(path)
    while True:
        if path in positions:
            return positions[path]
        alt = tuple(str(p) if isinstance(p, int) else p for p in path)
        if alt in positions:
            return positions[alt]
        if not path:
            return None
        path = path[:-1]


def expand_group(name: str) -> List[str]:
    """Return the group names ``name`` stands for: ``grp[2-4]`` → grp2, grp3, grp4;
    any other name → itself. Raises ValueError when the range is reversed or holds more
    than :data:`MAX_GROUP_RANGE` names."""
    m = _GROUP_RANGE.match(name)
    if m is None:
        return [name]
    start, end = int(m.group("start")), int(m.group("end"))
    if start > end:
        raise ValueError(f"the range [{start}-{end}] is reversed; write [{end}-{start}]")
    if end - start + 1 > MAX_GROUP_RANGE:
        raise ValueError(f"the range [{start}-{end}] names {end - start + 1} groups; at most "
                         f"{MAX_GROUP_RANGE} are allowed")
    return [f"{m.group('name')}{i}" for i in range(start, end + 1)]


class _Builder:
    """Checks one reservation and builds its Config (one instance per call)."""

    def __init__(self, data, file, positions, scalars, provider_loader, base_dir, check_files):
        self.data, self.file, self.positions, self.scalars = data, file, positions, scalars
        self.loader = provider_loader
        self.base_dir, self.check_files = base_dir, check_files

    # -- error helpers
    def line(self, path) -> Optional[int]:
        return _line_of(self.positions, tuple(path))

    def err(self, path, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, line=self.line(path), keypath=_dotted(path) or None)

    def check(self, instance, schema, path, root=None, extra_keys=()) -> None:
        """Raise a ConfigError for the first (by line) violation of ``schema``."""
        try:
            found = violations(instance, schema, root, tuple(path))
        except SchemaUnsupported as e:
            raise ProviderError(f"the provider's schema cannot be checked: {e}") from None
        if found:
            v = pick(found, self.line)
            where, message = explain(v, self.line, self.scalars.get, extra_keys)
            raise self.err(where, message)

    # -- the steps
    def build(self) -> Config:
        data = self.data
        if data is None:
            raise ConfigError("the file is empty; expected a mapping with at least 'provider' and 'resources'",
                              file=self.file, line=None)
        if not isinstance(data, dict):
            raise ConfigError(f"expected a mapping of keys (provider, resources, ...), got {show(data)}",
                              file=self.file, line=self.line(()))
        self._check_plain(data, ())
        bad = scalar_problem(data)
        if bad:
            raise self.err(*bad)
        if "providers" in data:
            return self._build_multi(data)
        variables = self._top_level_keys(data)
        self._compact_shape(data)
        cls, options = self._provider(data)
        machines, networks = self._machines(data, cls)
        total = sum(m.count for m in machines)
        if total > MAX_MACHINES:
            big = max(machines, key=lambda m: m.count)
            raise ConfigError(f"{total} machines asked for; at most {MAX_MACHINES} are allowed",
                              file=self.file, line=big.line, keypath=big.keypath or None)
        self._one_line(data)            # after the schemas: their wording of a bad name comes first
        self._network_values(data)
        provision = self._provision(data)
        variables = self._variables(data, variables)
        constraints = self._network_constraints(data, machines)
        config = Config(file=self.file, provider_type=options["type"], options=options, machines=machines,
                        networks=networks, variables=variables, provision=provision,
                        raw=self.data, positions=self.positions, base_dir=self.base_dir,
                        network_constraints=constraints)
        cls.validate(config)
        return config

    def _build_multi(self, data: dict) -> Config:
        """A ``providers:`` reservation: each block built as a one-provider file
        (:mod:`enos.reservation.multi`), the shared keys (provision, variables, network
        constraints) as usual."""
        variables = self._top_level_keys(data)

        def build_one(i: int, sub: dict) -> Config:
            cfg = _Builder(sub, self.file, part_positions(self.positions, i), part_positions(self.scalars, i),
                           self.loader, self.base_dir, self.check_files).build()
            cfg.block = i
            return cfg
        parts = build_parts(data, self.err, build_one)
        machines = [dataclasses.replace(m, keypath=part_keypath(m.keypath, i))
                    for i, (_, c) in enumerate(parts) for m in c.machines]
        total = sum(m.count for m in machines)
        if total > MAX_MACHINES:
            raise self.err(("providers",), f"{total} machines asked for; at most {MAX_MACHINES} are allowed")
        self._one_line(data)
        provision = self._provision(data)
        variables = self._variables(data, variables)
        constraints = self._network_constraints(data, machines)
        options = {"type": MULTI, "providers": [{"name": n, **c.options} for n, c in parts]}
        return Config(file=self.file, provider_type=MULTI, options=options, machines=machines,
                      variables=variables, provision=provision, raw=self.data, positions=self.positions,
                      base_dir=self.base_dir, network_constraints=constraints, parts=parts)

    def _check_plain(self, value, path) -> None:
        """Only JSON-like data may go to the state file and to Ansible."""
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, (str, int, float, bool)) and k is not None:
                    raise self.err(path, "a mapping key must be plain text or a number")
                self._check_plain(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._check_plain(v, path + (i,))
        elif not isinstance(value, (str, int, float, bool)) and value is not None:
            raise self.err(path, f"expected plain YAML data (text, numbers, lists, mappings), "
                                 f"got a {type(value).__name__}")

    def _one_line(self, data: dict) -> None:
        """Refuse a control character (a newline, a tab, an escape...) in a text of the
        provider section, the machines or the network constraints: there every text is a
        name, an address, a path or a value for a command line. (Free Ansible data, under
        ``variables`` and a host's ``extra``, may hold several lines.)"""
        stack = [(data.get(k), (k,)) for k in ("provider", "resources", "topology", "network_constraints")
                 if isinstance(data, dict) and k in data]
        while stack:
            value, path = stack.pop()
            if path[-1:] in (("extra",), ("variables",)):
                continue
            if isinstance(value, str) and _CONTROL.search(value):
                ch = _CONTROL.search(value).group()
                raise self.err(path, f"a control character ({ch!r}) cannot be part of this value: "
                                     f"write it on one line")
            if isinstance(value, dict):
                stack += [(v, path + (k,)) for k, v in value.items()]
                stack += [(k, path + (k,)) for k in value if isinstance(k, str)]
            elif isinstance(value, list):
                stack += [(v, path + (i,)) for i, v in enumerate(value)]

    def _network_values(self, data: dict) -> None:
        """Check every ``cidr``/``subnet`` of the provider section and the resources (any
        provider: static networks, the local subnet, libvirt and Vagrant networks) as an
        IPv4 network hosts can be given addresses in: not multicast, loopback, link-local,
        reserved or the unspecified range, and a prefix length of at most 30."""
        stack = [(data.get(k), (k,)) for k in ("provider", "resources") if k in data]
        while stack:
            value, path = stack.pop()
            if isinstance(value, dict):
                stack += [(v, path + (k,)) for k, v in value.items()]
            elif isinstance(value, list):
                stack += [(v, path + (i,)) for i, v in enumerate(value)]
            elif isinstance(value, str) and path[-1] in ("cidr", "subnet"):
                problem = network_problem(value)
                if problem:
                    raise self.err(path, problem)

    def _top_level_keys(self, data: dict) -> dict:
        variables = {}
        for key, value in data.items():
            if key in KNOWN_KEYS:
                continue
            if not isinstance(key, str):
                raise self.err((key,), "expected a text key")
            ratios = [(difflib.SequenceMatcher(None, key, k).ratio(), k) for k in KNOWN_KEYS]
            ratio, close = max(ratios)
            if ratio >= TYPO_RATIO:
                raise self.err((key,), f"unknown key; did you mean '{close}'?")
            variables[key] = value
        return variables

    def _compact_shape(self, data: dict) -> None:
        """Refuse, whatever the provider, a compact ``resources`` label whose value is a
        plain value (``small: compute:1``, a space missing after ':'): no provider reads
        that, and it is the file's real defect even when its provider is unknown here."""
        res = data.get("resources")
        if not isinstance(res, dict):
            return
        for label, value in res.items():
            if label == "machines" or isinstance(value, (dict, list)) or value is None:
                continue
            p = ("resources", label)
            hint = ""
            if isinstance(value, str) and _MISSING_SPACE.match(value):
                k, _, v = value.partition(":")
                hint = f" (a space is missing after ':'? write '{k}: {v}' on its own line)"
            raise self.err(p, "expected a mapping of role → number of machines, or a list of hosts, "
                              f"got {show(value, self.scalars.get(p))}{hint}")

    def _provider(self, data: dict):
        if "provider" not in data:
            raise self.err((), "missing key 'provider' (e.g. 'provider: local' or 'provider: {type: g5k, ...}')")
        value = data["provider"]
        if isinstance(value, str):
            options, type_path = {"type": value}, ("provider",)
        elif isinstance(value, dict):
            if "type" not in value:
                raise self.err(("provider",), "missing key 'type'")
            options = {k: v for k, v in value.items() if k != "resources"}
            type_path = ("provider", "type")
        else:
            raise self.err(("provider",), f"expected a provider type or a mapping with a 'type' key, "
                                          f"got {show(value, self.scalars.get(('provider',)))}")
        name = options["type"]
        if not isinstance(name, str) or not name:
            raise self.err(type_path, f"expected a provider type, got {show(name, self.scalars.get(type_path))}")
        try:
            cls = self.loader(name)
        except ProviderNotFound as e:
            raise self.err(type_path, str(e)) from None
        self.check(options, cls.schema, ("provider",))
        return cls, fill_defaults(copy.deepcopy(options), cls.schema)

    # -- machines
    def _machines(self, data: dict, cls):
        prov = data["provider"] if isinstance(data["provider"], dict) else {}
        sources = []
        if "resources" in prov:
            sources.append(("provider", "resources"))
        res = data.get("resources")
        if "resources" in data and not (isinstance(res, dict) and res and set(res) <= {"networks"}):
            sources.append(("resources",))
        if "topology" in data:
            sources.append(("topology",))
        if not sources:
            if "resources" in data:
                raise self.err(("resources",), "no machines asked for: 'resources' only has 'networks'")
            raise self.err((), "missing key 'resources': no machines asked for "
                               "(give 'resources', 'topology' or 'provider.resources')")
        if len(sources) > 1:
            first, second = sorted(sources, key=lambda p: self.line(p) or 0)[:2]
            raise self.err(second, f"machines are already given by '{_dotted(first)}' (line {self.line(first)}); "
                                   "give them in one place only")
        src = sources[0]
        networks: List[dict] = []
        net_paths = []
        if src == ("provider", "resources"):
            machines = self._explicit(prov["resources"], src, cls, networks, net_paths)
        elif src == ("topology",):
            machines = self._topology(data["topology"], cls)
        elif isinstance(res, dict) and isinstance(res.get("machines"), list):
            machines = self._explicit(res, src, cls, networks, net_paths)
        else:
            self.check(res, _COMPACT, src)
            machines = self._compact({k: v for k, v in res.items() if k != "networks"}, src, cls)
        explicit_top = src == ("resources",) and isinstance(res.get("machines"), list)
        if isinstance(res, dict) and "networks" in res and not explicit_top:
            net_paths.append(("resources", "networks"))
        if len(net_paths) > 1:
            first, second = sorted(net_paths, key=lambda p: self.line(p) or 0)[:2]
            raise self.err(second, f"networks are already given by '{_dotted(first)}' (line {self.line(first)}); "
                                   "give them in one place only")
        for path in net_paths:
            networks = self._networks(self._get(path), path, cls)
        return machines, networks

    def _get(self, path):
        node = self.data
        for p in path:
            node = node[p]
        return node

    def _networks(self, value, path, cls) -> List[dict]:
        schema = cls.schema if isinstance(cls.schema, dict) else {}
        sub = schema.get("properties", {}).get("resources", {})
        sub = sub.get("properties", {}).get("networks") if isinstance(sub, dict) else None
        if sub is None:
            self.check(value, _NETWORKS, path)
            return copy.deepcopy(value)
        self.check(value, sub, path, root=schema)
        return fill_defaults(copy.deepcopy(value), sub, schema)

    def _machine_options(self, options: dict, path, cls, extra_keys=()) -> dict:
        self.check(options, cls.machine_schema, path, extra_keys=extra_keys)
        return fill_defaults(copy.deepcopy(options), cls.machine_schema)

    def _explicit(self, value, path, cls, networks, net_paths) -> List[MachineSpec]:
        if isinstance(value, dict) and path == ("resources",):
            for key in value:
                if key not in ("machines", "networks"):
                    raise self.err(path + (key,), "cannot mix the compact form with the explicit 'machines' "
                                                  "list; write this as a 'machines' entry")
        self.check(value, _EXPLICIT, path)
        if "networks" in value:
            net_paths.append(path + ("networks",))
        specs = []
        for i, entry in enumerate(value["machines"]):
            p = path + ("machines", i)
            self.check(entry, _MACHINE, p)
            for a, b in (("role", "roles"), ("cluster", "flavour"), ("nodes", "number")):
                if a in entry and b in entry:
                    later = max((p + (a,), p + (b,)), key=lambda q: self.line(q) or 0)
                    raise self.err(later, f"give either '{a}' or '{b}', not both")
            if "role" not in entry and "roles" not in entry:
                raise self.err(p, "missing key 'roles' (or 'role')")
            roles = [entry["role"]] if "role" in entry else list(entry["roles"])
            options = {k: v for k, v in entry.items() if k not in EXPLICIT_KEYS}
            options = self._machine_options(options, p, cls, extra_keys=EXPLICIT_KEYS)
            specs.append(MachineSpec(roles=roles, count=int(entry.get("nodes", entry.get("number", 1))),
                                     label=entry.get("cluster", entry.get("flavour")), options=options,
                                     keypath=_dotted(p), line=self.line(p)))
        return specs

    def _compact(self, res: dict, path, cls) -> List[MachineSpec]:
        specs = []
        for label, value in res.items():
            p = path + (label,)
            if isinstance(value, dict) and self._is_host(value, cls):
                raise self.err(p, f"a role of the '{cls.type}' provider takes a list of hosts, "
                                  f"not one host mapping: write '{label}:' then '- address: "
                                  f"{value.get('address')}' (each host a list item starting with '- ')")
            if isinstance(value, dict):
                self.check(label, _LABEL, p)
                self.check(value, _ROLE_COUNTS, p)
                self._counts_allowed(cls, p, label)
                for role, count in value.items():
                    specs.append(MachineSpec(roles=[role], count=int(count), label=label,
                                             keypath=_dotted(p + (role,)), line=self.line(p + (role,))))
            elif isinstance(value, list):
                self.check(label, _NAME, p)
                self.check(value, _STATIC_LIST, p)
                for i, entry in enumerate(value):
                    options = self._machine_options(entry, p + (i,), cls)
                    specs.append(MachineSpec(roles=[label], count=1, options=options,
                                             keypath=_dotted(p + (i,)), line=self.line(p + (i,))))
            else:
                hint = ""
                if isinstance(value, str) and _MISSING_SPACE.match(value):
                    k, _, v = value.partition(":")
                    hint = f" (a space is missing after ':'? write '{k}: {v}' on its own line)"
                raise self.err(p, "expected a mapping of role → number of machines, or a list of hosts, "
                                  f"got {show(value, self.scalars.get(p))}{hint}")
        return specs

    def _topology(self, topo, cls) -> List[MachineSpec]:
        path = ("topology",)
        self.check(topo, _TOPOLOGY, path)
        specs, defined = [], {}
        for grp, clusters in topo.items():
            p = path + (grp,)
            self.check(grp, dict(_LABEL, **{"x-expected": "a group name"}), p)
            try:
                names = expand_group(grp)
            except ValueError as e:
                raise self.err(p, str(e)) from None
            for name in names:
                self.check(name, _GROUP_NAME, p)
                if name in defined:
                    raise self.err(p, f"group '{name}' is already defined by '{defined[name][0]}' "
                                      f"(line {defined[name][1]})")
                defined[name] = (grp, self.line(p))
            hosts = {k for k, v in clusters.items() if self._static_entry(v, cls)} \
                if isinstance(clusters, dict) else set()
            rest = {k: v for k, v in clusters.items() if k not in hosts} if isinstance(clusters, dict) else clusters
            if not (hosts and not rest):
                self.check(rest, _TOPO_GROUP, p)
            for name in names:
                for label, roles in clusters.items():
                    if label in hosts:
                        # Enos' static form: GROUP: {ROLE: host or [hosts]}
                        self.check(label, _NAME, p + (label,))
                        entries = roles if isinstance(roles, list) else [roles]
                        base = p + (label,)
                        for i, entry in enumerate(entries):
                            q = base + (i,) if isinstance(roles, list) else base
                            if not isinstance(entry, dict):
                                raise self.err(q, "expected a mapping describing one host (address, alias, ...)")
                            options = self._machine_options(entry, q, cls)
                            specs.append(MachineSpec(roles=list(dict.fromkeys([label, name])), count=1,
                                                     group=name, options=options, keypath=_dotted(q),
                                                     line=self.line(q)))
                        continue
                    self.check(label, _LABEL, p + (label,))
                    self._counts_allowed(cls, p + (label,), label)
                    for role, count in roles.items():
                        q = p + (label, role)
                        specs.append(MachineSpec(roles=list(dict.fromkeys([role, name])), count=int(count),
                                                 label=label, group=name, keypath=_dotted(q), line=self.line(q)))
        return specs

    def _counts_allowed(self, cls, path, label) -> None:
        """Refuse a number of machines for a provider whose machines are hosts given by
        address (``static``): it books nothing, so it cannot make up hosts."""
        ms = cls.machine_schema if isinstance(cls.machine_schema, dict) else {}
        if "address" in (ms.get("required") or ()):
            raise self.err(path, f"the '{cls.type}' provider takes existing hosts by address, not a number "
                                 f"of machines: write '{label}:' (a role) then '- address: HOST' for each host")

    @staticmethod
    def _is_host(value, cls) -> bool:
        """True when ``value`` (a mapping) describes one host of a provider whose machines
        are hosts given by address (its machine schema requires ``address``)."""
        ms = cls.machine_schema if isinstance(cls.machine_schema, dict) else {}
        return isinstance(value, dict) and "address" in (ms.get("required") or ()) and "address" in value

    def _static_entry(self, value, cls) -> bool:
        """True when a topology group's entry is a host list (or one host) of an
        address-based provider (Enos' static topology)."""
        return self._is_host(value, cls) or (
            isinstance(value, list) and "address" in ((cls.machine_schema or {}).get("required") or ()))

    def _network_constraints(self, data: dict, machines: List[MachineSpec]):
        if "network_constraints" not in data:
            return None
        known = list(dict.fromkeys([r for m in machines for r in m.roles]
                                   + [m.group for m in machines if m.group]))
        return parse_network_constraints(data["network_constraints"], known, self.check, self.err,
                                         expand_group)

    # -- provision and variables
    def _provision(self, data: dict) -> List[str]:
        if "provision" not in data:
            return []
        value = data["provision"]
        path = ("provision",)
        self.check(value, _PROVISION, path)
        items = [(path, value)] if isinstance(value, str) else [(path + (i,), v) for i, v in enumerate(value)]
        out = []
        for p, rel in items:
            full = os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(rel)))
            if self.check_files:
                if os.path.isdir(full):
                    raise self.err(p, f"{full} is a directory, not a playbook")
                if not os.path.isfile(full):
                    raise self.err(p, f"no such playbook: {full}")
            out.append(full)
        return out

    def _variables(self, data: dict, top_level: dict) -> dict:
        variables = dict(top_level)
        if "variables" not in data:
            return variables
        section = data["variables"]
        self.check(section, _VARIABLES, ("variables",))
        for key, value in section.items():
            if not isinstance(key, str):
                raise self.err(("variables", key), "expected a text key")
            if key in top_level:
                raise self.err(("variables", key), f"'{key}' is also given at the top level "
                                                   f"(line {self.line((key,))}); keep one")
            variables[key] = value
        return variables


def constraints_from_data(value: Any, known_groups: List[str], source: str = "network_constraints") -> "NetworkConstraints":
    """Check and normalise a ``network_constraints`` mapping given from Python (e.g.
    ``env.tc({...})``); return a :class:`NetworkConstraints`. ``known_groups``: the env's
    roles and groups. Raises :class:`~enos.errors.ConfigError` naming ``source`` and the key."""

    def err(path, message):
        return ConfigError(message, file=source, keypath=".".join(str(p) for p in path) or None)

    def check(instance, schema, path):
        found = violations(instance, schema, None, tuple(path))
        if found:
            where, message = explain(pick(found, lambda p: None), lambda p: None, lambda p: None)
            raise err(where, message)

    return parse_network_constraints(value, known_groups, check, err, expand_group)
