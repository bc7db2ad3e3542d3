"""One archive that lets someone else check and redo an experiment:
``enos archive [--env DIR] [--campaign FILE] -o FILE.tar.gz`` and ``enos archive --check FILE``.

Python API::

    import enos.archive
    manifest = enos.archive.create("exp.tar.gz", campaign="campaign.yaml")   # or env="enos_2026..."
    enos.archive.check("exp.tar.gz")          # CheckResult; raises ArchiveInvalid when it does not match

The archive (``<name>/`` inside): ``MANIFEST.json`` (every file's size and SHA-256; the
date, the versions of enos, Python and Ansible, what was archived) and ``SHA256SUMS``
(``sha256sum -c`` checks it without enos); ``software/`` (versions, ``pip-freeze.txt``);
``env/`` (the env's state, facts, provider record, reservation and the playbooks it
provisions with, backups, actions playbooks; never the private key); ``campaign/`` (the
campaign file and the scripts, playbooks and modules it names); ``results/`` (runs,
results.csv, figures, report.html, provenance).
"""
from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path
from typing import Optional

from enos.errors import EnosError, UsageError
from enos.archive.collect import Bundle, add_campaign, add_env, env_dir_of, pip_freeze, versions
from enos.archive.manifest import MANIFEST, SUMS, Manifest, verify
from enos.campaign.file import Campaign, load_campaign
from enos.campaign.reporting import build
from enos.campaign.report_html import ARCHIVE_MANIFEST, write_html
from enos.state import atomic_write


class ArchiveInvalid(EnosError):
    """The archive does not match its manifest: ``.problems`` lists what differs."""

    def __init__(self, path: str, problems):
        self.path, self.problems = path, list(problems)
        super().__init__(f"{path}: {len(self.problems)} problem(s): " + "; ".join(self.problems[:5]))


def create(output, env: Optional[str] = None, campaign=None, results=None):
    """Write the archive ``output`` (``.tar.gz``) of an environment (``env``: its dir, or
    a dir holding ``current``) and/or a campaign (``campaign``: its file; ``results``: its
    results dir, default beside the file; its environment is taken from there when ``env``
    is not given; with neither, the current environment: ``./current``); return the
    :class:`~enos.archive.manifest.Manifest`.

    Raises UsageError (no environment at ``env``), ConfigError (the campaign file),
    OSError when the archive cannot be written."""
    import json
    if env is None and campaign is None:
        env = "."
    bundle, meta = Bundle(), {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    soft = versions()
    meta.update(enos=soft["enos"], python=soft["python"], ansible_core=soft.get("ansible-core"))
    bundle.add("software/versions.json", json.dumps(soft, indent=2))
    bundle.add("software/pip-freeze.txt", pip_freeze())
    camp = res_dir = built = None
    if campaign is not None:
        camp = campaign if isinstance(campaign, Campaign) else load_campaign(campaign)
        res_dir = Path(results or camp.default_results()).absolute()
        if (res_dir / "runs").is_dir():
            built = build(camp, res_dir)          # results.csv and figures, as of now
        meta["campaign"] = add_campaign(bundle, camp, res_dir)
    env_dir = None
    if env is not None:
        env_dir = env_dir_of(Path(env))
        if env_dir is None:
            raise UsageError(f"archive: no environment in {env} (no state.json there or in its 'current')")
    elif res_dir is not None:
        env_dir = env_dir_of(res_dir / "env")
    if env_dir is not None:
        meta["env"] = add_env(bundle, env_dir)
    meta["archive"] = Path(output).name
    man = Manifest(meta=meta)
    for path, data in bundle.files.items():
        man.add(path, data)
    if built is not None:         # the report, last: it shows the manifest of everything else
        _add_report(bundle, man, camp, res_dir, built)
    _write(Path(output), man, bundle, MANIFEST, SUMS)
    return man


def _add_report(bundle, man, camp, res_dir: Path, built) -> None:
    """Write ``archive-manifest.json`` and report.html in the results dir, then add both
    to the archive and its manifest."""
    rows, problems, drawn = built
    atomic_write(res_dir / ARCHIVE_MANIFEST, man.to_json(), mode=0o644)
    write_html(camp, res_dir, rows, drawn, res_dir / "report.html", problems)
    for name in (ARCHIVE_MANIFEST, "report.html"):
        data = (res_dir / name).read_bytes()
        bundle.add(f"results/{name}", data)
        man.add(f"results/{name}", data)


def _write(output: Path, man, bundle, manifest_name: str, sums_name: str) -> None:
    """Write the tar.gz atomically (temporary file beside it, then rename)."""
    top = output.name.removesuffix(".tar.gz").removesuffix(".tgz") or "enos-archive"
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    now = time.time()
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            entries = dict(bundle.files)
            entries[manifest_name] = man.to_json().encode()
            entries[sums_name] = man.sums().encode()
            for path, data in sorted(entries.items()):
                info = tarfile.TarInfo(f"{top}/{path}")
                info.size, info.mtime, info.mode = len(data), now, 0o644
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()


def check(path, strict: bool = True):
    """Check the archive ``path`` against its manifest; return the
    :class:`~enos.archive.manifest.CheckResult`. With ``strict``, raise ArchiveInvalid
    when something differs. Raises UsageError when it cannot be read as a tar archive."""
    import tarfile as _t
    try:
        result = verify(path)
    except (OSError, _t.TarError, ValueError) as e:
        raise UsageError(f"archive: cannot read {path}: {e}") from None
    if strict and not result.ok:
        raise ArchiveInvalid(str(path), result.problems)
    return result
