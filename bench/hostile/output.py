"""Hostile output: stdout on a full disk (/dev/full), closed, a pipe closed early (SIGPIPE),
stderr closed or full, an ASCII locale; for every command that prints. A command must
say it could not write (exit 1) or, in an ASCII locale, print what it can (exit 0):
never a traceback."""
from __future__ import annotations

from pathlib import Path
from typing import List

from hostile.core import Run

#: (name, argv, exit code when the output works)
COMMANDS = [
    ("help", ["help"], 0), ("--help", ["--help"], 0), ("--version", ["--version"], 0),
    ("help up", ["help", "up"], 0),
    ("validate", ["validate", "-f", "static.yaml"], 0), ("validate -o json", ["validate", "-f", "static.yaml", "-o", "json"], 0),
    ("validate (error)", ["validate", "-f", "bad-\u00e9\U0001F642.yaml"], 2),
    ("new -o -", ["new", "-o", "-"], 0), ("new --list", ["new", "--list"], 0),
    ("check --provider static", ["check", "--provider", "static"], 0),
    ("info", ["info", "--env", "{static}"], 0), ("info -o json", ["info", "--env", "{static}", "-o", "json"], 0),
    ("inventory", ["inventory", "--env", "{static}"], 0),
    ("campaign validate", ["campaign", "validate", "camp.yaml"], 0),
    ("campaign status", ["campaign", "status", "camp.yaml"], 0),
    # tc plans from the hosts' facts (netem or not): on hosts that answer
    ("tc --dry-run", ["tc", "--env", "{live}", "--dry-run", "-f", "nc.yaml"], 0),
    ("run 'echo emoji'", ["run", "--env", "{live}", "echo \U0001F642 \u00e9t\u00e9"], 0),
    ("run -o json 'echo emoji'", ["run", "--env", "{live}", "-o", "json", "echo \U0001F642"], 0),
    ("run 'exit 3'", ["run", "--env", "{live}", "exit 3"], 1),
    ("info (live)", ["info", "--env", "{live}"], 0),
]
#: stream set-up → exit codes allowed besides the command's own when it fails (None: only
#: the command's own). stdout full or closed: exit 1 (the output was lost); a reader gone
#: (SIGPIPE): 0, 1 or 141; stderr gone: the command's code (the error could not be said)
MODES = {
    "full": (1,), "closed": (1,), "sigpipe": (0, 1, 141), "stderr-closed": None, "both-closed": (1,),
    "stderr-full": None, "ascii": None, "ascii-no-ioencoding": None,
}


def runs(d: Path, static_env: Path, live_env: Path) -> List[Run]:
    """Return the output runs (``d`` holds static.yaml and camp.yaml)."""
    (d / "bad-\u00e9\U0001F642.yaml").write_text("provider: static\nresources:\n  r\u00e9le:\n    - {}\n")
    out = []
    for name, argv, rc in COMMANDS:
        argv = [a.format(static=static_env, live=live_env) for a in argv]
        for mode, codes in MODES.items():
            env = {}
            streams = mode
            if mode.startswith("ascii"):
                streams = "pipe"
                env = {"LC_ALL": "C", "LANG": "C"}
                if mode == "ascii":
                    env["PYTHONIOENCODING"] = "ascii"
            if codes is None:
                codes = (rc, 1) if rc != 0 and mode.startswith("stderr") else (rc,)
            elif rc != 0:
                codes = tuple(sorted(set(codes) | {rc}))
            out.append(Run("output", f"{name} [{mode}]", argv[0], argv, d, expect=codes, streams=streams,
                           env=env, creates_nothing=argv[0] not in ("new",) or "-" in argv))
    out.append(Run("output", "run 'exit 255' (a command's 255, not ssh's)", "run",
                   ["run", "--env", str(live_env), "exit 255"], d, expect=(1,), after=_not_ssh_255))
    return out


def _not_ssh_255(run, o) -> list:
    text = o.stdout + o.stderr
    return ["a command's exit 255 reported as an ssh failure"] if "ssh failed" in text or "255" not in text else []
