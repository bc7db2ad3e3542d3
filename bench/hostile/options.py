"""Hostile command lines: every option that takes a number, a directory or a file given
every hostile value, extra arguments, empty lists, and the issue's examples. Run against a
ready static env whose host refuses connections (nothing is reachable, nothing leaves)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

from hostile.core import Run
from hostile.envs import STATIC

NUMBERS = ["abc", "nan", "NaN", "inf", "-inf", "-1", "0", "1e400", "1e300", "99999999999999999999",
           "", " ", "5s", "0x10", "1_0", "\u0661\u0662", "-0", "1e-300"]
#: the numeric options: (command argv before the value, option)
NUMERIC = [
    (["up", "-f", "static.yaml"], "--ssh-timeout"),
    (["run", "--env", "{env}"], "--timeout"),
    (["backup", "--env", "{env}"], "--timeout"),
]
#: commands taking --env DIR (argv with {dir} where the value goes)
ENV_COMMANDS = [
    ["info", "--env", "{dir}"], ["info", "--env", "{dir}", "-o", "json"], ["inventory", "--env", "{dir}"],
    ["run", "--env", "{dir}", "true"], ["backup", "--env", "{dir}", "/etc/hostname"],
    ["destroy", "--env", "{dir}"], ["tc", "--env", "{dir}", "--dry-run"], ["extend", "--env", "{dir}", "--walltime", "+1:00"],
    ["ssh", "--env", "{dir}", "db-1", "true"], ["up", "-f", "static.yaml", "--env", "{dir}", "--ssh-timeout", "3"],
    ["campaign", "run", "camp.yaml", "--env", "{dir}"],
]
BAD_DIRS = ["/proc/self", "/proc/x", "/dev/null", "afile", "afifo", "/dev/zero", "nonexistent", "",
            "dangling", "loop", "emptydir", "aproject", "/", "/sys/kernel"]
#: directories of the machine never given to a command that may write (an older enos made
#: an existing --env dir 0700 and wrote its state there: / and /sys/kernel were found 0700
#: after such runs); 'aproject' (a directory holding a user's file) stands for them
SYSTEM_DIRS = ("/", "/sys/kernel")
#: commands taking -f FILE
FILE_COMMANDS = [["validate", "-f", "{f}"], ["up", "-f", "{f}", "--ssh-timeout", "3"], ["check", "-f", "{f}"],
                 ["tc", "--env", "{env}", "--dry-run", "-f", "{f}"],
                 ["destroy", "--sweep", "--run-id", "abcdef12", "-f", "{f}"]]
BAD_FILES = ["/dev/zero", "afifo", "emptydir", "", "nonexistent", "zerolink", "loop", "big.yaml", "/proc/self/mem"]
FORMATS = ["xml", "", "JSON", "json\n"]
FORMAT_COMMANDS = [["validate", "-f", "static.yaml", "-o"], ["info", "--env", "{env}", "-o"],
                   ["run", "--env", "{env}", "-o", "{fmt}", "true"], ["backup", "--env", "{env}", "-o", "{fmt}", "/x"],
                   ["tc", "--env", "{env}", "--dry-run", "-o"], ["campaign", "status", "camp.yaml", "-o"]]
#: (name, argv, exit codes, words in stderr)
SINGLE = [
    ("--version extra", ["--version", "extra"], (2,), ""),
    ("--version --help", ["--version", "--help"], (0, 2), ""),
    ("help nope", ["help", "nope"], (2,), "nope"),
    ("help up extra", ["help", "up", "extra"], (2,), ""),
    ("unknown command", ["nope"], (2,), "nope"),
    ("up extra argument", ["up", "extra"], (2,), ""),
    ("up --tags ''", ["up", "-f", "static.yaml", "--tags", "", "--ssh-timeout", "5"], (2,), "--tags"),
    ("up --tags ','", ["up", "-f", "static.yaml", "--tags", ",", "--ssh-timeout", "5"], (2,), "--tags"),
    ("up --tags 'a b'", ["up", "-f", "static.yaml", "--tags", "a b", "--ssh-timeout", "5"], (2,), "--tags"),
    ("up --env /proc/self", ["up", "-f", "static.yaml", "--env", "/proc/self", "--ssh-timeout", "5"], (2,), "/proc/self"),
    ("up --env a user's dir", ["up", "-f", "static.yaml", "--env", "aproject", "--ssh-timeout", "5"], (2,),
     "not an enos environment"),
    ("info --refresh without --facts", ["info", "--env", "{env}", "--refresh"], (2,), "--refresh"),
    ("run --roles ''", ["run", "--env", "{env}", "--roles", "", "true"], (2,), "--roles"),
    ("run --roles ','", ["run", "--env", "{env}", "--roles", ",", "true"], (2,), "--roles"),
    ("run --roles nope", ["run", "--env", "{env}", "--roles", "nope", "true"], (2,), "nope"),
    ("run ''", ["run", "--env", "{env}", ""], (2,), ""),
    ("run a 120 KB command", ["run", "--env", "{env}", "A" * 120_000], (1, 2), ""),
    ("backup --dest /dev/null", ["backup", "--env", "{env}", "--dest", "/dev/null", "/etc/hostname"], (2,), "--dest"),
    ("backup --dest a file", ["backup", "--env", "{env}", "--dest", "afile", "/etc/hostname"], (2,), "--dest"),
    ("backup --dest /proc/x", ["backup", "--env", "{env}", "--dest", "/proc/x", "/etc/hostname"], (2,), "--dest"),
    ("backup --dest ''", ["backup", "--env", "{env}", "--dest", "", "/etc/hostname"], (2,), "--dest"),
    ("backup path ''", ["backup", "--env", "{env}", ""], (2,), ""),
    ("backup --roles nope", ["backup", "--env", "{env}", "--roles", "nope", "/x"], (2,), "nope"),
    ("destroy --run-id abc", ["destroy", "--sweep", "--run-id", "abc", "-f", "static.yaml"], (2,), "abc"),
    ("destroy --run-id ../../x", ["destroy", "--sweep", "--run-id", "../../xx", "-f", "static.yaml"], (2,), ""),
    ("destroy --run-id ''", ["destroy", "--sweep", "--run-id", "", "-f", "static.yaml"], (2,), ""),
    ("destroy --run-id 9 chars", ["destroy", "--sweep", "--run-id", "abcdef123", "-f", "static.yaml"], (2,), ""),
    ("extend --walltime abc", ["extend", "--env", "{env}", "--walltime", "abc"], (2,), "walltime"),
    ("extend --walltime +0:00", ["extend", "--env", "{env}", "--walltime", "+0:00"], (2,), "walltime"),
    ("extend --walltime +-1:00", ["extend", "--env", "{env}", "--walltime", "+-1:00"], (2,), "walltime"),
    ("extend --walltime 10^20 h", ["extend", "--env", "{env}", "--walltime", "+99999999999999999999:00"], (2,), "walltime"),
    ("new --provider nope", ["new", "--provider", "nope", "-o", "-"], (2,), "nope"),
    ("new --provider ../x", ["new", "--provider", "../x", "-o", "-"], (2,), ""),
    ("new -o /dev/full --force", ["new", "-o", "/dev/full", "--force"], (2,), "/dev/full"),
    ("new -o afifo --force", ["new", "-o", "afifo", "--force"], (2,), "afifo"),
    ("build nope", ["build", "nope"], (2,), ""),
    ("build libvirt --output /dev/null", ["build", "libvirt", "--output", "/dev/null"], (2,), "/dev/null"),
    ("build libvirt --cache afile", ["build", "libvirt", "--cache", "afile"], (2,), "afile"),
    ("ssh unknown host", ["ssh", "--env", "{env}", "nope", "true"], (2,), "nope"),
    ("ssh host '-oProxyCommand=x'", ["ssh", "--env", "{env}", "-oProxyCommand=touch /tmp/enos-hostile-pwned"], (2,), ""),
    ("-vvvvv", ["-vvvvv", "validate", "-f", "static.yaml"], (0, 2), ""),
    ("-q -v", ["-q", "-v", "validate", "-f", "static.yaml"], (0, 2), ""),
    ("campaign nope", ["campaign", "nope", "camp.yaml"], (2,), ""),
    ("check --provider nope", ["check", "--provider", "nope"], (2,), "nope"),
    ("check --provider ''", ["check", "--provider", ""], (2,), ""),
    ("tc --reset --dry-run", ["tc", "--env", "{env}", "--reset", "--dry-run"], (2,), ""),
]


def _setup(d: Path) -> None:
    """The shared hostile paths (given by absolute path: runs never write there)."""
    d.mkdir(parents=True)
    (d / "afile").write_text("x\n")
    os.mkfifo(d / "afifo")
    os.symlink("/nonexistent/enos", d / "dangling")
    os.symlink("loop", d / "loop")
    os.symlink("/dev/zero", d / "zerolink")
    (d / "emptydir").mkdir()
    (d / "aproject").mkdir()
    (d / "aproject" / "notes.txt").write_text("the user's own file\n")
    with open(d / "big.yaml", "w") as f:
        f.write("provider: static\n" + "# pad\n" * (1 << 20))


def _fill(argv, **kw) -> List[str]:
    return [a.format(**kw) if "{" in a else a for a in argv]


class _Dirs:
    """A fresh working directory per run (a run that creates an env or a results dir must
    not change what the next one sees), holding static.yaml and camp.yaml."""

    def __init__(self, base: Path, shared: Path):
        self.base, self.shared, self.n = base, shared, 0

    def __call__(self) -> Path:
        self.n += 1
        d = self.base / f"o{self.n}"
        d.mkdir()
        (d / "static.yaml").write_text(STATIC)
        (d / "camp.yaml").write_text("reservation: static.yaml\nparameters:\n  a: [1]\nsteps:\n  - run: \"true\"\n")
        return d

    def path(self, v: str) -> str:
        """A hostile value naming one of the shared paths, made absolute."""
        return str(self.shared / v) if v and not v.startswith("/") and v != "nonexistent" else v


def runs(base: Path, env: Path) -> List[Run]:
    """Return the option runs (each in its own directory under ``base``)."""
    shared = base / "shared"
    _setup(shared)
    new = _Dirs(base, shared)
    out: List[Run] = []
    for pre, opt in NUMERIC:
        for v in NUMBERS:
            argv = _fill(pre, env=env) + [opt, v] + (["true"] if pre[0] == "run" else
                                                       ["/etc/hostname"] if pre[0] == "backup" else [])
            ok = v in ("1e-300", "1_0", "\u0661\u0662")    # float() takes them: a number > 0
            out.append(Run("option", f"{pre[0]} {opt} {v!r}", pre[0], argv, new(),
                           expect=(1, 2) if ok else (2,), words=() if ok else (opt,), creates_nothing=not ok))
    for argv in ENV_COMMANDS:
        for v in BAD_DIRS:
            writes = argv[0] == "up" or argv[:2] == ["campaign", "run"]
            if writes and v in ("nonexistent", "emptydir") + SYSTEM_DIRS:
                continue        # a new env dir is valid; a system dir is not tried by a command that may write
            out.append(Run("option", f"{' '.join(argv[:2])} --env {v!r}", argv[0],
                           _fill(argv, dir=new.path(v)), new(), expect=(2,)))
    for argv in FILE_COMMANDS:
        for f in BAD_FILES:
            out.append(Run("option", f"{argv[0]} -f {f!r}", argv[0], _fill(argv, f=new.path(f), env=env), new()))
    for argv in FORMAT_COMMANDS:
        for fmt in FORMATS:
            full = _fill(argv, env=env, fmt=fmt) + ([fmt] if "{fmt}" not in argv else [])
            out.append(Run("option", f"{argv[0]} -o {fmt!r}", argv[0], full, new()))
    for name, argv, expect, words in SINGLE:
        argv = [new.path(a) if a in ("afile", "afifo", "aproject") else a for a in argv]
        out.append(Run("option", name, argv[0], _fill(argv, env=env), new(), expect=expect,
                       words=(words,) if words else (), creates_nothing=True))
    return out
