"""What goes into an archive: the reservation and campaign files and the files they name,
the software's versions, each environment's state, facts and provider record, the
results and figures. Private keys, lock files and Ansible's working files stay out."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Dict, Iterable, Optional

import enos
from enos.campaign.provenance import referenced_files
from enos.task import EnvDir

#: env-dir entries never archived: the private key, locks, Ansible's scratch, children
ENV_SKIP = ("ssh", "ansible", "children", ".lock", "lock", "known_hosts", "ssh_config")
#: results-dir entries never archived: the campaign's env (archived as an env), execo's
#: pickles, the lock; the report and the archive manifest are added last (the report
#: shows the manifest)
RESULTS_SKIP = ("env", "sweep", ".lock", "report.html", "archive-manifest.json")
MAX_FILE = 512 * 1024 * 1024


class Bundle:
    """Archive path → content, in the order added."""

    def __init__(self):
        self.files: Dict[str, bytes] = {}

    def add(self, path: str, data) -> None:
        """Add ``data`` (bytes or text) as ``path``."""
        self.files[path] = data.encode() if isinstance(data, str) else bytes(data)

    def add_file(self, path: str, src: Path) -> bool:
        """Add the file ``src`` as ``path``; return False if it cannot be read."""
        try:
            if src.stat().st_size > MAX_FILE:
                return False
            self.files[path] = src.read_bytes()
            return True
        except OSError:
            return False

    def add_tree(self, prefix: str, root: Path, skip: Iterable[str] = ()) -> int:
        """Add every regular file under ``root`` (top-level names in ``skip`` left out,
        symbolic links not followed) under ``prefix``; return how many."""
        n = 0
        skip = set(skip)
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d not in skip]
                filenames = [f for f in filenames if f not in skip]
            for f in sorted(filenames):
                src = Path(dirpath) / f
                if src.is_symlink() or not src.is_file():
                    continue
                rel = os.path.normpath(os.path.join(rel_dir, f))
                n += self.add_file(f"{prefix}/{rel}", src)
        return n


def versions() -> Dict[str, str]:
    """Return the versions of enos, Python, the platform, Ansible and the libraries."""
    from importlib.metadata import PackageNotFoundError, version
    out = {"enos": enos.__version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in ("ansible-core", "ansible-runner", "execo", "matplotlib", "pandas", "Jinja2", "PyYAML",
                 "pyroute2", "python-grid5000", "libvirt-python", "python-vagrant"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def pip_freeze() -> str:
    """Return ``name==version`` of every installed distribution (what ``pip freeze``
    lists), sorted."""
    from importlib.metadata import distributions
    seen = {}
    for d in distributions():
        name = d.metadata.get("Name")
        if name:
            seen[name.lower()] = f"{name}=={d.version}"
    return "".join(v + "\n" for _, v in sorted(seen.items()))


def env_dir_of(path: Path) -> Optional[Path]:
    """Return the env dir ``path`` names (itself, or what its ``current`` link points
    at), or None when there is no state there."""
    for cand in (path, path / "current"):
        if (cand / "state.json").is_file():
            return cand.resolve()
    return None


def add_env(bundle: Bundle, env_dir: Path, prefix: str = "env") -> dict:
    """Add an environment: its state, facts, provider record, reservation (and the
    playbooks it provisions with), backups and actions playbooks; return a summary."""
    state = json.loads((env_dir / "state.json").read_text())
    bundle.add_tree(prefix, env_dir, ENV_SKIP)
    bundle.add(f"{prefix}/facts.json", json.dumps(state.get("facts") or {}, indent=2, default=str))
    bundle.add(f"{prefix}/provider.json", json.dumps(provider_record(env_dir, state), indent=2, default=str))
    cfg = state.get("config") or {}
    res_file = cfg.get("file")
    if res_file and os.path.isfile(res_file):
        bundle.add_file(f"{prefix}/reservation/{Path(res_file).name}", Path(res_file))
        base = Path(res_file).parent
    else:
        import yaml
        bundle.add(f"{prefix}/reservation/reservation.yaml", yaml.safe_dump(cfg.get("data") or {}, sort_keys=False))
        base = Path(cfg.get("base_dir") or ".")
    for pb in (cfg.get("data") or {}).get("provision") or []:
        p = pb if isinstance(pb, str) else (pb or {}).get("playbook") if isinstance(pb, dict) else None
        if p:
            src = (base / p) if not os.path.isabs(p) else Path(p)
            bundle.add_file(f"{prefix}/reservation/files/{os.path.normpath(p).lstrip('/')}", src)
    return {"dir": str(env_dir), "run_id": state.get("run_id"), "provider": state.get("provider"),
            "phase": state.get("phase")}


def provider_record(env_dir: Path, state: dict) -> dict:
    """Return what the provider recorded of what it booked (its journal) and what it says
    about it (:meth:`~enos.provider.provider.Provider.record`: e.g. Grid'5000 jobs and the
    API's description of their nodes, a libvirt image's hash, a Vagrant box), for someone
    to book the same again. A provider that cannot answer leaves its error written down."""
    out = {"provider": state.get("provider"), "journal": state.get("journal") or {},
           "resources": state.get("resources")}
    try:
        out["record"] = EnvDir.open(str(env_dir)).open_provider().record()
    except Exception as e:       # a destroyed or unreadable env still has its journal
        out["record_error"] = f"{type(e).__name__}: {e}"
    return out


def add_campaign(bundle: Bundle, camp, results: Optional[Path]) -> dict:
    """Add a campaign: its file, the files it names, and its results directory (runs,
    results.csv, figures, report, provenance); return a summary."""
    base = Path(camp.base_dir).resolve()
    if os.path.isfile(camp.file):
        bundle.add_file(f"campaign/{Path(camp.file).name}", Path(camp.file))
    else:
        import yaml
        bundle.add("campaign/campaign.yaml", yaml.safe_dump(camp.raw, sort_keys=False))
    named = []
    for p in referenced_files(camp):
        rel = os.path.relpath(p, base)
        if not rel.startswith(".."):
            bundle.add_file(f"campaign/files/{rel}", p)
            named.append(rel)
    n = bundle.add_tree("results", results, RESULTS_SKIP) if results and results.is_dir() else 0
    return {"file": camp.file, "named_files": named, "results": str(results) if results else None,
            "result_files": n}
