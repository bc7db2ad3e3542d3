"""Several providers in one reservation: ``providers:``, a list of provider blocks, each
with its own ``resources`` in its provider's own forms::

    providers:
      - type: local
        resources: {machines: {web: 2}}
      - type: g5k
        name: grid                 # default: the type; required when a type appears twice
        job_name: night
        resources:
          gros: {compute: 4}
    provision: [site.yml]          # the rest of the file is shared

Each block is checked exactly as a one-provider file would be (its ``provider`` keys
against its schema, its ``resources``, its ``validate``), errors naming
``providers.N.<key>``. The result is one :class:`~enos.reservation.config.Config` of type
:data:`MULTI` whose ``parts`` are the blocks' Configs (``(name, Config)``) and whose
``machines`` are all of theirs.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Tuple

from enos.errors import ConfigError

MULTI = "multi"
NAME_RE = r"^[A-Za-z_][A-Za-z0-9_-]{0,31}$"
_BLOCK_ONLY = ("provider", "resources", "topology")


def part_positions(positions: Dict[tuple, int], i: int) -> Dict[tuple, int]:
    """Return the positions of block ``i`` as a one-provider file would have them:
    ``providers.i.resources.X`` → ``resources.X``, ``providers.i.K`` → ``provider.K``."""
    out: Dict[tuple, int] = {}
    for path, line in positions.items():
        if len(path) < 2 or path[0] != "providers" or path[1] != i:
            continue
        rest = tuple(path[2:])
        if rest[:1] == ("resources",):
            out[rest] = line
        else:
            out[("provider",) + rest] = line
    out.setdefault(("provider",), positions.get(("providers", i)))
    return out


def part_keypath(keypath: str, i: int) -> str:
    """Map a keypath of block ``i``'s own Config back to the file's
    (``provider.job_name`` → ``providers.1.job_name``, ``resources.gros`` → ``providers.1.resources.gros``)."""
    if not keypath:
        return f"providers.{i}"
    if keypath == "provider" or keypath.startswith("provider."):
        return f"providers.{i}" + keypath[len("provider"):]
    return f"providers.{i}.{keypath}"


def block_error(e: ConfigError, i: int) -> ConfigError:
    """``e`` raised inside block ``i``, its key path as the file has it."""
    return ConfigError(e.message, file=e.file, line=e.line, keypath=part_keypath(e.keypath or "", i))


def build_parts(data: dict, err: Callable, build_one: Callable) -> List[Tuple[str, object]]:
    """Return [(name, Config)] of the ``providers`` blocks of ``data``. ``err(path, message)``
    makes a ConfigError at a path of the file; ``build_one(i, sub_data)`` builds block
    ``i`` as a one-provider file. Raises ConfigError."""
    for key in _BLOCK_ONLY:
        if key in data:
            raise err((key,), f"'{key}' cannot be used with 'providers': give it inside each provider block")
    blocks = data["providers"]
    if not isinstance(blocks, list) or not blocks:
        raise err(("providers",), "expected a non-empty list of provider blocks ({type: ..., resources: ...})")
    parts: List[Tuple[str, object]] = []
    seen: Dict[str, int] = {}
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or "type" not in block:
            raise err(("providers", i), "expected a provider block with a 'type' key ({type: local, resources: ...})")
        if block.get("type") == MULTI:
            raise err(("providers", i, "type"), "a provider block cannot itself list providers")
        if "resources" not in block:
            raise err(("providers", i), "missing key 'resources': what does this provider book?")
        name = block.get("name", block.get("type"))
        if not isinstance(name, str) or not re.match(NAME_RE, name):
            raise err(("providers", i, "name"), "expected a name of letters, digits, '_' or '-' (at most 32)")
        if name in seen:
            raise err(("providers", i, "name" if "name" in block else "type"),
                      f"provider name '{name}' is already used by providers.{seen[name]}: give each block a "
                      f"distinct 'name'")
        seen[name] = i
        sub = {"provider": {k: v for k, v in block.items() if k not in ("resources", "name")},
               "resources": block["resources"]}
        try:
            parts.append((name, build_one(i, sub)))
        except ConfigError as e:
            raise block_error(e, i) from None
    return parts
