"""enos — book testbed machines, provision them with Ansible, give them back.

Usage:
  enos [-v | -vv | -q] <command> [<args>...]
  enos help [<command>]
  enos --version
  enos -h | --help

Commands:
  up          book the resources of a reservation.yaml, wait for SSH, provision them
  destroy     release everything an environment booked
  info        show an environment: hosts, roles, networks, reservation state
  validate    check a reservation.yaml without booking anything
  new         write a commented reservation.yaml for a provider
  check       say what a provider needs on this machine and whether it is there
  inventory   print the Ansible inventory of an environment
  ssh         open a shell (or run a command) on one host of an environment
  run         run a command on the hosts of an environment, in parallel
  backup      bring files and directories home from the hosts, in parallel
  extend      ask the testbed for more time on a reservation
  tc          apply the reservation's network_constraints (delay, rate, loss between
              groups), remove them (--reset) or measure them (--test)
  build       build a base image for a provider (e.g. enos build libvirt)
  campaign    run a benchmark campaign (a resumable parameter sweep), see its status, report it

Options:
  -v, --verbose  more logs, and a traceback on errors; -vv for debug logs
  -q, --quiet    no progress display, only errors
  --version      print the version and exit
  -h, --help     show this help

Exit codes:
  0    success
  1    a run-time failure (testbed refusal, hosts unreachable, provisioning failed, ...)
  2    a usage or configuration error (nothing was booked)
  130  interrupted (Ctrl-C or SIGTERM): 'enos destroy' frees what was booked,
       'enos up' resumes

Environments:
  'enos up' creates ./enos_<UTC timestamp>/ (state, ssh_config, known_hosts, inventory,
  keys) and points ./current at it; the other commands use ./current unless --env DIR
  names another. -v/-q may be given anywhere on the command line.

Run 'enos help <command>' for a command's options.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

from docopt import DocoptExit, docopt

from enos import __version__

log = logging.getLogger("enos")

CMD_UP = """Book the resources of a reservation, wait until every host answers SSH, provision them.

Re-running 'enos up' on an environment that is not destroyed resumes it: what was booked is
found again (never booked twice) and the provisioning runs again (it is idempotent).

Usage:
  enos up [-f FILE] [--env DIR] [--force-deploy] [--tags TAGS] [--no-provision] [--ssh-timeout S]

Options:
  -f FILE          the reservation file [default: reservation.yaml]
  --env DIR        environment directory (default: resume ./current unless destroyed,
                   else create ./enos_<UTC timestamp>)
  --force-deploy   install the OS image again even on machines already running it
                   (providers with the deploy_os capability)
  --tags TAGS      run only the Ansible tasks with these comma-separated tags
  --no-provision   stop once the hosts answer SSH (no Ansible run)
  --ssh-timeout S  seconds to wait for every host to answer SSH [default: 600]
"""

CMD_DESTROY = """Release everything an environment booked, using only its saved state.

Safe to run twice, and after a crash or Ctrl-C at any moment of 'enos up'.

Freeing comes first: on a full or read-only disk the resources are still freed, and
the record of it is retried (exit 1 if it could not be written: run it again later).
If the testbed does not answer (e.g. a libvirt URI that is unreachable), destroy says
what may remain where, exits 1 and stays retryable.

Usage:
  enos destroy [--env DIR] [--sweep]
  enos destroy --sweep --run-id ID [-f FILE]
  enos destroy --forget [--env DIR]

Options:
  --env DIR    environment directory [default: current]
  --sweep      also find and remove resources tagged with the run id that the state does
               not list (providers with the sweep capability)
  --run-id ID  sweep the resources of this run id (when the env dir is gone or its
               state.json is damaged): the full 8-character id 'enos info' shows,
               matched exactly; it is also in the name of the env's local-ID/ dir, in
               ssh/id_ed25519.pub, and in the error enos printed
  -f FILE      reservation file naming the provider for --run-id [default: reservation.yaml]
  --forget     free nothing and mark the environment destroyed: for resources you know
               are gone (a deleted VM host, an expired job). Prints what its journal
               still listed, so you can check by hand.
"""

CMD_INFO = """Show an environment: phase, hosts and their roles, networks, provider details
(e.g. the remaining walltime of Grid'5000 jobs).

With --facts: per host, the interfaces with their addresses and the env network each
belongs to, CPUs, memory, OS, kernel, whether the kernel has netem (needed for delay/loss
in network_constraints) and the measuring tools installed. Gathered once over SSH and
cached in the env state; --refresh gathers them again.

Usage:
  enos info [--env DIR] [-o FORMAT] [--facts [--refresh]]

Options:
  --env DIR            environment directory [default: current]
  -o, --output FORMAT  text, json or yaml [default: text]
  --facts              show the hosts' facts instead
  --refresh            gather the facts again instead of using the cached ones
"""

CMD_VALIDATE = """Check a reservation file (syntax, schema, provider section, playbook paths)
without booking anything. Errors name the file, the line and the key.

Usage:
  enos validate [-f FILE] [-o FORMAT]

Options:
  -f FILE              the reservation file [default: reservation.yaml]
  -o, --output FORMAT  text or json (the normalised reservation) [default: text]
"""

CMD_NEW = """Write a commented reservation.yaml for a provider.

Usage:
  enos new [--provider TYPE] [-o FILE] [--force]
  enos new --list

Options:
  --provider TYPE  provider type [default: local]
  -o FILE          where to write it ('-' for stdout) [default: reservation.yaml]
  --force          overwrite an existing file
  --list           list the available providers
"""

CMD_CHECK = """Say what the reservation's provider needs on this machine (binaries, daemons,
credentials, privileges) and whether it is there, with the exact command that fixes each
gap. Books nothing. Exit 1 if something is MISSING; a warning (e.g. no usable KVM: VMs run
under QEMU emulation) still exits 0.

Usage:
  enos check [-f FILE] [--provider TYPE]

Options:
  -f FILE          the reservation file [default: reservation.yaml]
  --provider TYPE  check this provider's needs without a reservation file
"""

CMD_INVENTORY = """Print the Ansible inventory of an environment (YAML; one group per role).

It goes through the env's ssh_config, so a plain Ansible works with it:
  enos inventory > hosts.yml && ansible -i hosts.yml all -m ping

Usage:
  enos inventory [--env DIR] [--path]

Options:
  --env DIR  environment directory [default: current]
  --path     print the path of the inventory file instead of its content
"""

CMD_SSH = """Open an SSH session on a host of an environment (or run a command there).

Usage:
  enos ssh [--env DIR] HOST [<command>...]

Options:
  --env DIR  environment directory [default: current]
"""

CMD_RUN = """Run a shell command on the hosts of an environment, in parallel.

Exits 1 with a summary naming the hosts if the command fails anywhere (unless
--tolerate-failures).

Usage:
  enos run [--env DIR] [--roles ROLES] [--timeout S] [--tolerate-failures] [-o FORMAT] CMD

Options:
  --env DIR            environment directory [default: current]
  --roles ROLES        comma-separated roles (or host aliases) to run on [default: all]
  --timeout S          seconds before the command is killed on a host
  --tolerate-failures  exit 0 even if the command fails on some hosts
  -o, --output FORMAT  text or json [default: text]
"""

CMD_BACKUP = """Bring files and directories home from the hosts of an environment, in parallel.

One tar stream per host through its SSH connection master; PATHs land in
DEST/<alias>/<path> (absolute paths keep their full path, relative ones start in the
remote user's home). Prints per host the size fetched and the paths that were missing
there. Names with spaces or newlines are safe. Exits 1 if a host's transfer failed (a
missing path alone is reported, not a failure).

Usage:
  enos backup [--env DIR] [--roles ROLES] [--dest DIR] [--timeout S] [--sudo] [-o FORMAT] PATH...

Options:
  --env DIR            environment directory [default: current]
  --roles ROLES        comma-separated roles (or host aliases) to fetch from [default: all]
  --dest DIR           where to put the files (default: <env>/backup)
  --timeout S          seconds before a host's transfer is given up
  --sudo               read the files as root (sudo -n) on hosts whose user is not root
  -o, --output FORMAT  text or json [default: text]
"""

CMD_EXTEND = """Ask the testbed for more time on the reservation of an environment.

Usage:
  enos extend --walltime WALLTIME [--env DIR]

Options:
  --walltime WALLTIME  time to add, as +H:MM[:SS] (e.g. +1:30)
  --env DIR            environment directory [default: current]
"""

CMD_BUILD = """Build a base image for a provider (cached; rebuilt only when its recipe changes).

Usage:
  enos build libvirt [--output DIR] [--cache DIR] [--force]
  enos build vagrant [--cache DIR] [--force] [--box NAME]

  libvirt: the Debian image of the libvirt provider (needs root, ~40 s).
  vagrant: a libvirt Vagrant box made from that image, added with 'vagrant box add'
           (the default box of the vagrant provider; needs vagrant, ~1 min).

Options:
  --output DIR  where to put the image (default: the cache)
  --cache DIR   image cache directory [default: ~/.cache/enos/images]
  --force       rebuild even if a cached image (or an installed box) matches
  --box NAME    name of the Vagrant box [default: enos/debian12]
"""

CMD_TC = """Shape the network between groups of hosts as the reservation's network_constraints
ask (delay, rate, loss; Enos' format, see docs/network-constraints.md), with Linux tc on
every host in parallel: an htb class per destination group, a netem qdisc for delay and
loss, a u32 filter per destination address, on the interface of the network named by the
constraint (default: the one SSH uses). Idempotent; what was applied is recorded in the
env state. 'enos up' does it too when network_constraints.enable is true.

  enos tc             apply (again) the constraints
  enos tc --test      measure RTT, throughput and loss between every two groups and print
                      requested vs measured; exit 1 when outside the tolerance
  enos tc --reset     remove exactly what enos applied
  enos tc --dry-run   print the tc commands per host, change nothing

Delay and loss need the kernel module sch_netem on the hosts (refused otherwise, before
anything is changed); rate limits need only htb.

Usage:
  enos tc [--env DIR] [-f FILE] [--reset | --dry-run] [--test] [-o FORMAT]

Options:
  --env DIR            environment directory [default: current]
  -f FILE              take network_constraints from this reservation file instead of the
                       one the environment was created with
  --reset              remove the tc trees enos applied (only those)
  --test               measure and compare with the constraints (applies nothing)
  --dry-run            print the commands without running them
  -o, --output FORMAT  text or json [default: text]
"""

CMD_CAMPAIGN = """Benchmark campaigns: the same steps over every combination of parameters, on the hosts
of an environment, repeated, resumable, ending in a table, figures and a report.

  run     bring the reservation up (or use --env), run 'setup' once, then every
          combination x repetition; killed at any moment (kill -9 included), the same
          command resumes: finished runs are never redone, the one in progress is redone.
          A failed run is recorded with its error and the campaign goes on. Exit 1 if
          some runs failed, 0 when all are done.
  status  done / remaining / in progress / failed counts, elapsed time, the failures
  report  DIR/results.csv, DIR/figures/<metric>-vs-<parameter>.png, DIR/report.html

The results go to DIR (default: <campaign file stem>.results/ beside the file):
DIR/runs/<combination>/<repeat>/ holds params.json, timing.json, each host's stdout,
stderr and collected files, and monitor.csv. The file format is in docs/campaigns.md.

Usage:
  enos campaign run FILE [--results DIR] [--env DIR] [--stop-on-error] [--destroy]
  enos campaign status FILE [--results DIR] [-o FORMAT]
  enos campaign report FILE [--results DIR]
  enos campaign validate FILE

Options:
  --results DIR        results directory (default: <file stem>.results beside FILE)
  --env DIR            run on this environment (already up) instead of the campaign's reservation
  --stop-on-error      stop at the first failed run (default: record it and go on)
  --destroy            give the reservation back at the end (not with --env)
  -o, --output FORMAT  text or json [default: text]
"""

COMMANDS = {
    "up": CMD_UP, "destroy": CMD_DESTROY, "info": CMD_INFO, "validate": CMD_VALIDATE,
    "new": CMD_NEW, "check": CMD_CHECK, "inventory": CMD_INVENTORY, "ssh": CMD_SSH,
    "run": CMD_RUN, "backup": CMD_BACKUP, "extend": CMD_EXTEND, "build": CMD_BUILD, "tc": CMD_TC,
    "campaign": CMD_CAMPAIGN,
}


def _progress(quiet: bool):
    from enos.progress import QUIET, Progress
    return Progress(mode=QUIET) if quiet else Progress()


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


#: the longest wait a command line may ask for (30 days)
MAX_SECONDS = 30 * 86400.0


def _seconds(option: str, value) -> Optional[float]:
    """Return ``value`` (text from the command line) as a number of seconds, or None when
    not given. Raises UsageError unless it is a finite number > 0 and at most
    :data:`MAX_SECONDS`."""
    import math
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise _usage(f"{option}: expected a number of seconds, got '{value}'") from None
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_SECONDS:
        raise _usage(f"{option}: expected a number of seconds between 0 and {MAX_SECONDS:.0f} "
                     f"(30 days), got '{value}'")
    return seconds


def _format(args, allowed) -> str:
    """Return the ``-o`` value. Raises UsageError unless it is one of ``allowed``."""
    fmt = args["--output"]
    if fmt not in allowed:
        raise _usage(f"--output must be {', '.join(allowed[:-1])} or {allowed[-1]}, not '{fmt}'")
    return fmt


def _env_arg(args) -> Optional[str]:
    env = args.get("--env")
    return None if env in (None, "current") else env


# --- commands ------------------------------------------------------------------------

def cmd_up(args, g) -> int:
    from enos.experiment.env import up
    ssh_timeout = _seconds("--ssh-timeout", args["--ssh-timeout"])
    p = _progress(g["quiet"])
    env = up(args["-f"], keep=True, env=_env_arg(args), force_deploy=args["--force-deploy"],
             tags=args["--tags"], progress=p, verbose=g["verbose"] > 0,
             provision=not args["--no-provision"], ssh_timeout=ssh_timeout)
    p.info(f"ready: {len(env.hosts)} host(s) in {env.env_dir} (run {env.run_id}); "
           f"'enos info' to see them, 'enos destroy' to give them back")
    return 0


def cmd_destroy(args, g) -> int:
    from enos import task
    p = _progress(g["quiet"])
    if args["--run-id"]:
        removed = task.sweep_run(args["-f"], args["--run-id"], progress=p)
        p.info(f"swept {len(removed)} resource(s) of run {args['--run-id']}")
        for r in removed:
            _out(r)
        return 0
    from enos.experiment.env import destroy
    env = destroy(_env_arg(args), sweep=args["--sweep"], progress=p, forget=args["--forget"])
    p.info(f"{'forgot' if args['--forget'] else 'destroyed'} run {env.run_id} ({env.env_dir})")
    return 0


def _info_text(d: dict) -> List[str]:
    from enos.tables import details, table
    lines = [f"environment  {d['env_dir']}", f"run id       {d['run_id']}",
             f"provider     {d['provider']}", f"phase        {d['phase']}",
             f"reservation  {d['config_file']}", f"ssh          ssh -F {d['ssh_config']} ALIAS",
             f"inventory    {d['inventory']}", ""]
    if d["hosts"]:
        lines += table([[h["alias"], h["address"], h["roles"]] for h in d["hosts"]],
                       ["HOST", "ADDRESS", "ROLES"])
    elif d["phase"] == "destroyed":
        lines.append("no hosts (destroyed)")
    elif d["phase"] in ("booking", "destroying"):
        lines.append(f"no hosts yet: 'enos {'up' if d['phase'] == 'booking' else 'destroy'}' was "
                     f"interrupted while {d['phase']}; the provider's journal below lists what "
                     f"exists ('enos up' resumes, 'enos destroy' frees it)")
    else:
        lines.append("no hosts")
    if d["networks"]:
        rows = []
        for n in d["networks"]:
            rs = n.get("ranges") or []
            rows.append([n.get("name") or "-", n["cidr"], n.get("gateway"), n.get("dns"),
                         f"{rs[0][0]}..{rs[-1][1]} ({n.get('size')} free)" if rs else "none free"])
        lines += [""] + table(rows, ["NETWORK", "CIDR", "GATEWAY", "DNS", "IP POOL"])
    info = d.get("provider_info") or {}
    if info:
        lines += ["", f"{d['provider']} details:"] + details(info, indent="  ")
    return lines


def cmd_info(args, g) -> int:
    from enos.experiment.env import load_or_current
    if args["--facts"]:
        return _info_facts(args)
    fmt = _format(args, ("text", "json", "yaml"))
    d = load_or_current(_env_arg(args)).info()
    if fmt == "json":
        _out(json.dumps(d, indent=2))
    elif fmt == "yaml":
        import yaml
        _out(yaml.safe_dump(d, sort_keys=False))
    elif fmt == "text":
        _out("\n".join(_info_text(d)))
    else:
        raise _usage(f"--output must be text, json or yaml, not '{fmt}'")
    return 0


def _info_facts(args) -> int:
    from enos.experiment.env import load_or_current
    from enos.experiment.facts import facts_table
    fmt = _format(args, ("text", "json", "yaml"))
    facts = load_or_current(_env_arg(args)).facts(refresh=args["--refresh"])
    if fmt == "json":
        _out(json.dumps(facts, indent=2))
    elif fmt == "yaml":
        import yaml
        _out(yaml.safe_dump(facts, sort_keys=False))
    else:
        _out(facts_table(facts))
    return 0


def cmd_tc(args, g) -> int:
    from enos.experiment import netprobe, tc
    from enos.experiment.env import load_or_current
    fmt = _format(args, ("text", "json"))
    env = load_or_current(_env_arg(args), quiet=g["quiet"])
    constraints = None
    if args["-f"]:
        from enos.task import load_reservation
        config = load_reservation(args["-f"])
        if config.network_constraints is None:
            raise _usage(f"{args['-f']} has no 'network_constraints' section (see docs/network-constraints.md)")
        constraints = config.network_constraints
    out: dict = {}
    if args["--reset"]:
        out["reset"] = env.tc_reset()
        if fmt == "text":
            for alias, st in sorted(out["reset"].items()):
                _out(f"{alias}: {st}")
            if not out["reset"]:
                _out("nothing to remove: enos applied no network constraints in this environment")
    if args["--dry-run"]:
        nc, groups = env._constraints(constraints)
        facts = env.facts()
        plans = tc.plan(nc, groups, env.hosts, facts, check_netem=False)
        try:
            tc.plan(nc, groups, env.hosts, facts)
        except tc.NetemMissing as e:
            print(f"enos tc: warning: {e}", file=sys.stderr)
        out["commands"] = {a: [" ".join(c) for c in p_.commands()] for a, p_ in sorted(plans.items())}
        if fmt == "text":
            for alias, cmds in out["commands"].items():
                _out(f"── {alias}")
                for c in cmds:
                    _out(c)
    if not (args["--reset"] or args["--dry-run"] or args["--test"]):
        out["applied"] = env.tc(constraints)
        if fmt == "text":
            _out(tc.describe_plan(tc.applied(env.envdir)) or "no constraint applies to these hosts")
            for alias, st in sorted(out["applied"].items()):
                _out(f"{alias}: {st}")
    report = None
    if args["--test"]:
        report = env.tc_test(constraints)
        out["test"] = report.to_dict()
        if fmt == "text":
            _out(report.table())
    if fmt == "json":
        _out(json.dumps(out, indent=2))
    if report is not None and not report.ok:
        raise netprobe.TcTestFailed(report)
    return 0


def _constraints_summary(cfg) -> str:
    nc = cfg.network_constraints
    if nc is None:
        return ""
    rules = nc.group_rules(cfg.constraint_groups())
    return (f", network constraints: {len(rules)} group pair(s) "
            f"({'applied by enos up' if nc.enable else 'enable: false, applied by enos tc only'})")


def cmd_validate(args, g) -> int:
    from enos.provider import load_provider_class
    from enos.task import load_reservation
    fmt = _format(args, ("text", "json"))
    cfg = load_reservation(args["-f"])
    load_provider_class(cfg.provider_type).preflight(cfg)
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    hosts = sum(m.count for m in cfg.machines)
    roles = sorted({r for m in cfg.machines for r in m.roles})
    if fmt == "json":
        _out(json.dumps({"file": cfg.file, "provider": cfg.provider_type, "options": cfg.options,
                         "machines": [{k: v for k, v in vars(m).items()} for m in cfg.machines],
                         "networks": cfg.networks, "variables": cfg.variables,
                         "provision": cfg.provision, "warnings": cfg.warnings,
                         "network_constraints": cfg.network_constraints.to_dict() if cfg.network_constraints
                         else None}, indent=2, default=str))
    else:
        _out(f"{cfg.file}: valid — provider {cfg.provider_type}, {hosts} host(s) in "
             f"{len(roles)} role(s) ({', '.join(roles)}), {len(cfg.provision)} playbook(s)"
             + _constraints_summary(cfg))
        if cfg.variables:
            _out(cfg.variables_summary())
    return 0


def cmd_new(args, g) -> int:
    from enos.provider import available_providers, load_provider_class
    if args["--list"]:
        for name in available_providers():
            try:
                cls = load_provider_class(name, check=False)
                _out(f"{name:10} {cls.description}")
            except Exception as e:  # a broken third-party provider must not hide the others
                _out(f"{name:10} (cannot load: {e})")
        return 0
    cls = load_provider_class(args["--provider"], check=False)
    if not cls.sample:
        raise _usage(f"provider '{cls.type}' ships no sample reservation")
    out = args["-o"]
    if out == "-":
        _out(cls.sample)
        return 0
    path = Path(out)
    if path.is_dir():
        raise _usage(f"-o {out}: is a directory; give a file name (e.g. {path / 'reservation.yaml'})")
    if path.exists() and not path.is_file():
        raise _usage(f"-o {out}: not a regular file; give a file name (or '-' for stdout)")
    if path.exists() and not args["--force"]:
        raise _usage(f"{path} exists; use --force to overwrite it or -o to write elsewhere")
    if not path.parent.is_dir():
        raise _usage(f"-o {out}: no directory {path.parent}")
    try:
        with open(path, "w") as f:
            f.write(cls.sample if cls.sample.endswith("\n") else cls.sample + "\n")
    except OSError as e:
        raise _usage(f"-o {out}: cannot write: {e.strerror or e}") from None
    print(f"wrote {path} for provider {cls.type}; check it with 'enos validate -f {path}'", file=sys.stderr)
    return 0


def _core_checks() -> list:
    import shutil as sh
    from enos.model import Check
    venv_bin = str(Path(sys.executable).parent)
    ap = sh.which("ansible-playbook", path=venv_bin + os.pathsep + os.environ.get("PATH", ""))
    return [
        Check("ssh client", bool(sh.which("ssh")), sh.which("ssh") or "", "apt-get install openssh-client"),
        Check("ssh-keygen", bool(sh.which("ssh-keygen")), sh.which("ssh-keygen") or "", "apt-get install openssh-client"),
        Check("ansible-playbook", bool(ap), ap or "", "pip install ansible-core (in enos' virtualenv)"),
    ]


def cmd_check(args, g) -> int:
    import tempfile
    from enos.provider import load_provider_class
    from enos.provider.provider import ProviderContext
    from enos.state import MemoryJournal
    if args["--provider"]:
        from enos.reservation.config import Config
        cls = load_provider_class(args["--provider"], check=False)
        config = Config(file="(none)", provider_type=cls.type, options={"type": cls.type}, machines=[])
    else:
        from enos.errors import MissingDependency
        from enos.task import load_reservation
        try:
            config = load_reservation(args["-f"])
        except MissingDependency as e:
            # the provider's library is what 'enos check' must report, not die on
            config = None
            cls = load_provider_class(e.provider, check=False)
        else:
            cls = load_provider_class(config.provider_type, check=False)
    checks = _core_checks()
    from enos.errors import MissingDependency
    from enos.provider import check_requirements
    from enos.model import Check
    try:
        check_requirements(cls)
        lib_ok = True
        detail = ", ".join(cls.requires) or "none needed"
    except MissingDependency as e:
        lib_ok, detail = False, str(e)
    checks.append(Check(f"python libraries of '{cls.type}'", lib_ok, detail,
                        f"pip install 'enos[{cls.extra}]'" if cls.extra else ""))
    if lib_ok and config is not None:
        with tempfile.TemporaryDirectory(prefix="enos-check-") as tmp:
            ctx = ProviderContext(config=config, journal=MemoryJournal(), env_dir=Path(tmp), run_id="check")
            checks += cls(ctx).check()
    bad = warned = 0
    for c in checks:
        mark = "MISSING" if not c.ok else ("warn" if c.warn else "ok")
        show_fix = c.fix and (not c.ok or c.warn)
        _out(f"[{mark:^7}] {c.what}" + (f": {c.detail}" if c.detail else "")
             + (f"\n          fix: {c.fix}" if show_fix else ""))
        bad += not c.ok
        warned += c.ok and c.warn
    more = f", {warned} with a warning" if warned else ""
    _out(f"{len(checks) - bad}/{len(checks)} requirement(s) met{more} for provider '{cls.type}'")
    return 1 if bad else 0


def cmd_inventory(args, g) -> int:
    from enos.experiment.env import load_or_current
    env = load_or_current(_env_arg(args))
    env.require_hosts()
    if args["--path"]:
        _out(str(env.inventory))
    else:
        _out(env.inventory.read_text())
    return 0


def cmd_ssh(args, g) -> int:
    from enos.experiment.env import load_or_current
    env = load_or_current(_env_arg(args))
    aliases = [h.alias for h in env.require_hosts()]
    host = args["HOST"]
    if host not in aliases:
        import difflib
        close = difflib.get_close_matches(host, aliases, n=1)
        raise _usage(f"no host '{host}' in {env.env_dir}" + (f"; did you mean '{close[0]}'?" if close else "")
                     + f" (hosts: {', '.join(aliases)})")
    from enos.ssh.remote import ensure_control_dirs
    ensure_control_dirs(env.ssh_config)   # gone after a reboot or a destroy: ssh cannot bind its master
    argv = ["ssh", "-F", str(env.ssh_config), host, *args["<command>"]]
    sys.stdout.flush()
    os.execvp("ssh", argv)
    return 0  # not reached


def cmd_run(args, g) -> int:
    from enos.errors import CommandFailed
    from enos.experiment.env import load_or_current
    fmt = _format(args, ("text", "json"))
    timeout = _seconds("--timeout", args["--timeout"])
    env = load_or_current(_env_arg(args))
    roles = None if args["--roles"] in (None, "all") else args["--roles"]
    results = env.run(args["CMD"], roles=roles, timeout=timeout, check=False)
    if fmt == "json":
        _out(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            _out(f"── {r.host.alias} ({r.status})")
            if r.stdout:
                _out(r.stdout.rstrip("\n"))
            if r.stderr and not r.ok:
                _out(r.stderr.rstrip("\n"))
    if results.failed and not args["--tolerate-failures"]:
        raise CommandFailed(args["CMD"], results.failed, results)
    return 0


def cmd_backup(args, g) -> int:
    from enos.errors import EnosError
    from enos.experiment.env import load_or_current
    if args["--output"] not in ("text", "json"):
        raise _usage(f"--output must be text or json, not '{args['--output']}'")
    env = load_or_current(_env_arg(args), quiet=g["quiet"])
    roles = None if args["--roles"] in (None, "all") else args["--roles"]
    timeout = float(args["--timeout"]) if args["--timeout"] else None
    report = env.backup(args["PATH"], roles=roles, dest=args["--dest"], timeout=timeout, sudo=args["--sudo"])
    if args["--output"] == "json":
        _out(report.to_json(indent=2))
    else:
        for line in report.lines():
            _out(line)
    bad = [h for h in report.hosts.values() if not h.ok]
    if bad:
        raise EnosError(f"backup failed on {len(bad)} of {len(report.hosts)} host(s): "
                        + ", ".join(f"{h.host} ({h.error})" for h in bad))
    return 0


def cmd_extend(args, g) -> int:
    from enos.experiment.env import check_extension, load_or_current
    walltime = check_extension(args["--walltime"])         # exit 2 before the env is read
    result = load_or_current(_env_arg(args), quiet=g["quiet"]).extend(walltime)
    for k, v in result.items():
        _out(f"{k}: {v}")
    return 0


def cmd_build(args, g) -> int:
    cache = Path(os.path.expanduser(args["--cache"]))
    if args["vagrant"]:
        from enos.vagrant.box import build_box
        box = build_box(name=args["--box"], cache_dir=cache, force=args["--force"], progress=_progress(g["quiet"]))
        _out(f"{box['name']}: {box['dir']}")
        return 0
    from enos.libvirt.image import build_image
    out = build_image(output_dir=Path(args["--output"]) if args["--output"] else None,
                      cache_dir=cache, force=args["--force"], progress=_progress(g["quiet"]))
    _out(str(out))
    return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def cmd_campaign(args, g) -> int:
    from enos.errors import CampaignFailed
    from enos.campaign.file import load_campaign
    camp = load_campaign(args["FILE"])           # ConfigError (exit 2) before anything else
    if args["validate"]:
        from enos.campaign.runner import check_reservation
        check_reservation(camp)
        n = len(camp.combinations())
        _out(f"{camp.file}: valid — {n} combination(s) × {camp.repeat} repetition(s) = "
             f"{n * camp.repeat} run(s), {len(camp.steps)} step(s), {len(camp.metrics)} metric(s)")
        return 0
    if args["status"]:
        from enos.campaign.report import status
        st = status(camp, args["--results"])
        if args["--output"] == "json":
            _out(json.dumps(st, indent=2, default=str))
            return 0
        if args["--output"] != "text":
            raise _usage(f"--output must be text or json, not '{args['--output']}'")
        owner = f"running (pid {st['owner']})" if st["owner"] else "not running"
        lines = [f"results      {st['results']}", f"state        {owner}",
                 f"total        {st['total']}", f"done         {st['done']}",
                 f"remaining    {st['remaining']}", f"in progress  {st['in_progress']}",
                 f"failed       {st['failed']}", f"elapsed      {_duration(st['elapsed'])}"]
        for f in st["failures"]:
            run = ", ".join(f"{k}={v}" for k, v in f["run"].items())
            lines.append(f"FAILED {run}: {f['error']}")
        _out("\n".join(lines))
        return 0
    if args["report"]:
        from enos.campaign.report import report
        out = report(camp, args["--results"])
        _out(f"{out['rows']} row(s) in {out['csv']}")
        for f in out["figures"]:
            _out(f)
        _out(out["html"])
        for p in out["problems"]:
            print(f"enos campaign report: warning: {p}", file=sys.stderr)
        return 0
    if args["--destroy"] and args["--env"]:
        raise _usage("--destroy gives back the campaign's own reservation; it cannot be used with --env")
    from enos.campaign.runner import run
    p = _progress(g["quiet"])
    st = run(camp, results=args["--results"], env=args["--env"], stop_on_error=args["--stop-on-error"],
             destroy=args["--destroy"], progress=p)
    p.info(f"campaign: {st['done']}/{st['total']} run(s) done, {st['failed']} failed; "
           f"'enos campaign report {args['FILE']}' writes the table, figures and report")
    if st["failed"]:
        raise CampaignFailed(f"{st['failed']} run(s) failed (see 'enos campaign status {args['FILE']}'); "
                             f"run the same command again to retry them")
    return 0


HANDLERS = {"up": cmd_up, "destroy": cmd_destroy, "info": cmd_info, "validate": cmd_validate,
            "new": cmd_new, "check": cmd_check, "inventory": cmd_inventory, "ssh": cmd_ssh,
            "run": cmd_run, "backup": cmd_backup, "extend": cmd_extend, "build": cmd_build, "tc": cmd_tc,
            "campaign": cmd_campaign}


def _usage(msg: str):
    from enos.errors import UsageError
    return UsageError(msg)


def _split_globals(argv: List[str]) -> tuple[List[str], dict]:
    """Take -v/-vv/-q/--verbose/--quiet out of argv wherever they are (before a '--')."""
    g = {"verbose": 0, "quiet": False}
    rest: List[str] = []
    passthrough = False
    for a in argv:
        if passthrough:
            rest.append(a)
            continue
        if a == "--":
            passthrough = True
            rest.append(a)
        elif a in ("-v", "--verbose"):
            g["verbose"] += 1
        elif a == "-vv":
            g["verbose"] += 2
        elif a in ("-q", "--quiet"):
            g["quiet"] = True
        else:
            rest.append(a)
    return rest, g


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the enos CLI; return the exit code (0, 1, 2 or 130, see ``enos --help``)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (e.g. 'enos info | head'): not a failure of enos
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: Optional[List[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, g = _split_globals(argv)
    if not argv or argv[0] in ("-h", "--help"):
        _out(__doc__.strip())
        return 0 if argv else 2
    if argv[0] == "--version":
        _out(f"enos {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "help":
        if not rest:
            _out(__doc__.strip())
            return 0
        cmd, rest = rest[0], ["--help"]
    if cmd not in COMMANDS:
        import difflib
        close = difflib.get_close_matches(cmd, list(COMMANDS) + ["help"], n=1, cutoff=0.5)
        hint = f"; did you mean 'enos {close[0]}'?" if close else ""
        print(f"enos: unknown command '{cmd}'{hint} (commands: {', '.join(COMMANDS)}; see 'enos --help')",
              file=sys.stderr)
        return 2
    doc = COMMANDS[cmd]
    if "-h" in rest or "--help" in rest:
        _out(doc.strip())
        return 0
    try:
        args = docopt(doc, argv=[cmd] + rest, default_help=False)
    except DocoptExit:
        usage = doc[doc.index("Usage:"):].split("\n\n")[0]
        print(f"enos {cmd}: invalid arguments {' '.join(rest) or '(none)'}\n{usage}", file=sys.stderr)
        return 2
    _setup_logging(g["verbose"], g["quiet"])
    from enos import signals
    old = signals.install()       # SIGINT and SIGTERM: KeyboardInterrupt, exit 130
    from enos.errors import EnosError
    try:
        try:
            return HANDLERS[cmd](args, g)
        except EnosError as e:
            if g["verbose"]:
                log.exception("enos %s failed", cmd)
            print(f"enos {cmd}: error: {e}" if not _is_config_error(e) else f"error: {e}", file=sys.stderr)
            return e.exit_code
        except OSError as e:
            import errno
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            if g["verbose"]:
                log.exception("enos %s failed", cmd)
            print(f"enos {cmd}: error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        if g["verbose"]:
            log.exception("interrupted")
        hint = ""
        if cmd == "up":
            hint = "; 'enos destroy' frees what was booked, 'enos up' resumes"
        elif cmd == "campaign":
            hint = "; the same 'enos campaign run' resumes (the interrupted run is redone)"
        print(f"enos {cmd}: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        signals.restore(old)


def _is_config_error(e) -> bool:
    from enos.errors import ConfigError
    return isinstance(e, ConfigError)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
