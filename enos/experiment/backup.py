"""``Env.backup`` / ``enos backup``: bring files and directories home from many hosts at once.

Per host, one remote ``tar c`` of every requested path that exists, through the env's SSH
connection master (one mux session, no ``ssh`` process, no scp per file); the session's
stdout is handed directly to a local ``tar x`` (its stdin), so nothing is buffered in enos
and the hosts stream in parallel. Files land in ``<dest>/<alias>/<path>`` (``dest`` defaults
to ``<env>/backup``): absolute paths keep their full path (``/var/log/app`` →
``<alias>/var/log/app``), relative ones are taken from the user's home directory
(``results`` → ``<alias>/results``).

Names are passed as shell-quoted arguments and travel inside the tar stream: spaces,
quotes, newlines and non-UTF-8 bytes are safe. The local ``tar`` refuses members that
would land outside the destination (absolute names, ``..``), so a host cannot write
anywhere else on this machine.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import stat as st_mod
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Sequence, Union

from enos import render
from enos.errors import UsageError
from enos.experiment.command import RoleSelector, wrap_command
from enos.state import usable_dir

_MISSING = "enos-backup-missing"
_MISSING_RE = re.compile(r"^" + _MISSING + r" (\d+)$")
#: GNU tar's exit status 1: "some files differ" (a file changed while it was read)
TAR_CHANGED = 1


@dataclass
class HostBackup:
    """What was fetched from one host: ``dest`` (its directory), ``fetched`` (the paths
    that existed), ``missing`` (the paths that did not), ``bytes`` and ``files`` (regular
    files) now under ``dest``, ``error`` (None when the transfer worked), ``warning``
    (e.g. a file changed while it was read)."""

    host: str
    dest: str
    fetched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    bytes: int = 0
    files: int = 0
    error: Optional[str] = None
    warning: Optional[str] = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the transfer worked (missing paths do not make it fail)."""
        return self.error is None


@dataclass
class BackupReport:
    """The outcome of a backup: ``dest`` and ``hosts`` (alias → :class:`HostBackup`)."""

    dest: str
    paths: List[str]
    hosts: Dict[str, HostBackup]

    @property
    def ok(self) -> bool:
        """True when every host's transfer worked."""
        return all(h.ok for h in self.hosts.values())

    @property
    def bytes(self) -> int:
        """Total bytes of the regular files fetched."""
        return sum(h.bytes for h in self.hosts.values())

    @property
    def missing(self) -> Dict[str, List[str]]:
        """alias → paths missing there (hosts with none left out)."""
        return {a: h.missing for a, h in self.hosts.items() if h.missing}

    def __getitem__(self, alias: str) -> HostBackup:
        return self.hosts[alias]

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return {"dest": self.dest, "paths": self.paths, "ok": self.ok, "bytes": self.bytes,
                "hosts": {a: h.__dict__.copy() for a, h in self.hosts.items()}}

    def to_json(self, **kw) -> str:
        """Return :meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), **kw)

    def lines(self) -> List[str]:
        """Human-readable lines, one per host (what ``enos backup`` prints)."""
        out = []
        for h in self.hosts.values():
            s = f"{h.host}: {human_size(h.bytes)} in {h.files} file(s) → {h.dest}"
            if h.missing:
                s += "; missing: " + ", ".join(repr(m) if _odd(m) else m for m in h.missing)
            if h.warning:
                s += f"; warning: {h.warning}"
            if h.error:
                s += f"; FAILED: {h.error}"
            out.append(s)
        return out

    def __repr__(self) -> str:
        return (f"<BackupReport {len(self.hosts)} host(s), {human_size(self.bytes)} → {self.dest}"
                + "".join("\n  " + line for line in self.lines()) + ">")

    def _repr_html_(self) -> str:
        rows = []
        for h in self.hosts.values():
            status = ("ok", render.OK_COLOUR) if h.ok else (h.error, render.FAIL_COLOUR)
            rows.append([h.host, status, human_size(h.bytes), h.files, "\n".join(h.fetched),
                         ("\n".join(h.missing), render.WARN_COLOUR) if h.missing else "", h.dest])
        return render.table(["host", "status", "size", "files", "fetched", "missing", "into"], rows,
                            caption=f"backup → {self.dest}", css_class="enos-backup")


def _odd(name: str) -> bool:
    return any(c in name for c in "\n\t\r ")


def human_size(n: int) -> str:
    """Return ``n`` bytes as text (``512 B``, ``1.5 KiB``, ``3.2 MiB``...)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _normalise(path: str) -> tuple:
    """Return (base dir as shell text, member path relative to it, where it lands) for a
    requested path. Raises UsageError for an empty path or one with '..'."""
    if not isinstance(path, str) or not path.strip("/"):
        raise UsageError(f"backup: {path!r} is not a path to fetch (a file or directory, not '/')")
    p = path
    if p.startswith("~/"):
        p = p[2:]
    pp = PurePosixPath(p)
    if ".." in pp.parts:
        raise UsageError(f"backup: {path!r}: '..' is not allowed in a path to fetch")
    rel = str(pp).lstrip("/")
    base = "/" if pp.is_absolute() else '"$HOME"'
    return base, rel


def remote_script(paths: Sequence[str]) -> str:
    """Return the shell text run on each host: a line ``enos-backup-missing I`` on stderr
    for each path I that does not exist, then ``tar c`` of the others to stdout."""
    parts = ["set --"]
    for i, path in enumerate(paths):
        base, rel = _normalise(path)
        q = shlex.quote("./" + rel)        # './': a name starting with '-' is not an option of tar
        target = ("/" if base == "/" else '"$HOME"/') + q
        parts.append(f'if [ -e {target} ] || [ -L {target} ]; then set -- "$@" -C {base} {q}; '
                     f'else echo "{_MISSING} {i}" >&2; fi')
    parts.append('[ "$#" -gt 0 ] || exit 0')
    parts.append('exec tar -c -f - "$@"')
    return "\n".join(parts)


def _tree_size(root: Path) -> tuple:
    """Return (bytes of regular files, number of regular files) under ``root`` (or of it)."""
    total = files = 0
    try:
        st = root.lstat()
    except OSError:
        return 0, 0
    if st_mod.S_ISREG(st.st_mode):
        return st.st_size, 1
    if not st_mod.S_ISDIR(st.st_mode):
        return 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            try:
                s = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st_mod.S_ISREG(s.st_mode):
                total += s.st_size
                files += 1
    return total, files


def backup(env, paths: Union[str, Sequence[str]], roles: RoleSelector = None,
           dest: Union[None, str, os.PathLike] = None, timeout: Optional[float] = None,
           sudo: bool = False) -> BackupReport:
    """Fetch ``paths`` from the hosts of ``roles`` of ``env`` (see :meth:`Env.backup`);
    return the :class:`BackupReport`. Raises UsageError (no path, a path with '..'),
    NoEnvironment; per-host failures are in the report."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [os.fspath(paths)]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise UsageError("backup: give at least one path to fetch")
    if any(not p.strip() for p in paths):
        raise UsageError("backup: an empty path; give the files or directories to fetch")
    script = remote_script(paths)          # validates every path before anything runs
    dest_dir = usable_dir(dest, "--dest") if dest is not None else env.env_dir / "backup"
    hosts = env.select(roles)
    dest_dir = dest_dir.resolve()
    tars: Dict[str, subprocess.Popen] = {}
    sinks: Dict[str, int] = {}
    try:
        for h in hosts:
            d = dest_dir / h.alias
            d.mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen(["tar", "-x", "-f", "-", "-C", str(d), "--no-same-owner",
                                     "--delay-directory-restore"],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            tars[h.alias] = proc
            sinks[h.alias] = proc.stdin.fileno()
        commands = {h.alias: wrap_command(script, sudo=sudo, user=h.user) for h in hosts}
        results = env._run_sessions(hosts, "backup " + " ".join(map(shlex.quote, paths)), commands,
                                    timeout=timeout, stdout_to=sinks)
    finally:
        for proc in tars.values():       # EOF for every local tar (the sessions hold no copy now)
            proc.stdin.close()
        tar_err = {a: p.stderr.read().decode(errors="replace") for a, p in tars.items()}
        for proc in tars.values():
            proc.wait()
    report: Dict[str, HostBackup] = {}
    for r in results:
        a = r.host.alias
        d = dest_dir / a
        missing_idx = set()
        other_err = []
        for line in r.stderr.splitlines():
            m = _MISSING_RE.match(line)
            if m:
                missing_idx.add(int(m.group(1)))
            elif line.strip():
                other_err.append(line.strip())
        hb = HostBackup(a, str(d), duration=r.duration)
        hb.missing = [p for i, p in enumerate(paths) if i in missing_idx]
        hb.fetched = [p for i, p in enumerate(paths) if i not in missing_idx]
        local_rc = tars[a].returncode
        if r.rc is None:
            hb.error = r.error or "failed"
        elif r.rc == TAR_CHANGED:
            hb.warning = "; ".join(other_err) or "a file changed while it was read"
        elif r.rc != 0:
            hb.error = f"remote tar exited with {r.rc}: " + ("; ".join(other_err[-3:]) or r.error or "")
        if hb.error is None and local_rc != 0 and hb.fetched:
            hb.error = f"local tar exited with {local_rc}: {tar_err[a].strip()}"
        if hb.error is not None:
            hb.fetched = []
        for p in hb.fetched:
            _, rel = _normalise(p)
            b, n = _tree_size(d / rel)
            hb.bytes += b
            hb.files += n
        report[a] = hb
    return BackupReport(str(dest_dir), paths, report)
