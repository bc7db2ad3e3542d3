"""The real Grid'5000 Reference API data, read in place.

Where it lives: ``$G5K_REFERENCE``, else the first ``shared/g5k-reference`` above the
repository (CI lays ``shared/`` beside its clone, like the corpus, see tests/corpus.py).
The files are the public reference repository's ``data/grid5000/`` tree, unchanged (see
its README.md): sites, clusters, nodes with their real ``network_adapters``, disks and
job types. Nothing here is copied into the project.

:class:`Reference` reads them lazily (a site's nodes on first use) and caches per process.
"""
from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
MARKER = Path("data") / "grid5000" / "grid5000.json"


def reference_dir() -> Optional[Path]:
    """Return the g5k-reference directory (it holds ``data/grid5000/``), or None."""
    env = os.environ.get("G5K_REFERENCE")
    if env:
        return Path(env) if (Path(env) / MARKER).is_file() else None
    for parent in REPO.parents:
        d = parent / "shared" / "g5k-reference"
        if (d / MARKER).is_file():
            return d
    return None


def need_reference() -> "Reference":
    """Return the :class:`Reference`, or skip (fail under CI=true) when the data is absent."""
    d = reference_dir()
    if d is None:
        from prereq import missing
        missing("the Grid'5000 reference data is not there: expected shared/g5k-reference/ "
                "beside the repository (or $G5K_REFERENCE)")
    return load(str(d))


@functools.lru_cache(maxsize=4)
def load(path: str) -> "Reference":
    """Return the (cached) :class:`Reference` of the directory ``path``."""
    return Reference(Path(path))


def _node_key(uid: str):
    m = re.match(r"^(.*?)-(\d+)$", uid)
    return (m.group(1), int(m.group(2))) if m else (uid, 0)


class Reference:
    """Read-only view of the data: sites, clusters, nodes (dicts exactly as in the files)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.data = self.root / "data" / "grid5000"
        self._nodes: Dict[tuple, List[dict]] = {}

    def grid(self) -> dict:
        """Return the top-level ``grid5000.json``."""
        return json.loads((self.data / "grid5000.json").read_text())

    @functools.cached_property
    def site_uids(self) -> List[str]:
        """The sites in the data, sorted."""
        return sorted(p.name for p in (self.data / "sites").iterdir()
                      if (p / f"{p.name}.json").is_file())

    @functools.lru_cache(maxsize=None)
    def site(self, uid: str) -> dict:
        """Return the site's JSON. Raises KeyError if the data has no such site."""
        f = self.data / "sites" / uid / f"{uid}.json"
        if not f.is_file():
            raise KeyError(f"no site '{uid}' in the reference data (sites: {', '.join(self.site_uids)})")
        return json.loads(f.read_text())

    @functools.lru_cache(maxsize=None)
    def cluster_uids(self, site: str) -> List[str]:
        """Return the clusters of ``site``, sorted."""
        self.site(site)
        d = self.data / "sites" / site / "clusters"
        return sorted(p.name for p in d.iterdir() if (p / f"{p.name}.json").is_file())

    @functools.lru_cache(maxsize=None)
    def cluster(self, site: str, uid: str) -> dict:
        """Return the cluster's JSON. Raises KeyError if unknown."""
        f = self.data / "sites" / site / "clusters" / uid / f"{uid}.json"
        if not f.is_file():
            raise KeyError(f"no cluster '{uid}' on {site} in the reference data")
        return json.loads(f.read_text())

    def nodes(self, site: str, cluster: str) -> List[dict]:
        """Return the cluster's node JSONs in node-number order (gros-1, gros-2, ...)."""
        key = (site, cluster)
        if key not in self._nodes:
            self.cluster(site, cluster)
            d = self.data / "sites" / site / "clusters" / cluster / "nodes"
            nodes = [json.loads(f.read_text()) for f in d.glob("*.json")]
            self._nodes[key] = sorted(nodes, key=lambda n: _node_key(n["uid"]))
        return self._nodes[key]

    def find_cluster(self, cluster: str) -> str:
        """Return the site of ``cluster``. Raises KeyError if no site has it."""
        for s in self.site_uids:
            if cluster in self.cluster_uids(s):
                return s
        raise KeyError(f"no cluster '{cluster}' in the reference data")


def fqdn(node: dict, site: str) -> str:
    """Return the node's FQDN: the ``network_address`` of its mounted Ethernet adapter
    (``gros-1.nancy.grid5000.fr``), else ``<uid>.<site>.grid5000.fr``."""
    for a in node.get("network_adapters") or []:
        if a.get("mounted") and a.get("interface") == "Ethernet" and a.get("network_address"):
            return a["network_address"]
    return f"{node['uid']}.{site}.grid5000.fr"


def kavlan_adapters(node: dict) -> List[dict]:
    """Return the node's adapters a kavlan can hold: enabled, kavlan-capable, not
    management (the primary one first, as in the file)."""
    return [a for a in node.get("network_adapters") or []
            if a.get("enabled") and a.get("kavlan") and not a.get("management") and a.get("network_address")]


def reservable_disks(node: dict) -> List[dict]:
    """Return the node's disks that OAR books separately (``reservation: true``)."""
    return [d for d in node.get("storage_devices") or [] if d.get("reservation")]
