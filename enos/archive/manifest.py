"""The manifest of an archive: every file with its size and SHA-256, what made it, and
the check of an archive against it."""
from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from typing import Dict, List

MANIFEST = "MANIFEST.json"
SUMS = "SHA256SUMS"


def sha256(data: bytes) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Manifest:
    """``files``: archive path → {size, sha256}; ``meta``: date, versions, sources."""
    files: Dict[str, dict] = field(default_factory=dict)
    meta: Dict[str, object] = field(default_factory=dict)

    def add(self, path: str, data: bytes) -> None:
        """Record ``data`` as the content of ``path``."""
        self.files[path] = {"size": len(data), "sha256": sha256(data)}

    def to_json(self) -> str:
        """Return the manifest as JSON text (files sorted)."""
        return json.dumps({"meta": self.meta, "files": dict(sorted(self.files.items()))}, indent=2, default=str)

    def sums(self) -> str:
        """Return the files' checksums in ``sha256sum -c`` format."""
        return "".join(f"{f['sha256']}  {p}\n" for p, f in sorted(self.files.items()))

    @property
    def total_size(self) -> int:
        """Sum of the files' sizes."""
        return sum(f["size"] for f in self.files.values())


@dataclass
class CheckResult:
    """What :func:`verify` found: ``ok``, ``files`` checked, ``problems`` (text),
    ``manifest`` (the archive's)."""
    ok: bool
    files: int
    problems: List[str]
    manifest: Manifest

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return {"ok": self.ok, "files": self.files, "problems": self.problems, "meta": self.manifest.meta}


def verify(path) -> CheckResult:
    """Check the archive ``path`` against its own manifest: every listed file present with
    its size and SHA-256, nothing unlisted, SHA256SUMS agreeing; return the CheckResult
    (never raises for a mismatch; raises OSError/tarfile.TarError when it cannot be read)."""
    problems: List[str] = []
    with tarfile.open(path, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        top = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        if len(top) != 1:
            problems.append(f"expected one top directory, found {sorted(top)}")
        root = sorted(top)[0] if top else ""
        contents = {}
        for m in members:
            rel = m.name[len(root) + 1:] if m.name.startswith(root + "/") else m.name
            if m.issym() or m.islnk() or rel.startswith("/") or ".." in rel.split("/"):
                problems.append(f"unsafe member {m.name}")
                continue
            contents[rel] = tar.extractfile(m).read()
    if MANIFEST not in contents:
        return CheckResult(False, 0, problems + [f"no {MANIFEST}"], Manifest())
    data = json.loads(contents.pop(MANIFEST))
    man = Manifest(files=data.get("files", {}), meta=data.get("meta", {}))
    sums = contents.pop(SUMS, b"").decode()
    if sums != man.sums():
        problems.append(f"{SUMS} does not match {MANIFEST}")
    for p, f in sorted(man.files.items()):
        if p not in contents:
            problems.append(f"missing: {p}")
        elif len(contents[p]) != f["size"] or sha256(contents[p]) != f["sha256"]:
            problems.append(f"changed: {p} (sha256 {sha256(contents[p])[:12]}…, manifest {f['sha256'][:12]}…)")
    for p in sorted(set(contents) - set(man.files)):
        problems.append(f"not in the manifest: {p}")
    return CheckResult(not problems, len(man.files), problems, man)
