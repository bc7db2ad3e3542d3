"""A small JSON Schema (2020-12 / draft 7 subset) checker with plain-words messages.

Why not ``jsonschema``: importing it costs ~85 ms warm on the reference machine, more
than half of the 0.15 s ``enos validate`` may take. This module covers the keywords
providers use (listed in :data:`KEYWORDS`); a schema using any other keyword raises
:class:`SchemaUnsupported` instead of being silently half-checked. The test suite checks
it against ``jsonschema`` itself (``tests/test_config.py``).

* :func:`violations` lists what is wrong with an instance (:class:`Violation` objects,
  with the instance path, the keyword and the sub-schema);
* :func:`explain` turns one violation into ``(path, message)`` in plain words, e.g.
  ``expected an integer ≥ 1, got 'two'``, ``missing key 'type'``,
  ``unknown key; did you mean 'walltime'?``. A sub-schema's ``x-expected`` text replaces
  the generated description of what was expected;
* :func:`fill_defaults` writes the ``default`` of absent properties into an instance.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Tuple
import copy

KEYWORDS = frozenset({
    "$ref", "type", "enum", "const",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minLength", "maxLength", "pattern", "format",
    "properties", "patternProperties", "additionalProperties", "required", "propertyNames",
    "minProperties", "maxProperties", "dependentRequired",
    "items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems", "contains",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
})
ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "definitions", "title",
                         "description", "default", "examples", "deprecated", "readOnly",
                         "writeOnly", "$anchor"})


class SchemaUnsupported(ValueError):
    """The schema uses a keyword (or a form of one) this checker does not implement."""


@dataclass
class Violation:
    """One reason an instance does not match a schema.

    ``path``: instance path (keys, list indices as ints) relative to the checked value;
    ``keyword``: the failing keyword; ``schema``: the sub-schema holding it; ``detail``:
    the missing or unknown key for ``required``/``additionalProperties``/
    ``dependentRequired``; ``branches``: each branch's violations for ``anyOf``/``oneOf``."""

    path: Tuple[Any, ...]
    keyword: str
    schema: dict
    instance: Any
    detail: Any = None
    branches: List[List["Violation"]] = field(default_factory=list)
    root: Any = None


# --- helpers ---------------------------------------------------------------------------

def _is_type(value, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float))
    raise SchemaUnsupported(f"unknown JSON Schema type '{name}'")


def _equal(a, b) -> bool:
    """JSON equality: booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) in (int, float) and type(b) in (int, float) and a == b or \
        (type(a) is type(b) and a == b)


def resolve(schema, root) -> dict:
    """Return ``schema`` with a local ``$ref`` (``#/$defs/x``) followed; raises
    :class:`SchemaUnsupported` for a non-local reference."""
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and len(schema) == 1:
        schema = _pointer(schema["$ref"], root)
        seen += 1
        if seen > 50:
            raise SchemaUnsupported("$ref loop")
    return schema


def _pointer(ref: str, root):
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise SchemaUnsupported(f"only local $ref are supported, not {ref!r}")
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        part = part.replace("~1", "/").replace("~0", "~")
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError):
            raise SchemaUnsupported(f"$ref {ref!r} points nowhere") from None
    return node


# --- checking ---------------------------------------------------------------------------

def violations(instance, schema, root=None, path: Tuple = ()) -> List[Violation]:
    """Return every :class:`Violation` of ``instance`` against ``schema`` (in document
    order). ``root`` is the schema ``$ref`` pointers resolve in (default ``schema``).
    Raises :class:`SchemaUnsupported` if the schema uses an unknown keyword."""
    root = schema if root is None else root
    out: List[Violation] = []
    _check(instance, schema, root, tuple(path), out)
    return out


def is_valid(instance, schema, root=None) -> bool:
    """Return True when ``instance`` matches ``schema`` (same rules as :func:`violations`)."""
    return not violations(instance, schema, root)


def _check(inst, schema, root, path, out: list) -> None:
    if schema is True or schema == {}:
        return
    if schema is False:
        out.append(Violation(path, "false", {}, inst, root=root))
        return
    if not isinstance(schema, dict):
        raise SchemaUnsupported(f"a schema must be a mapping or a boolean, not {schema!r}")
    for kw in schema:
        if kw not in KEYWORDS and kw not in ANNOTATIONS and not kw.startswith("x-"):
            raise SchemaUnsupported(f"JSON Schema keyword '{kw}' is not supported by enos")

    def bad(keyword, detail=None, sub_path=None, branches=None):
        out.append(Violation(sub_path if sub_path is not None else path, keyword, schema, inst,
                             detail, branches or [], root))

    if "$ref" in schema:
        _check(inst, _pointer(schema["$ref"], root), root, path, out)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(inst, t) for t in types):
            bad("type")
            return      # the other keywords would only repeat it
    if "enum" in schema and not any(_equal(inst, e) for e in schema["enum"]):
        bad("enum")
    if "const" in schema and not _equal(inst, schema["const"]):
        bad("const")
    if isinstance(inst, (int, float)) and not isinstance(inst, bool):
        for kw, fails in (("minimum", lambda v, b: v < b), ("maximum", lambda v, b: v > b),
                          ("exclusiveMinimum", lambda v, b: v <= b),
                          ("exclusiveMaximum", lambda v, b: v >= b)):
            if kw in schema:
                if isinstance(schema[kw], bool):
                    raise SchemaUnsupported(f"draft-4 boolean '{kw}' is not supported")
                if fails(inst, schema[kw]):
                    bad(kw)
        if "multipleOf" in schema and (inst / schema["multipleOf"]) % 1:
            bad("multipleOf")
    if isinstance(inst, str):
        if "minLength" in schema and len(inst) < schema["minLength"]:
            bad("minLength")
        if "maxLength" in schema and len(inst) > schema["maxLength"]:
            bad("maxLength")
        if "pattern" in schema and not re.search(_ecma(schema["pattern"]), inst):
            bad("pattern")
    if isinstance(inst, dict):
        _check_object(inst, schema, root, path, out, bad)
    if isinstance(inst, list):
        _check_array(inst, schema, root, path, out, bad)
    for sub in schema.get("allOf", ()):
        _check(inst, sub, root, path, out)
    for kw in ("anyOf", "oneOf"):
        if kw in schema:
            branches = [violations(inst, sub, root, path) for sub in schema[kw]]
            ok = sum(1 for b in branches if not b)
            if ok == 0 or (kw == "oneOf" and ok > 1):
                bad(kw, branches=branches)
    if "not" in schema and is_valid(inst, schema["not"], root):
        bad("not")
    if "if" in schema:
        branch = "then" if is_valid(inst, schema["if"], root) else "else"
        if branch in schema:
            _check(inst, schema[branch], root, path, out)


def _check_object(inst: dict, schema, root, path, out, bad) -> None:
    for key in schema.get("required", ()):
        if key not in inst:
            bad("required", detail=key)
    for key, deps in schema.get("dependentRequired", {}).items():
        if key in inst:
            for dep in deps:
                if dep not in inst:
                    bad("dependentRequired", detail=(key, dep))
    if "minProperties" in schema and len(inst) < schema["minProperties"]:
        bad("minProperties")
    if "maxProperties" in schema and len(inst) > schema["maxProperties"]:
        bad("maxProperties")
    props = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extra = schema.get("additionalProperties", True)
    for key, value in inst.items():
        sub = path + (key,)
        if "propertyNames" in schema:
            for v in violations(key, schema["propertyNames"], root, sub):
                v.keyword = "propertyNames:" + v.keyword
                out.append(v)
        matched = False
        if key in props:
            matched = True
            _check(value, props[key], root, sub, out)
        for rx, sub_schema in patterns.items():
            if isinstance(key, str) and re.search(rx, key):
                matched = True
                _check(value, sub_schema, root, sub, out)
        if not matched:
            if extra is False:
                bad("additionalProperties", detail=key, sub_path=sub)
            elif isinstance(extra, dict):
                _check(value, extra, root, sub, out)


def _check_array(inst: list, schema, root, path, out, bad) -> None:
    if "minItems" in schema and len(inst) < schema["minItems"]:
        bad("minItems")
    if "maxItems" in schema and len(inst) > schema["maxItems"]:
        bad("maxItems")
    if schema.get("uniqueItems"):
        i = _first_repeat(inst)
        if i is not None:
            bad("uniqueItems", detail=inst[i], sub_path=path + (i,))
    prefix = schema.get("prefixItems", [])
    items = schema.get("items", True)
    if isinstance(items, list):          # draft 7 tuple form
        prefix, items = items, schema.get("additionalItems", True)
    for i, item in enumerate(inst):
        sub_schema = prefix[i] if i < len(prefix) else items
        if sub_schema is False:
            bad("items", sub_path=path + (i,))
        else:
            _check(item, sub_schema, root, path + (i,), out)
    if "contains" in schema and not any(is_valid(x, schema["contains"], root) for x in inst):
        bad("contains")


def _json_key(value):
    """A hashable key equal for JSON-equal values (booleans are not numbers)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z",)
    if isinstance(value, list):
        return ("l",) + tuple(_json_key(v) for v in value)
    if isinstance(value, dict):
        return ("d",) + tuple(sorted((str(k), _json_key(v)) for k, v in value.items()))
    return ("o", id(value))


def _first_repeat(items: list) -> Optional[int]:
    """Index of the first item JSON-equal to an earlier one (linear time: 200000 values
    are checked as fast as 10), or None."""
    seen = set()
    for i, item in enumerate(items):
        key = _json_key(item)
        if key in seen:
            return i
        seen.add(key)
    return None


#: the largest integer a file may hold (a 64-bit counter); anything larger cannot be right
MAX_INTEGER = (1 << 63) - 1


def scalar_problem(value, path: Tuple = ()) -> Optional[Tuple[Tuple, str]]:
    """Return ``(path, message)`` for the first scalar no file of enos may hold: a number
    that is not finite (``.nan``, ``.inf``), an integer larger than a 64-bit counter, a
    text with a NUL character; None when there is none. Walks nested lists and mappings
    (keys too) without recursion limits of its own (YAML nesting is bounded by the reader)."""
    stack = [(value, tuple(path))]
    while stack:
        v, p = stack.pop()
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            return p, f"expected a finite number, got {show(v)}"
        if isinstance(v, int) and abs(v) > MAX_INTEGER:
            digits = len(str(abs(v))) if v.bit_length() < 20000 else "thousands of"
            return p, f"a number of {digits} digits cannot be right here (at most {MAX_INTEGER})"
        if isinstance(v, str) and "\x00" in v:
            return p, "a NUL character cannot be part of a value"
        if isinstance(v, dict):
            for k, x in reversed(list(v.items())):
                stack.append((x, p + (k,)))
                stack.append((k, p + (k,)))
        elif isinstance(v, list):
            for i in range(len(v) - 1, -1, -1):
                stack.append((v[i], p + (i,)))
    return None


# --- explaining -------------------------------------------------------------------------

def _ecma(pattern: str) -> str:
    """Return ``pattern`` with a final ``$`` meaning the end of the text, as in JSON Schema
    (ECMA 262): Python's ``$`` also matches before a final newline, which would let
    ``"10.0.0.1\\n..."`` through ``^...$``."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


def show(value, text: Optional[str] = None) -> str:
    """Return how a value the user wrote is quoted in a message (``'two'``, ``3``,
    ``true``, ``a mapping``, ``an empty value``). ``text`` is the scalar as written when
    YAML read it as a non-string: ``on (which YAML reads as true)``."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if value is None:
        shown = "an empty value"
    elif isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, (int, float)):
        shown = repr(value)
    elif isinstance(value, dict):
        shown = "a mapping" if value else "an empty mapping"
    elif isinstance(value, list):
        shown = "a list" if value else "an empty list"
    else:
        shown = f"a {type(value).__name__}"
    misread = text is not None and (
        (isinstance(value, (bool, int, float)) and text != shown) or
        (value is None and text not in ("", "~", "null", "Null", "NULL")))
    if misread:
        return f"{text} (which YAML reads as {shown})"
    return shown


def _bounds(schema) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    parts = []
    if lo is not None and hi is not None:
        parts.append(f" between {lo} and {hi}")
    elif lo is not None:
        parts.append(f" ≥ {lo}")
    elif hi is not None:
        parts.append(f" ≤ {hi}")
    if "exclusiveMinimum" in schema:
        parts.append(f" > {schema['exclusiveMinimum']}")
    if "exclusiveMaximum" in schema:
        parts.append(f" < {schema['exclusiveMaximum']}")
    return "".join(parts)


_ARTICLE = {"object": "a mapping", "array": "a list", "string": "a string", "boolean": "true or false",
            "null": "nothing", "integer": "an integer", "number": "a number"}


def describe(schema, root=None) -> str:
    """Return what ``schema`` accepts, in plain words ("an integer ≥ 1", "one of a, b").
    The schema's ``x-expected`` wins when present."""
    root = schema if root is None else root
    schema = resolve(schema, root)
    if not isinstance(schema, dict):
        return "anything" if schema is not False else "nothing"
    if "x-expected" in schema:
        return schema["x-expected"]
    if "const" in schema:
        return _plain(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(_plain(e) for e in schema["enum"])
    for kw in ("anyOf", "oneOf"):
        if kw in schema:
            return " or ".join(dict.fromkeys(describe(s, root) for s in schema[kw]))
    if "$ref" in schema:
        return describe(_pointer(schema["$ref"], root), root)
    types = schema.get("type")
    if types is None:
        return "a valid value"
    types = types if isinstance(types, list) else [types]
    words = []
    for t in types:
        w = _ARTICLE.get(t, t)
        if t in ("integer", "number"):
            w += _bounds(schema)
        elif t == "string":
            if "pattern" in schema:
                w = f"a string matching {schema['pattern']}"
            elif schema.get("minLength") == 1:
                w = "a non-empty string"
        elif t == "array" and isinstance(schema.get("items"), dict) and schema["items"]:
            w = f"a list (each item {describe(schema['items'], root)})"
        words.append(w)
    return " or ".join(words)


def _plain(value) -> str:
    return value if isinstance(value, str) else show(value)


def _branch_type_fits(inst, sub, root) -> bool:
    sub = resolve(sub, root)
    if not isinstance(sub, dict) or "type" not in sub:
        return True
    types = sub["type"] if isinstance(sub["type"], list) else [sub["type"]]
    return any(_is_type(inst, t) for t in types)


def pick(found: Iterable[Violation], line_of: Callable[[Tuple], Optional[int]]) -> Violation:
    """Return the violation to report: the first by line (unknown lines last), then the
    first found."""
    found = list(found)
    def key(item):
        i, v = item
        line = line_of(_report_path(v, line_of))
        return (line is None, line or 0, i)
    return min(enumerate(found), key=key)[1]


def _report_path(v: Violation, line_of) -> Tuple:
    if v.keyword in ("anyOf", "oneOf"):
        inner = _inner(v, line_of)
        if inner is not None:
            return _report_path(inner, line_of)
    return v.path


def _inner(v: Violation, line_of) -> Optional[Violation]:
    """For anyOf/oneOf: the violation of the branch that fits the value's type best."""
    if v.keyword == "oneOf" and not any(v.branches):
        return None
    subs = v.schema[v.keyword]
    fitting = [b for b, s in zip(v.branches, subs) if b and _branch_type_fits(v.instance, s, v.root)]
    if not fitting:
        return None
    best = max(fitting, key=lambda b: max(len(x.path) for x in b))
    return pick(best, line_of)


def explain(v: Violation, line_of: Callable[[Tuple], Optional[int]] = lambda p: None,
            scalar_text: Callable[[Tuple], Optional[str]] = lambda p: None,
            extra_keys: Iterable[str] = ()) -> Tuple[Tuple, str]:
    """Return ``(path, message)`` for a violation: where to report it (the key itself for
    an unknown key, the parent mapping for a missing one) and what was expected."""
    schema, inst, root = v.schema, v.instance, v.root
    got = show(inst, scalar_text(v.path))
    if v.keyword in ("anyOf", "oneOf"):
        inner = _inner(v, line_of)
        if inner is not None:
            return explain(inner, line_of, scalar_text, extra_keys)
        if v.keyword == "oneOf" and not any(v.branches):
            return v.path, f"expected {describe(schema, root)}, but it matches more than one of these"
        return v.path, f"expected {describe(schema, root)}, got {got}"
    if v.keyword.startswith("propertyNames:"):
        return v.path, f"expected {describe(schema, root)}, got {show(inst)}"
    if v.keyword == "required":
        return v.path, f"missing key '{v.detail}'"
    if v.keyword == "dependentRequired":
        key, dep = v.detail
        return v.path, f"'{key}' needs key '{dep}' too"
    if v.keyword == "additionalProperties":
        known = [k for k in list(schema.get("properties", {})) + list(extra_keys) if isinstance(k, str)]
        close = difflib.get_close_matches(str(v.detail), known, n=1, cutoff=0.6)
        if close:
            return v.path, f"unknown key; did you mean '{close[0]}'?"
        if known and len(known) <= 15:
            return v.path, "unknown key; expected one of: " + ", ".join(sorted(dict.fromkeys(known)))
        return v.path, "unknown key"
    if v.keyword == "false" or v.keyword == "items":
        return v.path, "no value allowed here"
    if "x-expected" in schema:
        return v.path, f"expected {schema['x-expected']}, got {got}"
    if v.keyword in ("minItems", "maxItems"):
        n = schema[v.keyword]
        word = "at least" if v.keyword == "minItems" else "at most"
        return v.path, f"expected {word} {n} item{'s' if n != 1 else ''}, got {len(inst)}"
    if v.keyword in ("minProperties", "maxProperties"):
        n = schema[v.keyword]
        word = "at least" if v.keyword == "minProperties" else "at most"
        return v.path, f"expected {word} {n} key{'s' if n != 1 else ''}, got {len(inst)}"
    if v.keyword == "uniqueItems":
        return v.path, f"{show(v.detail)} is already in the list"
    if v.keyword == "contains":
        return v.path, f"expected a list with at least one item that is {describe(schema['contains'], root)}"
    if v.keyword == "not":
        return v.path, f"{got} is not allowed here"
    if v.keyword == "multipleOf":
        return v.path, f"expected a multiple of {schema['multipleOf']}, got {got}"
    return v.path, f"expected {describe(schema, root)}, got {got}"


# --- defaults ---------------------------------------------------------------------------

def fill_defaults(instance, schema, root=None):
    """Write the ``default`` of every absent property into ``instance`` (in place,
    recursively through properties, additionalProperties, items, allOf, $ref, if/then/else
    and the matching anyOf/oneOf branch); return ``instance``. Defaults are deep-copied."""
    root = schema if root is None else root
    schema = resolve(schema, root)
    if not isinstance(schema, dict):
        return instance
    if "$ref" in schema:
        fill_defaults(instance, _pointer(schema["$ref"], root), root)
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for key, sub in props.items():
            sub_r = resolve(sub, root)
            if key not in instance and isinstance(sub_r, dict) and "default" in sub_r:
                instance[key] = copy.deepcopy(sub_r["default"])
            if key in instance:
                fill_defaults(instance[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in instance:
                if key not in props:
                    fill_defaults(instance[key], extra, root)
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            fill_defaults(item, schema["items"], root)
    for sub in schema.get("allOf", ()):
        fill_defaults(instance, sub, root)
    for kw in ("anyOf", "oneOf"):
        for sub in schema.get(kw, ()):
            if is_valid(instance, sub, root):
                fill_defaults(instance, sub, root)
                break
    if "if" in schema:
        branch = schema.get("then") if is_valid(instance, schema["if"], root) else schema.get("else")
        if branch is not None:
            fill_defaults(instance, branch, root)
    return instance
