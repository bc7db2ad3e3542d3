"""The standard streams as enos writes them: stdout that cannot be written (closed, a full
disk) is an error said on stderr (exit 1), stderr never raises, a character the locale
cannot encode is a backslash escape. Only the interpreter's own modules: ``enos --help``
loads this and nothing else of enos."""
from __future__ import annotations

import os
import sys


class OutputLost(Exception):
    """The standard output cannot be written (closed, a full disk, an I/O error): the
    command's result would be lost, so enos says so and exits 1."""


def out(text: str) -> None:
    """Print ``text`` on stdout (one line feed at its end), flushed. Raises OutputLost when
    stdout is closed or refuses it (a reader gone is BrokenPipeError, see ``enos.cli.main``)."""
    stream = sys.stdout
    if stream is None:
        raise OutputLost("standard output is closed; nothing could be written")
    try:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as e:
        raise OutputLost(f"cannot write to standard output: {getattr(e, 'strerror', None) or e}") from None


class TolerantStream:
    """stderr as enos writes it: a message that cannot be written (stderr closed or on a
    full disk) is dropped instead of raising in the middle of a command."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text) if self._stream is not None else len(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self):
        try:
            if self._stream is not None:
                self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def setup_streams() -> None:
    """Make the standard streams safe whatever the terminal gives: a character the locale
    cannot encode is written as a backslash escape (``LC_ALL=C``, ``PYTHONIOENCODING=ascii``),
    and stderr never raises (closed, full)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (OSError, ValueError):
                pass
    if not isinstance(sys.stderr, TolerantStream):
        sys.stderr = TolerantStream(sys.stderr)


def quiet_stdout() -> None:
    """Point fd 1 at /dev/null so that Python's last flush cannot fail (and print an
    'Exception ignored' traceback) once enos has said the output was lost."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass
