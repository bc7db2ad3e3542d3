"""The 43 real Vagrant reservation files that upstream Enos 8.0 accepts validate and render.

They are read from ``<repo>/../shared/corpus/reservations/`` (``MANIFEST.tsv`` lists them;
they are data from public repositories and are not copied into the project). Without that
directory the test skips, except with ``CI=true`` where it fails.
"""
from pathlib import Path

import jinja2  # noqa: F401  (the vagrant extra: a missing prerequisite fails, never skips)
import pytest

from corpus import corpus_dir, manifest_rows
from prereq import missing

REPO = Path(__file__).resolve().parent.parent


CORPUS = corpus_dir() or REPO.parent / "shared" / "corpus" / "reservations"
EXPECTED = 43
FILES = [CORPUS / row["file"] for row in manifest_rows(CORPUS)
         if row["set"] == "accept" and row["provider"] == "vagrant"]


def _need_corpus():
    if not FILES:
        missing(f"no corpus at {CORPUS} (MANIFEST.tsv)")


def test_the_corpus_has_43_vagrant_files():
    _need_corpus()
    assert len(FILES) == EXPECTED, [f.name for f in FILES]


@pytest.mark.parametrize("path", FILES or [None], ids=lambda p: p.name if p else "missing")
def test_real_vagrant_file_validates_and_renders(path):
    _need_corpus()
    from enos.task import load_reservation
    from enos.vagrant.plan import make_plan
    from enos.vagrant.render import render_vagrantfile
    config = load_reservation(str(path))
    assert config.provider_type == "vagrant"
    plan = make_plan(config, "0badcafe")
    assert len(plan["machines"]) == sum(m.count for m in config.machines) >= 1
    backend = config.options["backend"]
    text = render_vagrantfile(plan, run_id="0badcafe", backend=backend, box=config.options["box"],
                              user=config.options["user"], key="/env/ssh/id_ed25519",
                              pubkey="ssh-ed25519 AAAA enos", enos_box=False)
    for m in plan["machines"]:
        assert f'config.vm.define "{m["name"]}"' in text
        assert f"vb.memory = {m['memory']}" in text or f"lv.memory = {m['memory']}" in text
    assert f'config.vm.box = "{config.options["box"]}"' in text
    assert text.count("private_network") == 2 * len(plan["machines"])
    # the backend the file asks for (VirtualBox when it names none, as Enos)
    asked = ((config.raw.get("provider") or {}).get("backend")
             if isinstance(config.raw.get("provider"), dict) else None) or "virtualbox"
    assert backend == asked
    assert ("config.vm.provider :libvirt" in text) == (asked == "libvirt")
