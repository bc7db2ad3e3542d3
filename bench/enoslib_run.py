"""EnOSlib baseline of bench/run.py: runs inside EnOSlib's own virtualenv (bench/.work/enoslib-venv).

Usage: enoslib_run.py HOSTS.json COMMAND [WARMUP]
HOSTS.json: [{"alias", "address", "user", "keyfile", "known_hosts"}...]. Builds EnOSlib
``Host`` objects for the same hosts (same key, same known_hosts, host keys pinned by alias),
times ``import enoslib`` and, separately, ``enoslib.run_command(COMMAND, roles=...)`` (after
WARMUP untimed calls, default 0), and prints one JSON line:
{"import_s", "run_s", "ok", "hosts", "version"}. Exits 1 if a host did not answer.
"""
import json
import sys
import time


def main() -> int:
    """Run the baseline once; return the exit code (0 when every host answered)."""
    spec = json.load(open(sys.argv[1]))
    command = sys.argv[2]
    warmup = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    t0 = time.perf_counter()
    import enoslib as en
    t_import = time.perf_counter() - t0
    en.init_logging(level=40) if hasattr(en, "init_logging") else None
    hosts = []
    for h in spec:
        args = (f"-o UserKnownHostsFile={h['known_hosts']} -o HostKeyAlias={h['alias']} "
                f"-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes")
        hosts.append(en.Host(h["address"], alias=h["alias"], user=h["user"], keyfile=h["keyfile"],
                             extra={"ansible_ssh_common_args": args}))
    roles = en.Roles({"all": hosts})
    for _ in range(warmup):
        en.run_command(command, roles=roles)
    t1 = time.perf_counter()
    results = en.run_command(command, roles=roles)
    t_run = time.perf_counter() - t1
    ok = sum(1 for r in results if getattr(r, "rc", None) == 0 and getattr(r, "status", "OK") == "OK")
    print(json.dumps({"import_s": t_import, "run_s": t_run, "ok": ok, "hosts": len(hosts),
                      "version": getattr(en, "__version__", "?")}))
    return 0 if ok == len(hosts) else 1


if __name__ == "__main__":
    sys.exit(main())
