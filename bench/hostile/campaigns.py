"""Hostile campaign files: every hostile file variant, template bombs and escapes, sweeps
too large to enumerate, and every field of a campaign set to what the docs say is checked
before anything is booked. Each goes through ``enos campaign validate``, ``status``,
``report`` and ``run --env`` (an environment that is up, so no run books anything: a
campaign that gets past its checks fails at its first command, and that shows)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from hostile import files
from hostile.core import Run

RESERVATION = "provider: static\nresources:\n  db:\n    - address: 127.0.0.1\n      port: 1\n"
HEAD = "reservation: static.yaml\nparameters:\n  a: [1, 2]\n"
VALID = HEAD + "steps:\n  - run: \"echo {{ a }}\"\n    collect: stdout\nmetrics:\n  m: {regex: \"([0-9]+)\"}\n"


def _step(run: str, extra: str = "") -> str:
    return HEAD + f"steps:\n  - run: {run}\n{extra}"


#: templates in a step's command: each must be refused by validate (exit 2) without hanging
TEMPLATES = [
    ("'A' * 10^9", "\"{{ 'A' * 1000000000 }}\""),
    ("'A' * 10^7", "\"{{ 'A' * 10000000 }}\""),
    ("('A' * 10^6) * 10^3", "\"{{ ('A' * 1000000) * 1000 }}\""),
    ("[1] * 10^9", "\"{{ [1] * 1000000000 }}\""),
    # Jinja's ** is left-associative: (9 ** 9) ** 9 has 257 bits, (10 ** 10) ** 10 333
    ("9 ** 9 ** 9 (valid)", "\"{{ 9 ** 9 ** 9 }}\""),
    ("10 ** 10 ** 10 (valid)", "\"{{ 10 ** 10 ** 10 }}\""),
    ("9 ** (9 ** 9)", "\"{{ 9 ** (9 ** 9) }}\""),
    ("namespace doubling", "\"{% set ns = namespace(s='A') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}x\""),
    ("tuple of 10^5 strings joined", "\"{{ ((('A' * 100000),) * 100000) | join }}\""),
    ("replace to 10^10 chars", "\"{{ ('a' * 100000).replace('a', 'b' * 100000) }}\""),
    ("replace filter to 10^10 chars", "\"{{ ('a' * 100000) | replace('a', 'b' * 100000) }}\""),
    ("format width 10^9", "\"{{ '{:>1000000000}'.format(1) }}\""),
    ("%-format width 10^9", "\"{{ '%1000000000d' % 1 }}\""),
    ("center(10^9)", "\"{{ 'a' | center(1000000000) }}\""),
    ("ljust(10^9)", "\"{{ 'a'.ljust(1000000000) }}\""),
    ("zfill(10^9)", "\"{{ 'a'.zfill(1000000000) }}\""),
    ("indent(10^9)", "\"{{ 'a\\nb' | indent(1000000000) }}\""),
    ("range(10^9) joined", "\"{{ range(1000000000) | join(',') }}\""),
    ("lipsum(10^6)", "\"{{ lipsum(1000000) }}\""),
    ("nested loops 10^5 x 10^5", "\"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x\""),
    ("loops over 10^6-char strings", "\"{% for i in 'A' * 1000000 %}{% for j in 'A' * 1000000 %}{% endfor %}{% endfor %}x\""),
    ("output loop 10^5 x 10^4 chars", "\"{% for i in range(100000) %}{{ 'A' * 10000 }}{% endfor %}\""),
    ("recursive macro", "\"{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}\""),
    ("class list (sandbox escape)", "\"{{ ''.__class__.__mro__[1].__subclasses__() }}\""),
    ("globals through cycler", "\"{{ cycler.__init__.__globals__.os.popen('touch /tmp/enos-hostile-pwned').read() }}\""),
    ("joiner globals", "\"{{ joiner.__init__.__globals__ }}\""),
    ("self.__init__", "\"{{ self.__init__.__globals__ }}\""),
    ("namespace mutation", "\"{{ namespace.__init__.__globals__ }}\""),
    ("format attr escape", "\"{{ '{0.__class__.__mro__}'.format('') }}\""),
    ("include a file", "\"{% include '/etc/passwd' %}\""),
    ("import a module", "\"{% import 'os' as os %}x\""),
    ("extends", "\"{% extends '/etc/hostname' %}\""),
    ("undefined variable", "\"echo {{ nope }}\""),
    ("syntax error", "\"echo {{ a \""),
    ("setup using a parameter", "\"echo {{ a }}\"\nsetup:\n  - run: \"echo {{ a }}\""),
    ("hosts role that is not one", "\"echo {{ hosts.nope[0].address }}\""),
    ("NUL in command", "\"echo a\\0b\""),
    ("1 MB command", "\"" + "A" * 900_000 + "\""),
]

#: whole campaign texts that must be refused (name, text, words in the error)
CAMPAIGNS: List[Tuple[str, str, str]] = [
    ("20 parameters x 10 values (10^20)", "reservation: static.yaml\nparameters:\n"
     + "".join(f"  p{i}: [0,1,2,3,4,5,6,7,8,9]\n" for i in range(20)) + "steps:\n  - run: \"true\"\n", "parameters"),
    ("8 parameters x 10 values (10^8)", "reservation: static.yaml\nparameters:\n"
     + "".join(f"  p{i}: [0,1,2,3,4,5,6,7,8,9]\n" for i in range(8)) + "steps:\n  - run: \"true\"\n", "parameters"),
    ("repeat 10^12", HEAD + "repeat: 1000000000000\nsteps:\n  - run: \"true\"\n", "repeat"),
    ("repeat 10^20", HEAD + "repeat: 99999999999999999999\nsteps:\n  - run: \"true\"\n", "repeat"),
    ("repeat 10^7 (2x10^7 runs)", HEAD + "repeat: 10000000\nsteps:\n  - run: \"true\"\n", "repeat"),
    ("repeat NaN", HEAD + "repeat: .nan\nsteps:\n  - run: \"true\"\n", "repeat"),
    ("repeat 0", HEAD + "repeat: 0\nsteps:\n  - run: \"true\"\n", "repeat"),
    ("repeat 1.5", HEAD + "repeat: 1.5\nsteps:\n  - run: \"true\"\n", "repeat"),
    ("step timeout NaN", _step("\"true\"", "    timeout: .nan\n"), "timeout"),
    ("step timeout inf", _step("\"true\"", "    timeout: .inf\n"), "timeout"),
    ("step timeout 1e400", _step("\"true\"", "    timeout: 1e400\n"), "timeout"),
    ("step timeout 10^20", _step("\"true\"", "    timeout: 99999999999999999999\n"), "timeout"),
    ("step timeout -1", _step("\"true\"", "    timeout: -1\n"), "timeout"),
    ("step timeout 'x'", _step("\"true\"", "    timeout: x\n"), "timeout"),
    ("setup timeout NaN", HEAD + "setup:\n  - run: \"true\"\n    timeout: .nan\nsteps:\n  - run: \"true\"\n", "timeout"),
    ("roles [nope]", _step("\"true\"", "    roles: [nope]\n"), "nope"),
    ("roles nope", _step("\"true\"", "    roles: nope\n"), "nope"),
    ("setup roles [nope]", HEAD + "setup:\n  - run: \"true\"\n    roles: [nope]\nsteps:\n  - run: \"true\"\n", "nope"),
    ("roles ''", _step("\"true\"", "    roles: ''\n"), "roles"),
    ("roles [[]]", _step("\"true\"", "    roles: [[]]\n"), "roles"),
    ("python metric nomod:f", _step("\"echo 1\"", "    collect: stdout\nmetrics:\n  m: {python: \"nomod:f\"}\n"), "nomod"),
    ("python metric os:nope", _step("\"echo 1\"", "    collect: stdout\nmetrics:\n  m: {python: \"os:nope\"}\n"), "has no function 'nope'"),
    ("python metric bad syntax", _step("\"echo 1\"", "    collect: stdout\nmetrics:\n  m: {python: \"a b\"}\n"), "python"),
    ("metric regex 2 groups", _step("\"echo 1\"", "    collect: stdout\nmetrics:\n  m: {regex: \"(a)(b)\"}\n"), "regex"),
    ("metric regex invalid", _step("\"echo 1\"", "    collect: stdout\nmetrics:\n  m: {regex: \"(\"}\n"), "regex"),
    ("metric scale NaN", _step("\"echo 1\"", "    collect: stdout\nmetrics:\n  m: {regex: \"(1)\", scale: .nan}\n"), "scale"),
    ("metric scale inf", _step("\"echo 1\"", "    collect: stdout\nmetrics:\n  m: {regex: \"(1)\", scale: .inf}\n"), "scale"),
    ("metric from nothing", _step("\"echo 1\"", "    collect: stdout\nmetrics:\n  m: {regex: \"(1)\", from: x}\n"), "from"),
    ("parameter named repeat", "reservation: static.yaml\nparameters:\n  repeat: [1]\nsteps:\n  - run: \"true\"\n", "repeat"),
    # a plain variable name inside the sandbox (attributes like .__class__ are what it refuses)
    ("parameter named __class__ (valid)", "reservation: static.yaml\nparameters:\n  __class__: [1]\nsteps:\n  - run: \"true\"\n", "VALID"),
    ("parameter value of 1000 chars", "reservation: static.yaml\nparameters:\n  a: [" + "x" * 1000 + "]\nsteps:\n  - run: \"true\"\n", "a"),
    ("parameter value NaN", "reservation: static.yaml\nparameters:\n  a: [.nan]\nsteps:\n  - run: \"true\"\n", "a"),
    ("parameter value inf", "reservation: static.yaml\nparameters:\n  a: [.inf]\nsteps:\n  - run: \"true\"\n", "a"),
    ("parameter with 200000 values", "reservation: static.yaml\nparameters:\n  a: [" + ",".join(map(str, range(200000)))
     + "]\nsteps:\n  - run: \"true\"\n", "a"),
    ("values that collide as dir names", "reservation: static.yaml\nparameters:\n  a: [\"x/y\", \"x_y\"]\n"
     "steps:\n  - run: \"true\"\n", "a"),
    ("exclude unknown parameter", HEAD + "exclude:\n  - {b: 1}\nsteps:\n  - run: \"true\"\n", "b"),
    ("exclude everything", HEAD + "exclude:\n  - {a: [1, 2]}\nsteps:\n  - run: \"true\"\n", "empty"),
    ("5000 exclude rules", "reservation: static.yaml\nparameters:\n  a: [" + ",".join(map(str, range(5000)))
     + "]\n  b: [1, 2]\nexclude:\n" + "".join(f"  - {{a: {i}, b: 1}}\n" for i in range(5000))
     + "steps:\n  - run: \"true\"\n", "VALID"),
    ("reservation missing", HEAD.replace("static.yaml", "nope.yaml") + "steps:\n  - run: \"true\"\n", "nope.yaml"),
    ("reservation a directory", HEAD.replace("static.yaml", "adir") + "steps:\n  - run: \"true\"\n", "adir"),
    ("reservation /dev/zero", HEAD.replace("static.yaml", "/dev/zero") + "steps:\n  - run: \"true\"\n", "/dev/zero"),
    ("reservation a FIFO", HEAD.replace("static.yaml", "afifo") + "steps:\n  - run: \"true\"\n", "afifo"),
    ("reservation inline, 10^20 nodes", "reservation:\n  provider: local\n  resources:\n    local:\n"
     "      db: 99999999999999999999\nparameters:\n  a: [1]\nsteps:\n  - run: \"true\"\n", "db"),
    ("reservation inline, subnet 224.0.0.0/24", "reservation:\n  provider: {type: local, subnet: 224.0.0.0/24}\n"
     "  resources:\n    local:\n      db: 1\nparameters:\n  a: [1]\nsteps:\n  - run: \"true\"\n", "subnet"),
    ("default_delay 10^20 ms", HEAD + "network_constraints:\n  default_delay: 99999999999999999999ms\n"
     "steps:\n  - run: \"true\"\n", "default_delay"),
    ("default_rate NaN", HEAD + "network_constraints:\n  default_rate: .nan\nsteps:\n  - run: \"true\"\n",
     "default_rate"),
    ("network_constraints bomb", HEAD + "network_constraints:\n  default_delay: \"{{ '1' * 1000000000 }}ms\"\n"
     "steps:\n  - run: \"true\"\n", "default_delay"),
    ("collect file bomb", _step("\"true\"", "    collect:\n      files: [\"{{ 'A' * 1000000000 }}\"]\n"), "files"),
    ("setup play missing", HEAD + "setup:\n  - play: nope.yml\nsteps:\n  - run: \"true\"\n", "nope.yml"),
    ("setup play a directory", HEAD + "setup:\n  - play: adir\nsteps:\n  - run: \"true\"\n", "adir"),
    ("setup play /dev/zero", HEAD + "setup:\n  - play: /dev/zero\nsteps:\n  - run: \"true\"\n", "/dev/zero"),
    ("setup play a FIFO", HEAD + "setup:\n  - play: afifo\nsteps:\n  - run: \"true\"\n", "afifo"),
    ("monitor 'yes'", HEAD + "monitor: \"yes\"\nsteps:\n  - run: \"true\"\n", "monitor"),
    ("unknown key", HEAD + "stepz: []\nsteps:\n  - run: \"true\"\n", "stepz"),
    ("name of 100000 chars", "name: " + "n" * 100000 + "\n" + HEAD + "steps:\n  - run: \"true\"\n", "name"),
    ("10000 steps", HEAD + "steps:\n" + "  - run: \"true\"\n" * 10000, "steps"),
]


#: what 'campaign status' does not check (it reads the file only)
NEEDS_RESERVATION = ("roles [nope]", "roles nope", "setup roles [nope]", "hosts role that is not one",
                     "subnet 224.0.0.0/24", "default_delay 10^20 ms", "reservation inline, 10^20 nodes")
#: what 'campaign run --env' does not use: the campaign's own reservation
WITH_ENV_UNUSED = ("subnet 224.0.0.0/24", "default_delay 10^20 ms", "hosts role that is not one")


def runs(d: Path, env_dir: Path) -> List[Run]:
    """Write every hostile campaign under ``d`` and return its runs."""
    import os
    cd = d / "campaigns"
    cd.mkdir()
    (cd / "static.yaml").write_text(RESERVATION)
    (cd / "adir").mkdir()
    os.mkfifo(cd / "afifo")
    out: List[Run] = []

    def four(name, path, words=()):
        valid = "(valid)" in name or "VALID" in words
        either = any(name.endswith(e) for e in files.EITHER)
        words = () if valid or either else words
        own = Path(path).stem + "."          # its results dir: <stem>.results
        bad = (0, 2) if either else (2,)
        for cmd in ("validate", "status"):
            # status reads the file, not the reservation nor the roles (test_bounded_inputs'
            # NEEDS_RESERVATION): those it may accept
            expect = (0,) if valid else (0, 2) if cmd == "status" and name.endswith(NEEDS_RESERVATION) else bad
            out.append(Run("campaign", name, cmd, ["campaign", cmd, path], cd, expect=expect,
                           words=words if expect == (2,) else (), creates_nothing=True, own=own))
        # report of a campaign with no run yet: exit 2, 'no runs ... yet' (report reads the
        # file, not the reservation nor the roles, like status)
        lax = valid or name.endswith(NEEDS_RESERVATION)
        out.append(Run("campaign", name, "report", ["campaign", "report", path], cd, expect=(2,),
                       words=("no runs",) if valid else () if lax else words, creates_nothing=True, own=own))
        # a campaign that passes its checks gets to its first command, on a host that refuses
        # connections: exit 1 (--stop-on-error: at the first run), its results dir made; with
        # --env the campaign's reservation is not used (nor checked)
        may_run = valid or either or name.endswith(WITH_ENV_UNUSED)
        expect = (1,) if valid else (1, 2) if may_run else bad
        out.append(Run("campaign", name, "run", ["campaign", "run", path, "--env", str(env_dir), "--stop-on-error"],
                       cd, expect=expect, words=words if expect == (2,) else (), creates_nothing=not may_run,
                       own=own))

    for name, path in files.place(cd, "file", VALID):
        four(f"file: {name}", path)
    for i, (name, run) in enumerate(TEMPLATES):
        p = cd / f"template-{i}.yaml"
        p.write_text(_step(run))
        four(f"template: {name}", p.name)
    for i, (name, text, words) in enumerate(CAMPAIGNS):
        p = cd / f"campaign-{i}.yaml"
        p.write_text(text)
        four(f"campaign: {name}", p.name, words=(words,) if words else ())
    # every 'run' last: a file's run (which makes its results) never beside its own report
    return sorted(out, key=lambda r: r.command == "run")
