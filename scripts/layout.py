#!/usr/bin/env python3
"""The shape of the code, measured: layers, import arrows, sizes, lazy imports.

``python3 scripts/layout.py`` prints the largest files and functions, the count of
function-local imports (and where they are), every import that runs against the layer
table below, and the table itself; ``--markdown`` prints the import table of
docs/architecture.md. ``tests/test_registry.py`` checks the same table (0 arrows).

The layer table is the house plan: every enos module belongs to exactly one *unit* (a
package, or a module of its own), every unit to one layer; a unit may import its own
modules, every unit of a lower layer, and the peers named in ``PEERS``. Nothing else.
"""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "enos"

# bottom first; a unit imports only units of lower layers (plus PEERS)
LAYERS = [
    ("shared", ["enos", "enos.errors", "enos.reader", "enos.names", "enos.environ", "enos.failpoint",
                "enos.signals", "enos.retry", "enos.progress", "enos.tables", "enos.render", "enos.frames"]),
    ("model", ["enos.model", "enos.results"]),
    ("state", ["enos.state", "enos.process", "enos.inventory"]),
    ("ssh, ansible, reservation file", ["enos.ssh", "enos.ansible", "enos.reservation"]),
    ("testbed packages", ["enos.local", "enos.g5k", "enos.libvirt", "enos.vagrant", "enos.static"]),
    ("provider contract", ["enos.provider"]),
    ("providers", ["enos.provider.local", "enos.provider.static", "enos.provider.g5k",
                   "enos.provider.libvirt", "enos.provider.vagrant"]),
    ("task runner", ["enos.task", "enos.provision", "enos.multi"]),
    ("experiment layer", ["enos.experiment"]),
    ("campaigns", ["enos.campaign"]),
    ("archive", ["enos.archive"]),
    ("conformance suite", ["enos.testing"]),
    ("front", ["enos.cli", "enos.__main__"]),
]

# peers a unit may import although they sit on its own layer
PEERS = {
    "enos.vagrant": {"enos.libvirt"},          # Vagrant's libvirt backend uses the libvirt package
    "enos.provider.vagrant": {"enos.provider.libvirt"},
    "enos.shared": set(),
}
# within the shared layer the order is the list order (errors at the bottom)
ORDERED_LAYERS = {"shared"}
# testbed packages and providers are peers: one may not import another (PEERS aside);
# every other layer's units may import each other as long as there is no circle.
ISOLATED_LAYERS = {"testbed packages", "providers"}


# The only modules that import enos modules lazily (inside a function), and what they may
# import so: each is a measured start-up boundary (docs/architecture.md, "Lazy imports").
LAZY_BOUNDARIES = {
    "enos.cli": ("every command imports the layer it runs, so 'enos --help' loads nothing", {"*"}),
    "enos.campaign": ("enos.campaign.run/report/status/sweep load the campaign machinery on call",
                      {"enos.campaign.runner", "enos.campaign.reporting", "enos.experiment.sweep"}),
    "enos.experiment.env": ("each Env method loads the module of what it does",
                            {"enos.experiment.actions", "enos.experiment.monitor",
                             "enos.experiment.background", "enos.experiment.backup", "enos.experiment.facts",
                             "enos.experiment.netprobe", "enos.experiment.play", "enos.experiment.sweep",
                             "enos.experiment.tc", "enos.reservation.config", "enos.reservation.netconstraints"}),
    "enos.task": ("the provider registry and reservation schema when a provider is needed; up's phases",
                  {"enos.provider", "enos.reservation.config", "enos.ssh.client", "enos.ssh.keys",
                   "enos.inventory", "enos.provision", "enos.multi"}),
    "enos.reservation.config": ("PyYAML only when a file is read", {"enos.reservation.yamlpos"}),
    "enos.vagrant.diagnose": ("libvirt-python may be missing: enos check reports it", {"enos.libvirt.diagnose"}),
}


def lazy_imports_outside_boundaries(mods=None):
    """Every function-local import of an enos module that LAZY_BOUNDARIES does not name."""
    out = []
    for m, t, line, local in imports(mods):
        if local:
            allowed_here = LAZY_BOUNDARIES.get(m, LAZY_BOUNDARIES.get(unit_of(m), ("", set())))[1]
            if "*" not in allowed_here and t not in allowed_here:
                out.append((m, t, line))
    return out


def module_name(path: Path) -> str:
    return ".".join(("enos",) + path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def unit_of(mod: str) -> str:
    """The unit a module belongs to: the longest listed prefix."""
    best = None
    for _layer, units in LAYERS:
        for u in units:
            if (mod == u or (u != "enos" and mod.startswith(u + "."))) and (best is None or len(u) > len(best)):
                best = u
    return best or mod


def layer_of(unit: str):
    for i, (name, units) in enumerate(LAYERS):
        if unit in units:
            return i, name
    return None, None


def modules() -> dict:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(mods=None):
    """Yield (module, imported enos module, line, local) for every import of an enos module;
    ``local`` when the import sits inside a function."""
    mods = mods or modules()
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        local_nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "enos" \
                    and not node.level:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [node.module] + subs
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "enos"]
            for t in targets:
                if t in mods and t != mod:
                    yield mod, t, node.lineno, id(node) in local_nodes


def allowed(src_unit: str, dst_unit: str) -> bool:
    if src_unit == dst_unit:
        return True
    si, sname = layer_of(src_unit)
    di, _ = layer_of(dst_unit)
    if si is None or di is None:
        return False
    if dst_unit in PEERS.get(src_unit, ()):
        return True
    if di < si:
        return True
    if di == si:
        units = LAYERS[si][1]
        if sname in ORDERED_LAYERS:
            return units.index(dst_unit) < units.index(src_unit)
        return sname not in ISOLATED_LAYERS
    return False


def unlisted_units(mods=None):
    return sorted({unit_of(m) for m in (mods or modules()) if layer_of(unit_of(m))[0] is None})


def arrows_against_layers(mods=None):
    """Every import that the layer table does not allow: [(module, imported, line)]."""
    return [(m, t, line) for m, t, line, _ in imports(mods) if not allowed(unit_of(m), unit_of(t))]


def function_sizes(mods=None):
    """[(lines, 'path:line name')] of every function and method."""
    out = []
    for mod, path in (mods or modules()).items():
        rel = path.relative_to(ROOT.parent)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def nested_functions(path: Path, name: str) -> int:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(node)) - 1
    return 0


def local_imports(mods=None):
    """{path: count} of import statements inside function bodies (any module)."""
    out = {}
    for mod, path in (mods or modules()).items():
        tree = ast.parse(path.read_text())
        nodes = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        if nodes:
            out[str(path.relative_to(ROOT.parent))] = len(nodes)
    return out


def file_sizes(mods=None):
    return sorted(((len(p.read_text().splitlines()), str(p.relative_to(ROOT.parent)))
                   for p in (mods or modules()).values()), reverse=True)


def unit_table(mods=None):
    """{unit: sorted units it imports}."""
    table = {}
    for m, t, _l, _local in imports(mods):
        a, b = unit_of(m), unit_of(t)
        table.setdefault(a, set())
        if a != b:
            table[a].add(b)
    for m in (mods or modules()):
        table.setdefault(unit_of(m), set())
    return {u: sorted(v) for u, v in table.items()}


def markdown(mods=None):
    """The layer table of docs/architecture.md: layer, units, what each imports (generated)."""
    table = unit_table(mods)
    lines = ["| layer | unit | imports (enos units, generated by `scripts/layout.py --markdown`) |",
             "|---|---|---|"]
    for name, units in reversed(LAYERS):
        for u in units:
            if u in table:
                deps = ", ".join(d.removeprefix("enos.") for d in table[u]) or "—"
                lines.append(f"| {name} | `{u}` | {deps} |")
    return "\n".join(lines)


def main(argv):
    mods = modules()
    if "--markdown" in argv:
        print(markdown(mods))
        return 0
    top = int(argv[argv.index("--top") + 1]) if "--top" in argv else 10
    files = file_sizes(mods)
    print(f"enos: {len(mods)} modules, {sum(n for n, _ in files)} lines")
    print(f"\nlargest files (top {top}):")
    for n, f in files[:top]:
        print(f"  {n:5d}  {f}")
    funcs = function_sizes(mods)
    print(f"\nlargest functions (top {top}); {sum(1 for n, _ in funcs if n > 60)} over 60 lines, "
          f"{sum(1 for n, _ in funcs if n >= 80)} of 80+:")
    for n, f in funcs[:top]:
        print(f"  {n:5d}  {f}")
    loc = local_imports(mods)
    print(f"\nfunction-local imports: {sum(loc.values())} in {len(loc)} files; most: "
          + ", ".join(f"{f} {n}" for f, n in sorted(loc.items(), key=lambda x: -x[1])[:6]))
    bad = arrows_against_layers(mods)
    print(f"\nimports against the layer table: {len(bad)}")
    for m, t, line in bad:
        print(f"  {m}:{line} -> {t}   ({unit_of(m)} -> {unit_of(t)})")
    unl = unlisted_units(mods)
    print(f"\nunits missing from the layer table: {len(unl)} {unl}")
    lazy = lazy_imports_outside_boundaries(mods)
    print(f"\nlazy enos imports outside the named boundaries: {len(lazy)}")
    for m, t, line in lazy:
        print(f"  {m}:{line} -> {t}")
    return 1 if bad or unl or lazy else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
