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


def test_layers_have_no_import_circle():
    """Every enos module imports, at load time and in its lazy imports, only modules of its
    own or a lower layer: the reservation layer never loads providers (the task runner
    hands it the registry), the SSH layer knows no provider module, and no two modules
    import each other (directly or through others)."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "enos"
    graph = {}
    for path in root.rglob("*.py"):
        mod = ".".join(("enos",) + path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("enos"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("enos"))
        graph[mod] = deps
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    for low, high in (("enos.reservation", "enos.provider"), ("enos.reservation", "enos.task"),
                      ("enos.ssh", "enos.provider."), ("enos.ssh", "enos.task"), ("enos.state", "enos.provider")):
        bad = {m: sorted(d for d in deps if d.startswith(high) and d != "enos.provider.provider")
               for m, deps in graph.items() if m.startswith(low)}
        assert not any(bad.values()), f"{low} imports {high}: {bad}"

    def reaches(start, target, seen):
        for d in graph[start]:
            if d == target:
                return True
            if d not in seen:
                seen.add(d)
                if reaches(d, target, seen):
                    return True
        return False
    packages = {m for m in graph if (root / m.removeprefix("enos.").replace(".", "/") / "__init__.py").exists()
                or m == "enos"}
    circles = [m for m in graph if m not in packages and reaches(m, m, set())]
    assert not circles, f"import circles through: {circles}"
