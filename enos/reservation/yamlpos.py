"""YAML loading that remembers where every key was written.

:func:`load_yaml` returns the data *and* a dict ``key path tuple → line`` (1-based; list
indices are ints in the path), so configuration errors can name the offending line.

Differences from ``yaml.safe_load``, all on purpose:

* a key written twice in one mapping is an error (PyYAML silently keeps the last one),
  except at the top level, where Enos' own ``reservation.yaml.sample`` templates repeat
  ``provider:`` and ``resources:``: there the last one is kept, as Enos does, and a
  warning names every line (``YamlDocument.warnings``);
* alias expansion is bounded (:data:`MAX_VALUES` values in all, aliases expanded): a
  "billion laughs" file is refused at once instead of exhausting the memory;
* dates and base-60 numbers are not resolved: ``2024-01-01`` and ``2:00:00`` stay text
  (a walltime ``2:00:00`` would otherwise become the integer 7200);
* every error is a :class:`~enos.errors.ConfigError` ``FILE:LINE: YAML syntax error: ...``.

The plain-scalar text of every value is kept too (``scalars``), so an error can show what
the user wrote when YAML read it as something else (``on`` → true).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

import yaml

from enos.errors import ConfigError

Path_ = Tuple[Any, ...]

#: at most this many values (mapping keys and list items, aliases expanded) in one file
MAX_VALUES = 20_000


class _Loader(yaml.SafeLoader):
    """SafeLoader without the YAML 1.1 timestamp and base-60 resolvers."""


_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""", re.X)
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)
_DROP = {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))


def _bounded_int(loader, node):
    """An integer of at most 100 digits (Python refuses to convert more than 4300, with a
    ValueError no caller expects; nothing enos reads needs more than 19)."""
    if len(node.value) > 100:
        raise yaml.constructor.ConstructorError(None, None, f"a number of {len(node.value)} digits cannot "
                                                f"be right here", node.start_mark)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _bounded_int)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


_TOKENS = {"<block end>": "the end of the block (check the indentation)",
           "'<block mapping start>'": "a new key", "'<block sequence start>'": "a '-' list item",
           "'<stream end>'": "the end of the file", "'<document start>'": "'---'",
           "but found '?'": "but found a new key"}
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}")
_PLACEHOLDER = re.compile(r"<[A-Za-z][^<>]*>")
_OPENERS = {"flow mapping": "this '{'", "flow sequence": "this '['", "quoted scalar": "this quoted string"}


def _syntax_error(file: str, err: yaml.YAMLError, text: str) -> ConfigError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    context = getattr(err, "context", None)
    if context and problem.startswith("but "):
        problem = f"{context} {problem}"
    ended = "<stream end>" in str(problem) or "end of stream" in str(problem)
    if ended and getattr(err, "context_mark", None) is not None and context:
        mark = err.context_mark     # the file ended: point at what was left open
        kind = re.sub(r"^while (parsing|scanning) an? ", "", context)
        problem = f"{_OPENERS.get(kind, 'this ' + kind)} is never closed"
    for token, words in _TOKENS.items():
        problem = str(problem).replace(token, words)
    if "could not find expected ':'" in str(problem) and getattr(err, "context_mark", None) is not None:
        mark = err.context_mark      # where the line that is not 'key: value' starts
        problem = "this line is not 'key: value' (could not find expected ':')"
    line = mark.line + 1 if mark is not None else None
    if line is not None:
        written = (text.splitlines()[line - 1:line] or [""])[0]
        holder = _PLACEHOLDER.search(written)
        if holder and not _JINJA.search(text):
            problem += f" — '{holder.group(0)}' looks like a placeholder left in: replace it with a value"
    if isinstance(err, yaml.reader.ReaderError):
        char = err.character if isinstance(err.character, int) else ord(str(err.character)[:1] or "\0")
        problem = f"unacceptable character #x{char:04x}: {err.reason}"
        line = text.count("\n", 0, err.position) + 1
    if _JINJA.search(text):
        problem += (" — this file is a Jinja template ('{{ ... }}' or '{% ... %}'), not a "
                    "reservation: render it first")
    return ConfigError(f"YAML syntax error: {problem}", file=file, line=line)


class YamlDocument:
    """The result of :func:`load_yaml`: ``data`` (plain Python objects), ``positions``
    (key path → 1-based line) and ``scalars`` (key path → the plain scalar text written,
    for values YAML resolved to a non-string)."""

    def __init__(self, data: Any, positions: Dict[Path_, int], scalars: Dict[Path_, str],
                 warnings: Optional[List[str]] = None):
        self.data = data
        self.positions = positions
        self.scalars = scalars
        self.warnings = list(warnings or [])


class _Walk:
    """State of one walk over the node graph: the value budget and the warnings."""

    def __init__(self, file: str, max_values: int = MAX_VALUES, what: str = "a reservation",
                 repeat_top_level: bool = True):
        self.file = file
        self.repeat_top_level = repeat_top_level
        self.max_values = max_values
        self.what = what
        self.left = max_values
        self.warnings: List[str] = []

    def spend(self, path: Path_, positions: Dict[Path_, int]) -> None:
        """Count one value; raise ConfigError (located at the second-level key holding
        it) once :data:`MAX_VALUES` are spent."""
        self.left -= 1
        if self.left < 0:
            where = path[:2]
            raise ConfigError(f"more than {self.max_values} values once YAML aliases are expanded "
                              f"(an alias bomb?); {self.what} is far smaller", file=self.file,
                              line=positions.get(where), keypath=_dotted(where))


def _walk(loader, node, path: Path_, positions, scalars, walk: _Walk, stack: set) -> None:
    file = walk.file
    if id(node) in stack:
        raise ConfigError("YAML alias refers to itself (recursive structure)",
                          file=file, line=positions.get(path), keypath=_dotted(path))
    stack = stack | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: Dict[Any, int] = {}
        repeated: Dict[Any, List[int]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if isinstance(key_node, yaml.ScalarNode):
                key = _scalar_value(loader, key_node)
            else:
                key = ("<complex key>", key_node.start_mark.line)
            line = key_node.start_mark.line + 1
            sub = path + (key,)
            walk.spend(sub, positions)
            if key in seen and path == () and walk.repeat_top_level:
                # as Enos (PyYAML) does: the last one wins; forget what the earlier one said
                repeated.setdefault(key, [seen[key]]).append(line)
                for d in (positions, scalars):
                    for k in [k for k in d if k[:1] == (key,)]:
                        del d[k]
            elif key in seen:
                raise ConfigError(f"duplicate key (first written at line {seen[key]})",
                                  file=file, line=line, keypath=_dotted(sub))
            seen[key] = line
            positions.setdefault(sub, line)
            _walk(loader, value_node, sub, positions, scalars, walk, stack)
        for key, lines in repeated.items():
            walk.warnings.append(f"{file}:{lines[-1]}: '{key}' is given {len(lines)} times (lines "
                                 f"{', '.join(map(str, lines))}); as Enos does, the last one (line "
                                 f"{lines[-1]}) is used and the others are ignored")
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = path + (i,)
            walk.spend(sub, positions)
            positions.setdefault(sub, item.start_mark.line + 1)
            _walk(loader, item, sub, positions, scalars, walk, stack)
    elif isinstance(node, yaml.ScalarNode):
        if node.tag != "tag:yaml.org,2002:str" and node.style is None:
            scalars[path] = node.value


def _scalar_value(loader, node):
    """Return the Python value of a scalar key node (ints stay ints, text stays text)."""
    try:
        return loader.construct_object(node)
    except yaml.YAMLError:
        return node.value


def _dotted(path: Path_) -> Optional[str]:
    return ".".join(str(p) for p in path) or None


def load_yaml(text: str, file: str, max_values: int = MAX_VALUES, what: str = "a reservation",
              repeat_top_level: bool = True) -> YamlDocument:
    """Parse one YAML document and return a :class:`YamlDocument`. At most ``max_values``
    values (aliases expanded) are read; ``what`` names the kind of file in that error.
    A top-level key given twice is kept last with a warning (as Enos does, for its
    reservation templates) unless ``repeat_top_level`` is False: then it is a duplicate key.

    An empty document gives ``data = None``. Raises :class:`ConfigError` on a syntax
    error (``FILE:LINE: YAML syntax error: <problem>``), a duplicate key, a tag this safe
    loader cannot build (``!!python/object``), or more than one document."""
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(None, {}, {})
        positions: Dict[Path_, int] = {(): node.start_mark.line + 1}
        scalars: Dict[Path_, str] = {}
        walk = _Walk(file, max_values, what, repeat_top_level)
        _walk(loader, node, (), positions, scalars, walk, set())
        data = loader.construct_document(node)
    except yaml.YAMLError as err:
        raise _syntax_error(file, err, text) from None
    except RecursionError:
        raise ConfigError("YAML syntax error: structure nested too deeply", file=file, line=None) from None
    finally:
        if loader is not None:
            loader.dispose()
    return YamlDocument(data, positions, scalars, walk.warnings)
