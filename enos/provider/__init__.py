"""Provider registry: ``provider.type`` → provider class.

A type ``T`` is looked up, in order, as the module ``enos.provider.T`` (dashes become
underscores) and as an entry point named ``T`` in the group ``enos.providers``. The module
must define exactly one :class:`~enos.provider.provider.Provider` subclass whose ``type``
is ``T`` (or a module attribute ``PROVIDER`` naming it). Provider modules import their
third-party library lazily; they list it in ``requires`` so that a missing one is reported
with the pip extra to install, without importing it.
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Dict, List, Type

from enos.errors import MissingDependency, ProviderNotFound
from enos.provider.provider import Provider

ENTRY_POINT_GROUP = "enos.providers"
_NOT_PROVIDERS = {"provider"}


def _entry_points() -> Dict[str, object]:
    from importlib.metadata import entry_points   # lazily: ~13 ms, only for a type that is not built in
    eps = entry_points()
    group = eps.select(group=ENTRY_POINT_GROUP) if hasattr(eps, "select") else eps.get(ENTRY_POINT_GROUP, [])
    return {ep.name: ep for ep in group}


def builtin_providers() -> List[str]:
    """Return the names of the providers shipped in ``enos/provider/``."""
    return sorted(m.name
                  for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name not in _NOT_PROVIDERS)


def available_providers() -> List[str]:
    """Return every provider type known: built-in ones and entry points."""
    return sorted(set(builtin_providers()) | set(_entry_points()))


def _provider_in(module, name: str) -> Type[Provider]:
    cls = getattr(module, "PROVIDER", None)
    if cls is None:
        found = [v for v in vars(module).values()
                 if isinstance(v, type) and issubclass(v, Provider) and v is not Provider
                 and v.__module__ == module.__name__]
        if len(found) != 1:
            raise ProviderNotFound(name, available_providers())
        cls = found[0]
    return cls


def check_requirements(cls: Type[Provider]) -> None:
    """Raise :class:`MissingDependency` if a module in ``cls.requires`` is not installed
    (looked up without importing it)."""
    for mod in getattr(cls, "requires", ()):
        if importlib.util.find_spec(mod) is None:
            raise MissingDependency(cls.type, mod, cls.extra)


def load_provider_class(name: str, check: bool = True) -> Type[Provider]:
    """Return the provider class for type ``name``.

    Raises :class:`ProviderNotFound` (listing the available types, with a close match
    suggested) or :class:`MissingDependency` when ``check`` and its library is missing."""
    if not isinstance(name, str) or not name:
        raise ProviderNotFound(str(name), available_providers())
    modname = name.replace("-", "_")
    cls = None
    if modname in builtin_providers():
        module = importlib.import_module(f"enos.provider.{modname}")
        cls = _provider_in(module, name)
    else:
        ep = _entry_points().get(name)
        if ep is not None:
            obj = ep.load()
            cls = obj if isinstance(obj, type) else _provider_in(obj, name)
    if cls is None:
        avail = available_providers()
        import difflib
        close = difflib.get_close_matches(name, avail, n=1)
        raise ProviderNotFound(name, avail, close[0] if close else None)
    if check:
        check_requirements(cls)
    return cls
