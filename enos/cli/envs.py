"""The commands on an environment's life: up, destroy, info, inventory, ssh, extend; and
before one: validate, new, check, build. Each is its usage text (docopt) beside a function
that parses, calls the Python API, prints."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from enos.cli.options import data, env_dir, out, output, progress, seconds, tags, when
from enos.errors import UsageError

UP = """Book the resources of a reservation, wait until every host answers SSH, provision them.

Re-running 'enos up' on an environment that is not destroyed resumes it: what was booked is
found again (never booked twice) and the provisioning runs again (it is idempotent).

Usage:
  enos up [-f FILE] [--env DIR] [--force-deploy] [--tags TAGS] [--no-provision] [--ssh-timeout S]
          [--at WHEN]

Options:
  -f FILE          the reservation file [default: reservation.yaml]
  --env DIR        environment directory (default: resume ./current unless destroyed,
                   else create ./enos_<UTC timestamp>)
  --force-deploy   install the OS image again even on machines already running it
                   (providers with the deploy_os capability)
  --tags TAGS      run only the Ansible tasks with these comma-separated tags
  --no-provision   stop once the hosts answer SSH (no Ansible run)
  --ssh-timeout S  seconds to wait for every host to answer SSH [default: 600]
  --at WHEN        book for a later start (providers with advance reservations, e.g.
                   Grid'5000: every site at once): 'earliest' (the earliest slot, as
                   'enos slot' finds it) or a date, '2026-12-04 19:00' (local time) or
                   '2026-12-04T19:00:00+01:00'; enos then waits for the start (Ctrl-C
                   keeps the booking: 'enos up' resumes, 'enos destroy' frees it)
"""


def up(args, g) -> int:
    from enos.experiment.env import up as env_up
    ssh_timeout = seconds("--ssh-timeout", args["--ssh-timeout"])
    at = when("--at", args["--at"], earliest=True)
    p = progress(g["quiet"])
    env = env_up(args["-f"], keep=True, env=env_dir(args), force_deploy=args["--force-deploy"],
                 tags=tags("--tags", args["--tags"]), progress=p, verbose=g["verbose"] > 0,
                 provision=not args["--no-provision"], ssh_timeout=ssh_timeout, at=at)
    p.info(f"ready: {len(env.hosts)} host(s) in {env.env_dir} (run {env.run_id}); "
           f"'enos info' to see them, 'enos destroy' to give them back")
    return 0


DESTROY = """Release everything an environment booked, using only its saved state.

Safe to run twice, and after a crash or Ctrl-C at any moment of 'enos up'.

Freeing comes first: on a full or read-only disk the resources are still freed, and
the record of it is retried (exit 1 if it could not be written: run it again later).
If the testbed does not answer (e.g. a libvirt URI that is unreachable), destroy says
what may remain where, exits 1 and stays retryable.

A resource the environment reused but did not book (a Grid'5000 job found by its
job_name or given by job_ids) is kept for its owner, unless --release-jobs.

Usage:
  enos destroy [--env DIR] [--sweep] [--release-jobs]
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
  --release-jobs  also release what the environment reused (e.g. your Grid'5000 job of
               the same job_name), not only what it booked
  --forget     free nothing and mark the environment destroyed: for resources you know
               are gone (a deleted VM host, an expired job). Prints what its journal
               still listed, so you can check by hand.
"""


def destroy(args, g) -> int:
    from enos.experiment.env import destroy as env_destroy, sweep_run
    p = progress(g["quiet"])
    if args["--run-id"] is not None:
        removed = sweep_run(args["-f"], args["--run-id"], progress=p)
        p.info(f"swept {len(removed)} resource(s) of run {args['--run-id']}")
        for r in removed:
            out(r)
        return 0
    env = env_destroy(env_dir(args), sweep=args["--sweep"], progress=p, forget=args["--forget"],
                      release_reused=args["--release-jobs"])
    p.info(f"{'forgot' if args['--forget'] else 'destroyed'} run {env.run_id} ({env.env_dir})")
    return 0


INFO = """Show an environment: phase, hosts and their roles, networks, provider details
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


def info(args, g) -> int:
    from enos.experiment.env import load_or_current
    fmt = output(args, ("text", "json", "yaml"))
    if args["--refresh"] and not args["--facts"]:
        raise UsageError("--refresh gathers the facts again: it goes with --facts (enos info --facts --refresh)")
    env = load_or_current(env_dir(args))
    if args["--facts"]:
        facts = env.facts(refresh=args["--refresh"])
        if fmt == "text":
            from enos.experiment.facts import facts_table
            out(facts_table(facts))
        else:
            data(facts, fmt)
        return 0
    d = env.info()
    if fmt == "text":
        out("\n".join(_info_text(d)))
    else:
        data(d, fmt)
    return 0


def _info_text(d: dict) -> list:
    from enos.tables import details, table
    lines = [f"environment  {d['env_dir']}", f"run id       {d['run_id']}",
             f"provider     {d['provider']}", f"phase        {d['phase']}",
             f"reservation  {d['config_file']}", f"ssh          ssh -F {d['ssh_config']} ALIAS",
             f"inventory    {d['inventory']}", ""]
    if d["hosts"]:
        lines += table([[h["alias"], h["address"], h["roles"]] for h in d["hosts"]], ["HOST", "ADDRESS", "ROLES"])
    else:
        lines.append(_no_hosts(d["phase"]))
    if d["networks"]:
        rows = []
        for n in d["networks"]:
            rs = n.get("ranges") or []
            rows.append([n.get("name") or "-", n["cidr"], n.get("gateway"), n.get("dns"),
                         f"{rs[0][0]}..{rs[-1][1]} ({n.get('size')} free)" if rs else "none free"])
        lines += [""] + table(rows, ["NETWORK", "CIDR", "GATEWAY", "DNS", "IP POOL"])
    if d.get("provider_info"):
        lines += ["", f"{d['provider']} details:"] + details(d["provider_info"], indent="  ")
    return lines


def _no_hosts(phase: str) -> str:
    if phase == "destroyed":
        return "no hosts (destroyed)"
    if phase in ("booking", "destroying"):
        return (f"no hosts yet: 'enos {'up' if phase == 'booking' else 'destroy'}' was "
                f"interrupted while {phase}; the provider's journal below lists what "
                f"exists ('enos up' resumes, 'enos destroy' frees it)")
    return "no hosts"


VALIDATE = """Check a reservation file (syntax, schema, provider section, playbook paths)
without booking anything. Errors name the file, the line and the key (exit 2). What the
file needs of this machine (a key file, an image, a free subnet) is a warning here
('enos up' refuses it, 'enos check -f FILE' lists it).

Usage:
  enos validate [-f FILE] [-o FORMAT]

Options:
  -f FILE              the reservation file [default: reservation.yaml]
  -o, --output FORMAT  text or json (the normalised reservation) [default: text]
"""


def validate(args, g) -> int:
    from enos.experiment.reservation import validate as check_reservation
    fmt = output(args, ("text", "json"))
    cfg = check_reservation(args["-f"])
    for w in cfg.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if fmt == "json":
        data(cfg.summary(), "json")
        return 0
    roles = sorted({r for m in cfg.machines for r in m.roles})
    which = (f"providers {', '.join(n for n, _ in cfg.parts)}" if cfg.parts else f"provider {cfg.provider_type}")
    out(f"{cfg.file}: valid — {which}, {sum(m.count for m in cfg.machines)} host(s) in "
        f"{len(roles)} role(s) ({', '.join(roles)}), {len(cfg.provision)} playbook(s)"
        + _constraints_summary(cfg))
    if cfg.variables:
        out(cfg.variables_summary())
    return 0


def _constraints_summary(cfg) -> str:
    nc = cfg.network_constraints
    if nc is None:
        return ""
    rules = nc.group_rules(cfg.constraint_groups())
    return (f", network constraints: {len(rules)} group pair(s) "
            f"({'applied by enos up' if nc.enable else 'enable: false, applied by enos tc only'})")


NEW = """Write a commented reservation.yaml for a provider.

Usage:
  enos new [--provider TYPE] [-o FILE] [--force]
  enos new --list

Options:
  --provider TYPE  provider type [default: local]
  -o FILE          where to write it ('-' for stdout) [default: reservation.yaml]
  --force          overwrite an existing file
  --list           list the available providers
"""


def new(args, g) -> int:
    from enos.experiment.reservation import providers, sample
    if args["--list"]:
        for name, description in providers():
            out(f"{name:10} {description}")
        return 0
    text, dest = sample(args["--provider"]), args["-o"]
    if dest == "-":
        out(text)
        return 0
    path = _new_file(dest, args["--force"])
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(f"-o {dest}: cannot write: {e.strerror or e}") from None
    print(f"wrote {path} for provider {args['--provider']}; check it with 'enos validate -f {path}'",
          file=sys.stderr)
    return 0


def _new_file(dest: str, force: bool) -> Path:
    """The file ``enos new -o`` may write. Raises UsageError (a dir, a device, no parent dir,
    an existing file without --force)."""
    path = Path(dest)
    if path.is_dir():
        raise UsageError(f"-o {dest}: is a directory; give a file name (e.g. {path / 'reservation.yaml'})")
    if path.exists() and not path.is_file():
        raise UsageError(f"-o {dest}: not a regular file; give a file name (or '-' for stdout)")
    if path.exists() and not force:
        raise UsageError(f"{path} exists; use --force to overwrite it or -o to write elsewhere")
    if not path.parent.is_dir():
        raise UsageError(f"-o {dest}: no directory {path.parent}")
    return path


CHECK = """Say what the reservation's provider needs on this machine (binaries, daemons,
credentials, privileges) and whether it is there, with the exact command that fixes each
gap. Books nothing. Exit 1 if something is MISSING; a warning (e.g. no usable KVM: VMs run
under QEMU emulation) still exits 0.

Usage:
  enos check [-f FILE] [--provider TYPE]

Options:
  -f FILE          the reservation file [default: reservation.yaml]
  --provider TYPE  check this provider's needs without a reservation file
"""


def check(args, g) -> int:
    from enos.experiment.reservation import check as check_machine
    report = check_machine(args["-f"], provider=args["--provider"] or None)
    for c in report.checks:
        mark = "MISSING" if not c.ok else ("warn" if c.warn else "ok")
        show_fix = c.fix and (not c.ok or c.warn)
        out(f"[{mark:^7}] {c.what}" + (f": {c.detail}" if c.detail else "")
            + (f"\n          fix: {c.fix}" if show_fix else ""))
    bad, warned = len(report.missing), len(report.warnings)
    more = f", {warned} with a warning" if warned else ""
    out(f"{len(report.checks) - bad}/{len(report.checks)} requirement(s) met{more} for provider '{report.provider}'")
    return 1 if bad else 0


INVENTORY = """Print the Ansible inventory of an environment (YAML; one group per role).

It goes through the env's ssh_config, so a plain Ansible works with it:
  enos inventory > hosts.yml && ansible -i hosts.yml all -m ping

Usage:
  enos inventory [--env DIR] [--path]

Options:
  --env DIR  environment directory [default: current]
  --path     print the path of the inventory file instead of its content
"""


def inventory(args, g) -> int:
    from enos.experiment.env import load_or_current
    env = load_or_current(env_dir(args))
    env.require_hosts()
    out(str(env.inventory) if args["--path"] else read_inventory(env.inventory))
    return 0


#: the largest inventory printed (a few hundred bytes per host)
MAX_INVENTORY_BYTES = 64 << 20


def read_inventory(path: Path) -> str:
    """Return the text of the env's inventory ``path`` through the bounded reader. Raises
    StateDamaged (exit 1, saying how to rewrite it) when it is not a regular file or too big."""
    from enos.errors import StateDamaged, UnreadableFile
    from enos.reader import read_bounded
    try:
        return read_bounded(path, MAX_INVENTORY_BYTES, "Ansible inventory").decode("utf-8", "replace")
    except UnreadableFile as e:
        raise StateDamaged(str(path), f"{path}: {e.reason}; 'enos up --env {path.parent}' writes it "
                                      f"again from the saved state") from None


SSH = """Open an SSH session on a host of an environment (or run a command there).

Usage:
  enos ssh [--env DIR] HOST [<command>...]

Options:
  --env DIR  environment directory [default: current]
"""


def ssh(args, g) -> int:
    from enos.experiment.env import load_or_current
    env = load_or_current(env_dir(args))
    argv = env.ssh_command(args["HOST"], args["<command>"])    # UsageError: no such host
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 0  # not reached


EXTEND = """Ask the testbed for more time on the reservation of an environment.

Usage:
  enos extend --walltime WALLTIME [--env DIR]

Options:
  --walltime WALLTIME  time to add, as +H:MM[:SS] (e.g. +1:30)
  --env DIR            environment directory [default: current]
"""


def extend(args, g) -> int:
    from enos.experiment.env import check_extension, load_or_current
    walltime = check_extension(args["--walltime"])         # exit 2 before the env is read
    for k, v in load_or_current(env_dir(args), quiet=g["quiet"]).extend(walltime).items():
        out(f"{k}: {v}")
    return 0


BUILD = """Build a base image for a provider (cached; rebuilt only when its recipe changes).

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


def build(args, g) -> int:
    from enos.state import usable_dir
    cache = usable_dir(args["--cache"], "--cache")
    if args["--output"] is not None:
        usable_dir(args["--output"], "--output")
    if args["vagrant"]:
        from enos.vagrant.box import build_box
        box = build_box(name=args["--box"], cache_dir=cache, force=args["--force"], progress=progress(g["quiet"]))
        out(f"{box['name']}: {box['dir']}")
        return 0
    from enos.libvirt.image import build_image
    path = build_image(output_dir=Path(args["--output"]) if args["--output"] else None,
                       cache_dir=cache, force=args["--force"], progress=progress(g["quiet"]))
    out(str(path))
    return 0


#: name -> (usage text, function), in the order of 'enos --help'
SLOT = """Find the earliest start when everything a reservation asks for is free for the
walltime (on Grid'5000: every requested cluster of every site, from the sites' status:
the nodes' current and future jobs). Books nothing.

Then 'enos up --at earliest' (or --at the date shown) books every site for that start at
once.

Usage:
  enos slot [-f FILE] [--walltime W] [--from WHEN] [--until WHEN] [-o FORMAT]

Options:
  -f FILE              the reservation file [default: reservation.yaml]
  --walltime W         the duration HH:MM[:SS] (default: the reservation's)
  --from WHEN          not before this date, '2026-12-04 19:00' (local time) or ISO 8601
                       with an offset (default: now)
  --until WHEN         the whole slot must end by this date
  -o, --output FORMAT  text or json [default: text]
"""


def slot(args, g) -> int:
    from enos.experiment.reservation import slot as find
    import time
    fmt = output(args, ("text", "json"))
    start = when("--from", args["--from"]) or time.time()
    until = when("--until", args["--until"])
    if until is not None and until <= start:
        raise UsageError("--until: must be after --from (or now)")
    found = find(args["-f"], walltime=args["--walltime"], start=start, until=until)
    if fmt == "json":
        data({"found": found is not None, **(found or {})}, "json")
    elif found is None:
        out("no slot: the resources asked are not all free for that long"
            + (" before --until" if until else " (more than the testbed has?)"))
    else:
        out("\n".join(_slot_text(found)))
    return 0 if found is not None else 1


def _slot_text(found: dict) -> list:
    from enos.tables import details, local_iso
    lines = [f"earliest start  {local_iso(found['start'])}", f"end             {local_iso(found['end'])}"]
    rest = {k: v for k, v in found.items() if k not in ("start", "end")}
    return lines + (details(rest, indent="") if rest else []) + [
        "book it: enos up --at earliest (or --at the start above)"]


COMMANDS = {"up": (UP, up), "destroy": (DESTROY, destroy), "info": (INFO, info), "validate": (VALIDATE, validate),
            "new": (NEW, new), "check": (CHECK, check), "inventory": (INVENTORY, inventory), "ssh": (SSH, ssh),
            "extend": (EXTEND, extend), "build": (BUILD, build), "slot": (SLOT, slot)}
