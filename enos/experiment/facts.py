"""Facts about the hosts of an environment: interfaces (with addresses and the env network
each belongs to), CPU count, memory, OS, kernel, whether the kernel has ``sch_netem``, and
which measuring tools are installed.

Gathered with one shell command per host, run on every host at once over the env's SSH
masters (:func:`enos.ssh.remote.run_command`), parsed here, and cached in the env state
(``state.json`` → ``facts``) until refreshed (:func:`gather_facts` with ``refresh=True``,
``enos info --facts --refresh``). ``enos tc`` uses them to find the interface to shape and
to refuse delay/loss on kernels without netem.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from enos import render
from enos.errors import CommandFailed, EnosError, NoEnvironment
from enos.ssh.remote import run_command
from enos.state import Lock, State, now_iso

if TYPE_CHECKING:  # pragma: no cover
    from enos.model import Host, IpPool
    from enos.task import EnvDir

FACTS_KEY = "facts"
#: tools ``enos tc --test`` and users care about
TOOLS = ("tc", "python3", "ping", "iperf3", "ip")

# one POSIX sh script: sections start with '@@name'. The netem probe first looks for the
# module (loaded, built in, or installed), then, as root only, tries a netem qdisc on a
# throw-away ifb device (a kernel without modules at all has no file to look at).
FACTS_SCRIPT = r"""
export LC_ALL=C
echo @@addr; ip -o addr show 2>/dev/null
echo @@link; ip -o link show 2>/dev/null
echo @@cpus; nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo
echo @@mem; grep MemTotal /proc/meminfo
echo @@os; cat /etc/os-release 2>/dev/null
echo @@kernel; uname -r; uname -m
echo @@netem
k=$(uname -r)
if [ -d /sys/module/sch_netem ]; then echo loaded
elif grep -qs '/sch_netem\.ko' "/lib/modules/$k/modules.builtin"; then echo builtin
elif [ -n "$(find "/lib/modules/$k" -name 'sch_netem.ko*' 2>/dev/null | head -n 1)" ]; then echo module
elif [ "$(id -u)" = 0 ] && command -v tc >/dev/null 2>&1 && ip link add enosnetemprobe type ifb 2>/dev/null; then
  if tc qdisc add dev enosnetemprobe root netem delay 1ms 2>/dev/null; then echo builtin; else echo missing; fi
  ip link del enosnetemprobe 2>/dev/null
else echo missing
fi
echo @@tools; for t in TOOLS; do command -v $t >/dev/null 2>&1 && echo $t; done
echo @@end
""".replace("TOOLS", " ".join(TOOLS))


class FactsError(EnosError):
    """Facts could not be gathered from some hosts (``failed`` maps alias → reason)."""

    def __init__(self, failed: Dict[str, str]):
        self.failed = dict(failed)
        super().__init__("could not gather facts from " + "; ".join(f"{h}: {m}" for h, m in self.failed.items()))


def _sections(text: str) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    cur = None
    for line in text.splitlines():
        if line.startswith("@@"):
            cur = line[2:].strip()
            out[cur] = []
        elif cur is not None:
            out[cur].append(line)
    return out


def _network_of(address: str, pools: Sequence["IpPool"]) -> Optional["IpPool"]:
    try:
        a = ipaddress.ip_address(address)
    except ValueError:
        return None
    for p in pools:
        try:
            if a in ipaddress.ip_network(p.cidr, strict=False):
                return p
        except ValueError:
            continue
    return None


def parse_facts(text: str, host: "Host", pools: Sequence["IpPool"]) -> dict:
    """Return the facts of ``host`` from the output of :data:`FACTS_SCRIPT`: ``interfaces``
    (list of ``{name, mac, mtu, state, addresses: [{address, prefixlen, family, network,
    ssh}]}``; ``network`` is the env network's name, or its CIDR, or None), ``cpus``,
    ``memory_mb``, ``os`` (PRETTY_NAME), ``os_id``, ``os_version``, ``kernel``, ``arch``,
    ``netem`` (``loaded``/``builtin``/``module``/``missing``), ``tools`` (installed ones).
    Raises ValueError when the output is cut short."""
    s = _sections(text)
    if "end" not in s:
        raise ValueError("the facts script's output is incomplete")
    ifaces: Dict[str, dict] = {}
    for line in s.get("link", []):
        # "2: eth0@if5: <BROADCAST,...,UP> mtu 1500 qdisc noqueue state UP ... link/ether aa:bb:.."
        parts = line.split()
        if len(parts) < 2:
            continue
        name = parts[1].rstrip(":").split("@")[0]
        d = {"name": name, "mac": None, "mtu": None, "state": None, "addresses": []}
        for i, p in enumerate(parts[:-1]):
            if p == "mtu":
                d["mtu"] = int(parts[i + 1]) if parts[i + 1].isdigit() else None
            elif p == "state":
                d["state"] = parts[i + 1]
            elif p.startswith("link/") and p != "link/none":
                d["mac"] = parts[i + 1]
        ifaces[name] = d
    for line in s.get("addr", []):
        # "2: eth0    inet 10.0.0.2/24 brd 10.0.0.255 scope global eth0\       valid_lft ..."
        parts = line.split()
        if len(parts) < 4 or parts[2] not in ("inet", "inet6"):
            continue
        name = parts[1].split("@")[0]
        addr, _, plen = parts[3].partition("/")
        pool = _network_of(addr, pools)
        entry = {"address": addr, "prefixlen": int(plen) if plen.isdigit() else None,
                 "family": "ipv4" if parts[2] == "inet" else "ipv6",
                 "network": (pool.name or pool.cidr) if pool else None,
                 "network_roles": list(pool.roles) if pool else [],
                 "ssh": addr == host.address}
        ifaces.setdefault(name, {"name": name, "mac": None, "mtu": None, "state": None,
                                 "addresses": []})["addresses"].append(entry)
    osr = {}
    for line in s.get("os", []):
        k, _, v = line.partition("=")
        osr[k.strip()] = v.strip().strip('"')
    mem = 0
    for line in s.get("mem", []):
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            mem = int(parts[1]) // 1024
    cpus = next((int(x) for x in s.get("cpus", []) if x.strip().isdigit()), None)
    kernel = s.get("kernel", [])
    netem = next((x.strip() for x in s.get("netem", []) if x.strip()), "missing")
    return {"alias": host.alias, "address": host.address, "interfaces": list(ifaces.values()),
            "cpus": cpus, "memory_mb": mem, "os": osr.get("PRETTY_NAME"), "os_id": osr.get("ID"),
            "os_version": osr.get("VERSION_ID"), "kernel": kernel[0] if kernel else None,
            "arch": kernel[1] if len(kernel) > 1 else None, "netem": netem,
            "tools": [t.strip() for t in s.get("tools", []) if t.strip()]}


def interface_for(facts: dict, address: str) -> Optional[str]:
    """Return the name of the interface holding ``address`` in a host's ``facts`` (None if
    none does)."""
    for iface in facts.get("interfaces", []):
        if any(a["address"] == address for a in iface["addresses"]):
            return iface["name"]
    return None


def addresses_on(facts: dict, network: str) -> List[tuple]:
    """Return ``[(interface, address)]`` of a host's ``facts`` on the env network named
    ``network`` (its name, its CIDR or one of its roles)."""
    out = []
    for iface in facts.get("interfaces", []):
        for a in iface["addresses"]:
            if a["network"] == network or network in a.get("network_roles", []):
                out.append((iface["name"], a["address"]))
    return out


def cached_facts(env: "EnvDir") -> Optional[Dict[str, dict]]:
    """Return the facts cached in the env state ({alias: facts}) or None if never gathered."""
    saved = env.state.data.get(FACTS_KEY)
    return dict(saved["hosts"]) if saved else None


def gather_facts(env: "EnvDir", refresh: bool = False, timeout: float = 120.0,
                 hosts: Optional[Sequence["Host"]] = None) -> Dict[str, dict]:
    """Return ``{alias: facts}`` (see :func:`parse_facts`) of every host of ``env`` (or of
    ``hosts``): from the state's cache unless ``refresh`` or some host is missing there;
    otherwise gathered on all hosts at once and saved in the env state (under its lock).

    Raises :class:`FactsError` naming the hosts that did not answer or whose output could
    not be read, NoEnvironment if the env has no resources, StateLocked."""
    res = env.resources
    if res is None:
        raise NoEnvironment(f"environment {env.env_dir} has no resources yet; run 'enos up'")
    wanted = list(hosts) if hosts is not None else list(res.hosts)
    cached = cached_facts(env) or {}
    if not refresh and all(h.alias in cached for h in wanted):
        return {h.alias: cached[h.alias] for h in wanted}
    try:
        results = run_command(env.ssh_config, wanted, FACTS_SCRIPT, timeout=timeout)
    except CommandFailed as e:
        raise FactsError({r.alias: r.error or f"exit {r.exit_code}: {r.stderr.strip()[-200:]}"
                          for r in e.failed}) from None
    found, failed = {}, {}
    for r in results:
        try:
            found[r.alias] = parse_facts(r.stdout, r.host, res.networks)
        except ValueError as e:
            failed[r.alias] = str(e)
    if failed:
        raise FactsError(failed)
    stamp = now_iso("microseconds")   # a refresh within the same second is still a new gathering
    for f in found.values():
        f["gathered"] = stamp
    with Lock(env.env_dir):
        state = State.load(env.env_dir)
        saved = state.data.get(FACTS_KEY) or {"hosts": {}}
        saved["hosts"].update(found)
        saved["gathered"] = stamp
        state.data[FACTS_KEY] = saved
        state.save()
        env.state = state
    return found


class Facts(dict):
    """{alias: facts} of the hosts (a dict), shown as a table in Jupyter."""

    def _repr_html_(self) -> str:
        rows = []
        for alias, f in self.items():
            addrs = [f"{i['name']} {a['address']}/{a['prefixlen']}" + (f" [{a['network']}]" if a["network"] else "")
                     + (" (ssh)" if a["ssh"] else "")
                     for i in f.get("interfaces", []) for a in i["addresses"] if i["name"] != "lo"]
            rows.append([alias, f.get("cpus"), f"{f.get('memory_mb') or '?'} MB", f.get("os"), f.get("kernel"),
                         f.get("arch"), f.get("netem"), "\n".join(addrs), ", ".join(f.get("tools") or [])])
        return render.table(["host", "cpus", "memory", "OS", "kernel", "arch", "netem", "addresses", "tools"],
                            rows, caption=f"facts of {len(self)} host(s)", css_class="enos-facts")


def facts_table(facts: Dict[str, dict]) -> str:
    """Return the facts as a readable text table: one line per host (CPUs, memory, OS,
    kernel, netem) and one indented line per interface address."""
    lines = []
    rows = [("HOST", "CPUS", "MEMORY", "OS", "KERNEL", "NETEM")]
    for alias, f in facts.items():
        rows.append((alias, str(f.get("cpus") or "?"), f"{f.get('memory_mb', 0)} MB", f.get("os") or "?",
                     f.get("kernel") or "?", f.get("netem") or "?"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            continue
        f = facts[r[0]]
        for iface in f.get("interfaces", []):
            for a in iface["addresses"]:
                net = a["network"] or "-"
                mark = "  (ssh)" if a["ssh"] else ""
                cidr = f"{a['address']}/{a['prefixlen']}"
                lines.append(f"    {iface['name']:<10} {cidr:<28} network {net}{mark}")
        if f.get("tools"):
            lines.append(f"    tools: {', '.join(f['tools'])}")
    return "\n".join(lines)
