"""Sphinx extension of the enos site: the reference parts generated from the code.

At ``builder-inited`` it writes Markdown files into ``docs/_generated/`` (ignored by git,
excluded from the page list), which the pages pull in with ``{include}``:

* ``reservation-core.md`` and ``provider-<type>.md``: every key of reservation.yaml, from
  the core's known keys (``enos.reservation.config.KNOWN_KEYS``, the
  ``network_constraints`` schema) and from each provider's ``schema`` and
  ``machine_schema``, read through the provider registry (``enos.provider``), with type,
  default, example;
* ``campaign.md``: every key of a campaign file, from ``enos.campaign.file.SCHEMA``;
* ``cli.md``: every command's docopt usage text (``enos.cli.COMMANDS``);
* ``capabilities-<type>.md``: what a provider declares (``capabilities``, ``extra``,
  ``requires``);
* ``errors.md``: every error class of ``enos.errors`` with a message produced by the class
  itself, and the cause and fix written in ``docs/errors.yaml``.

What cannot be generated honestly (a key with no example anywhere, an error class with no
written cause and fix) is a Sphinx warning, hence a failed build under ``-W``.
"""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

GENERATED = "_generated"
MISSING = object()

#: what each top-level key of reservation.yaml is (the keys themselves come from the code:
#: a key of KNOWN_KEYS missing here is a build warning)
CORE_KEYS = {
    "provider": ("the provider type, or a mapping `{type: TYPE, ...}` with the provider's keys "
                 "(see the provider's table below)", "text or mapping", "local",
                 "{type: g5k, walltime: '02:00:00'}"),
    "providers": ("several testbeds in one environment: a list of provider blocks, each "
                  "`{type: TYPE, name: NAME, resources: ..., <the provider's keys>}`; instead of "
                  "`provider` (see *providers* above)", "list of mapping", None,
                  "[{type: local, resources: {machines: {client: 2}}}]"),
    "resources": ("the machines: compact `{LABEL: {ROLE: COUNT}}`, a static list `{ROLE: [{address: ...}]}` "
                  "or explicit `{machines: [...], networks: [...]}` (see *resources* above)", "mapping",
                  None, "{local: {control: 1, compute: 2}}"),
    "topology": ("groups of machines `{GROUP: {LABEL: {ROLE: COUNT}}}`; `grp[2-4]` stands for grp2, grp3, "
                 "grp4; instead of `resources`", "mapping", None, "{grp1: {local: {server: 1}}}"),
    "provision": ("a playbook path or a list of them, relative to the reservation file, run after "
                  "enos' own preinstall", "text or list of text", None, "[site.yml]"),
    "network_constraints": ("delay, rate and loss between groups (keys below; see "
                            "[network constraints](network-constraints.md))", "mapping", None,
                            "{enable: true, default_rate: 100mbit}"),
    "variables": ("experiment variables handed to the playbooks (any other top-level key is one too)",
                  "mapping", None, "{greeting: hello}"),
}

#: the keys of an explicit machine entry the core reads itself (config.py)
MACHINE_CORE_KEYS = {
    "roles": ("the roles of these machines (`role` for one)", "list of text", "[compute]"),
    "role": ("one role (same as `roles: [ROLE]`)", "text", "compute"),
    "cluster": ("the cluster (Grid'5000) or label of these machines (`flavour` for VM providers)", "text",
                "paravance"),
    "flavour": ("the VM size of these machines (libvirt, vagrant)", "text", "small"),
    "nodes": ("how many machines (`number` is the same); default 1", "integer ≥ 1", "2"),
    "number": ("same as `nodes`", "integer ≥ 1", "2"),
}

#: what each capability means (a capability of enos.provider.provider.CAPABILITIES missing
#: here is a build warning)
CAPABILITY_MEANING = {
    "reserve": "`init` books resources (something exists on the testbed until `destroy`)",
    "destroy": "`destroy` releases what was booked, from the saved state only",
    "ip_pool": "`init` returns free IP addresses (an IP pool) for the experiment",
    "deploy_os": "installs an OS image on the machines (`--force-deploy` reinstalls it)",
    "extend_walltime": "`enos extend` gives more time to the reservation",
    "advance_reservation": "books for a later date",
    "sweep": "`enos destroy --sweep --run-id ID` finds what a run booked without its state",
}


class Problems(list):
    """What the generators could not produce (each becomes a Sphinx warning)."""


# --- schema walking -------------------------------------------------------------------------

def _resolve(schema: Any, root: dict) -> Any:
    if isinstance(schema, dict) and "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return _resolve(node, root)
    return schema


def type_of(schema: Any, root: Optional[dict] = None) -> str:
    """Return a short human type of ``schema`` (``integer ≥ 1``, ``one of a, b``, ...)."""
    root = root if root is not None else schema
    s = _resolve(schema, root)
    if not isinstance(s, dict) or not s:
        return "any"
    if "const" in s:
        return f"`{json.dumps(s['const'])}`"
    if "enum" in s:
        return "one of " + ", ".join(f"`{v}`" if v is not None else "`null`" for v in s["enum"])
    for alt in ("anyOf", "oneOf"):
        if alt in s:
            parts = []
            for sub in s[alt]:
                t = type_of(sub, root)
                if t not in parts:
                    parts.append(t)
            return " or ".join(parts)
    t = s.get("type")
    names = t if isinstance(t, list) else [t] if t else []
    out = []
    for name in names:
        if name == "array":
            items = s.get("items")
            out.append(f"list of {type_of(items, root)}" if items else "list")
        elif name == "object":
            out.append("mapping")
        elif name == "string":
            out.append("text")
        else:
            out.append(name)
    text = " or ".join(out) or "any"
    bounds = []
    if "minimum" in s:
        bounds.append(f"≥ {s['minimum']}")
    if "exclusiveMinimum" in s:
        bounds.append(f"> {s['exclusiveMinimum']}")
    if "maximum" in s:
        bounds.append(f"≤ {s['maximum']}")
    if bounds and names and names[0] in ("integer", "number"):
        text += " " + ", ".join(bounds)
    return text


def walk(schema: dict, prefix: str, root: Optional[dict] = None, skip=()) -> Iterator[Tuple[str, dict, bool]]:
    """Yield ``(keypath, subschema, required)`` for every key under ``schema`` (nested
    mappings as ``a.b``, lists of mappings as ``a[].b``, free mappings as ``a.<name>``)."""
    root = root if root is not None else schema
    s = _resolve(schema, root)
    if not isinstance(s, dict):
        return
    required = set(s.get("required") or ())
    for key, sub in (s.get("properties") or {}).items():
        if key in skip:
            continue
        path = f"{prefix}.{key}" if prefix else key
        sub = _resolve(sub, root)
        yield path, sub, key in required
        yield from _children(sub, path, root)
    addl = s.get("additionalProperties")
    if isinstance(addl, dict) and addl:
        path = f"{prefix}.<name>" if prefix else "<name>"
        yield path, _resolve(addl, root), False
        yield from _children(_resolve(addl, root), path, root)


def _children(sub: Any, path: str, root: dict) -> Iterator[Tuple[str, dict, bool]]:
    if not isinstance(sub, dict):
        return
    if sub.get("properties") or isinstance(sub.get("additionalProperties"), dict):
        yield from walk(sub, path, root)
    items = _resolve(sub.get("items"), root)
    if isinstance(items, dict) and (items.get("properties") or isinstance(items.get("additionalProperties"), dict)):
        yield from walk(items, path + "[]", root)
    for alt in ("anyOf", "oneOf"):
        for a in sub.get(alt) or ():
            a = _resolve(a, root)
            if isinstance(a, dict) and (a.get("properties") or a.get("type") == "array"):
                yield from _children(a, path, root)


# --- examples ---------------------------------------------------------------------------------

_LIKE = re.compile(r"(?:like|such as|e\.g\.)\s+'?([^'()]+?)'?(?:\s+or\s|\)|$|,|;)")
_PAREN = re.compile(r"\(([A-Za-z0-9][^(),]*?)(?:,\s*\.\.\.)?\)")


def uncommented(sample: str) -> Any:
    """Return the data of a commented sample reservation with its commented-out keys
    (``# key: value``) uncommented, one at a time, as long as the YAML still parses."""
    lines = sample.splitlines()
    try:
        data = yaml.safe_load("\n".join(lines))
    except yaml.YAMLError:
        return None
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)#\s?(\s*[A-Za-z_][\w-]*:(?:\s.*)?)$", line)
        if not m:
            continue
        trial = lines[:i] + [m.group(1) + m.group(2)] + lines[i + 1:]
        try:
            parsed = yaml.safe_load("\n".join(trial))
        except yaml.YAMLError:
            continue
        if isinstance(parsed, dict):
            lines, data = trial, parsed
    return data


def find_key(data: Any, key: str) -> Any:
    """Return the first value of ``key`` anywhere in ``data`` (depth first), or MISSING."""
    if isinstance(data, dict):
        if key in data and data[key] is not None:
            return data[key]
        values = list(data.values())
    elif isinstance(data, list):
        values = data
    else:
        return MISSING
    for v in values:
        found = find_key(v, key)
        if found is not MISSING:
            return found
    return MISSING


def lookup(data: Any, path: str) -> Any:
    """Return the value at ``path`` (``a.b``, ``a[].b``; ``<name>`` any key) in ``data``, or MISSING."""
    node = data
    for part in path.split("."):
        many = part.endswith("[]")
        part = part[:-2] if many else part
        if part == "<name>":
            if not isinstance(node, dict) or not node:
                return MISSING
            node = next(iter(node.values()))
        elif isinstance(node, dict) and node.get(part) is not None:
            node = node[part]
        else:
            return MISSING
        if many:
            if not isinstance(node, list) or not node:
                return MISSING
            node = node[0]
    return node


def flow(value: Any) -> str:
    """``value`` as one line of YAML."""
    if isinstance(value, str) and value != "" and not re.search(r"[:#{}\[\],&*?|<>=!%@`'\"]|^\s|\s$", value) \
            and yaml.safe_load(value) == value:
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10000).strip().removesuffix("\n...").strip()


def _fits(value: Any, sub: Any, root: dict) -> bool:
    from enos.reservation.schemacheck import is_valid
    try:
        return value is not MISSING and value is not None and is_valid(value, sub, root)
    except Exception:  # noqa: BLE001 - a schema the checker does not take: no example from it
        return False


def example_of(path: str, sub: dict, samples: List[Any], default: Any, written: Dict[str, Any],
               root: dict) -> Optional[str]:
    """Return an example value for the key at ``path`` (as one line of YAML), or None.
    Looked up in order: the schema's ``examples``; ``docs/reference-examples.yaml``; the
    value at that place, then under that name, in the provider's sample reservation
    (commented keys included); the default; a value the schema's ``x-expected`` wording
    quotes; the first ``enum`` value; ``const``; ``true`` for a boolean. Every candidate
    must pass the key's schema."""
    candidates: List[Any] = []
    if isinstance(sub, dict) and sub.get("examples"):
        candidates.append(sub["examples"][0])
    if isinstance(written.get(path), dict) and "example" in written[path]:
        candidates.append(written[path]["example"])
    leaf = path.rsplit(".", 1)[-1].removesuffix("[]")
    for data in samples:
        candidates += [lookup(data, path), lookup(data, path.removeprefix("provider."))]
        if leaf != "<name>":
            candidates.append(find_key(data, leaf))
    if default is not MISSING and default != [] and default != {}:
        candidates.append(default)
    expected = (sub or {}).get("x-expected", "") if isinstance(sub, dict) else ""
    m = _LIKE.search(expected) or _PAREN.search(expected)
    if m and " " not in m.group(1).strip():
        text = m.group(1).strip()
        candidates += [text, yaml.safe_load(text)]
    if isinstance(sub, dict):
        if sub.get("enum"):
            candidates.append(sub["enum"][0])
        if "const" in sub:
            candidates.append(sub["const"])
        candidates.append(True)
    for c in candidates:
        if _fits(c, sub, root):
            return flow(c)
    return None


# --- markdown helpers -------------------------------------------------------------------------

def cell(text: Any) -> str:
    """``text`` made safe for one cell of a Markdown table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code(text: Optional[str]) -> str:
    if text is None or text == "":
        return "—"
    text = str(text)
    ticks = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def table(header: List[str], rows: List[List[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


# --- the generators ---------------------------------------------------------------------------

def written_examples() -> Dict[str, Dict[str, Any]]:
    """``docs/reference-examples.yaml``: {where: {keypath: example}} for keys whose schema and
    sample give none."""
    f = Path(__file__).resolve().parents[1] / "reference-examples.yaml"
    return yaml.safe_load(f.read_text()) or {}


def schema_rows(schema: dict, prefix: str, samples: List[Any], defaults: Dict[str, Any],
                problems: Problems, where: str, skip=()) -> List[List[str]]:
    """The reference rows (key, type, required, default, example, meaning) of ``schema``.
    A key whose own keys follow in the table shows no example of its own."""
    rows = []
    written = written_examples().get(where, {}) or {}
    found = list(walk(schema, prefix, skip=skip))
    for path, sub, required in found:
        short = path[len(prefix) + 1:] if prefix and path.startswith(prefix + ".") else path
        default = sub.get("default", MISSING) if isinstance(sub, dict) else MISSING
        if default is MISSING and short in defaults:
            default = defaults[short]
        if any(p.startswith(path + ".") or p.startswith(path + "[]") for p, _, _ in found):
            example = "(its keys follow)"
        else:
            example = example_of(path, sub, samples, default, written, schema)
            if example is None:
                problems.append(f"{where}: key '{path}' has no example: give its schema 'examples', "
                                f"or one in docs/reference-examples.yaml under '{where}'")
            example = code(example)
        meaning = (sub.get("description") or "") if isinstance(sub, dict) else ""
        if not meaning and isinstance(written.get(path), dict):
            meaning = written[path].get("meaning", "")
        if isinstance(sub, dict) and sub.get("x-expected") and sub["x-expected"] not in meaning:
            meaning = f"{meaning} ({sub['x-expected']})" if meaning else sub["x-expected"]
        rows.append([code(path), type_of(sub, schema), "yes" if required else "",
                     code(flow(default)) if default is not MISSING else "—",
                     example, meaning])
    return rows


HEADER = ["key", "type", "required", "default", "example", "meaning"]


def provider_classes() -> Dict[str, type]:
    """Every provider class, read through the registry (built-in and entry points)."""
    from enos.provider import available_providers, load_provider_class
    return {name: load_provider_class(name, check=False) for name in available_providers()}


def builtin_classes() -> Dict[str, type]:
    from enos.provider import builtin_providers, load_provider_class
    return {name: load_provider_class(name, check=False) for name in builtin_providers()}


def provider_reference(cls: type, problems: Problems) -> str:
    """The reservation keys of one provider: its ``provider:`` section and its machine keys."""
    samples = [s for s in (uncommented(cls.sample or ""),) if s is not None]
    defaults = dict(getattr(cls, "defaults", {}) or {})
    where = cls.type
    out = [f"`provider: {{type: {cls.type}, ...}}` — {cls.description or ''}\n"]
    rows = schema_rows(cls.schema or {}, "provider", samples, defaults, problems, where, skip=("type",))
    out.append(table(HEADER, rows) if rows else "No key besides `type`.\n")
    mrows = schema_rows(cls.machine_schema or {}, "", samples, {}, problems, where + " machine")
    out.append(f"\nKeys of one machine entry (explicit form `resources.machines[]`, or a host of the "
               f"static list form), besides the core's `roles`, `cluster`/`flavour`, `nodes`:\n")
    out.append(table(HEADER, mrows) if mrows else "None.\n")
    return "\n".join(out)


def core_reference(problems: Problems) -> str:
    """The top-level keys of reservation.yaml and the ``network_constraints`` keys."""
    from enos.reservation.config import KNOWN_KEYS
    from enos.reservation.netconstraints import SCHEMA as NC
    rows = []
    for key in KNOWN_KEYS:
        if key not in CORE_KEYS:
            problems.append(f"reservation: top-level key '{key}' is not described in docs/_ext/enosdocs.py")
            continue
        meaning, typ, default, example = CORE_KEYS[key]
        rows.append([code(key), typ, "one of the two" if key in ("provider", "providers") else "", code(default) if default else "—",
                     code(example), meaning])
    for key in CORE_KEYS:
        if key not in KNOWN_KEYS:
            problems.append(f"reservation: '{key}' is described but is no longer a top-level key")
    out = [table(HEADER, rows)]
    out.append("\nKeys of an explicit machine entry that the core reads (every provider):\n")
    out.append(table(["key", "type", "example", "meaning"],
                     [[code(k), t, code(e), m] for k, (m, t, e) in MACHINE_CORE_KEYS.items()]))
    out.append("\n`network_constraints` keys (`enos.reservation.netconstraints.SCHEMA`):\n")
    nc_sample = {"network_constraints": {"enable": True, "default_delay": "10ms", "default_rate": "1gbit",
                                         "default_loss": "0.1%", "default_network": "n1",
                                         "groups": ["grp1", "grp2"], "except": ["grp3"],
                                         "constraints": [{"src": "grp1", "dst": "grp[2-3]", "delay": "50ms",
                                                          "rate": "100mbit", "loss": 0, "symmetric": True,
                                                          "symetric": True, "network": "n1"}]}}
    out.append(table(HEADER, schema_rows(NC, "network_constraints", [nc_sample], {}, problems,
                                         "network_constraints")))
    return "\n".join(out)


def campaign_reference(problems: Problems) -> str:
    """Every key of a campaign file, from its schema, examples from the shipped example."""
    from enos.campaign.file import SCHEMA
    root = Path(__file__).resolve().parents[2]
    samples = []
    for f in sorted((root / "examples").rglob("campaign*.yaml")):
        try:
            samples.append(yaml.safe_load(f.read_text()))
        except yaml.YAMLError:  # pragma: no cover - the example is tested elsewhere
            pass
    return table(HEADER, schema_rows(SCHEMA, "", samples, {}, problems, "campaign"))


def cli_reference() -> str:
    """Every command's usage text, in the order of ``enos --help``."""
    import enos.cli as cli
    out = ["## `enos`\n", "```text", cli.__doc__.strip(), "```\n"]
    for name, doc in cli.COMMANDS.items():
        first, _, rest = doc.strip().partition("\n")
        out += [f"## `enos {name}`\n", first.strip() + "\n", "```text", doc.strip(), "```\n"]
    return "\n".join(out)


def capabilities_reference(cls: type, problems: Problems) -> str:
    """What provider ``cls`` declares: capabilities, the extra and libraries it needs."""
    from enos.provider.provider import CAPABILITIES
    for c in CAPABILITIES:
        if c not in CAPABILITY_MEANING:
            problems.append(f"capability '{c}' is not described in docs/_ext/enosdocs.py")
    rows = [[code(c), "yes" if c in cls.capabilities else "no (raises `Unsupported`)"
             if c in ("sweep", "extend_walltime") else "yes" if c in cls.capabilities else "no",
             CAPABILITY_MEANING.get(c, "")] for c in sorted(CAPABILITIES)]
    extra = f"`pip install 'enos[{cls.extra}]'`" if cls.extra else "nothing beyond enos itself"
    libs = ", ".join(f"`{m}`" for m in cls.requires) or "none"
    head = (f"Declared by `{cls.__module__}.{cls.__name__}` (`capabilities`); Python library: "
            f"{libs}; installs with {extra}.\n")
    return head + "\n" + table(["capability", f"{cls.type}", "meaning"], rows)


def _error_classes() -> List[type]:
    import enos.errors as errors
    found = [c for c in vars(errors).values()
             if isinstance(c, type) and issubclass(c, errors.EnosError) and c.__module__ == errors.__name__]
    return sorted(found, key=lambda c: inspect.getsourcelines(c)[1])


def errors_entries(path: Path) -> Dict[str, dict]:
    """The written causes and fixes (``docs/errors.yaml``)."""
    data = yaml.safe_load(path.read_text()) or {}
    return data if isinstance(data, dict) else {}


def undocumented_errors(path: Path) -> List[str]:
    """The error classes of ``enos.errors`` that ``path`` gives no cause or fix for."""
    entries = errors_entries(path)
    return [c.__name__ for c in _error_classes()
            if not isinstance(entries.get(c.__name__), dict)
            or not entries[c.__name__].get("cause") or not entries[c.__name__].get("fix")]


def example_message(cls: type, entry: dict) -> str:
    """The message the class itself produces for the entry's ``example`` arguments."""
    import enos.errors as errors
    from enos.model import Host
    from enos.results import Result
    call = entry.get("example")
    names = {"Host": Host, "Result": Result, **{c.__name__: c for c in _error_classes()}}
    err = eval(f"{cls.__name__}({call})", {"__builtins__": {"OSError": OSError}, **names}) \
        if call is not None else cls(entry.get("message", ""))
    assert isinstance(err, errors.EnosError)
    return str(err)


def errors_reference(path: Path, problems: Problems) -> str:
    """Every error class with its exit code, its message, cause and fix."""
    entries = errors_entries(path)
    out = []
    for cls in _error_classes():
        entry = entries.get(cls.__name__) or {}
        base = cls.__mro__[1].__name__
        out.append(f"### `{cls.__name__}`\n")
        out.append(f"`enos.errors.{cls.__name__}` ({base}); exit code **{cls.exit_code}**. "
                   f"{' '.join(inspect.getdoc(cls).split())}\n")
        try:
            msg = example_message(cls, entry)
            out.append("```text\n" + ("error: " if cls.__name__ == "ConfigError" else "enos up: error: ")
                       + msg + "\n```\n")
        except Exception as e:  # noqa: BLE001 - reported as a build problem
            problems.append(f"errors.yaml: {cls.__name__}: its example does not build: {e!r}")
        if not entry.get("cause") or not entry.get("fix"):
            problems.append(f"errors.yaml: {cls.__name__} has no cause or no fix")
            continue
        out.append(f"**Cause.** {entry['cause'].strip()}\n")
        out.append(f"**Fix.** {entry['fix'].strip()}\n")
    for name in entries:
        if name not in {c.__name__ for c in _error_classes()}:
            problems.append(f"errors.yaml: '{name}' is no longer an error class of enos.errors")
    return "\n".join(out)


def generate_all(srcdir: Path) -> Tuple[Dict[str, str], Problems]:
    """Return {file name: Markdown} of every generated page part, and the problems met."""
    problems = Problems()
    files = {"reservation-core.md": core_reference(problems),
             "campaign.md": campaign_reference(problems),
             "cli.md": cli_reference(),
             "errors.md": errors_reference(srcdir / "errors.yaml", problems)}
    for name, cls in builtin_classes().items():
        files[f"provider-{name}.md"] = provider_reference(cls, problems)
        files[f"capabilities-{name}.md"] = capabilities_reference(cls, problems)
    return files, problems


def _generate(app) -> None:
    from sphinx.util import logging as sphinx_logging
    log = sphinx_logging.getLogger(__name__)
    srcdir = Path(app.srcdir)
    out = srcdir / GENERATED
    out.mkdir(exist_ok=True)
    files, problems = generate_all(srcdir)
    for name, text in files.items():
        target = out / name
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
    for p in problems:
        log.warning(f"enosdocs: {p}")


def setup(app):
    app.connect("builder-inited", _generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
