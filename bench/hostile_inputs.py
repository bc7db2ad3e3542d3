"""How fast enos refuses hostile input (issue 11): each case is one ``python -m enos``
process, timed from start to exit; every one must exit 2 (or 0 where the input is valid
and bounded, e.g. a /8 static network) with a one-line error and no traceback.

    .venv/bin/python bench/hostile_inputs.py [--repeat 3]

Prints a table: case, exit code, median wall time, the first words of the error. The
baseline is the same interpreter's ``enos --version`` (start-up cost), measured in the same
run; the refusal itself costs the difference.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATIC = "provider: static\nresources:\n  db:\n    - address: 10.0.0.3\n"


def _bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return STATIC + "bomb:\n" + "".join(f"  {x}\n" for x in lines)


def cases(d: Path):
    """Yield (name, argv) after writing the files they need into ``d``."""
    (d / "static.yaml").write_text(STATIC)
    (d / "bomb.yaml").write_text(_bomb())
    (d / "topo.yaml").write_text("provider: g5k\ntopology:\n  g[1-100000000]:\n    paravance:\n      compute: 1\n")
    for name, cidr in (("net8.yaml", "10.0.0.0/8"), ("net1.yaml", "0.0.0.0/1")):
        (d / name).write_text(f"provider:\n  type: static\n  networks:\n    - cidr: {cidr}\n"
                              "resources:\n  db:\n    - address: 10.0.0.3\n")
    with open(d / "big.yaml", "w") as f:
        f.write(STATIC + "# padding\n" * (5 << 20))
    fifo = d / "fifo.yaml"
    if not fifo.exists():
        os.mkfifo(fifo)
    (d / "inject.yaml").write_text('provider: static\nresources:\n  db:\n'
                                   '    - address: "127.0.0.1\\n  ProxyCommand touch /tmp/enos-pwned"\n')
    yield "baseline: enos --version", ["--version"]
    yield "baseline: validate a valid file", ["validate", "-f", "static.yaml"]
    yield "YAML alias bomb (1 KB)", ["validate", "-f", "bomb.yaml"]
    yield "topology g[1-100000000]", ["validate", "-f", "topo.yaml"]
    yield "static cidr 10.0.0.0/8 (valid)", ["validate", "-f", "net8.yaml"]
    yield "static cidr 0.0.0.0/1 (valid)", ["validate", "-f", "net1.yaml"]
    yield "50 MB reservation", ["validate", "-f", "big.yaml"]
    yield "-f /dev/zero", ["validate", "-f", "/dev/zero"]
    yield "-f a FIFO", ["validate", "-f", "fifo.yaml"]
    yield "address with ProxyCommand line", ["validate", "-f", "inject.yaml"]
    for v in ("abc", "nan", "1e400", "-5"):
        yield f"--ssh-timeout {v}", ["up", "-f", "static.yaml", f"--ssh-timeout={v}"]
    yield "run --timeout abc", ["run", "--timeout", "abc", "true"]
    yield "up --env /proc/x", ["up", "-f", "static.yaml", "--env", "/proc/x"]
    yield "new -o /nodir/x.yaml", ["new", "-o", "/nodir/x.yaml"]
    yield "new -o DIR --force", ["new", "-o", str(d), "--force"]
    yield "new -o /dev/full --force", ["new", "-o", "/dev/full", "--force"]
    yield "validate -o xml", ["validate", "-f", "static.yaml", "-o", "xml"]
    yield "destroy --sweep --run-id 21", ["destroy", "--sweep", "--run-id", "21", "-f", "static.yaml"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="enos-hostile-bench-") as tmp:
        d = Path(tmp)
        for name, argv in cases(d):
            times, rc, err = [], None, ""
            for _ in range(args.repeat):
                t = time.perf_counter()
                p = subprocess.run([sys.executable, "-m", "enos", *argv], cwd=d, capture_output=True,
                                   text=True, timeout=120, stdin=subprocess.DEVNULL)
                times.append(time.perf_counter() - t)
                rc, err = p.returncode, (p.stderr.strip().splitlines() or [""])[-1]
                assert "Traceback" not in p.stderr, p.stderr
            rows.append((name, rc, statistics.median(times), err))
    w = max(len(r[0]) for r in rows)
    print(f"{'case':<{w}}  exit  median s  message")
    for name, rc, t, err in rows:
        short = err.replace(str(Path(tempfile.gettempdir())), "$TMP")
        print(f"{name:<{w}}  {rc:>4}  {t:8.3f}  {short[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
