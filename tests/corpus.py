"""Where the real reservation files live: ``$EXTERNAL_CORPUS``, else the first
``shared/corpus/reservations`` above the repository (CI lays ``shared/`` beside its clone;
the files are read in place, never copied into the project)."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent


def corpus_dir() -> Optional[Path]:
    """Return the corpus directory (it holds MANIFEST.tsv, accept/, reject/), or None."""
    if os.environ.get("EXTERNAL_CORPUS"):
        return Path(os.environ["EXTERNAL_CORPUS"])
    for parent in REPO.parents:
        d = parent / "shared" / "corpus" / "reservations"
        if (d / "MANIFEST.tsv").is_file():
            return d
    return None


def manifest_rows(corpus: Optional[Path]) -> List[Dict[str, str]]:
    """Return MANIFEST.tsv's rows (set, provider, file, ...), or [] without a corpus."""
    if corpus is None or not (corpus / "MANIFEST.tsv").is_file():
        return []
    with open(corpus / "MANIFEST.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))
