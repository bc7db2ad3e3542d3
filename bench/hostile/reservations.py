"""Hostile reservation files: every hostile file variant, and a matrix of every key of
every provider's section (and of a machine, of network_constraints, of the top level)
set to every hostile value. Each goes through ``enos validate``; those it refuses also
through ``enos up`` (which must refuse them the same way and create nothing), and the
file variants through ``enos check``."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

from hostile import files
from hostile.core import Run

#: hostile YAML values; those marked True must be refused wherever they stand
VALUES: Dict[str, Tuple[str, bool]] = {
    "null": ("~", False),
    "empty string": ('""', False),
    "empty list": ("[]", False),
    "empty map": ("{}", False),
    "-1": ("-1", False),
    "0": ("0", False),
    "NaN": (".nan", True),
    "inf": (".inf", True),
    "-inf": ("-.inf", True),
    "1.0e+400 (inf)": ("1.0e+400", True),
    "20 digits": ("99999999999999999999", True),
    "true": ("true", False),
    "a date": ("2020-01-01", False),
    "newline": ('"a\\nb"', True),
    "NUL": ('"a\\0b"', True),
    "shell injection": ('"$(touch /tmp/enos-hostile-pwned)"', False),
    "option injection": ('"-oProxyCommand=touch /tmp/enos-hostile-pwned"', False),
    "100000 chars": ('"' + "A" * 100000 + '"', False),
    "emoji": ('"\U0001F642"', False),
    "nested list": ("[[[1]]]", False),
    "a directory": ("/tmp", False),
    "/dev/zero": ("/dev/zero", False),
}

STATIC_HOST = "127.0.0.1"
BASES = {
    # provider: (text with {P} for provider keys, text with {M} for machine keys)
    "static": ("provider:\n  type: static\n{P}resources:\n  db:\n    - address: 127.0.0.1\n      port: 1\n",
               "provider: static\nresources:\n  db:\n    - address: 127.0.0.1\n{M}"),
    "local": ("provider:\n  type: local\n{P}resources:\n  local:\n    db: 1\n",
              "provider: local\nresources:\n  machines:\n    - roles: [db]\n      nodes: 1\n{M}"),
    "g5k": ("provider:\n  type: g5k\n  job_name: hostile\n{P}resources:\n  paravance:\n    db: 1\n",
            "provider: g5k\nresources:\n  machines:\n    - roles: [db]\n      cluster: paravance\n      nodes: 1\n{M}"),
    "libvirt": ("provider:\n  type: libvirt\n{P}resources:\n  tiny:\n    db: 1\n",
                "provider: libvirt\nresources:\n  machines:\n    - roles: [db]\n      flavour: tiny\n      nodes: 1\n{M}"),
    "vagrant": ("provider:\n  type: vagrant\n  backend: libvirt\n{P}resources:\n  tiny:\n    db: 1\n",
                "provider:\n  type: vagrant\n  backend: libvirt\nresources:\n  machines:\n    - roles: [db]\n"
                "      flavour: tiny\n      number: 1\n{M}"),
}
#: keys of the explicit machine entry itself and of network_constraints, on the local provider
EXPLICIT = "provider: local\nresources:\n  machines:\n    - {M}\n"
CONSTRAINTS = ("provider: local\nresources:\n  local:\n    db: 1\n    web: 1\nnetwork_constraints:\n"
               "  enable: true\n{N}")
TOP = "provider: local\nresources:\n  local:\n    db: 1\n{T}"
#: values that must be refused at one key in particular (the issue's examples)
SPECIFIC = [
    ("local subnet 224.0.0.0/24", "provider:\n  type: local\n  subnet: 224.0.0.0/24\nresources:\n  local:\n    db: 1\n",
     "subnet"),
    ("local subnet 10.0.0.0/33", "provider:\n  type: local\n  subnet: 10.0.0.0/33\nresources:\n  local:\n    db: 1\n",
     "subnet"),
    ("local subnet 127.0.0.0/24", "provider:\n  type: local\n  subnet: 127.0.0.0/24\nresources:\n  local:\n    db: 1\n",
     "subnet"),
    ("default_delay 10^20 ms", CONSTRAINTS.format(N="  default_delay: 99999999999999999999ms\n"), "default_delay"),
    ("default_rate 10^20 mbit", CONSTRAINTS.format(N="  default_rate: 99999999999999999999mbit\n"), "default_rate"),
    ("delay 1e5000s", CONSTRAINTS.format(N="  default_delay: " + "9" * 5000 + "s\n"), "default_delay"),
    ("static keyfile /tmp (a directory)", BASES["static"][1].format(M="      keyfile: /tmp\n"), "keyfile"),
    ("static keyfile /dev/zero", BASES["static"][1].format(M="      keyfile: /dev/zero\n"), "keyfile"),
    ("static compact counts", "provider: static\nresources:\n  local:\n    compute: 1\n", "address"),
    ("static topology counts", "provider: static\ntopology:\n  g1:\n    local:\n      compute: 1\n", "address"),
    ("static networks cidr 224.0.0.0/4", "provider:\n  type: static\n  networks:\n    - cidr: 224.0.0.0/4\n"
     "resources:\n  db:\n    - address: 127.0.0.1\n", "cidr"),
    ("static networks start outside cidr", "provider:\n  type: static\n  networks:\n    - cidr: 10.9.0.0/24\n"
     "      start: 10.8.0.1\nresources:\n  db:\n    - address: 127.0.0.1\n", "start"),
    ("nodes 10^20", "provider: local\nresources:\n  local:\n    db: 99999999999999999999\n", "db"),
    ("topology g[1-10^20]", "provider: local\ntopology:\n  g[1-99999999999999999999]:\n    local:\n      db: 1\n",
     "g[1-"),
]


def _provider_keys(ptype: str) -> List[str]:
    from enos.provider import load_provider_class
    return [k for k in load_provider_class(ptype).schema.get("properties", {}) if k != "type"]


def _machine_keys(ptype: str) -> List[str]:
    from enos.provider import load_provider_class
    return list((load_provider_class(ptype).machine_schema or {}).get("properties", {}))


def matrix() -> List[Tuple[str, str, bool]]:
    """Return (input name, file text, must be refused) for every key × hostile value."""
    out = []
    for ptype, (ptext, mtext) in BASES.items():
        for key in _provider_keys(ptype):
            for vname, (yaml, bad) in VALUES.items():
                out.append((f"{ptype} provider.{key} = {vname}", ptext.format(P=f"  {key}: {yaml}\n"), bad))
        for key in _machine_keys(ptype):
            for vname, (yaml, bad) in VALUES.items():
                text = mtext.format(M=f"      {key}: {yaml}\n")
                if key == "address":
                    text = text.replace("    - address: 127.0.0.1\n      address:", "    - address:")
                out.append((f"{ptype} machine.{key} = {vname}", text, bad))
    for key in ("roles", "nodes", "cluster", "flavour", "number"):
        for vname, (yaml, bad) in VALUES.items():
            text = EXPLICIT.format(M=f"{key}: {yaml}\n      roles: [db]" if key != "roles" else f"roles: {yaml}")
            out.append((f"machines[0].{key} = {vname}", text, bad))
    for key in ("default_delay", "default_rate", "default_loss", "default_network", "constraints",
                "except", "groups", "enable"):
        for vname, (yaml, bad) in VALUES.items():
            out.append((f"network_constraints.{key} = {vname}", CONSTRAINTS.format(N=f"  {key}: {yaml}\n"), bad))
    for key in ("provision", "variables", "resources", "topology", "provider"):
        for vname, (yaml, bad) in VALUES.items():
            text = TOP.format(T=f"{key}: {yaml}\n") if key in ("provision", "variables") else \
                f"provider: local\n{key}: {yaml}\n" if key != "provider" else f"provider: {yaml}\nresources:\n  local:\n    db: 1\n"
            out.append((f"{key} = {vname}", text, bad))
    return out


def runs(d: Path, sample: int = 1) -> List[Run]:
    """Write every hostile reservation under ``d`` and return the validate/check runs
    (``up`` runs are added by :func:`up_runs` for the inputs validate refused); ``sample``
    N keeps one matrix input in N (a quicker run while working)."""
    out: List[Run] = []
    rd = d / "reservations"
    rd.mkdir()
    valid = BASES["static"][0].format(P="")
    fresh = _Fresh(d / "reservation-runs")
    for name, path in files.place(rd, "file", valid):
        full = path if path.startswith("/") else str(rd / path)
        ok, either = "(valid)" in name, name in files.EITHER
        expect = (0,) if ok else (0, 2) if either else (2,)
        out.append(Run("reservation", f"file: {name}", "validate", ["validate", "-f", full], rd, expect=expect))
        out.append(Run("reservation", f"file: {name}", "check", ["check", "-f", full], fresh(),
                       expect=(0, 1) if ok else (0, 1, 2) if either else (2,)))
        if not (ok or either):
            out.append(Run("reservation", f"file: {name}", "up", ["up", "-f", full, "--ssh-timeout", "5"], fresh()))
    for i, (name, text, field) in enumerate(SPECIFIC):
        p = rd / f"specific-{i}.yaml"
        p.write_text(text)
        machine = field == "keyfile"    # a fact of this machine: validate warns, up refuses
        out.append(Run("reservation", f"issue: {name}", "validate", ["validate", "-f", p.name], rd,
                       words=(field,), expect=(0,) if machine else (2,)))
        out.append(Run("reservation", f"issue: {name}", "up", ["up", "-f", str(p), "--ssh-timeout", "5"], fresh(),
                       words=(field,)))
    for i, (name, text, bad) in enumerate(matrix()):
        if i % sample:
            continue
        p = rd / f"m{i}.yaml"
        p.write_text(text)
        out.append(Run("reservation", name, "validate", ["validate", "-f", p.name], rd,
                       expect=(2,) if bad else (0, 2)))
    return out


class _Fresh:
    """A new empty working directory per run that may create an env (``up``, ``check``)."""

    def __init__(self, base: Path):
        self.base, self.n = base, 0
        base.mkdir(parents=True, exist_ok=True)

    def __call__(self) -> Path:
        self.n += 1
        p = self.base / f"r{self.n}"
        p.mkdir()
        return p


def up_runs(outcomes) -> List[Run]:
    """``enos up`` for every matrix input that validate refused: it must refuse it too."""
    out = []
    fresh = None
    for o in outcomes:
        r = o.run
        if r.kind == "reservation" and r.command == "validate" and not r.input.startswith(("file:", "issue:")) \
                and o.rc == 2:
            fresh = fresh or _Fresh(r.cwd.parent / "reservation-up-runs")
            out.append(Run("reservation", r.input, "up", ["up", "-f", str(r.cwd / r.argv[2]), "--ssh-timeout", "5"],
                           fresh()))
    return out
