"""The environment's SSH key pair."""
from __future__ import annotations

import subprocess
from pathlib import Path

from enos.errors import EnosError


def ensure_keypair(directory: Path, comment: str) -> Path:
    """Create ``<directory>/id_ed25519`` (+ ``.pub``) if absent; return the private key path.

    Raises :class:`EnosError` if ``ssh-keygen`` is missing or fails."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = directory / "id_ed25519"
    if key.exists() and key.with_suffix(".pub").exists():
        return key
    for p in (key, key.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                       check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except FileNotFoundError:
        raise EnosError("ssh-keygen not found: install openssh-client") from None
    except subprocess.CalledProcessError as e:
        raise EnosError(f"ssh-keygen failed: {e.stderr.strip()}") from None
    return key
