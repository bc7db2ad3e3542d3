"""``enos archive``: one tar.gz that lets someone else check and redo an experiment, on a
real ``local`` environment — what is in it (reservation and the playbooks it names, state,
facts, provider record, software versions), what is not (the private key), a manifest
that ``sha256sum -c`` accepts, and tampering found by ``archive.check``."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

import enos
import enos.archive
from enos.archive import ArchiveInvalid
from localhosts import RUN_IDS, leftovers

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent
RESERVATION = """\
provider: local
resources:
  local: {server: 1, client: 1}
provision:
  - site.yml
greeting: archived
"""


@pytest.fixture(scope="module")
def archived(tmp_path_factory):
    d = tmp_path_factory.mktemp("archive")
    (d / "reservation.yaml").write_text(RESERVATION)
    (d / "site.yml").write_text((REPO / "examples" / "notebook" / "site.yml").read_text())
    env = enos.up(str(d / "reservation.yaml"), keep=True, base=d, provision=False, quiet=True)
    RUN_IDS.append(env.run_id)
    try:
        env.facts()
        out = d / "exp.tar.gz"
        manifest = enos.archive.create(out, env=str(d))
        key = Path(env.hosts[0].keyfile).read_bytes()
        yield {"dir": d, "env": env, "out": out, "manifest": manifest, "key": key}
    finally:
        env.destroy()
        assert leftovers(env.run_id) == []


def _members(path: Path) -> dict:
    with tarfile.open(path) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_what_is_in_the_archive(archived):
    files = _members(archived["out"])
    man = json.loads(files["MANIFEST.json"])
    assert set(man["files"]) == set(files) - {"MANIFEST.json", "SHA256SUMS"}
    assert man["meta"]["enos"] == enos.__version__ and man["meta"]["ansible_core"]
    assert man["meta"]["env"]["run_id"] == archived["env"].run_id
    assert files["env/reservation/reservation.yaml"].decode() == RESERVATION
    assert files["env/reservation/files/site.yml"] == (archived["dir"] / "site.yml").read_bytes()
    facts = json.loads(files["env/facts.json"])
    assert set(facts["hosts"]) == {"server-1", "client-1"}, list(facts)
    record = json.loads(files["env/provider.json"])
    assert record["provider"] == "local" and record["journal"]["local"]["hosts"]
    assert set(record["record"]["info"]["hosts"]) == {"server-1", "client-1"}, record
    assert json.loads(files["env/state.json"])["run_id"] == archived["env"].run_id
    freeze = files["software/pip-freeze.txt"].decode()
    assert "ansible-core==" in freeze and "PyYAML==" in freeze
    assert json.loads(files["software/versions.json"])["enos"] == enos.__version__
    # no secret: the env's private key is nowhere in the archive
    assert not any(archived["key"] in data for data in files.values())
    assert not any(p.startswith("env/ssh/") for p in files)


def test_sha256sum_accepts_the_manifest(archived, tmp_path):
    with tarfile.open(archived["out"]) as tar:
        tar.extractall(tmp_path, filter="data")
    top = next(tmp_path.iterdir())
    p = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=top, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count(": OK") == len(archived["manifest"].files)


def _rewrite(src: Path, dst: Path, change) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        entries = [(m, tin.extractfile(m).read() if m.isfile() else None) for m in tin.getmembers()]
        for m, data in change(entries):
            tout.addfile(m, io.BytesIO(data) if data is not None else None)


def test_tampering_is_found(archived, tmp_path):
    assert enos.archive.check(archived["out"]).ok

    def flip(entries):
        for m, data in entries:
            if m.name.endswith("env/state.json"):
                data = data.replace(b'"local"', b'"LOCAL"', 1)
                m.size = len(data)
            yield m, data
    _rewrite(archived["out"], tmp_path / "a.tar.gz", flip)
    with pytest.raises(ArchiveInvalid, match="changed: env/state.json"):
        enos.archive.check(tmp_path / "a.tar.gz")

    def extra(entries):
        yield from entries
        m = tarfile.TarInfo(entries[0][0].name.split("/")[0] + "/results/planted.csv")
        m.size = 3
        yield m, b"1,2"
    _rewrite(archived["out"], tmp_path / "b.tar.gz", extra)
    res = enos.archive.check(tmp_path / "b.tar.gz", strict=False)
    assert not res.ok and res.problems == ["not in the manifest: results/planted.csv"]

    def drop(entries):
        return [(m, d) for m, d in entries if not m.name.endswith("software/versions.json")]
    _rewrite(archived["out"], tmp_path / "c.tar.gz", drop)
    assert enos.archive.check(tmp_path / "c.tar.gz", strict=False).problems == ["missing: software/versions.json"]
