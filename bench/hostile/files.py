"""Hostile *files*: what can stand at a path enos reads (a reservation, a campaign, a
state file) besides a good file. Each variant is written under a directory and named by
the path to give on the command line."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Tuple


def _bomb(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefghij", "bcdefghijk"[:levels - 1]):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "bomb:\n" + "".join(f"  {x}\n" for x in lines)


def _write(path: Path, data) -> None:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)


def _big(path: Path, head: str, size: int) -> None:
    with open(path, "w") as f:
        f.write(head)
        pad = "# padding padding padding padding padding padding padding padding\n"
        f.write(pad * (size // len(pad) + 1))


def _symlink(path: Path, target: str) -> None:
    os.symlink(target, path)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


#: variants a tool may accept or refuse (valid YAML whose meaning is merely unusual)
EITHER = ("CR-only line ends", "merge key", "YAML directive", "timestamp value", "RTL override in a key",
          "900 KB on one line")


def variants(valid: str) -> Dict[str, Callable[[Path], None]]:
    """Return {variant name: writer(path)}: every way a file at ``path`` can be hostile,
    ``valid`` being a good file of the kind (what padding or a BOM is added to)."""
    v: Dict[str, Callable[[Path], None]] = {
        "empty file": lambda p: _write(p, ""),
        "only a comment": lambda p: _write(p, "# nothing here\n"),
        "YAML null": lambda p: _write(p, "~\n"),
        "a list": lambda p: _write(p, "- a\n- b\n"),
        "a scalar": lambda p: _write(p, "hello\n"),
        "a number": lambda p: _write(p, "1e400\n"),
        "not UTF-8": lambda p: _write(p, valid.encode() + b"\n# \xff\xfe\xfa\n"),
        "UTF-16 with BOM": lambda p: _write(p, valid.encode("utf-16")),
        "NUL byte": lambda p: _write(p, valid + "\x00\n"),
        "UTF-8 BOM (valid)": lambda p: _write(p, "\ufeff" + valid),
        "CRLF line ends (valid)": lambda p: _write(p, valid.replace("\n", "\r\n")),
        "CR-only line ends": lambda p: _write(p, valid.replace("\n", "\r")),
        "YAML alias bomb": lambda p: _write(p, valid + _bomb()),
        "recursive alias": lambda p: _write(p, valid + "loop: &x [*x]\n"),
        "deep nesting 20000 [": lambda p: _write(p, valid + "deep: " + "[" * 20000 + "]" * 20000 + "\n"),
        "deep nesting 5000 maps": lambda p: _write(p, valid + "deep: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"),
        "duplicate key": lambda p: _write(p, valid + valid.splitlines()[0] + "\n"),
        "tab indentation": lambda p: _write(p, valid.replace("  ", "\t")),
        "900 KB on one line": lambda p: _write(p, valid + "x: '" + "A" * 900_000 + "'\n"),
        "100000 keys": lambda p: _write(p, valid + "".join(f"k{i}: {i}\n" for i in range(100000))),
        "2 MB (over the limit)": lambda p: _big(p, valid, 2 << 20),
        "60 MB": lambda p: _big(p, valid, 60 << 20),
        "a Jinja template": lambda p: _write(p, "{% for i in range(3) %}\n" + valid + "{% endfor %}\n"),
        "python object tag": lambda p: _write(p, valid + "x: !!python/object/apply:os.system ['touch /tmp/enos-hostile-pwned']\n"),
        "binary tag": lambda p: _write(p, valid + "x: !!binary aGVsbG8=\n"),
        "unknown tag": lambda p: _write(p, valid + "x: !vault |\n  abc\n"),
        "merge key": lambda p: _write(p, valid + "base: &b {x: 1}\nother:\n  <<: *b\n"),
        "two documents": lambda p: _write(p, valid + "---\n" + valid),
        "YAML directive": lambda p: _write(p, "%YAML 1.1\n---\n" + valid),
        "complex key": lambda p: _write(p, valid + "? [a, b]\n: 1\n"),
        "timestamp value": lambda p: _write(p, valid + "when: 2001-12-14t21:59:43.10-05:00\n"),
        "RTL override in a key": lambda p: _write(p, valid + "\u202eyek: 1\n"),
        "10000-char key": lambda p: _write(p, valid + "k" * 10000 + ": 1\n"),
        "a directory": lambda p: p.mkdir(),
        "a FIFO": _fifo,
        "/dev/zero": None,
        "/dev/urandom": None,
        "/dev/null": None,
        "symlink to /dev/zero": lambda p: _symlink(p, "/dev/zero"),
        "symlink to a FIFO": lambda p: (_fifo(p.with_name(p.name + ".fifo")), _symlink(p, p.name + ".fifo")),
        "dangling symlink": lambda p: _symlink(p, "/nonexistent/enos-hostile"),
        "symlink loop": lambda p: _symlink(p, p.name),
        "does not exist": lambda p: None,
        "/proc/self/mem": None,
        "/proc/self": None,
    }
    return v


def place(d: Path, stem: str, valid: str) -> List[Tuple[str, str]]:
    """Write every variant under ``d`` (``stem-N.yaml``); return (name, path to give)."""
    out = []
    for i, (name, writer) in enumerate(variants(valid).items()):
        if writer is None:
            out.append((name, name))
            continue
        p = d / f"{stem}-{i}.yaml"
        writer(p)
        out.append((name, p.name))
    return out
