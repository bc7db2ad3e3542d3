"""What a campaign's runs were made with, so that results made with different steps are
never mixed without a word.

Each run records the fingerprint of its *definition* in its ``result.json``: the steps
(command, roles, timeout, what they collect), the setup, the network constraints, the
reservation (its text, or the inline mapping) and the content of every file these name
(scripts the steps call, setup playbooks, metric modules). The definition itself is kept
once per fingerprint in ``<results>/provenance/<fingerprint>.json``.

The metrics are recorded too (``metrics``) but do not make a run stale: they are read
again from the collected outputs by every report, so a changed or added metric applies to
every run. Adding parameter values or repetitions adds runs and changes nothing either.

:func:`stale_runs` lists the finished runs made with another definition; ``campaign run``
then refuses to go on (exit 2) with :func:`describe` naming each change, unless given a new
results directory or ``--rerun-changed`` (those runs are done again).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from enos.state import atomic_write

#: the parts of a definition that make a finished run stale when they change
STALE_PARTS = ("steps", "setup", "network_constraints", "reservation", "files")
DIR = "provenance"


def _sha(data: Any) -> str:
    blob = data if isinstance(data, bytes) else json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _step(s) -> dict:
    return {"name": s.name, "run": s.run, "roles": s.roles, "timeout": s.timeout, "play": s.play,
            "extra_vars": s.extra_vars, "collect_stdout": s.collect_stdout, "collect_files": s.collect_files}


#: programs whose first non-option argument is the script they run
INTERPRETERS = {"sh", "bash", "dash", "zsh", "ksh", "python", "python3", "perl", "ruby", "Rscript", "node",
                "php", "lua", "tclsh", "awk", "gawk", "source", "."}


def _called_scripts(command: str) -> List[str]:
    """Return the words of ``command`` that name a script it runs: each simple command's
    program, or the first argument of an interpreter (``sh x.sh``, ``python3 -u y.py``),
    Jinja2 parts left out. Files the command only reads or writes are not scripts."""
    text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", " ", command or "")
    out = []
    for part in re.split(r"&&|\|\||[;|&\n()]", text):
        try:
            words = shlex.split(part, comments=True)
        except ValueError:
            words = part.split()
        words = [w for w in words if "=" not in w.split("/")[0]] if words and "=" in words[0] else words
        if not words:
            continue
        prog = words[0]
        if os.path.basename(prog) in INTERPRETERS or prog in ("sudo", "env", "nohup", "exec", "timeout"):
            rest = [w for w in words[1:] if not w.startswith("-") and not w.replace(".", "").isdigit()]
            if rest and os.path.basename(prog) in INTERPRETERS:
                out.append(rest[0])
            elif rest:
                out += _called_scripts(" ".join(shlex.quote(w) for w in rest))
        else:
            out.append(prog)
    return out


def referenced_files(camp) -> List[Path]:
    """Return the files of the campaign's directory that it names: the scripts its setup
    and step commands run (their program, or an interpreter's script argument; relative
    to the campaign file), the setup playbooks, the metrics' Python modules, the
    reservation file."""
    base = Path(camp.base_dir)
    out: List[Path] = []
    for s in camp.setup + camp.steps:
        if s.play:
            out.append(Path(s.play))
        for w in _called_scripts(s.run):
            p = (base / w) if not os.path.isabs(w) else Path(w)
            if p.is_file() and _inside(p, base):
                out.append(p)
    for m in camp.metrics:
        if m.kind == "python":
            mod = base / (m.expr.split(":", 1)[0].replace(".", "/") + ".py")
            if mod.is_file():
                out.append(mod)
    if isinstance(camp.reservation, str):
        out.append(Path(camp.reservation))
    seen, unique = set(), []
    for p in out:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(r)
    return unique


def _inside(path: Path, base: Path) -> bool:
    try:
        path.resolve().relative_to(base.resolve())
        return True
    except ValueError:
        return False


def definition(camp) -> Dict[str, Any]:
    """Return the campaign's definition (what a fingerprint covers), JSON-serialisable."""
    base = Path(camp.base_dir).resolve()
    files = {}
    for p in referenced_files(camp):
        try:
            files[os.path.relpath(p, base)] = _sha(p.read_bytes())
        except OSError:
            continue
    if isinstance(camp.reservation, str):
        try:
            reservation = {"file": os.path.relpath(camp.reservation, base),
                           "sha256": _sha(Path(camp.reservation).read_bytes())}
        except OSError:
            reservation = {"file": camp.reservation, "sha256": None}
    else:
        reservation = camp.reservation
    return {"steps": [_step(s) for s in camp.steps], "setup": [_step(s) for s in camp.setup],
            "network_constraints": camp.network_constraints, "reservation": reservation, "files": files,
            "metrics": {m.name: {"kind": m.kind, "expr": m.expr, "scale": m.scale, "from": m.source}
                        for m in camp.metrics}}


def fingerprint(defn: Dict[str, Any]) -> str:
    """Return the fingerprint of a definition: a hash of the parts that make runs stale."""
    return _sha({k: defn.get(k) for k in STALE_PARTS})[:16]


def save(results: Path, defn: Dict[str, Any]) -> str:
    """Keep ``defn`` in ``<results>/provenance/``; return its fingerprint."""
    fp = fingerprint(defn)
    d = Path(results) / DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{fp}.json"
    if not path.exists():
        atomic_write(path, json.dumps(defn, indent=2, sort_keys=True, default=str), mode=0o644)
    return fp


def load(results: Path, fp: str) -> Optional[Dict[str, Any]]:
    """Return the definition kept for fingerprint ``fp``, or None."""
    try:
        return json.loads((Path(results) / DIR / f"{fp}.json").read_text())
    except (OSError, ValueError):
        return None


def stale_runs(results: Path, current: str, run_dirs: List[Tuple[dict, Path]]) -> Dict[str, List[dict]]:
    """Return fingerprint → the finished runs (of ``run_dirs``: (run, its directory)) made
    with a definition other than ``current``. A run recorded before fingerprints existed
    counts under ``"unknown"``."""
    out: Dict[str, List[dict]] = {}
    for run, rdir in run_dirs:
        try:
            rec = json.loads((rdir / "result.json").read_text())
        except (OSError, ValueError):
            continue
        fp = rec.get("fingerprint") or "unknown"
        if fp != current:
            out.setdefault(fp, []).append(run)
    return out


def describe(old: Optional[Dict[str, Any]], new: Dict[str, Any]) -> List[Tuple[tuple, str]]:
    """Return the changes from ``old`` to ``new`` as (key path in the campaign file,
    readable text), in file order. Without ``old`` (runs made by an older enos): one
    entry saying the definition is unknown."""
    if old is None:
        return [((), "the runs were made before enos recorded what they ran with")]
    out: List[Tuple[tuple, str]] = []
    for part, word in (("setup", "setup command"), ("steps", "step")):
        a, b = old.get(part) or [], new.get(part) or []
        for i in range(max(len(a), len(b))):
            if i >= len(a):
                out.append(((part, i), f"{word} {i + 1} ({b[i]['name']}) was added"))
            elif i >= len(b):
                out.append(((part,), f"{word} {i + 1} ({a[i]['name']}) was removed"))
            else:
                for key in ("run", "play", "roles", "timeout", "extra_vars", "collect_stdout", "collect_files"):
                    if a[i].get(key) != b[i].get(key):
                        where = {"collect_stdout": "collect", "collect_files": "collect"}.get(key, key)
                        out.append(((part, i, where), f"{word} {i + 1} ({b[i]['name']}): {where} changed:\n"
                                    + _diff(a[i].get(key), b[i].get(key))))
    if old.get("network_constraints") != new.get("network_constraints"):
        out.append((("network_constraints",), "network_constraints changed:\n"
                    + _diff(old.get("network_constraints"), new.get("network_constraints"))))
    if old.get("reservation") != new.get("reservation"):
        out.append((("reservation",), "the reservation changed"))
    fa, fb = old.get("files") or {}, new.get("files") or {}
    for name in sorted(set(fa) | set(fb)):
        if fa.get(name) != fb.get(name):
            what = "appeared" if name not in fa else "is gone" if name not in fb else "changed"
            out.append(((), f"the file {name} (named by the campaign) {what}"))
    return out


def _diff(a: Any, b: Any) -> str:
    sa = a if isinstance(a, str) else json.dumps(a, sort_keys=True, default=str)
    sb = b if isinstance(b, str) else json.dumps(b, sort_keys=True, default=str)
    if "\n" not in sa and "\n" not in sb:
        return f"    was: {sa}\n    now: {sb}"
    lines = difflib.unified_diff(sa.splitlines(), sb.splitlines(), "was", "now", lineterm="", n=1)
    return "\n".join("    " + line for line in lines)
