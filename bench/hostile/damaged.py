"""Damaged state on REAL environments: for each kind of damage, a fresh two-host ``local``
env (namespace hosts, real sshd) is brought up with ``enos up``, damaged, then given to
``info``, ``inventory``, ``run``, ``backup``, ``up`` and ``destroy``. Whatever they print
as the way out (``enos destroy ...``) is run exactly as printed; then what is left of the
run id on this machine (namespaces, links, processes, the SSH socket dir) is counted. The
harness frees what is left afterwards by itself (by run id: only what it created)."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from hostile import envs, probe
from hostile.core import Outcome, Run, execute


def _state(env: Path) -> dict:
    return json.loads((env / "state.json").read_text())


def _put(env: Path, data) -> None:
    (env / "state.json").write_text(data if isinstance(data, str) else json.dumps(data))


def _replace(env: Path, maker: Callable[[Path], None]) -> None:
    (env / "state.json").unlink()
    maker(env / "state.json")


def _edit(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(env: Path) -> None:
        d = _state(env)
        fn(d)
        _put(env, d)
    return apply


def _hosts(d: dict) -> list:
    return d["journal"]["local"]["hosts"]


def _rm(env: Path, name: str) -> None:
    p = env / name
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _fifo_at(env: Path, name: str) -> None:
    _rm(env, name)
    os.mkfifo(env / name)


def _link_at(env: Path, name: str, target: str) -> None:
    _rm(env, name)
    os.symlink(target, env / name)


#: decoys: resources that are not the env's, named in its journal; each must survive
DECOYS: List[Tuple[str, str]] = []


def _decoy(env: Path, field: str) -> None:
    """Create a namespace or dummy link that belongs to nobody's run and write its name
    into the journal where the env's own would be: destroy must leave it alone."""
    import subprocess
    import uuid
    name = "hd" + uuid.uuid4().hex[:8]
    if field == "ns":
        subprocess.run(["ip", "netns", "add", name], check=True)
    else:                   # a veth pair (no dummy links in some kernels)
        subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
    DECOYS.append((field, name))
    d = _state(env)
    if field == "bridge":
        d["journal"]["local"]["bridge"] = name
    else:
        _hosts(d)[0][field] = name
    _put(env, d)


def decoys_gone() -> List[str]:
    """Return the decoys that no longer exist (each one a breach), and remove the others."""
    import subprocess
    gone = []
    for field, name in DECOYS:
        if field == "ns":
            there = name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        else:
            there = subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        if not there:
            gone.append(f"{field} {name} (not the env's) was deleted")
    DECOYS.clear()
    return gone


#: kind → (damage(env), class): "state" (state.json unreadable or malformed: every command
#: exits 1), "journal" (what destroy frees from is wrong: destroy frees what it can), "files"
KINDS: Dict[str, Tuple[Callable[[Path], None], str]] = {
    "state.json -> /dev/zero": (lambda e: _link_at(e, "state.json", "/dev/zero"), "state"),
    "state.json a FIFO": (lambda e: _fifo_at(e, "state.json"), "state"),
    "state.json -> a FIFO": (lambda e: (os.mkfifo(e / "fifo"), _link_at(e, "state.json", "fifo")), "state"),
    "state.json of 70 MB": (lambda e: _put(e, json.dumps(_state(e))[:-1] + ', "pad": "' + "x" * (70 << 20) + '"}'), "state"),
    "state.json not UTF-8": (lambda e: (e / "state.json").write_bytes(b'{"schema": "\xff\xfe"}'), "state"),
    "state.json truncated": (lambda e: _put(e, json.dumps(_state(e))[:200]), "state"),
    "state.json empty": (lambda e: _put(e, ""), "state"),
    "state.json a list": (lambda e: _put(e, "[]"), "state"),
    "state.json null": (lambda e: _put(e, "null"), "state"),
    "no schema": (_edit(lambda d: d.pop("schema")), "state"),
    "schema 999": (_edit(lambda d: d.update(schema=999)), "state"),
    "run id ../../x": (_edit(lambda d: d.update(run_id="../../x")), "state"),
    "phase 'flying'": (_edit(lambda d: d.update(phase="flying")), "state"),
    "serial a string": (_edit(lambda d: d.update(serial="x")), "state"),
    "serial NaN": (lambda e: _put(e, json.dumps(_state(e)).replace('"serial": ', '"serial": NaN, "x": ', 1)), "state"),
    "serial of 5000 digits": (lambda e: _put(e, json.dumps(_state(e)).replace('"serial": ', '"serial": ' + "9" * 5000 + ', "x": ', 1)), "state"),
    "journal nested 100000 deep": (lambda e: _put(e, json.dumps(_state(e)).replace('"journal": ', '"journal": {"x": ' + "[" * 100000 + "]" * 100000 + '}, "y": ', 1)), "state"),
    "state.json a directory": (lambda e: (_rm(e, "state.json"), (e / "state.json").mkdir()), "state"),
    "state.json dangling link": (lambda e: _link_at(e, "state.json", "/nonexistent/enos-state"), "state"),
    "state.json link loop": (lambda e: _link_at(e, "state.json", "state.json"), "state"),
    "config missing": (_edit(lambda d: d.pop("config")), "state"),
    "resources.hosts null": (_edit(lambda d: d["resources"].update(hosts=None)), "resources"),
    "resources.hosts [1, 'x']": (_edit(lambda d: d["resources"].update(hosts=[1, "x"])), "resources"),
    "journal host record null": (_edit(lambda d: _hosts(d).append(None)), "journal"),
    "journal hosts a mapping": (_edit(lambda d: d["journal"]["local"].update(hosts={"a": 1})), "journal"),
    "journal provider record a string": (_edit(lambda d: d["journal"].update(local="x")), "journal"),
    "journal host pid 'x'": (_edit(lambda d: _hosts(d)[0].update(pid="x")), "journal"),
    "journal host ns: another's namespace": (lambda e: _decoy(e, "ns"), "journal"),
    "journal host veth: another's link": (lambda e: _decoy(e, "veth"), "journal"),
    "journal bridge: another's link": (lambda e: _decoy(e, "bridge"), "journal"),
    "journal emptied": (_edit(lambda d: d.update(journal={})), "journal"),
    "journal bridge null": (_edit(lambda d: d["journal"]["local"].update(bridge=None)), "journal"),
    "journal bridge missing": (_edit(lambda d: d["journal"]["local"].pop("bridge")), "journal"),
    "journal gateway missing": (_edit(lambda d: d["journal"]["local"].pop("gateway")), "journal"),
    "journal subnet missing": (_edit(lambda d: d["journal"]["local"].pop("subnet")), "journal"),
    "journal dir missing": (_edit(lambda d: d["journal"]["local"].pop("dir")), "journal"),
    "journal subnet 'abc'": (_edit(lambda d: d["journal"]["local"].update(subnet="abc")), "journal"),
    "journal gateway outside the subnet": (_edit(lambda d: d["journal"]["local"].update(gateway="192.0.2.1")), "journal"),
    ".lock a directory": (lambda e: (_rm(e, ".lock"), (e / ".lock").mkdir()), "files"),
    ".lock a FIFO": (lambda e: _fifo_at(e, ".lock"), "files"),
    "ssh_config missing": (lambda e: _rm(e, "ssh_config"), "files"),
    "ssh_config a FIFO": (lambda e: _fifo_at(e, "ssh_config"), "files"),
    "ssh_config -> /dev/zero": (lambda e: _link_at(e, "ssh_config", "/dev/zero"), "files"),
    "inventory.yml a FIFO": (lambda e: _fifo_at(e, "inventory.yml"), "files"),
    "known_hosts -> /dev/zero": (lambda e: _link_at(e, "known_hosts", "/dev/zero"), "files"),
    "ssh/ (the key) removed": (lambda e: _rm(e, "ssh"), "files"),
    "local-R/ removed": (lambda e: [_rm(e, p.name) for p in e.glob("local-*")], "files"),
    "state.json.tmp files left": (lambda e: [(e / f".state.json.{i}.tmp").write_text("{") for i in range(3)], "files"),
}

#: commands given to every damaged env (in this order; destroy last)
COMMANDS = [
    ("info", ["info", "--env", "{env}"]),
    ("inventory", ["inventory", "--env", "{env}"]),
    ("run", ["run", "--env", "{env}", "true"]),
    ("backup", ["backup", "--env", "{env}", "--dest", "{dest}", "/etc/hostname"]),
    ("up", ["up", "--env", "{env}", "--no-provision", "--ssh-timeout", "20"]),
    ("destroy", ["destroy", "--env", "{env}"]),
]
_HINT = re.compile(r"(enos destroy [^\n'`\"]*)")


def expect(cls: str, command: str) -> Tuple[int, ...]:
    """Exit codes a command may give on damage of class ``cls``: unreadable state, 1
    (with the way out); resources (derived data) damaged, 1 except for up and destroy,
    which may rebuild or free from the journal; journal or files damaged: 0 or 1 (what
    can be done is done, what cannot is said), never a traceback or a hang."""
    if cls == "state":
        return (1,)
    if cls == "resources":
        return (0, 1) if command in ("up", "destroy") else (1,)
    return (0, 1)


def hint_of(outcomes: List[Outcome]) -> str:
    """The ``enos destroy ...`` command the outcomes printed last (a sweep command first,
    when one was printed); '' if none."""
    found, sweep = "", ""
    for o in outcomes:
        for m in _HINT.finditer(o.stderr + "\n" + o.stdout):
            found = m.group(1).strip().rstrip(".;:,)")
            if "--sweep" in found:
                sweep = found
    return sweep or found


def one_kind(base: Path, name: str, damage: Callable[[Path], None], cls: str,
             commands=None) -> List[Outcome]:
    """Bring up a fresh env, damage it, run every command, then the printed recovery;
    return the outcomes (leftovers counted on the last one). Frees the run id at the end."""
    commands = commands or COMMANDS
    d = base / re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
    env, run_id = envs.local_env(d)
    backup = (env / "state.json").read_bytes()
    outcomes: List[Outcome] = []
    try:
        damage(env)
        for cmd, argv in commands:
            argv = [a.format(env=env, dest=d / "backup") for a in argv]
            outcomes.append(execute(Run("state", name, cmd, argv, d, expect=expect(cls, cmd),
                                        timeout=90, creates_nothing=False)))
        hint = hint_of(outcomes)
        left = probe.leftovers(run_id)
        if left and not hint:
            outcomes[-1].other.append("something is left and no command printed a way out")
        if hint:
            rec = execute(Run("state", name, "recovery", shlex.split(hint)[1:], d, expect=(0,),
                              timeout=120, creates_nothing=False))
            rec.run.command = f"recovery: {hint[:60]}"
            outcomes.append(rec)
            left = probe.leftovers(run_id)
        outcomes[-1].leftovers += left
        outcomes[-1].other += decoys_gone()
    finally:
        _cleanup(d, env, backup, run_id)
    return outcomes


def _cleanup(d: Path, env: Path, backup: bytes, run_id: str) -> None:
    for p in (env / "state.json", env / ".lock", env / "ssh_config", env / "known_hosts"):
        if p.is_symlink() or p.exists() and not p.is_file():
            _rm(env, p.name)
    (env / "state.json").write_bytes(backup)
    envs.destroy(d, env)
    probe.force_clean(run_id)


def runs_all(base: Path, only=None, progress=None) -> List[Outcome]:
    """Run every kind (or those whose name contains ``only``); return all outcomes."""
    base.mkdir(parents=True, exist_ok=True)
    out: List[Outcome] = []
    runs = [(name, damage, cls, COMMANDS) for name, (damage, cls) in KINDS.items()]
    # a damaged journal given to destroy before any up (up may rewrite the journal)
    runs += [(f"{name} (destroy first)", damage, cls, [c for c in COMMANDS if c[0] != "up"])
             for name, (damage, cls) in KINDS.items() if cls == "journal"]
    for name, damage, cls, commands in runs:
        if only and only not in name:
            continue
        try:
            res = one_kind(base, name, damage, cls, commands)
        except Exception as e:          # the harness itself failed for this kind: say so
            res = [Outcome(run=Run("state", name, "setup", [], base), rc=None, stdout="", stderr=str(e),
                           seconds=0.0, other=[f"harness: {type(e).__name__}: {e}"])]
        out += res
        if progress:
            progress(res)
    return out
