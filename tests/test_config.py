"""reservation.yaml loading: every accepted form, and exact error messages for bad files.

The providers here are throw-away test classes handed to ``load_config`` through its
``provider_loader`` seam, so these tests do not depend on the real providers' schemas.
Each file in ``tests/data/config/bad/`` starts with ``# expect: <full message>``
(``{dir}`` stands for that directory's absolute path).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enos.reservation.config import Config, MachineSpec, config_from_data, expand_group, load_config
from enos.errors import ConfigError, MissingDependency, ProviderError, ProviderNotFound, UsageError
from enos.provider.provider import Provider

DATA = Path(__file__).resolve().parent / "data" / "config"
BAD = DATA / "bad"
REPO = Path(__file__).resolve().parent.parent

CLUSTERS = {"paravance", "econome", "parasilo"}


class Alpha(Provider):
    """Grid'5000-like: a walltime with a pattern, defaults, an enum, typed networks."""

    type = "alpha"
    schema = {
        "type": "object",
        "required": ["type"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "alpha"},
            "walltime": {"type": "string", "pattern": r"^\d{1,3}:[0-5]\d(:[0-5]\d)?$",
                         "x-expected": "a walltime HH:MM[:SS]", "default": "02:00:00"},
            "job_name": {"type": "string", "minLength": 1, "default": "enos"},
            "queue": {"enum": ["default", "production", "besteffort"], "default": "default"},
            "env_name": {"type": "string"},
            "resources": {"type": "object", "properties": {
                "networks": {"type": "array", "items": {"$ref": "#/$defs/network"}}}},
        },
        "$defs": {"network": {
            "type": "object", "required": ["id", "type", "roles"], "additionalProperties": False,
            "properties": {"id": {"type": "string"},
                           "type": {"enum": ["kavlan", "kavlan-local", "prod"]},
                           "roles": {"type": "array", "items": {"type": "string"}},
                           "site": {"type": "string", "default": "rennes"}}}},
    }
    machine_schema = {
        "type": "object", "additionalProperties": False,
        "properties": {"min": {"type": "integer", "minimum": 0},
                       "primary_network": {"type": "string"},
                       "secondary_networks": {"type": "array", "items": {"type": "string"}, "default": []}},
    }

    @classmethod
    def validate(cls, config):
        for m in config.machines:
            if m.label is not None and m.label not in CLUSTERS:
                raise config.error(m.keypath, f"unknown cluster '{m.label}'; known: {', '.join(sorted(CLUSTERS))}")


class Static(Provider):
    """Existing machines: every host needs an address."""

    type = "static"
    schema = {"type": "object", "properties": {"type": {"const": "static"}}, "additionalProperties": False}
    machine_schema = {
        "type": "object", "required": ["address"], "additionalProperties": False,
        "properties": {"address": {"type": "string", "minLength": 1}, "alias": {"type": "string"},
                       "user": {"type": "string", "default": "root"},
                       "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 22},
                       "keyfile": {"type": "string"}},
    }


class Loose(Provider):
    """The base class's permissive schemas."""

    type = "loose"


class Needy(Provider):
    type = "needy"
    requires = ("surely_not_installed_module_xyz",)
    extra = "needy"


TEST_PROVIDERS = {c.type: c for c in (Alpha, Static, Loose, Needy)}


def loader(name):
    """The test registry: like load_provider_class, over the classes above."""
    import difflib
    from enos.provider import check_requirements
    if name not in TEST_PROVIDERS:
        close = difflib.get_close_matches(name, list(TEST_PROVIDERS), n=1)
        raise ProviderNotFound(name, sorted(TEST_PROVIDERS), close[0] if close else None)
    check_requirements(TEST_PROVIDERS[name])
    return TEST_PROVIDERS[name]


def write(tmp_path, text, name="reservation.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def load(tmp_path, text):
    return load_config(write(tmp_path, text), provider_loader=loader)


def specs(cfg):
    return [(m.roles, m.count, m.label, m.group) for m in cfg.machines]


# --- accepted forms -------------------------------------------------------------------

def test_compact_resources_and_defaults(tmp_path):
    cfg = load(tmp_path, "provider:\n  type: alpha\n  walltime: '1:30'\nresources:\n"
                         "  paravance:\n    compute: 2\n    control: 1\n  econome:\n    compute: 3\n")
    assert cfg.provider_type == "alpha"
    assert cfg.options == {"type": "alpha", "walltime": "1:30", "job_name": "enos", "queue": "default"}
    assert specs(cfg) == [(["compute"], 2, "paravance", None), (["control"], 1, "paravance", None),
                          (["compute"], 3, "econome", None)]
    assert [(m.keypath, m.line) for m in cfg.machines] == [
        ("resources.paravance.compute", 6), ("resources.paravance.control", 7), ("resources.econome.compute", 9)]
    assert cfg.networks == [] and cfg.variables == {} and cfg.provision == []


def test_provider_as_plain_string_gets_defaults(tmp_path):
    cfg = load(tmp_path, "provider: alpha\nresources:\n  paravance:\n    compute: 1\n")
    assert cfg.options == {"type": "alpha", "walltime": "02:00:00", "job_name": "enos", "queue": "default"}


def test_unquoted_walltime_stays_text(tmp_path):
    # YAML 1.1 would read 2:00:00 as the base-60 integer 7200.
    cfg = load(tmp_path, "provider: {type: alpha, walltime: 2:00:00}\nresources: {paravance: {compute: 1}}\n")
    assert cfg.options["walltime"] == "2:00:00"


def test_static_list_form(tmp_path):
    cfg = load(tmp_path, "provider: static\nresources:\n  web:\n    - address: 10.0.0.1\n      alias: w1\n"
                         "    - address: 10.0.0.2\n      port: 2222\n  db:\n    - {address: db.example, user: admin}\n")
    assert [(m.roles, m.count, m.label, m.options, m.keypath) for m in cfg.machines] == [
        (["web"], 1, None, {"address": "10.0.0.1", "alias": "w1", "user": "root", "port": 22}, "resources.web.0"),
        (["web"], 1, None, {"address": "10.0.0.2", "port": 2222, "user": "root"}, "resources.web.1"),
        (["db"], 1, None, {"address": "db.example", "user": "admin", "port": 22}, "resources.db.0")]
    assert [m.line for m in cfg.machines] == [4, 6, 9]


def test_explicit_machines_under_provider(tmp_path):
    cfg = load(tmp_path, """\
provider:
  type: alpha
  job_name: exp
  resources:
    machines:
      - roles: [control, monitor]
        cluster: paravance
        nodes: 2
        primary_network: n1
      - role: compute
        flavour: econome
      - roles: [compute]
        cluster: parasilo
        number: 4
        min: 1
    networks:
      - id: n1
        type: kavlan
        roles: [private]
""")
    assert "resources" not in cfg.options
    assert cfg.options["job_name"] == "exp"
    assert specs(cfg) == [(["control", "monitor"], 2, "paravance", None), (["compute"], 1, "econome", None),
                          (["compute"], 4, "parasilo", None)]
    assert [m.options for m in cfg.machines] == [
        {"primary_network": "n1", "secondary_networks": []}, {"secondary_networks": []},
        {"min": 1, "secondary_networks": []}]
    assert [m.keypath for m in cfg.machines] == [f"provider.resources.machines.{i}" for i in range(3)]
    assert [m.line for m in cfg.machines] == [6, 10, 12]
    # the network sub-schema's defaults are filled
    assert cfg.networks == [{"id": "n1", "type": "kavlan", "roles": ["private"], "site": "rennes"}]


def test_explicit_machines_top_level_enoslib_style(tmp_path):
    cfg = load(tmp_path, "provider: alpha\nresources:\n  machines:\n    - roles: [a]\n      cluster: paravance\n"
                         "      nodes: 3\n  networks:\n    - {id: n2, type: prod, roles: [r]}\n")
    assert specs(cfg) == [(["a"], 3, "paravance", None)]
    assert cfg.networks == [{"id": "n2", "type": "prod", "roles": ["r"], "site": "rennes"}]


def test_a_compact_label_may_be_called_machines(tmp_path):
    # only a *list* under resources.machines is the explicit form
    cfg = load(tmp_path, "provider: loose\nresources:\n  machines:\n    control: 1\n    compute: 2\n")
    assert specs(cfg) == [(["control"], 1, "machines", None), (["compute"], 2, "machines", None)]


def test_compact_resources_with_networks_for_a_permissive_provider(tmp_path):
    cfg = load(tmp_path, "provider: loose\nresources:\n  small:\n    web: 2\n  networks:\n"
                         "    - {cidr: 10.9.0.0/24, roles: [app]}\n")
    assert specs(cfg) == [(["web"], 2, "small", None)]
    assert cfg.networks == [{"cidr": "10.9.0.0/24", "roles": ["app"]}]


def test_topology_with_ranges_adds_the_group_as_a_role(tmp_path):
    cfg = load(tmp_path, """\
provider: alpha
topology:
  grp1:
    paravance:
      control: 1
      network: 1
  grp[2-4]:
    econome:
      compute: 2
""")
    assert specs(cfg) == [
        (["control", "grp1"], 1, "paravance", "grp1"), (["network", "grp1"], 1, "paravance", "grp1"),
        (["compute", "grp2"], 2, "econome", "grp2"), (["compute", "grp3"], 2, "econome", "grp3"),
        (["compute", "grp4"], 2, "econome", "grp4")]
    assert cfg.machines[2].keypath == "topology.grp[2-4].econome.compute"
    assert cfg.machines[2].line == 9


def test_topology_can_take_networks_from_resources(tmp_path):
    cfg = load(tmp_path, "provider: loose\ntopology:\n  g:\n    x:\n      web: 1\nresources:\n"
                         "  networks: [{cidr: 10.1.0.0/24}]\n")
    assert specs(cfg) == [(["web", "g"], 1, "x", "g")]
    assert cfg.networks == [{"cidr": "10.1.0.0/24"}]


def test_expand_group():
    assert expand_group("grp[2-4]") == ["grp2", "grp3", "grp4"]
    assert expand_group("grp[7-7]") == ["grp7"]
    assert expand_group("plain") == ["plain"]
    with pytest.raises(ValueError, match=r"the range \[4-2\] is reversed"):
        expand_group("g[4-2]")


def test_provision_paths_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "site.yml").write_text("- hosts: all\n")
    (tmp_path / "other.yml").write_text("- hosts: all\n")
    res = tmp_path / "sub" / "reservation.yaml"
    res.write_text("provider: loose\nresources: {x: {web: 1}}\nprovision: site.yml\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("sub/reservation.yaml", provider_loader=loader)
    assert cfg.provision == [str(tmp_path / "sub" / "site.yml")]
    assert cfg.file == "sub/reservation.yaml"
    res.write_text("provider: loose\nresources: {x: {web: 1}}\nprovision:\n  - site.yml\n  - ../other.yml\n")
    cfg = load_config("sub/reservation.yaml", provider_loader=loader)
    assert cfg.provision == [str(tmp_path / "sub" / "site.yml"), str(tmp_path / "other.yml")]


def test_variables_and_unknown_top_level_keys(tmp_path):
    cfg = load(tmp_path, """\
provider: alpha
resources: {paravance: {compute: 1}}
kolla:
  enable_heat: no
registry: {type: internal}
inventory: inventories/inventory.sample
variables:
  rounds: 3
""")
    assert cfg.variables == {"kolla": {"enable_heat": False}, "registry": {"type": "internal"},
                             "inventory": "inventories/inventory.sample", "rounds": 3}


def test_dates_stay_text(tmp_path):
    cfg = load(tmp_path, "provider: loose\nresources: {x: {web: 1}}\nstart: 2024-01-01\n")
    assert cfg.variables == {"start": "2024-01-01"}
    json.dumps(cfg.to_state())


def test_state_round_trip(tmp_path, monkeypatch):
    (tmp_path / "site.yml").write_text("- hosts: all\n")
    cfg = load(tmp_path, "provider: {type: alpha, walltime: '3:00'}\nresources: {paravance: {compute: 2}}\n"
                         "provision: site.yml\nexp: {n: 1}\n")
    saved = json.loads(json.dumps(cfg.to_state()))
    # destroy may run from elsewhere, after the playbook moved away
    monkeypatch.chdir("/")
    (tmp_path / "site.yml").unlink()
    again = Config.from_state(saved, provider_loader=loader)
    assert again.options == cfg.options and again.variables == cfg.variables
    assert specs(again) == specs(cfg) and again.provision == cfg.provision
    assert again.positions == {} and again.machines[0].line is None
    # errors of a rebuilt config name the file but no line
    with pytest.raises(ConfigError) as e:
        config_from_data({"provider": "alpha", "resources": {"paravance": {"compute": 0}}}, "saved.yaml",
                         provider_loader=loader)
    assert str(e.value) == "saved.yaml: resources.paravance.compute: expected an integer ≥ 1, got 0"


def test_config_from_data_uses_given_positions(tmp_path):
    data = {"provider": "alpha", "resources": {"paravance": {"compute": "x"}}}
    positions = {(): 1, ("provider",): 1, ("resources",): 2, ("resources", "paravance"): 3,
                 ("resources", "paravance", "compute"): 4}
    with pytest.raises(ConfigError) as e:
        config_from_data(data, "r.yaml", positions=positions, provider_loader=loader)
    assert str(e.value) == "r.yaml:4: resources.paravance.compute: expected an integer ≥ 1, got 'x'"
    assert e.value.line == 4 and e.value.keypath == "resources.paravance.compute"


def test_config_error_helper_locates_list_indices(tmp_path):
    cfg = load(tmp_path, "provider: static\nresources:\n  web:\n    - address: a\n    - address: b\n")
    assert str(cfg.error("resources.web.1.address", "bad")) == f"{tmp_path}/reservation.yaml:5: resources.web.1.address: bad"
    assert str(cfg.error(("resources", "web", 1, "nope"), "bad")) == \
        f"{tmp_path}/reservation.yaml:5: resources.web.1.nope: bad"


def test_config_error_helper_with_dotted_labels(tmp_path):
    cfg = load(tmp_path, "provider: loose\nresources:\n  m1.large:\n    web: 1\n    db: 2\n")
    assert cfg.machines[1].keypath == "resources.m1.large.db"
    assert cfg.line_of(cfg.machines[1].keypath) == 5
    assert cfg.line_of("resources.m1.large.db.extra.x") == 5
    assert cfg.line_of("nothing.here") == 1


def test_missing_dependency_propagates(tmp_path):
    with pytest.raises(MissingDependency) as e:
        load(tmp_path, "provider: needy\nresources: {x: {web: 1}}\n")
    assert isinstance(e.value, UsageError) and e.value.exit_code == 2


def test_unsupported_schema_keyword_is_a_provider_bug(tmp_path):
    class Odd(Provider):
        type = "odd"
        schema = {"type": "object", "unevaluatedProperties": False}
    with pytest.raises(ProviderError, match="'unevaluatedProperties' is not supported"):
        load_config(write(tmp_path, "provider: odd\nresources: {x: {web: 1}}\n"), provider_loader=lambda n: Odd)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path / "nope.yaml"), provider_loader=loader)
    assert str(e.value) == f"{tmp_path}/nope.yaml: cannot read the reservation file: No such file or directory"
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path), provider_loader=loader)
    assert str(e.value) == f"{tmp_path}: cannot read the reservation file: Is a directory"


# --- malformed files: exact messages ---------------------------------------------------

BAD_FILES = sorted(p.name for p in BAD.glob("*.yaml"))


def _expected(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first[len("# expect: "):].replace("{dir}", str(BAD))


def test_enough_bad_files():
    assert len(BAD_FILES) >= 30


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_file_message(name, monkeypatch):
    monkeypatch.chdir(BAD)
    with pytest.raises(ConfigError) as e:
        load_config(name, provider_loader=loader)
    assert str(e.value) == _expected(BAD / name)
    assert e.value.file == name


# --- the CLI and import cost -----------------------------------------------------------

def test_import_is_cheap():
    code = ("import sys, enos.reservation.config, enos.reservation.yamlpos, enos.reservation.schemacheck\n"
            "heavy = ('ansible_runner', 'ansible', 'grid5000', 'libvirt', 'execo', 'jsonschema', 'vagrant', 'rich')\n"
            "print(','.join(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_cli_validate_reports_a_bad_file(enos_cmd, tmp_path):
    bad = tmp_path / "reservation.yaml"
    bad.write_text("provider: local\nresources:\n  small:\n    web: two\n")
    env = tmp_path / "envs"
    proc = subprocess.run(enos_cmd + ["validate", "-f", str(bad)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"{bad}:4: resources.small.web: expected an integer ≥ 1, got 'two'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not env.exists() and not list(tmp_path.glob("enos_*")) and not (tmp_path / "current").exists()


def test_cli_validate_accepts_a_good_file(enos_cmd, tmp_path):
    good = tmp_path / "reservation.yaml"
    good.write_text("provider: local\nresources:\n  small:\n    web: 2\n    db: 1\n")
    proc = subprocess.run(enos_cmd + ["validate", "-f", str(good)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "3 host(s)" in proc.stdout
    assert not list(tmp_path.glob("enos_*"))


# --- the schema checker against jsonschema itself, and the real providers -------------

def _cases():
    from enos.reservation import config as c
    values = [None, True, 0, 1, 2, 1.5, 2.0, -1, 70000, "", "two", "1:30", "4h", "all", "web", "web server",
              [], ["a"], ["a", "a"], [1], [{}], [{"address": "x"}], {}, {"compute": 2}, {"compute": 0},
              {"type": "alpha"}, {"type": "alpha", "walltime": "1:00", "queue": "fast"},
              {"type": "alpha", "extra": 1}, {"address": "h", "port": 22}, {"port": 22},
              {"machines": [{"roles": ["a"]}]}, {"machines": []}, {"machines": [], "x": 1},
              {"roles": ["a"], "cluster": "p", "nodes": 2}, {"roles": [], "nodes": 0},
              {"id": "n", "type": "kavlan", "roles": []}, {"id": "n", "type": "vlan", "roles": []}]
    schemas = [Alpha.schema, Alpha.machine_schema, Static.schema, Static.machine_schema,
               {"$defs": Alpha.schema["$defs"], "$ref": "#/$defs/network"},
               c._NAME, c._COUNT, c._ROLE_COUNTS, c._EXPLICIT, c._MACHINE, c._STATIC_LIST, c._PROVISION,
               c._NETWORKS, c._TOPO_GROUP,
               {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 1}]},
               {"type": "array", "uniqueItems": True, "contains": {"type": "string"}},
               {"type": "object", "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": False},
               {"if": {"type": "object", "required": ["port"]}, "then": {"required": ["address"]}},
               {"type": "object", "dependentRequired": {"port": ["address"]}, "maxProperties": 1},
               {"type": "string", "maxLength": 3, "not": {"const": "web"}},
               {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 2, "multipleOf": 0.5}]
    return schemas, values


def test_schemacheck_agrees_with_jsonschema():
    import jsonschema
    from enos.reservation import schemacheck
    schemas, values = _cases()
    checked = 0
    for schema in schemas:
        jsonschema.Draft202012Validator.check_schema(schema)
        reference = jsonschema.Draft202012Validator(schema)
        for value in values:
            assert schemacheck.is_valid(value, schema) == reference.is_valid(value), (schema, value)
            checked += 1
    assert checked == len(schemas) * len(values)


def test_schemacheck_draft7_tuple_items():
    import jsonschema
    from enos.reservation import schemacheck
    schema = {"type": "array", "items": [{"type": "string"}, {"type": "integer"}], "additionalItems": False}
    for value in (["a", 1], ["a"], [1, 1], ["a", 1, 2], []):
        assert schemacheck.is_valid(value, schema) == jsonschema.Draft7Validator(schema).is_valid(value), value


def test_fill_defaults_nested_and_through_refs():
    from enos.reservation.schemacheck import fill_defaults
    schema = {"type": "object", "properties": {
        "a": {"type": "object", "default": {}, "properties": {"b": {"type": "integer", "default": 3}}},
        "n": {"type": "array", "items": {"$ref": "#/$defs/x"}}},
        "$defs": {"x": {"type": "object", "properties": {"s": {"default": "rennes"}}}}}
    out = fill_defaults({"n": [{}, {"s": "lyon"}]}, schema)
    assert out == {"a": {"b": 3}, "n": [{"s": "rennes"}, {"s": "lyon"}]}
    # defaults are copies, never the schema's own objects
    out["a"]["b"] = 4
    assert schema["properties"]["a"]["default"] == {}


def test_builtin_providers_schemas_and_samples(tmp_path):
    """Every shipped provider's schemas are valid JSON Schema this checker supports, and
    its `enos new` sample reservation validates."""
    import jsonschema
    from enos.reservation import schemacheck
    from enos.provider import builtin_providers, load_provider_class
    names = builtin_providers()
    assert names, "no built-in provider found"
    failures = []
    for name in names:
        cls = load_provider_class(name, check=False)
        for schema in (cls.schema, cls.machine_schema):
            jsonschema.Draft202012Validator.check_schema(schema)
            schemacheck.violations({}, schema)       # raises SchemaUnsupported on unknown keywords
        if cls.sample:
            path = tmp_path / f"{name}.yaml"
            path.write_text(cls.sample)
            try:
                cfg = load_config(path, provider_loader=lambda n: load_provider_class(n, check=False))
                assert cfg.provider_type == name and cfg.machines
            except ConfigError as e:
                failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)


def test_mangled_files_never_escape_as_anything_but_config_error(tmp_path):
    """Random edits of valid files: each load either succeeds or raises a ConfigError that
    names the file (never a traceback from yaml, the checker or normalisation)."""
    import random
    seeds = [
        "provider:\n  type: alpha\n  walltime: '1:00'\n  resources:\n    machines:\n      - roles: [a]\n"
        "        cluster: paravance\n        nodes: 2\n    networks:\n      - {id: n, type: prod, roles: [x]}\n"
        "provision: []\nvariables: {x: 1}\nkolla: {a: b}\n",
        "provider: alpha\ntopology:\n  g[1-2]:\n    paravance: {c: 1}\n  h:\n    econome:\n      d: 2\n"
        "resources:\n  networks: []\n",
        "provider: static\nresources:\n  web:\n    - {address: a, port: 22}\n    - address: b\n      user: x\n",
    ]
    alphabet = " \n:-[]{}#&*!|>'\"\t,0123456789abcxyz?%@`"
    rng = random.Random(20261122)
    path = tmp_path / "r.yaml"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(800):
        text = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(text) + 1)
            if rng.random() < 0.4 and text:
                del text[pos:pos + rng.randint(1, 3)]
            else:
                text[pos:pos] = [rng.choice(alphabet)]
        path.write_text("".join(text))
        try:
            load_config(path, provider_loader=loader)
            outcomes["ok"] += 1
        except ConfigError as e:
            assert str(e).startswith(str(path)), str(e)
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0
