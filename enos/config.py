"""reservation.yaml: loading with line numbers, validation, normalisation.

The result is a :class:`Config`. Errors are :class:`~enos.errors.ConfigError` naming the
file, the line and the key path, e.g.
``reservation.yaml:12: resources.paravance.compute: expected an integer ≥ 1, got 'two'``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from enos.errors import ConfigError


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
    tuple → line number.
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

    def line_of(self, keypath) -> Optional[int]:
        """Return the line of ``keypath`` (tuple or dotted string), or of its closest
        ancestor that has one; None if unknown (e.g. a config rebuilt from state)."""
        path = tuple(keypath.split(".")) if isinstance(keypath, str) else tuple(keypath)
        while True:
            if path in self.positions:
                return self.positions[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, keypath, message: str) -> ConfigError:
        """Return (not raise) a ConfigError located at ``keypath``."""
        kp = keypath if isinstance(keypath, str) else ".".join(str(k) for k in keypath)
        return ConfigError(message, file=self.file, line=self.line_of(keypath), keypath=kp or None)
