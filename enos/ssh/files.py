"""The env's SSH files as enos reads them back: through the bounded reader of the state
layer (``ssh`` itself would block on a FIFO at the ssh_config's place)."""
from __future__ import annotations

import os
from pathlib import Path

from enos.errors import StateDamaged, UnreadableFile
from enos.reader import read_bounded

#: the largest ssh_config / known_hosts enos reads from an env dir
MAX_SSH_FILE_BYTES = 16 << 20


def read_ssh_config(ssh_config: Path) -> str:
    """Return the text of an env's ``ssh_config`` through the bounded reader (ssh itself
    would block on a FIFO). Raises StateDamaged, saying how to write it again, when it is
    missing or not a regular file."""
    path = Path(ssh_config)
    again = f"'enos up --env {path.parent}' writes it again (the hosts are found, not booked twice)"
    if not os.path.lexists(path):
        raise StateDamaged(str(path), f"{path} is missing; {again}")
    try:
        return read_bounded(path, MAX_SSH_FILE_BYTES, "ssh_config").decode("utf-8", "replace")
    except UnreadableFile as e:
        raise StateDamaged(str(path), f"{path}: {e.reason}; {again}") from None

