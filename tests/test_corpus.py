"""Real reservation files of Enos users, read as Enos reads them.

The files live outside the project, in ``shared/corpus/reservations/`` beside the
repository (``../shared`` of the repository root; a worktree looks further up; or
``EXTERNAL_CORPUS=/path``), with their provenance in ``MANIFEST.tsv``. They are read
from there, never copied into the project.

* every file of ``accept/`` that upstream Enos 8 accepts must validate, except the Vagrant
  ones, whose provider has its own test;
* each file of ``reject/`` is genuinely broken and must be rejected for its real defect.
"""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from enos.errors import ConfigError, EnosError
from enos.provider import available_providers
from enos.task import load_reservation
from corpus import corpus_dir, manifest_rows
from prereq import missing

REPO = Path(__file__).resolve().parent.parent


CORPUS = corpus_dir()


ROWS = manifest_rows(CORPUS)
ACCEPT = [r for r in ROWS if r["set"] == "accept" and r["provider"] != "vagrant"]
REJECT = [r for r in ROWS if r["set"] == "reject"]

#: the real defect of each rejected file (MANIFEST's upstream reason), as enos words it
REJECT_REASONS = {
    "BeyondTheClouds__enos__docs__provider__openstack.rst.block1.v96f61803.yaml":
        ":3: YAML syntax error: this line is not 'key: value' (could not find expected ':') — "
        "'<options see below>' looks like a placeholder left in: replace it with a value",
    "BeyondTheClouds__enos__docs__provider__static.rst.block0.v211182dc.yaml":
        ":17: YAML syntax error: ",
    "BeyondTheClouds__enos__docs__provider__static.rst.block0.v77042796.yaml":
        ":17: YAML syntax error: ",
    "BeyondTheClouds__enos__enos__templates__reservation.yaml.j2.yaml":
        "this file is a Jinja template ('{{ ... }}' or '{% ... %}'), not a reservation: render it first",
    "denaitre__enos__reservation.yaml.template.j2.vfc032152.yaml":
        "this file is a Jinja template ('{{ ... }}' or '{% ... %}'), not a reservation: render it first",
    "BeyondTheClouds__enos__docs__getting-started__vagrant.rst.block3.v438ac2bc.yaml":
        ":7: resources.small: expected a mapping of role → number of machines, or a list of hosts, got "
        "'compute:1' (a space is missing after ':'? write 'compute: 1' on its own line)",
    "BeyondTheClouds__enos__docs__getting-started__vagrant.rst.block3.v601e7a68.yaml":
        ":7: resources.small: expected a mapping of role → number of machines, or a list of hosts, got "
        "'compute:1' (a space is missing after ':'? write 'compute: 1' on its own line)",
    "BeyondTheClouds__enos__docs__getting-started__vbox.rst.block3.v13465c35.yaml":
        ":7: resources.small: expected a mapping of role → number of machines, or a list of hosts, got "
        "'compute:1' (a space is missing after ':'? write 'compute: 1' on its own line)",
    # the Vagrant provider (its own issue) rejects backend 'vbox'; without it, 'vagrant' is unknown
    "BeyondTheClouds__enos__tests__functionnal__tests__vagrant__legacy_vbox.yaml.v5cdff5de.yaml":
        ":7: provider.backend: " if "vagrant" in available_providers() else
        ":6: provider.type: unknown provider type 'vagrant'",
}


def test_corpus_is_there():
    """With CI=true a missing corpus fails; elsewhere it skips with the reason."""
    if CORPUS is None:
        missing(f"no shared/corpus/reservations above {REPO} (and no EXTERNAL_CORPUS)")
    assert len(ACCEPT) >= 67 and len(REJECT) == 9
    assert {Path(r["file"]).name for r in REJECT} == set(REJECT_REASONS)


#: file -> the 'enos validate -o json' run on it (filled by the tests, reused by the counts)
VALIDATED: dict = {}


def _validate(row) -> subprocess.CompletedProcess:
    """Run the command a user runs, ``enos validate -o json -f FILE``, once per file."""
    path = str(CORPUS / row["file"])
    if path not in VALIDATED:
        VALIDATED[path] = subprocess.run([sys.executable, "-m", "enos", "validate", "-o", "json", "-f", path],
                                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    return VALIDATED[path]


@pytest.mark.parametrize("row", ACCEPT, ids=[Path(r["file"]).name for r in ACCEPT])
def test_accepted_file_validates(row):
    """Through the real command: exit 0, the provider and machines as the file says. What a
    static file needs of this machine (its key files, which 'vagrant up' creates later)
    is a warning of validate, not a refusal."""
    p = _validate(row)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    summary = json.loads(p.stdout)
    assert summary["provider"] == row["provider"]
    assert sum(m["count"] for m in summary["machines"]) >= 1
    keyfiles = [m["options"].get("keyfile") for m in summary["machines"] if m["options"].get("keyfile")]
    missing_keys = [k for k in keyfiles if not os.path.isfile(k)]
    if missing_keys:        # the first one the provider finds is named
        assert "warning: on this machine: " in p.stderr and any(k in p.stderr for k in missing_keys), p.stderr


@pytest.mark.parametrize("row", REJECT, ids=[Path(r["file"]).name for r in REJECT])
def test_rejected_file_for_its_real_defect(row):
    path = CORPUS / row["file"]
    with pytest.raises(EnosError) as e:
        load_reservation(str(path))
    assert isinstance(e.value, ConfigError), repr(e.value)
    assert str(e.value).startswith(str(path)), str(e.value)
    assert REJECT_REASONS[path.name] in str(e.value), str(e.value)


def test_counts_per_provider():
    """The figure of the closing note: accepted/total per provider (Vagrant excluded)."""
    if CORPUS is None:
        missing("no shared/corpus/reservations above the repository (and no EXTERNAL_CORPUS)")
    total, ok = Counter(), Counter()
    for r in ACCEPT:
        total[r["provider"]] += 1
        if _validate(r).returncode == 0:
            ok[r["provider"]] += 1
    print({p: f"{ok[p]}/{n}" for p, n in total.items()})
    assert ok == total and total["static"] == 25, (ok, total)


def test_repeated_provider_key_kept_last_with_a_warning():
    """Enos' reservation.yaml.sample repeats 'provider:' and 'resources:' (one block per
    testbed); as Enos (PyYAML) does, the last one counts, and the warning names every line."""
    rows = [r for r in ACCEPT if "reservation.yaml.sample" in r["path"]]
    assert rows
    for r in rows:
        cfg = load_reservation(str(CORPUS / r["file"]))
        assert cfg.provider_type == "static"
        prov = [w for w in cfg.warnings if "'provider' is given" in w]
        assert len(prov) == 1 and "the last one (line" in prov[0], cfg.warnings
        lines = [int(n) for n in prov[0].split("(lines ")[1].split(")")[0].split(", ")]
        text = (CORPUS / r["file"]).read_text().splitlines()
        assert all(text[n - 1].startswith("provider:") for n in lines) and len(lines) >= 2


def test_validate_lists_the_playbook_variables(tmp_path):
    """Unknown top-level keys go to the playbooks: 'enos validate' lists them with their
    line, so a misspelt key (enable_monitoring → enable_monitorng) is visible."""
    r = next(r for r in ACCEPT if "badock__enos_openvpn__reservation.yaml" == Path(r["file"]).name)
    text = (CORPUS / r["file"]).read_text().replace("enable_monitoring:", "enable_monitorng:")
    f = tmp_path / "reservation.yaml"
    f.write_text(text)
    p = subprocess.run([sys.executable, "-m", "enos", "validate", "-f", str(f)], capture_output=True,
                       text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.startswith("enable_monitorng:"))
    assert f"enable_monitorng (line {line})" in p.stdout and "kolla (line" in p.stdout, p.stdout
    assert "variables for the playbooks" in p.stdout
