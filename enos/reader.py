"""The ONE reader of the files enos is given or keeps (reservations, campaigns, state
files, the env's own files): :func:`read_bounded`. Standard library only, so that the
short paths (``enos run`` on one host) read the state without loading :mod:`enos.state`."""
from __future__ import annotations

import os

from enos.errors import UnreadableFile

#: the largest state file enos reads (the facts of thousands of hosts are a few MB)
MAX_STATE_BYTES = 64 << 20

def read_bounded(file, limit: int, what: str = "file", partial: bool = False) -> bytes:
    """Return the bytes of the regular file ``file``: the ONE reader of the files enos is
    given or keeps (reservations, campaigns, state files, the env's own files). It never
    blocks and never reads more than ``limit`` bytes: the file is opened without blocking
    (a FIFO is refused, not waited on), a symbolic link is followed to what it names, which
    must be a regular file too. With ``partial``, a larger file gives its first ``limit``
    bytes instead of a refusal. Raises UnreadableFile (naming the file as ``what``): not a
    regular file (a FIFO, a device, a directory), larger than ``limit``, unreadable."""
    import stat
    file = os.fspath(file)
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise UnreadableFile(f"cannot read the {what}: {e.strerror or e}", file) from None
    except ValueError as e:                 # a NUL in the path
        raise UnreadableFile(f"cannot read the {what}: {e}", file) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UnreadableFile(f"cannot read the {what}: Is a directory", file)
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if (
                stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) else "a special file"
            raise UnreadableFile(f"is {kind}, not a regular file; give the path of a {what}", file)
        if st.st_size > limit and not partial:
            raise UnreadableFile(f"the file is {st.st_size} bytes; a {what} may be at most {limit} bytes", file)
        chunks, size = [], 0
        while size < limit or not partial:
            chunk = os.read(fd, min(65536, limit - size + 1) if partial else 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > limit and not partial:
                raise UnreadableFile(f"the file grows beyond {limit} bytes; a {what} may be at most "
                                     f"{limit} bytes", file)
            chunks.append(chunk)
        return b"".join(chunks)[:limit]
    except OSError as e:
        raise UnreadableFile(f"cannot read the {what}: {e.strerror or e}", file) from None
    finally:
        os.close(fd)
