"""Provider loading by name: built-ins, entry points, unknown types, missing extras."""
import sys
import types

import pytest

import enos.provider as registry
from enos.errors import MissingDependency, ProviderNotFound
from enos.provider.provider import Provider


def test_unknown_type_lists_available_and_suggests(monkeypatch):
    monkeypatch.setattr(registry, "builtin_providers", lambda: ["g5k", "libvirt", "local"])
    monkeypatch.setattr(registry, "_entry_points", lambda: {})
    with pytest.raises(ProviderNotFound) as e:
        registry.load_provider_class("locl")
    msg = str(e.value)
    assert msg == "unknown provider type 'locl' (did you mean 'local'?); available: g5k, libvirt, local"
    assert e.value.exit_code == 2


def test_entry_point_provider(monkeypatch):
    class Fancy(Provider):
        type = "fancy"

    class EP:
        name = "fancy"

        def load(self):
            return Fancy
    monkeypatch.setattr(registry, "_entry_points", lambda: {"fancy": EP()})
    assert registry.load_provider_class("fancy") is Fancy
    assert "fancy" in registry.available_providers()


def test_missing_library_names_the_extra(monkeypatch):
    class NeedsLib(Provider):
        type = "needy"
        requires = ("surely_not_installed_module_xyz",)
        extra = "needy"
    monkeypatch.setattr(registry, "_entry_points", lambda: {"needy": types.SimpleNamespace(load=lambda: NeedsLib)})
    with pytest.raises(MissingDependency) as e:
        registry.load_provider_class("needy")
    assert "pip install 'enos[needy]'" in str(e.value)
    assert e.value.exit_code == 2
    assert registry.load_provider_class("needy", check=False) is NeedsLib


def test_entry_point_module_with_one_provider(monkeypatch):
    mod = types.ModuleType("thirdparty_mod")

    class Third(Provider):
        type = "third"
    Third.__module__ = "thirdparty_mod"
    mod.Third = Third
    monkeypatch.setattr(registry, "_entry_points", lambda: {"third": types.SimpleNamespace(load=lambda: mod)})
    assert registry.load_provider_class("third") is Third


@pytest.mark.parametrize("name", ["local", "static", "g5k", "libvirt"])
def test_builtin_providers_import_without_their_library(name):
    """Importing a provider module must not import its third-party library (fast CLI)."""
    if name not in registry.builtin_providers():
        pytest.fail(f"built-in provider {name} missing")
    import subprocess
    code = (f"import sys, enos.provider as r; c = r.load_provider_class({name!r}, check=False); "
            "heavy = [m for m in ('grid5000', 'libvirt', 'ansible_runner', 'ansible', 'execo', 'vagrant', 'pyroute2') "
            "if m in sys.modules]; print(c.type, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(None, 1)
    assert out[0] == name and out[1].strip() == "[]", out


def _layout():
    """scripts/layout.py: the layer table and the import graph of enos (also a script)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "scripts" / "layout.py"
    spec = importlib.util.spec_from_file_location("enos_layout", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_import_follows_the_layer_table():
    """Every enos module belongs to a unit of the layer table (scripts/layout.py), and
    every import it makes — at load time or inside a function — goes to its own unit, a
    unit of a lower layer or a declared peer: the SSH layer and the state know no provider,
    the reservation layer never loads providers, testbed packages and providers do not
    import each other (vagrant's libvirt backend aside). No exemption by module name."""
    layout = _layout()
    assert layout.unlisted_units() == []
    bad = [f"{m}:{line} -> {t}" for m, t, line in layout.arrows_against_layers()]
    assert bad == [], "imports against the layer table:\n" + "\n".join(bad)


def test_lazy_imports_only_at_named_boundaries():
    """enos modules import each other at the top (the dependency graph shows), except at the
    start-up boundaries scripts/layout.py names (the CLI's commands, Env's methods, ...)."""
    layout = _layout()
    lazy = [f"{m}:{line} -> {t}" for m, t, line in layout.lazy_imports_outside_boundaries()]
    assert lazy == [], "function-local imports outside LAZY_BOUNDARIES:\n" + "\n".join(lazy)


def test_layer_table_catches_an_upward_import(tmp_path):
    """The check can fail: a model module importing the SSH layer is reported."""
    layout = _layout()
    mods = layout.modules()
    fake = tmp_path / "enos" / "model.py"
    fake.parent.mkdir()
    fake.write_text("from enos.ssh.client import control_dir\n")
    bad = layout.arrows_against_layers({**mods, "enos.model": fake})
    assert [(m, t) for m, t, _ in bad] == [("enos.model", "enos.ssh.client")]


def test_shared_types_are_reexported_by_the_contract():
    """Third-party providers import Host, IpPool, Resources, Check from the contract module."""
    import enos.model
    import enos.provider.provider as contract
    for name in ("Host", "IpPool", "Resources", "Check"):
        assert getattr(contract, name) is getattr(enos.model, name)


def test_layers_have_no_import_circle():
    """No two modules import each other, directly or through others."""
    layout = _layout()
    mods = layout.modules()
    graph = {m: set() for m in mods}
    for m, t, _line, _local in layout.imports(mods):
        graph[m].add(t)

    def reaches(start, target, seen):
        for d in graph[start]:
            if d == target:
                return True
            if d not in seen:
                seen.add(d)
                if reaches(d, target, seen):
                    return True
        return False
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    circles = [m for m in graph if m not in packages and reaches(m, m, set())]
    assert not circles, f"import circles through: {circles}"
