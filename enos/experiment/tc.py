"""Network constraints between groups of hosts, with Linux ``tc`` (``enos tc``).

**Plan** (:func:`plan`): the reservation's ``network_constraints`` become rules between
groups (:meth:`~enos.reservation.netconstraints.NetworkConstraints.group_rules`); each
rule src → dst is enforced on the egress of every host of src, for the traffic to the
addresses of the hosts of dst. The interface is the one holding the host's SSH address, or
with ``network: N`` (or ``default_network``) the one holding its address on the env
network N (found from the host's facts, :mod:`enos.experiment.facts`). On a host one
``htb`` tree per interface: the root ``1:`` (``direct_qlen`` large, no default class:
traffic to other destinations is not shaped at all), one class per destination group
(``rate``: the rate limit, shared by the whole group's destinations; 10gbit when the rule
only sets delay/loss), under it a ``netem`` qdisc for delay and loss, and one ``u32``
filter per destination address. A host in several groups gets, for each destination
address, the last rule matching it (explicit constraints override the defaults).

**Apply** (:func:`apply`): the host scripts run on every host at once, each ``tc``
command separately (the first failing one is reported with tc's message, and that host's
partial tree is removed). What was applied is recorded in the env state (``tc``) *before*
it runs, so :func:`reset` removes exactly what enos created: the root ``htb 1:`` qdiscs of
the recorded interfaces (and nothing if someone replaced them). Applying the same plan
again changes nothing; a different plan replaces enos' tree. No ingress/ifb is used.

Delay and loss need the kernel's ``sch_netem``; where the facts say a host lacks it
(``enos info --facts``), :func:`plan` refuses with :class:`NetemMissing` before anything
is applied. Rate limits need only ``sch_htb`` and ``cls_u32``.
"""
from __future__ import annotations

import ipaddress
import shlex
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from enos.errors import EnosError, Unsupported, UsageError
from enos.experiment.facts import addresses_on, gather_facts, interface_for
from enos.reservation.netconstraints import Rule, format_delay, format_rate
from enos.ssh.remote import run_sessions
from enos.state import Lock, State, now_iso

if TYPE_CHECKING:  # pragma: no cover
    from enos.model import Host
    from enos.reservation.netconstraints import NetworkConstraints
    from enos.results import Result
    from enos.task import EnvDir

TC_KEY = "tc"
#: rate of a class whose rule sets only delay/loss
UNLIMITED_BIT = 10 * 10**9
#: class ids start here (1:10, 1:11, ...), netem handles are the class minor number
FIRST_CLASS = 10


class TcError(EnosError):
    """tc failed on some hosts. ``failures`` maps alias → (command, message)."""

    def __init__(self, failures: Dict[str, Tuple[str, str]], what: str = "applying the network constraints"):
        self.failures = dict(failures)
        lines = [f"{h}: '{c}': {m}" for h, (c, m) in sorted(self.failures.items())]
        super().__init__(f"{what} failed on {len(self.failures)} host(s):\n  " + "\n  ".join(lines))


class NetemMissing(Unsupported):
    """Delay or loss was asked for on hosts whose kernel has no ``sch_netem`` module.
    ``hosts`` maps alias → kernel version."""

    def __init__(self, hosts: Dict[str, str]):
        self.hosts = dict(hosts)
        kernels = ", ".join(sorted(set(self.hosts.values())))
        super().__init__(
            f"delay and loss need the kernel module sch_netem (netem), which the kernel of "
            f"{len(self.hosts)} host(s) ({', '.join(sorted(self.hosts))}; kernel {kernels}) does not have: "
            f"no sch_netem in /sys/module or /lib/modules and 'tc qdisc ... netem' refused. "
            f"Rate limits (htb) work without it: keep only 'rate' (and 'default_rate') in "
            f"network_constraints, or use machines whose kernel has netem (e.g. the libvirt provider's "
            f"Debian guests). Nothing was changed.")


class PlanError(UsageError):
    """The constraints cannot be mapped on the hosts (a network no host is on, ...)."""


@dataclass
class TcClass:
    """One htb class on one interface: the traffic to ``destinations`` (addresses of the
    hosts of ``dst_group``) gets ``rate_bit``/``delay_ms``/``loss_pct``."""

    minor: int
    dst_group: str
    rate_bit: Optional[int]
    delay_ms: Optional[float]
    loss_pct: Optional[float]
    destinations: List[str] = field(default_factory=list)
    origin: str = "default"


@dataclass
class DevicePlan:
    """The htb tree enos puts on one interface of one host."""

    device: str
    classes: List[TcClass] = field(default_factory=list)

    def commands(self) -> List[List[str]]:
        """Return the tc commands (argv lists) that build this tree, in order."""
        d = self.device
        cmds = [["tc", "qdisc", "add", "dev", d, "root", "handle", "1:", "htb", "direct_qlen", "10000"]]
        for c in self.classes:
            rate = c.rate_bit if c.rate_bit is not None else UNLIMITED_BIT
            quantum = max(1514, min(rate // 8 // 10, 200000))
            cmds.append(["tc", "class", "add", "dev", d, "parent", "1:", "classid", f"1:{c.minor}", "htb",
                         "rate", f"{rate}bit", "ceil", f"{rate}bit", "quantum", str(quantum)])
            if c.delay_ms or c.loss_pct:
                netem = ["tc", "qdisc", "add", "dev", d, "parent", f"1:{c.minor}", "handle", f"{c.minor}:",
                         "netem", "limit", "100000"]
                if c.delay_ms:
                    netem += ["delay", f"{c.delay_ms:g}ms"]
                if c.loss_pct:
                    netem += ["loss", f"{c.loss_pct:g}%"]
                cmds.append(netem)
            for a in c.destinations:
                if ipaddress.ip_address(a).version == 4:
                    cmds.append(["tc", "filter", "add", "dev", d, "parent", "1:", "protocol", "ip", "prio", "1",
                                 "u32", "match", "ip", "dst", f"{a}/32", "flowid", f"1:{c.minor}"])
                else:
                    cmds.append(["tc", "filter", "add", "dev", d, "parent", "1:", "protocol", "ipv6", "prio", "2",
                                 "u32", "match", "ip6", "dst", f"{a}/128", "flowid", f"1:{c.minor}"])
        return cmds


@dataclass
class HostPlan:
    """What enos puts on one host: one :class:`DevicePlan` per shaped interface."""

    alias: str
    devices: List[DevicePlan] = field(default_factory=list)

    def commands(self) -> List[List[str]]:
        """Return every tc command of this host, interface after interface."""
        return [c for d in self.devices for c in d.commands()]

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HostPlan":
        """Return a HostPlan from :meth:`to_dict` output."""
        return cls(alias=data["alias"], devices=[DevicePlan(device=d["device"], classes=[TcClass(**c) for c in d["classes"]])
                                                 for d in data["devices"]])


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _endpoint(host: "Host", facts: dict, network: Optional[str]) -> Tuple[str, str]:
    """Return (interface, address) of ``host`` on ``network`` (None: its SSH address's).
    Raises PlanError."""
    if network:
        found = addresses_on(facts, network)
        if not found:
            nets = sorted({a["network"] for i in facts.get("interfaces", []) for a in i["addresses"]
                           if a["network"]})
            raise PlanError(f"host {host.alias} has no address on network '{network}' "
                            f"(its env networks: {', '.join(nets) or 'none'}); fix 'network'/'default_network' "
                            f"in network_constraints")
        v4 = [f for f in found if _is_ip(f[1]) and ipaddress.ip_address(f[1]).version == 4]
        return (v4 or found)[0]
    if _is_ip(host.address):
        dev = interface_for(facts, host.address)
        if dev:
            return dev, host.address
    # the SSH address is a name (or NATed): the first global address on an env network,
    # else the first global IPv4 address
    candidates = [(i["name"], a) for i in facts.get("interfaces", []) for a in i["addresses"]
                  if i["name"] != "lo" and a["family"] == "ipv4" and not a["address"].startswith("127.")]
    on_env = [c for c in candidates if c[1]["network"]]
    pick = (on_env or candidates or [None])[0]
    if pick is None:
        raise PlanError(f"cannot find the interface of host {host.alias} (address {host.address}) in its facts")
    return pick[0], pick[1]["address"]


def plan(constraints: "NetworkConstraints", groups: Sequence[str], hosts: Sequence["Host"],
         facts: Dict[str, dict], check_netem: bool = True) -> Dict[str, HostPlan]:
    """Return {alias: HostPlan} for the hosts that get a tree (hosts without any rule are
    left out). ``groups``: the groups the defaults apply between
    (:meth:`Config.constraint_groups`); ``facts``: {alias: facts}.

    Raises :class:`PlanError` (a network a host is not on) and :class:`NetemMissing` (delay
    or loss on a host whose kernel lacks sch_netem, unless ``check_netem`` is False),
    before anything is applied."""
    rules = constraints.group_rules(list(groups))
    members: Dict[str, List["Host"]] = {}
    for h in hosts:
        for r in h.roles:
            members.setdefault(r, []).append(h)
    # (alias, device) -> {dst address: (rule, dst group)}; later rules override
    chosen: Dict[Tuple[str, str], Dict[str, Rule]] = {}
    for rule in rules:
        net = rule.network or constraints.default_network
        for s in members.get(rule.src, []):
            for d in members.get(rule.dst, []):
                if s.alias == d.alias:
                    continue
                dev, _ = _endpoint(s, facts[s.alias], net)
                _, addr = _endpoint(d, facts[d.alias], net)
                chosen.setdefault((s.alias, dev), {})[addr] = rule
    out: Dict[str, HostPlan] = {}
    for (alias, dev), dests in chosen.items():
        classes: Dict[tuple, TcClass] = {}
        for addr, rule in dests.items():
            key = (rule.dst, rule.rate_bit, rule.delay_ms, rule.loss_pct)
            if key not in classes:
                classes[key] = TcClass(FIRST_CLASS + len(classes), rule.dst, rule.rate_bit, rule.delay_ms,
                                       rule.loss_pct, [], rule.origin)
            classes[key].destinations.append(addr)
        out.setdefault(alias, HostPlan(alias)).devices.append(DevicePlan(dev, list(classes.values())))
    missing = {a: facts[a].get("kernel") or "?" for a, p in out.items()
               if facts[a].get("netem") == "missing"
               and any(c.delay_ms or c.loss_pct for d in p.devices for c in d.classes)}
    if missing and check_netem:
        raise NetemMissing(missing)
    return out


# --- running on the hosts ----------------------------------------------------------------

_PRELUDE = r"""
set -u
created=""
enos_cleanup() { for d in $created; do $SUDO tc qdisc del dev "$d" root 2>/dev/null; done; }
enos_run() {
  n=$1; shift
  if out=$("$@" 2>&1); then :; else
    rc=$?; printf '@@failed %s %s\n%s\n' "$n" "$rc" "$out"; enos_cleanup; exit 3
  fi
}
enos_ours() { $SUDO tc qdisc show dev "$1" root 2>/dev/null | grep -q '^qdisc htb 1: root'; }
"""


def _sudo(host: "Host") -> str:
    return "" if host.user == "root" else "sudo -n"


def _apply_script(host: "Host", new: HostPlan, old: Optional[HostPlan]) -> Tuple[str, List[str]]:
    """Return (script, commands as text) for one host: remove enos' previous trees, build
    the new one, each tc command run and checked separately."""
    sudo = _sudo(host)
    lines = [f"SUDO={shlex.quote(sudo)}", _PRELUDE]
    texts: List[str] = []
    devices = {d.device for d in new.devices} | ({d.device for d in old.devices} if old else set())
    for dev in sorted(devices):
        if old and dev in {d.device for d in old.devices}:
            texts.append(f"tc qdisc del dev {dev} root")
            lines.append(f"if enos_ours {shlex.quote(dev)}; then enos_run {len(texts) - 1} $SUDO tc qdisc del dev "
                         f"{shlex.quote(dev)} root; fi")
    for d in new.devices:
        for i, argv in enumerate(d.commands()):
            texts.append(" ".join(argv))
            lines.append(f"enos_run {len(texts) - 1} $SUDO {' '.join(shlex.quote(a) for a in argv)}")
            if i == 0:
                lines.append(f'created="$created {d.device}"')
    lines.append("echo @@done")
    return "\n".join(lines) + "\n", texts


def _reset_script(host: "Host", old: HostPlan) -> Tuple[str, List[str]]:
    lines = [f"SUDO={shlex.quote(_sudo(host))}", _PRELUDE]
    texts = []
    for d in old.devices:
        texts.append(f"tc qdisc del dev {d.device} root")
        lines.append(f"if enos_ours {shlex.quote(d.device)}; then enos_run {len(texts) - 1} $SUDO tc qdisc del dev "
                     f"{shlex.quote(d.device)} root; else echo '@@absent {d.device}'; fi")
    lines.append("echo @@done")
    return "\n".join(lines) + "\n", texts


def _run_scripts(env: "EnvDir", scripts: Dict[str, Tuple["Host", str]],
                 timeout: float) -> Dict[str, "Result"]:
    """Run each host's own script, all hosts at once; return {alias: Result}."""
    if not scripts:
        return {}
    results = run_sessions(env.ssh_config, [h for h, _ in scripts.values()],
                           {a: s for a, (_, s) in scripts.items()}, timeout=timeout, label="tc")
    return {r.alias: r for r in results}


def _failure(result, texts: List[str]) -> Optional[Tuple[str, str]]:
    """Return (command, message) if the script reported a failure, else None."""
    out = result.stdout
    if result.exit_code is None:
        return ("(ssh)", result.error or "no answer")
    if "@@failed " in out:
        head, _, rest = out.partition("@@failed ")[2].partition("\n")
        n = int(head.split()[0])
        command = texts[n] if 0 <= n < len(texts) else "?"
        message = rest.strip() or f"exit {head.split()[1]}"
        if " netem " in command and "qdisc kind is unknown" in message:
            message += " (this kernel has no sch_netem module: delay and loss cannot be emulated here)"
        return (command, message)
    if "@@done" not in out:
        err = result.stderr.strip()
        return ("(script)", (result.error or err or f"exit {result.exit_code}")[-300:])
    return None


def _saved(env: "EnvDir") -> Dict[str, HostPlan]:
    rec = env.state.data.get(TC_KEY) or {}
    return {a: HostPlan.from_dict(p) for a, p in (rec.get("hosts") or {}).items()}


def _save(env: "EnvDir", update: Dict[str, Optional[HostPlan]]) -> None:
    """Record (or forget, for None) hosts' trees in the env state, under its lock."""
    with Lock(env.env_dir):
        state = State.load(env.env_dir)
        rec = state.data.get(TC_KEY) or {"hosts": {}}
        for alias, p in update.items():
            if p is None:
                rec["hosts"].pop(alias, None)
            else:
                rec["hosts"][alias] = p.to_dict()
        rec["updated"] = now_iso()
        state.data[TC_KEY] = rec
        state.save()
        env.state = state


def applied(env: "EnvDir") -> Dict[str, HostPlan]:
    """Return the trees enos recorded as applied on the env's hosts ({alias: HostPlan})."""
    return _saved(env)


def apply(env: "EnvDir", constraints: "NetworkConstraints", groups: Sequence[str],
          timeout: float = 120.0, progress=None) -> Dict[str, str]:
    """Apply ``constraints`` to the hosts of ``env``; return {alias: 'applied' | 'unchanged' |
    'removed'} for every host that has or had a tree.

    Hosts with a tree from an earlier apply that the new plan leaves out get it removed.
    Raises PlanError / NetemMissing (nothing changed), TcError (naming each failed host's
    tc command and message; the other hosts keep their new trees), FactsError."""
    res = env.resources
    facts = gather_facts(env)
    new = plan(constraints, groups, res.hosts, facts)
    old = _saved(env)
    by_alias = {h.alias: h for h in res.hosts}
    scripts, texts, status = {}, {}, {}
    for alias in sorted(set(new) | set(old)):
        if alias in new and alias in old and new[alias].to_dict() == old[alias].to_dict():
            status[alias] = "unchanged"      # checked live below
            continue
        if alias in new:
            scripts[alias] = _apply_script(by_alias[alias], new[alias], old.get(alias))
        else:
            scripts[alias] = _reset_script(by_alias[alias], old[alias])
    # unchanged trees must still be there (a reboot removes them): re-apply those gone
    unchanged = [a for a, s in status.items() if s == "unchanged"]
    if unchanged:
        probe = {a: (by_alias[a], f"SUDO={shlex.quote(_sudo(by_alias[a]))}\n{_PRELUDE}\n"
                     + "".join(f"enos_ours {shlex.quote(d.device)} || echo @@gone\n" for d in new[a].devices)
                     + "echo @@done\n") for a in unchanged}
        for a, r in _run_scripts(env, probe, timeout).items():
            if "@@gone" in r.stdout or "@@done" not in r.stdout:
                scripts[a] = _apply_script(by_alias[a], new[a], old[a])
                status.pop(a)
    # record before running: a crash leaves enough for reset (which checks what is there)
    _save(env, {a: new[a] for a in scripts if a in new})
    if progress is not None:
        progress.info(f"tc: shaping {len(scripts)} host(s), {len(status)} unchanged")
    results = _run_scripts(env, {a: (by_alias[a], s) for a, (s, _) in scripts.items()}, timeout)
    failures, update = {}, {}
    for alias, r in results.items():
        f = _failure(r, scripts[alias][1])
        if f is None:
            status[alias] = "applied" if alias in new else "removed"
            if alias not in new:
                update[alias] = None
        else:
            failures[alias] = f
            if f[0] not in ("(ssh)", "(script)"):
                update[alias] = None        # the script removed its partial tree
    if update:
        _save(env, update)
    if failures:
        raise TcError(failures)
    return status


def reset(env: "EnvDir", timeout: float = 120.0) -> Dict[str, str]:
    """Remove the trees enos recorded on the env's hosts (only root ``htb 1:`` qdiscs of the
    recorded interfaces); return {alias: 'removed' | 'already gone'}.

    Raises TcError for hosts where removing failed (their record is kept)."""
    old = _saved(env)
    res = env.resources
    by_alias = {h.alias: h for h in (res.hosts if res else [])}
    scripts = {a: _reset_script(by_alias[a], p) for a, p in old.items() if a in by_alias}
    results = _run_scripts(env, {a: (by_alias[a], s) for a, (s, _) in scripts.items()}, timeout)
    status, failures, update = {}, {}, {}
    for alias, r in results.items():
        f = _failure(r, scripts[alias][1])
        if f is None:
            status[alias] = "already gone" if "@@absent" in r.stdout else "removed"
            update[alias] = None
        else:
            failures[alias] = f
    for alias in set(old) - set(by_alias):
        update[alias] = None
    if update:
        _save(env, update)
    if failures:
        raise TcError(failures, what="removing the network constraints")
    return status


def describe_plan(plans: Dict[str, HostPlan]) -> str:
    """Return a readable summary of ``plans``: per host and interface, each class."""
    lines = []
    for alias, p in sorted(plans.items()):
        for d in p.devices:
            for c in d.classes:
                lines.append(f"{alias} {d.device} → {c.dst_group} ({len(c.destinations)} address(es)): "
                             f"rate {format_rate(c.rate_bit)} delay {format_delay(c.delay_ms)} "
                             f"loss {c.loss_pct or 0:g}%")
    return "\n".join(lines)
